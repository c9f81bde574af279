#!/usr/bin/env bash
# TCP and HTTP probe benchmark: Vantage beside blackbox_exporter's tcp and http modules (driven
# by Prometheus, one scrape target per probe target, as blackbox runs in production), against
# one local web server. CPU is user+system time of the prober over the measuring window; RSS is
# read at its end; rounds are counted by each prober (Vantage's rounds counter, Prometheus'
# scrapes of blackbox).
#
# Everything runs inside a network namespace this script creates; nothing leaves it. The web
# server answers on ADDRESSES addresses of 198.18.0.0/15 (routed to the namespace's loopback),
# one per target by default, as targets on as many hosts would be: with one address, every
# connection shares one source and destination address and port, and at 1,000 connections a
# second the TIME_WAIT connections (60 s each, on the prober's side, which closes first) fill the
# 28,000 ephemeral ports, so that the kernel's search for a free port dominates both probers'
# CPU and connects fail for want of a port.
#   scripts/bench-tcp-http.sh                       1,000 TCP targets every 1s, then 1,000 HTTP every 5s
#   TARGETS=200 DURATION=30 scripts/bench-tcp-http.sh
#   ONLY=vantage KINDS=tcp scripts/bench-tcp-http.sh
#   ADDRESSES=1 KINDS=tcp scripts/bench-tcp-http.sh   every target on one address (port exhaustion)
#   BENCH_NO_BUILD=1 ...                            use target/ci/vantage as it is
#   VANTAGE_BIN=path/to/vantage BENCH_NO_BUILD=1 ... another build (one commit against another)
# Needs root, prometheus, prometheus-blackbox-exporter, curl.
set -euo pipefail
cd "$(dirname "$0")/.."

TARGETS=${TARGETS:-1000}
TCP_INTERVAL=${TCP_INTERVAL:-1s}
HTTP_INTERVAL=${HTTP_INTERVAL:-5s}
DURATION=${DURATION:-60}
WARMUP=${WARMUP:-15}
TIMEOUT=${TIMEOUT:-500ms}
KINDS=${KINDS:-tcp http}
ONLY=${ONLY:-}
ADDRESSES=${ADDRESSES:-$TARGETS}

[ "$(id -u)" -eq 0 ] || { echo "bench-tcp-http.sh: run as root (network namespace)" >&2; exit 1; }
for c in prometheus prometheus-blackbox-exporter curl nsenter; do
  command -v "$c" >/dev/null || { echo "bench-tcp-http.sh: $c is missing (scripts/setup.sh)" >&2; exit 1; }
done

ns="vbench-web-$$"
dir=$(mktemp -d /tmp/vantage-bench-web.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  ip netns del "$ns" 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT

if [ "${BENCH_NO_BUILD:-0}" != 1 ]; then
  echo "==> building vantage (profile ci)"
  cargo build --quiet --profile ci -p vantage
fi
bin=${VANTAGE_BIN:-$PWD/target/ci/vantage}

ip netns add "$ns"
ip -n "$ns" link set lo up
ip -n "$ns" route add local 198.18.0.0/15 dev lo
# address I: the web server's address for target I (1-based), ADDRESSES of them in turn.
address() { local a=$((($1 - 1) % ADDRESSES)); echo "198.18.$((a / 250)).$((a % 250 + 1))"; }
# nsenter execs the command itself, so $! of a backgrounded nsenter is the program's own PID
# (not so for a backgrounded shell function: that is a subshell).
netns=(nsenter --net="/run/netns/$ns")
inns() { "${netns[@]}" "$@"; }

# The web server both probers probe: a Go HTTP server from Debian (blackbox_exporter's own
# /-/healthy page), on port 80 of every address of the namespace.
echo "modules: {}" > "$dir/server.yml"
"${netns[@]}" prometheus-blackbox-exporter --config.file "$dir/server.yml" --web.listen-address ":80" \
  --log.level warn 2>"$dir/server.log" &
pids+=($!)
for _ in $(seq 50); do inns curl -sf "http://$(address 1)/-/healthy" >/dev/null && break; sleep 0.1; done
url() { echo "http://$(address "$1")/-/healthy"; }

ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
rss_kib() { awk '/^VmRSS/{print $2}' "/proc/$1/status"; }
hz=$(getconf CLK_TCK)

# measure NAME PID COUNT_CMD [DRIVER_PID]: prints NAME rounds/s cpu% rss; COUNT_CMD prints the
# prober's rounds so far. A driver's CPU (Prometheus scraping blackbox) is printed on its own line.
measure() {
  local name=$1 pid=$2 count=$3 driver=${4:-}
  sleep "$WARMUP"
  local c0 t0 s0 c1 t1 s1 d0=0 d1=0
  c0=$($count); t0=$(ticks "$pid"); [ -z "$driver" ] || d0=$(ticks "$driver"); s0=$(date +%s.%N)
  sleep "$DURATION"
  c1=$($count); t1=$(ticks "$pid"); [ -z "$driver" ] || d1=$(ticks "$driver"); s1=$(date +%s.%N)
  awk -v n="$name" -v c="$(awk -v a="$c0" -v b="$c1" 'BEGIN {print b - a}')" -v t=$((t1 - t0)) -v a="$s0" -v b="$s1" \
    -v hz="$hz" -v rss="$(rss_kib "$pid")" \
    'BEGIN { d = b - a; printf "%-34s %9.0f %8.1f %9.1f\n", n, c / d, 100 * t / hz / d, rss / 1024 }'
  if [ -n "$driver" ]; then
    awk -v t=$((d1 - d0)) -v a="$s0" -v b="$s1" -v hz="$hz" -v rss="$(rss_kib "$driver")" \
      'BEGIN { d = b - a; printf "  (driver: prometheus %.1f %% CPU, %.1f MiB RSS)\n", 100 * t / hz / d, rss / 1024 }'
  fi
}

vantage_rounds() {
  inns curl -s "127.0.0.1:$vport/metrics" | awk -v k="$kind" \
    'index($0, "vantage_probe_rounds_total{probe=\"" k "\"") == 1 {s += $2} END {print s + 0}'
}
blackbox_rounds() {
  inns curl -s 127.0.0.1:19090/metrics | awk '/^prometheus_target_interval_length_seconds_count\{/ {s += $2} END {print s + 0}'
}

run_vantage() { # run_vantage KIND INTERVAL
  local kind=$1 interval=$2 i
  # A port per kind: the previous daemon's may still be closing.
  local vport=19431
  [ "$kind" = tcp ] || vport=19432
  {
    echo "[defaults]"
    echo "interval = \"$interval\""
    echo "[defaults.tcp]"
    echo "port = 80"
    echo "attempts = 1"
    echo "timeout = \"$TIMEOUT\""
    echo "[defaults.http]"
    echo "timeout = \"$TIMEOUT\""
    for i in $(seq 1 "$TARGETS"); do
      printf '[[targets]]\nname = "%s-%04d"\nhost = "%s"\nprobes = ["%s"]\n' "$kind" "$i" "$(address "$i")" "$kind"
      [ "$kind" = tcp ] || printf 'http = { url = "%s" }\n' "$(url "$i")"
    done
  } > "$dir/vantage-$kind.toml"
  "$bin" check-config "$dir/vantage-$kind.toml" | tail -1
  "${netns[@]}" "$bin" --log-level warn run --config "$dir/vantage-$kind.toml" --listen "127.0.0.1:$vport" \
    --data-dir "$dir/vdata-$kind" &
  local vpid=$!
  pids+=($vpid)
  measure "vantage $("$bin" --version | awk '{print $2}') $kind" "$vpid" vantage_rounds
  local ok
  ok=$(inns curl -s "127.0.0.1:$vport/metrics" | awk -v k="$kind" \
    'index($0, "vantage_probe_success{probe=\"" k "\"") == 1 {s += $2; n++} END {printf "%d/%d", s, n}')
  echo "    vantage: targets succeeding at the end: $ok"
  kill "$vpid"; wait "$vpid" 2>/dev/null || true
}

run_blackbox() { # run_blackbox KIND INTERVAL
  local kind=$1 interval=$2 target
  cat > "$dir/blackbox.yml" <<EOF
modules:
  tcp:
    prober: tcp
    timeout: $TIMEOUT
    tcp: { preferred_ip_protocol: ip4, ip_protocol_fallback: false }
  http:
    prober: http
    timeout: $TIMEOUT
    http: { preferred_ip_protocol: ip4, ip_protocol_fallback: false }
EOF
  "${netns[@]}" prometheus-blackbox-exporter --config.file "$dir/blackbox.yml" --web.listen-address 127.0.0.1:19115 \
    --log.level warn 2>"$dir/blackbox.log" &
  local bpid=$!
  pids+=($bpid)
  for i in $(seq 1 "$TARGETS"); do
    if [ "$kind" = tcp ]; then target="$(address "$i"):80"; else target=$(url "$i"); fi
    printf '%s{"targets":["%s"],"labels":{"i":"%d"}}' "$([ "$i" = 1 ] && echo "[" || echo ",")" "$target" "$i"
  done > "$dir/targets.json"
  echo "]" >> "$dir/targets.json"
  cat > "$dir/prometheus.yml" <<EOF
global:
  scrape_interval: $interval
  scrape_timeout: 1s
scrape_configs:
  - job_name: blackbox-$kind
    metrics_path: /probe
    params: { module: [$kind] }
    file_sd_configs: [{ files: ["$dir/targets.json"] }]
    relabel_configs:
      - source_labels: [__address__]
        target_label: __param_target
      - target_label: __address__
        replacement: 127.0.0.1:19115
EOF
  rm -rf "$dir/prom"
  "${netns[@]}" prometheus --config.file "$dir/prometheus.yml" --storage.tsdb.path "$dir/prom" \
    --web.listen-address 127.0.0.1:19090 --log.level warn 2>"$dir/prometheus.log" &
  local ppid_=$!
  pids+=($ppid_)
  measure "blackbox_exporter $(prometheus-blackbox-exporter --version 2>&1 | awk 'NR == 1 {print $3}') $kind" \
    "$bpid" blackbox_rounds "$ppid_"
  local ok
  # A Prometheus too busy to answer leaves "?" (grep finding nothing must not end the run).
  ok=$(inns curl -s --max-time 20 '127.0.0.1:19090/api/v1/query?query=sum(probe_success)' \
    | { grep -o '"[0-9.e+]*"\]' || true; } | tr -d '"]')
  echo "    blackbox: targets succeeding at the last scrape: ${ok:-?}/$TARGETS"
  kill "$ppid_" "$bpid"; wait "$ppid_" "$bpid" 2>/dev/null || true
}

printf "%-34s %9s %8s %9s\n" "prober" "rounds/s" "CPU %" "RSS MiB"
for kind in $KINDS; do
  case $kind in
    tcp) interval=$TCP_INTERVAL ;;
    http) interval=$HTTP_INTERVAL ;;
    *) echo "bench-tcp-http.sh: KINDS takes tcp and http, not $kind" >&2; exit 2 ;;
  esac
  echo "==> $TARGETS $kind targets every $interval; ${WARMUP}s warm-up, ${DURATION}s window"
  [ "$ONLY" = blackbox ] || run_vantage "$kind" "$interval"
  [ "$ONLY" = vantage ] || run_blackbox "$kind" "$interval"
done
echo "==> $TARGETS targets on $ADDRESSES addresses; $(nproc) cores; $(uname -r); ${VANTAGE_BIN:+vantage from $VANTAGE_BIN, tree at }commit $(git rev-parse --short HEAD); $(date -u +%F); $(uptime | sed 's/.*load/load/')"
