#!/usr/bin/env bash
# Multipath trace benchmark (run as root): a namespace lab s - r1 - {r2a, r2b, r2c} - r3 - d
# where r1 balances per flow over three next hops (layer-4 hashing), and, for each tool,
# RUNS traces from s: the branches found at hop 2 and the probes sent to d (an nft counter on
# s). Vantage (MDA-Lite, default options) beside `scamper tracelb` (MDA, 95 % confidence).
#
#   scripts/bench-trace-mda.sh
#   RUNS=20 scripts/bench-trace-mda.sh
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
  echo "bench-trace-mda.sh: run as root (it builds network namespaces)" >&2
  exit 1
fi
for tool in scamper ip nft; do
  command -v "$tool" >/dev/null || { echo "bench-trace-mda.sh: $tool is missing (scripts/setup.sh installs it)" >&2; exit 1; }
done

RUNS=${RUNS:-10}
PER=1
SHOW=${SHOW:-}

echo "==> building (profile ci)"
cargo build -q --profile ci -p vantage
BIN=$PWD/target/ci/vantage

P=vtm$$
NODES=(s r1 r2a r2b r2c r3 d)
cleanup() {
  for n in "${NODES[@]}"; do ip netns del "$P-$n" 2>/dev/null || true; done
}
trap cleanup EXIT
ns() { echo "$P-$1"; }
inns() { local n=$1; shift; ip netns exec "$(ns "$n")" "$@"; }

echo "==> lab $P: s - r1 - {r2a, r2b, r2c} - r3 - d"
for n in "${NODES[@]}"; do
  ip netns add "$(ns "$n")"
  ip -n "$(ns "$n")" link set lo up
  inns "$n" sysctl -qw net.ipv4.icmp_ratelimit=0 net.ipv4.icmp_msgs_per_sec=100000 \
    net.ipv4.icmp_msgs_burst=100000
done
# Link i: 10.220.i.1 on the first node, 10.220.i.2 on the second.
i=0
for pair in s:r1 r1:r2a r1:r2b r1:r2c r2a:r3 r2b:r3 r2c:r3 r3:d; do
  a=${pair%:*} b=${pair#*:}
  ip link add "m${i}a" netns "$(ns "$a")" type veth peer name "m${i}b" netns "$(ns "$b")"
  ip -n "$(ns "$a")" addr add "10.220.$i.1/24" dev "m${i}a"
  ip -n "$(ns "$b")" addr add "10.220.$i.2/24" dev "m${i}b"
  ip -n "$(ns "$a")" link set "m${i}a" up
  ip -n "$(ns "$b")" link set "m${i}b" up
  i=$((i + 1))
done
for r in r1 r2a r2b r2c r3; do
  # Routers answer from the interface the probe came in on, as the test lab's do.
  inns "$r" sysctl -qw net.ipv4.ip_forward=1 net.ipv4.icmp_errors_use_inbound_ifaddr=1
done
DST=10.220.7.2
ip -n "$(ns s)" route add default via 10.220.0.2
ip -n "$(ns d)" route add default via 10.220.7.1
inns r1 sysctl -qw net.ipv4.fib_multipath_hash_policy=1
ip -n "$(ns r1)" route add 10.220.7.0/24 nexthop via 10.220.1.2 nexthop via 10.220.2.2 nexthop via 10.220.3.2
for k in 1 2 3; do
  r=${NODES[$((k + 1))]}
  ip -n "$(ns "$r")" route add default via "10.220.$k.1"
  ip -n "$(ns "$r")" route add 10.220.7.0/24 via "10.220.$((k + 3)).2"
done
ip -n "$(ns r3)" route add default via 10.220.4.1
BRANCHES="10.220.1.2 10.220.2.2 10.220.3.2"

reset_count() {
  inns s nft "add table inet cnt; delete table inet cnt; add table inet cnt; add chain inet cnt out { type filter hook output priority 0; }; add rule inet cnt out ip daddr $DST counter"
}
count() { inns s nft list table inet cnt | awk '/packets/ {for (i = 1; i < NF; i++) if ($i == "packets") print $(i + 1)}'; }
branches() { local n=0; for b in $BRANCHES; do grep -qw "${b//./\\.}" <<<"$1" && n=$((n + 1)); done; echo "$n"; }

# Neighbour tables warm before anything is counted.
inns s "$BIN" trace "$DST" -P icmp -w 1s -m 8 >/dev/null || true

# Runs a command RUNS times; prints traces with all 3 branches, then min / median / max
# branches and probes.
bench() {
  local label=$1; shift
  local b=() p=()
  for _ in $(seq 1 "$RUNS"); do
    reset_count
    local out
    out=$(inns s "$@" 2>&1 || true)
    [ -n "$SHOW" ] && echo "$out" >&2
    b+=("$(branches "$out")")
    p+=("$(($(count) / PER))")
  done
  local all
  all=$(printf '%s\n' "${b[@]}" | grep -c '^3$' || true)
  stats() { sort -g | awk '{v[NR]=$1} END {m=(NR%2)?v[(NR+1)/2]:(v[NR/2]+v[NR/2+1])/2; printf "%s / %s / %s", v[1], m, v[NR]}'; }
  printf '%-46s %7s %14s %16s\n' "$label" "$all/$RUNS" \
    "$(printf '%s\n' "${b[@]}" | stats)" "$(printf '%s\n' "${p[@]}" | stats)"
}

echo
echo "$RUNS traces each from s to $DST; r1 balances per flow over 3 next hops (hop 2)."
printf '%-46s %7s %14s %16s\n' tool "all 3" "branches" "probes"
printf '%-46s %7s %14s %16s\n' "" "" "min/med/max" "min/med/max"
bench "vantage trace (mda, 3 probes/hop)" "$BIN" trace "$DST" -w 1s -m 10
# One process tracing 10 times, as the daemon does (later traces know the distance; new flows
# start past the last ones): probes per trace.
PER=10
bench "vantage trace -c 10 (per trace; branches: union)" "$BIN" trace "$DST" -c 10 -i 0.2s -w 1s -m 10
PER=1
bench "vantage trace -q 1 (mda, 1 probe/hop)" "$BIN" trace "$DST" -q 1 -w 1s -m 10
bench "vantage trace --discovery flows --flows 4" "$BIN" trace "$DST" --discovery flows --flows 4 -w 1s -m 10
# 150 ms between probes: the least this scamper accepts (default 250 ms).
bench "scamper tracelb (udp-dport, 95 %)" scamper -c "tracelb -w 1 -W 15" -i "$DST"
bench "scamper tracelb -c 99" scamper -c "tracelb -c 99 -w 1 -W 15" -i "$DST"
