#!/usr/bin/env bash
# Cost of one web login (argon2id verification of the admin password), side by side with the
# reference argon2 implementation (Debian's `argon2` CLI) at the same parameters.
# Prints wall time per login over HTTP and CPU time per hash (CPU time is steadier on a busy
# machine). Everything stays on loopback.
#   scripts/bench-web-login.sh [N]
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-20}
M_KIB=19456 T=2 P=1   # HashParams::PRODUCTION
command -v argon2 >/dev/null || { echo "install the argon2 package"; exit 1; }

cargo build -q --profile ci -p vantage
BIN=target/ci/vantage
DATA=$(mktemp -d /tmp/vantage-bench-login.XXXXXX)
PORT=$((20000 + RANDOM % 20000))
"$BIN" run --listen "127.0.0.1:$PORT" --data-dir "$DATA" --log-level warn &
PID=$!
trap 'kill $PID 2>/dev/null; wait $PID 2>/dev/null; rm -rf "$DATA"' EXIT
URL="http://127.0.0.1:$PORT"
for _ in $(seq 1 100); do curl -fs -o /dev/null "$URL/-/healthy" && break; sleep 0.1; done
PW='benchmark password 1'
curl -fs -o /dev/null -H 'Content-Type: application/json' -d "{\"password\":\"$PW\"}" "$URL/api/auth/setup"

ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
HZ=$(getconf CLK_TCK)
t0=$(ticks $PID); s0=$(date +%s.%N)
for _ in $(seq 1 "$N"); do
  code=$(curl -s -o /dev/null -w '%{http_code}' -H 'Content-Type: application/json' \
    -d "{\"password\":\"$PW\"}" "$URL/api/auth/login")
  [ "$code" = 200 ] || { echo "login failed: $code"; exit 1; }
done
s1=$(date +%s.%N); t1=$(ticks $PID)
ours_wall=$(awk "BEGIN{print ($s1 - $s0) * 1000 / $N}")
ours_cpu=$(awk "BEGIN{print ($t1 - $t0) * 1000 / $HZ / $N}")

c0=$(awk '{print $14+$15+$16+$17}' /proc/$$/stat); s0=$(date +%s.%N)
for _ in $(seq 1 "$N"); do
  echo -n "$PW" | argon2 saltsaltsaltsalt -id -t $T -k $M_KIB -p $P -e >/dev/null
done
s1=$(date +%s.%N); c1=$(awk '{print $14+$15+$16+$17}' /proc/$$/stat)
ref_wall=$(awk "BEGIN{print ($s1 - $s0) * 1000 / $N}")
ref_cpu=$(awk "BEGIN{print ($c1 - $c0) * 1000 / $HZ / $N}")

printf 'argon2id m=%d KiB t=%d p=%d, %d runs on %s\n' $M_KIB $T $P "$N" "$(lscpu | sed -n 's/^Model name: *//p' | head -1)"
printf '%-34s %10s %10s\n' "" "wall ms" "CPU ms"
printf '%-34s %10.1f %10.1f\n' "vantage login over HTTP" "$ours_wall" "$ours_cpu"
printf '%-34s %10.1f %10.1f\n' "argon2 CLI (reference C)" "$ref_wall" "$ref_cpu"
