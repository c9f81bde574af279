#!/usr/bin/env bash
# Memory after a flood of wrong logins: the daemon's RSS before and after N wrong-password
# logins (default 1,000), against the goal of staying within 20 MB of before.
#
#   scripts/bench-web-login-rss.sh [N] [PARALLEL]
#
# The logins come from many loopback source addresses (127.3.X.Y; Linux answers every address
# of 127.0.0.0/8 on lo), at most 4 from each, so the per-address limit (5 free failures) never
# turns them into cheap 429s: each is a real argon2id verification. PARALLEL (default 8) logins
# are in flight at once. Prints how many got 401 and how many 429 (or anything else).
# Everything stays on loopback.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-1000}
PARALLEL=${2:-8}
PER_ADDRESS=4      # below the per-address limit of free failures
GOAL_MB=20
case "$N$PARALLEL" in
  *[!0-9]*) echo "bench-web-login-rss.sh: N and PARALLEL take whole numbers" >&2; exit 2 ;;
esac

[ "${BENCH_NO_BUILD:-0}" = 1 ] || cargo build -q --profile ci -p vantage
BIN=target/ci/vantage
DATA=$(mktemp -d /tmp/vantage-bench-login-rss.XXXXXX)
PORT=$((20000 + RANDOM % 20000))
"$BIN" run --listen "127.0.0.1:$PORT" --data-dir "$DATA" --log-level error &
PID=$!
trap 'kill $PID 2>/dev/null; wait $PID 2>/dev/null; rm -rf "$DATA"' EXIT
URL="http://127.0.0.1:$PORT"
for _ in $(seq 1 100); do curl -fs -o /dev/null "$URL/-/healthy" && break; sleep 0.1; done
curl -fs -o /dev/null -H 'Content-Type: application/json' \
  -d '{"password":"benchmark password 1"}' "$URL/api/auth/setup"

rss_kib() { awk '/^VmRSS/ { print $2 }' "/proc/$PID/status"; }
# The source address of the Ith login (I from 0): PER_ADDRESS logins per address.
source_addr() { local a=$(( $1 / PER_ADDRESS )); echo "127.3.$(( a / 250 )).$(( a % 250 + 1 ))"; }

sleep 1
before=$(rss_kib)
for i in $(seq 0 $(( N - 1 ))); do source_addr "$i"; done \
  | xargs -P "$PARALLEL" -I{} curl -s -o /dev/null --max-time 120 -w '%{http_code}\n' \
      --interface {} -H 'Content-Type: application/json' \
      -d '{"password":"not the password"}' "$URL/api/auth/login" >"$DATA/codes" || true
sleep 1
after=$(rss_kib)

printf '%d wrong logins from %d loopback addresses, %d at a time\n' \
  "$N" $(( (N + PER_ADDRESS - 1) / PER_ADDRESS )) "$PARALLEL"
sort "$DATA/codes" | uniq -c | awk '{ printf "  HTTP %s: %d\n", $2, $1 }'
awk -v b="$before" -v a="$after" -v g="$GOAL_MB" 'BEGIN {
  d = (a - b) / 1024
  printf "RSS before %.1f MB, after %.1f MB, difference %+.1f MB (goal: within %d MB): %s\n",
    b / 1024, a / 1024, d, g, (d <= g ? "met" : "NOT met") }'
echo "peak RSS (VmHWM): $(awk '/^VmHWM/ { printf "%.1f MB", $2 / 1024 }' "/proc/$PID/status")"
