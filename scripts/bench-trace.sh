#!/usr/bin/env bash
# Traceroute benchmark (run as root): builds a namespace lab s - r1 - r2 - r3 - r4 - d and
#  1. times one full trace through it, vantage next to traceroute(8) and mtr, with every hop
#     answering and with a silent hop;
#  2. measures CPU and memory of `vantage run` tracing 200 targets every 60 s, next to what
#     traceroute and mtr processes would cost for the same job.
#
#   scripts/bench-trace.sh
#   DELAY_MS=5 RUNS=5 TIMEOUT=2 TARGETS=200 WARMUP=60 DURATION=180 scripts/bench-trace.sh
#
# Each router (and the destination) holds every packet it forwards or sends for DELAY_MS
# with the test kit's NFQUEUE holder (nfq-delay), as this kernel may lack netem; hop k then
# answers after (2k - 1) x DELAY_MS. Without the test kit, the lab runs undelayed (~0.05 ms).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
  echo "bench-trace.sh: run as root (it builds network namespaces)" >&2
  exit 1
fi
for tool in traceroute mtr ip nft iptables curl; do
  command -v "$tool" >/dev/null || { echo "bench-trace.sh: $tool is missing (scripts/setup.sh installs it)" >&2; exit 1; }
done

PARTS=${PARTS:-time,load}
DELAY_MS=${DELAY_MS:-5}
RUNS=${RUNS:-5}
TIMEOUT=${TIMEOUT:-2}
TARGETS=${TARGETS:-200}
WARMUP=${WARMUP:-60}
DURATION=${DURATION:-180}
PEER_RUNS=${PEER_RUNS:-50}

echo "==> building (profile ci)"
cargo build -q --profile ci -p vantage
BIN=$PWD/target/ci/vantage
NFQ=""
if [ -d firmware/testkit ]; then
  cargo build -q --profile ci -p vantage-testkit --bin nfq-delay
  NFQ=$PWD/target/ci/nfq-delay
else
  DELAY_MS=0
fi

P=vtb$$
NODES=(s r1 r2 r3 r4 d)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  for n in "${NODES[@]}"; do ip netns del "$P-$n" 2>/dev/null || true; done
}
trap cleanup EXIT
ns() { echo "$P-$1"; }
inns() { local n=$1; shift; ip netns exec "$(ns "$n")" "$@"; }

echo "==> lab $P: ${NODES[*]}"
for n in "${NODES[@]}"; do
  ip netns add "$(ns "$n")"
  ip -n "$(ns "$n")" link set lo up
  inns "$n" sysctl -qw net.ipv4.icmp_ratelimit=0 net.ipv4.icmp_msgs_per_sec=100000 \
    net.ipv4.icmp_msgs_burst=100000 net.ipv4.ping_group_range="0 2147483647"
done
for i in 0 1 2 3 4; do
  a=${NODES[$i]} b=${NODES[$((i + 1))]}
  ip link add "b${i}a" netns "$(ns "$a")" type veth peer name "b${i}b" netns "$(ns "$b")"
  ip -n "$(ns "$a")" addr add "10.210.$i.1/24" dev "b${i}a"
  ip -n "$(ns "$b")" addr add "10.210.$i.2/24" dev "b${i}b"
  ip -n "$(ns "$a")" link set "b${i}a" up
  ip -n "$(ns "$b")" link set "b${i}b" up
done
ip -n "$(ns s)" route add default via 10.210.0.2
ip -n "$(ns d)" route add default via 10.210.4.1
for i in 1 2 3 4; do
  r=${NODES[$i]}
  inns "$r" sysctl -qw net.ipv4.ip_forward=1 net.ipv4.icmp_errors_use_inbound_ifaddr=1
  [ "$i" -gt 1 ] && ip -n "$(ns "$r")" route add default via "10.210.$((i - 1)).1"
  for j in $(seq $((i + 1)) 4); do ip -n "$(ns "$r")" route add "10.210.$j.0/24" via "10.210.$i.2"; done
  ip -n "$(ns "$r")" route add 10.211.0.0/16 via "10.210.$i.2"
done
# The traced targets: addresses of d.
for t in $(seq 1 "$TARGETS"); do
  ip -n "$(ns d)" addr add "10.211.$((t / 250)).$((t % 250 + 1))/32" dev lo
done
DST=10.210.4.2

if [ -n "$NFQ" ] && [ "$DELAY_MS" != 0 ]; then
  echo "==> delay: every router and d hold each packet they forward or send for $DELAY_MS ms"
  for n in r1 r2 r3 r4 d; do
    fifo=$(mktemp -u)
    mkfifo "$fifo"
    # Not through `inns`: a backgrounded function is a subshell, and $! would be its pid.
    ip netns exec "$(ns "$n")" "$NFQ" --queue 3 --delay-ms "$DELAY_MS" >"$fifo" 2>/dev/null &
    PIDS+=($!)
    read -r _ready <"$fifo"
    rm -f "$fifo"
    inns "$n" iptables -A FORWARD -j NFQUEUE --queue-num 3
    inns "$n" iptables -A OUTPUT -j NFQUEUE --queue-num 3
  done
else
  echo "==> no delay holder (firmware/testkit is not in this tree): the lab answers in ~0.05 ms"
fi

now() { date +%s.%N; }
# Runs a command RUNS times; prints median, min and max wall time in seconds.
timeit() {
  local t=()
  for _ in $(seq 1 "$RUNS"); do
    local a b
    a=$(now)
    "$@" >/dev/null 2>&1 || true
    b=$(now)
    t+=("$(echo "$b - $a" | bc -l)")
  done
  printf '%s\n' "${t[@]}" | sort -g | awk '{v[NR]=$1} END {m=(NR%2)?v[(NR+1)/2]:(v[NR/2]+v[NR/2+1])/2; printf "%8.3f s %8.3f s %8.3f s\n", m, v[1], v[NR]}'
}

# Neighbour tables and caches warm before anything is timed.
inns s "$BIN" trace "$DST" -P icmp -w 1s -m 8 >/dev/null || true

if [[ $PARTS == *time* ]]; then
slowest=$(echo "9 * $DELAY_MS" | bc -l)
goal=$(echo "1.5 * $slowest / 1000" | bc -l)
echo
echo "Full trace, $RUNS runs each; 3 probes per hop, ${TIMEOUT} s timeout. Hop RTTs $((DELAY_MS)), $((3 * DELAY_MS)), $((5 * DELAY_MS)), $((7 * DELAY_MS)) ms; destination (hop 5) $((9 * DELAY_MS)) ms."
printf 'Goal: 1.5 x the slowest RTT = %.3f s; with a silent hop, plus the timeout = %.3f s.\n\n' "$goal" "$(echo "$goal + $TIMEOUT" | bc -l)"
printf '%-14s %-44s %10s %10s %10s\n' scenario command median min max
bench_all() {
  local label=$1
  while IFS='|' read -r name cmd; do
    # shellcheck disable=SC2086
    printf '%-14s %-44s %s\n' "$label" "$name" "$(timeit inns s $cmd)"
  done <<EOF
vantage trace -P udp|$BIN trace $DST -P udp -q 3 -w ${TIMEOUT}s -m 30
vantage trace -P icmp|$BIN trace $DST -P icmp -q 3 -w ${TIMEOUT}s -m 30
vantage trace -P tcp|$BIN trace $DST -P tcp -q 3 -w ${TIMEOUT}s -m 30
vantage trace -P udp --discovery flows|$BIN trace $DST -P udp -q 3 -w ${TIMEOUT}s -m 30 --discovery flows
traceroute -q 3 (udp)|traceroute -n -q 3 -w $TIMEOUT $DST
traceroute -I -q 3|traceroute -n -I -q 3 -w $TIMEOUT $DST
traceroute -T -q 3|traceroute -n -T -p 80 -q 3 -w $TIMEOUT $DST
mtr -r -c 3 (icmp)|mtr -n -r -c 3 -Z $TIMEOUT $DST
mtr -r -c 3 -i 0.1 -G 0.1 (icmp)|mtr -n -r -c 3 -i 0.1 -G 0.1 -Z $TIMEOUT $DST
mtr -u -r -c 3 -i 0.1 -G 0.1|mtr -n -u -r -c 3 -i 0.1 -G 0.1 -Z $TIMEOUT $DST
EOF
}
bench_all "all answer"
inns r2 nft 'add table inet vtb; add chain inet vtb out { type filter hook output priority 0; }; add rule inet vtb out icmp type time-exceeded drop'
bench_all "hop 2 silent"
inns r2 nft 'delete table inet vtb'
fi
[[ $PARTS == *load* ]] || exit 0

echo
echo "==> $TARGETS targets traced every 60 s (UDP, default options): warm-up ${WARMUP} s, then ${DURATION} s measured"
dir=$(mktemp -d)
{
  echo '[defaults]'
  echo 'interval = "60s"'
  for t in $(seq 1 "$TARGETS"); do
    printf '[[targets]]\nname = "t%d"\nhost = "10.211.%d.%d"\nprobes = ["trace"]\n' "$t" $((t / 250)) $((t % 250 + 1))
  done
} >"$dir/vantage.toml"
# `ip netns exec` becomes the daemon (it execs), so $! is the daemon's pid.
ip netns exec "$(ns s)" "$BIN" run --config "$dir/vantage.toml" --listen 127.0.0.1:9431 \
  --data-dir "$dir" >/dev/null 2>"$dir/log" &
pid=$!
PIDS+=("$pid")
sleep 1
[ "$(cat "/proc/$pid/comm" 2>/dev/null)" = vantage ] || { echo "the daemon did not start:"; cat "$dir/log"; exit 1; }
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }
tck=$(getconf CLK_TCK)
sleep "$WARMUP"
c0=$(cpu "$pid")
t0=$(now)
sleep "$DURATION"
c1=$(cpu "$pid")
t1=$(now)
rss=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
hwm=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")
m=$(inns s curl -s http://127.0.0.1:9431/metrics)
ok=$(echo "$m" | awk '/^vantage_probe_rounds_total\{.*probe="trace".*result="success"/ {s += $2} END {print s + 0}')
bad=$(echo "$m" | awk '/^vantage_probe_rounds_total\{.*probe="trace".*result="failure"/ {s += $2} END {print s + 0}')
changes=$(echo "$m" | awk '/^vantage_trace_path_changes_total/ {s += $2} END {print s + 0}')
cpu_s=$(echo "($c1 - $c0) / $tck" | bc -l)
wall=$(echo "$t1 - $t0" | bc -l)
printf '%-36s %10s %14s %14s\n' "" "CPU" "RSS" "peak RSS"
printf '%-36s %9.2f%% %11.1f MiB %11.1f MiB   (%d traces: %d reached, %d not; %d path changes)\n' \
  "vantage run, $TARGETS targets" "$(echo "100 * $cpu_s / $wall" | bc -l)" "$(echo "$rss / 1024" | bc -l)" \
  "$(echo "$hwm / 1024" | bc -l)" $((ok + bad)) "$ok" "$bad" "$changes"

# The same job with one peer process per trace: their CPU per trace x TARGETS / 60 s. CPU times
# have 10 ms resolution, so PEER_RUNS traces are timed together.
peer() {
  local name=$1
  shift
  local tf hosts=()
  tf=$(mktemp)
  for i in $(seq 1 "$PEER_RUNS"); do
    local t=$((i % TARGETS + 1))
    hosts+=("10.211.$((t / 250)).$((t % 250 + 1))")
  done
  /usr/bin/time -o "$tf" -f "%U %S %M" bash -c \
    'ns=$1; shift; n=$1; shift; cmd=("${@:1:$n}"); shift "$n"; for h in "$@"; do ip netns exec "$ns" "${cmd[@]}" "$h" >/dev/null 2>&1; done' \
    _ "$(ns s)" $# "$@" "${hosts[@]}" || true
  read -r u sys peak <"$tf"
  rm -f "$tf"
  local per
  # Less what entering the namespace costs (`ip netns exec NS true`, measured the same way).
  per=$(echo "($u + $sys - ${BASE:-0}) / $PEER_RUNS" | bc -l)
  printf '%-36s %9.2f%% %14s %11.1f MiB   (%.1f ms CPU a trace, %d runs, x %d targets / 60 s)\n' \
    "$name" "$(echo "100 * $per * $TARGETS / 60" | bc -l)" "-" "$(echo "$peak / 1024" | bc -l)" \
    "$(echo "1000 * $per" | bc -l)" "$PEER_RUNS" "$TARGETS"
}
BASE=0
base=$(mktemp)
/usr/bin/time -o "$base" -f "%U %S" bash -c \
  'for _ in $(seq 1 "$2"); do ip netns exec "$1" true; done' _ "$(ns s)" "$PEER_RUNS"
read -r bu bs <"$base"
rm -f "$base"
BASE=$(echo "$bu + $bs" | bc -l)
peer "traceroute -q 3, one per trace" traceroute -n -q 3 -w "$TIMEOUT"
peer "mtr -u -r -c 3, one per trace" mtr -n -u -r -c 3 -i 0.1 -G 0.1 -Z "$TIMEOUT"
rm -rf "$dir"
