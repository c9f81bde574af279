#!/usr/bin/env bash
# Multipath trace benchmark (run as root): namespace labs where routers balance per flow
# (layer-4 hashing), and, for each tool, RUNS traces from s: the branches found and the probes
# sent to d (an nft counter on s). Vantage (MDA-Lite, default options) beside `scamper tracelb`
# (MDA, 95 % confidence).
#
#   diamond: s - r1 - {r2a, r2b, r2c} - r3 - d        r1 splits 3 ways (3 branches, hop 2)
#   nested:  s - r1 - {r2a, r2b}; r2a - {r3a, r3b, r3c}, r2b - {r3d, r3e, r3f}; r3* - r4 - d
#            a 2-way split whose branches each split 3 ways (6 branches at hop 3)
#
# With MODE=perpacket, r1 of the diamond balances per packet (nft numgen and fwmark routing
# tables) and `vantage run` traces d for DURATION seconds with the daemon's defaults; the
# figure is vantage_trace_path_changes_total at the end (the goal is 0).
#
#   scripts/bench-trace-mda.sh                      # both topologies
#   TOPO=nested RUNS=20 TTLS=1 scripts/bench-trace-mda.sh   # TTLS=1: probes per TTL, per run
#   MODE=perpacket DURATION=1800 INTERVAL=5s scripts/bench-trace-mda.sh
#   BENCH_NO_BUILD=1 ...                            # use the built target/ci/vantage as is
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
  echo "bench-trace-mda.sh: run as root (it builds network namespaces)" >&2
  exit 1
fi
for tool in scamper ip nft curl; do
  command -v "$tool" >/dev/null || { echo "bench-trace-mda.sh: $tool is missing (scripts/setup.sh installs it)" >&2; exit 1; }
done

RUNS=${RUNS:-10}
TOPO=${TOPO:-both}
MODE=${MODE:-discovery}
DURATION=${DURATION:-300}
PER=1
SHOW=${SHOW:-}
case $TOPO in diamond | nested | both) ;; *) echo "bench-trace-mda.sh: TOPO must be diamond, nested or both, not '$TOPO'" >&2; exit 1 ;; esac
case $MODE in discovery | perpacket) ;; *) echo "bench-trace-mda.sh: MODE must be discovery or perpacket, not '$MODE'" >&2; exit 1 ;; esac

if [ -z "${BENCH_NO_BUILD:-}" ]; then
  echo "==> building (profile ci)"
  cargo build -q --profile ci -p vantage
fi
BIN=${CARGO_TARGET_DIR:-$PWD/target}/ci/vantage

P=vtm$$
NODES=()
cleanup() {
  if [ -n "${DAEMON:-}" ]; then kill "$DAEMON" 2>/dev/null || true; fi
  for n in "${NODES[@]}"; do ip netns del "$P-$n" 2>/dev/null || true; done
  if [ -n "${WORK:-}" ]; then rm -rf "$WORK"; fi
}
trap cleanup EXIT
ns() { echo "$P-$1"; }
inns() { local n=$1; shift; ip netns exec "$(ns "$n")" "$@"; }

# Builds the nodes and the links "a:b ..." (link i: 10.220.i.1 on a, 10.220.i.2 on b); every
# node but s and d forwards and answers from the interface a probe came in on; each router
# hashes with a seed of its own (no polarisation between balancers in sequence).
build() {
  local links=$1 i=0 seed=1
  for n in "${NODES[@]}"; do
    ip netns add "$(ns "$n")"
    ip -n "$(ns "$n")" link set lo up
    inns "$n" sysctl -qw net.ipv4.icmp_ratelimit=0 net.ipv4.icmp_msgs_per_sec=100000 \
      net.ipv4.icmp_msgs_burst=100000
  done
  for pair in $links; do
    local a=${pair%:*} b=${pair#*:}
    ip link add "m${i}a" netns "$(ns "$a")" type veth peer name "m${i}b" netns "$(ns "$b")"
    ip -n "$(ns "$a")" addr add "10.220.$i.1/24" dev "m${i}a"
    ip -n "$(ns "$b")" addr add "10.220.$i.2/24" dev "m${i}b"
    ip -n "$(ns "$a")" link set "m${i}a" up
    ip -n "$(ns "$b")" link set "m${i}b" up
    i=$((i + 1))
  done
  for n in "${NODES[@]}"; do
    case $n in s | d) continue ;; esac
    inns "$n" sysctl -qw net.ipv4.ip_forward=1 net.ipv4.icmp_errors_use_inbound_ifaddr=1 \
      net.ipv4.fib_multipath_hash_policy=1 net.ipv4.fib_multipath_hash_seed=$((seed * 7919 + RANDOM))
    seed=$((seed + 1))
  done
}

lab_diamond() {
  echo "==> lab $P: s - r1 - {r2a, r2b, r2c} - r3 - d"
  NODES=(s r1 r2a r2b r2c r3 d)
  build "s:r1 r1:r2a r1:r2b r1:r2c r2a:r3 r2b:r3 r2c:r3 r3:d"
  DST=10.220.7.2
  ip -n "$(ns s)" route add default via 10.220.0.2
  ip -n "$(ns d)" route add default via 10.220.7.1
  ip -n "$(ns r1)" route add 10.220.7.0/24 nexthop via 10.220.1.2 nexthop via 10.220.2.2 nexthop via 10.220.3.2
  for k in 1 2 3; do
    r=${NODES[$((k + 1))]}
    ip -n "$(ns "$r")" route add default via "10.220.$k.1"
    ip -n "$(ns "$r")" route add 10.220.7.0/24 via "10.220.$((k + 3)).2"
  done
  ip -n "$(ns r3)" route add default via 10.220.4.1
  BRANCHES="10.220.1.2 10.220.2.2 10.220.3.2"
  WIDTH=3
  HOPS=4
}

lab_nested() {
  echo "==> lab $P: s - r1 - {r2a, r2b}; r2a - {r3a, r3b, r3c}; r2b - {r3d, r3e, r3f}; r3* - r4 - d"
  NODES=(s r1 r2a r2b r3a r3b r3c r3d r3e r3f r4 d)
  # Links 0 s-r1, 1-2 r1-r2x, 3-8 r2x-r3x, 9-14 r3x-r4, 15 r4-d.
  build "s:r1 r1:r2a r1:r2b r2a:r3a r2a:r3b r2a:r3c r2b:r3d r2b:r3e r2b:r3f \
    r3a:r4 r3b:r4 r3c:r4 r3d:r4 r3e:r4 r3f:r4 r4:d"
  DST=10.220.15.2
  ip -n "$(ns s)" route add default via 10.220.0.2
  ip -n "$(ns d)" route add default via 10.220.15.1
  ip -n "$(ns r1)" route add 10.220.15.0/24 nexthop via 10.220.1.2 nexthop via 10.220.2.2
  ip -n "$(ns r2a)" route add default via 10.220.1.1
  ip -n "$(ns r2b)" route add default via 10.220.2.1
  ip -n "$(ns r2a)" route add 10.220.15.0/24 nexthop via 10.220.3.2 nexthop via 10.220.4.2 nexthop via 10.220.5.2
  ip -n "$(ns r2b)" route add 10.220.15.0/24 nexthop via 10.220.6.2 nexthop via 10.220.7.2 nexthop via 10.220.8.2
  local j=3
  for r in r3a r3b r3c r3d r3e r3f; do
    ip -n "$(ns "$r")" route add default via "10.220.$j.1"
    ip -n "$(ns "$r")" route add 10.220.15.0/24 via "10.220.$((j + 6)).2"
    j=$((j + 1))
  done
  ip -n "$(ns r4)" route add default via 10.220.9.1
  BRANCHES="10.220.3.2 10.220.4.2 10.220.5.2 10.220.6.2 10.220.7.2 10.220.8.2"
  WIDTH=6
  HOPS=5
}

# An nft counter on s for every packet to d, and one per TTL (TTLS=1 prints them per run).
reset_count() {
  local rules="add table inet cnt; delete table inet cnt; add table inet cnt; add chain inet cnt out { type filter hook output priority 0; }; add rule inet cnt out ip daddr $DST counter"
  for t in $(seq 1 10); do rules="$rules; add rule inet cnt out ip daddr $DST ip ttl $t counter"; done
  inns s nft "$rules"
}
count() { inns s nft list table inet cnt | awk '/packets/ {for (i = 1; i < NF; i++) if ($i == "packets") {print $(i + 1); exit}}'; }
per_ttl() {
  inns s nft list table inet cnt | awk '/ip ttl/ {for (i = 1; i < NF; i++) {if ($i == "ttl") t = $(i + 1); if ($i == "packets" && $(i + 1) > 0) printf "%s:%s ", t, $(i + 1)}} END {print ""}'
}
branches() { local n=0; for b in $BRANCHES; do grep -qw "${b//./\\.}" <<<"$1" && n=$((n + 1)); done; echo "$n"; }
teardown() {
  for n in "${NODES[@]}"; do ip netns del "$P-$n" 2>/dev/null || true; done
  NODES=()
}

# Runs a command RUNS times; prints traces with every branch, then min / median / max
# branches and probes.
bench() {
  local label=$1; shift
  local b=() p=()
  for _ in $(seq 1 "$RUNS"); do
    reset_count
    local out
    out=$(inns s "$@" 2>&1 || true)
    [ -n "$SHOW" ] && echo "$out" >&2
    [ -n "${TTLS:-}" ] && echo "  probes per TTL: $(per_ttl)" >&2
    b+=("$(branches "$out")")
    p+=("$(($(count) / PER))")
  done
  local all
  all=$(printf '%s\n' "${b[@]}" | grep -c "^$WIDTH\$" || true)
  stats() { sort -g | awk '{v[NR]=$1} END {m=(NR%2)?v[(NR+1)/2]:(v[NR/2]+v[NR/2+1])/2; printf "%s / %s / %s", v[1], m, v[NR]}'; }
  printf '%-46s %7s %14s %16s\n' "$label" "$all/$RUNS" \
    "$(printf '%s\n' "${b[@]}" | stats)" "$(printf '%s\n' "${p[@]}" | stats)"
}

discovery() {
  # Neighbour tables warm before anything is counted.
  inns s "$BIN" trace "$DST" -P icmp -w 1s -m 8 >/dev/null || true
  echo
  echo "$RUNS traces each from s to $DST: $WIDTH branches (hop $((HOPS - 2)) of $HOPS)."
  printf '%-46s %7s %14s %16s\n' tool "all $WIDTH" "branches" "probes"
  printf '%-46s %7s %14s %16s\n' "" "" "min/med/max" "min/med/max"
  bench "vantage trace (mda, 3 probes/hop)" "$BIN" trace "$DST" -w 1s -m 10
  # One process tracing 10 times, as the daemon does (later traces know the distance; new
  # flows start past the last ones): probes per trace.
  PER=10
  bench "vantage trace -c 10 (per trace; branches: union)" "$BIN" trace "$DST" -c 10 -i 0.2s -w 1s -m 10
  PER=1
  bench "vantage trace -q 1 (mda, 1 probe/hop)" "$BIN" trace "$DST" -q 1 -w 1s -m 10
  bench "vantage trace --discovery flows --flows 4" "$BIN" trace "$DST" --discovery flows --flows 4 -w 1s -m 10
  # 150 ms between probes: the least this scamper accepts (default 250 ms).
  bench "scamper tracelb (udp-dport, 95 %)" scamper -c "tracelb -w 1 -W 15" -i "$DST"
  bench "scamper tracelb -c 99" scamper -c "tracelb -c 99 -w 1 -W 15" -i "$DST"
}

# r1 of the diamond picks a next hop per packet: a random mark, one routing table per mark.
per_packet() {
  ip -n "$(ns r1)" route del 10.220.7.0/24
  for k in 1 2 3; do
    ip -n "$(ns r1)" route add 10.220.7.0/24 via "10.220.$k.2" table $((100 + k))
    ip -n "$(ns r1)" rule add fwmark "$k" table $((100 + k))
  done
  inns r1 nft "add table ip pp; add chain ip pp pre { type filter hook prerouting priority mangle; }; \
    add rule ip pp pre ip daddr 10.220.7.0/24 meta mark set numgen random mod 3 offset 1"
  WORK=$(mktemp -d)
  cat >"$WORK/vantage.toml" <<CONF
[defaults]
interval = "${INTERVAL:-5s}"

[[targets]]
name = "q3"
host = "$DST"
probes = ["trace"]

[[targets]]
name = "q1"
host = "$DST"
probes = ["trace"]
trace = { probes_per_hop = 1 }
CONF
  inns s "$BIN" run --config "$WORK/vantage.toml" --listen 127.0.0.1:9432 --data-dir "$WORK" \
    >"$WORK/log" 2>&1 &
  DAEMON=$!
  echo "==> r1 balances per packet; vantage run traces $DST every ${INTERVAL:-5s} for ${DURATION} s (targets q3: defaults, q1: 1 probe per hop)"
  sleep "$DURATION"
  local m
  m=$(inns s curl -sf http://127.0.0.1:9432/metrics)
  for t in q3 q1; do
    printf '%s: path changes %s, traces %s, paths %s, balancing at hop 2: %s\n' "$t" \
      "$(awk -v s="vantage_trace_path_changes_total{target=\"$t\"}" '$1 == s {print $2}' <<<"$m")" \
      "$(grep -E "^vantage_probe_rounds_total\{[^}]*target=\"$t\"[^}]*\}" <<<"$m" | awk '{n += $2} END {print n + 0}')" \
      "$(awk -v s="vantage_trace_paths{target=\"$t\"}" '$1 == s {print $2}' <<<"$m")" \
      "$(grep -E "^vantage_trace_hop_balancing\{[^}]*hop=\"2\"[^}]*target=\"$t\"" <<<"$m" | grep -o 'kind="[a-z_]*"' || echo none)"
  done
}

if [ "$MODE" = perpacket ]; then
  lab_diamond
  per_packet
  exit 0
fi
for topo in diamond nested; do
  [ "$TOPO" = both ] || [ "$TOPO" = "$topo" ] || continue
  "lab_$topo"
  discovery
  teardown
done
