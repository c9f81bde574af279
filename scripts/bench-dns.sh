#!/usr/bin/env bash
# DNS probe benchmark: 1,000 DNS targets against a local unbound, Vantage side by side with
# blackbox_exporter's dns module probing the same server (driven by Prometheus, 1,000 scrape
# targets, as it runs in production). Queries per second are counted by unbound itself; CPU is
# user+system time of the prober process over the measuring window; RSS is read at its end.
#
# Everything runs inside a network namespace this script creates; nothing leaves it.
#   scripts/bench-dns.sh                 1,000 targets every 5s, 60s window
#   TARGETS=1000 INTERVAL=1s DURATION=60 scripts/bench-dns.sh
#   ONLY=vantage INTERVAL=100ms TIMEOUT=50ms scripts/bench-dns.sh   how far Vantage alone goes
# Needs root, unbound, unbound-control, prometheus, prometheus-blackbox-exporter, curl.
set -euo pipefail
cd "$(dirname "$0")/.."

TARGETS=${TARGETS:-1000}
INTERVAL=${INTERVAL:-5s}
DURATION=${DURATION:-60}
WARMUP=${WARMUP:-15}
# Per-query timeout of both probers; must be shorter than INTERVAL.
TIMEOUT=${TIMEOUT:-500ms}
ONLY=${ONLY:-}
SERVER=192.0.2.53

[ "$(id -u)" -eq 0 ] || { echo "bench-dns.sh: run as root (network namespace)" >&2; exit 1; }
for c in unbound unbound-control prometheus prometheus-blackbox-exporter curl; do
  command -v "$c" >/dev/null || { echo "bench-dns.sh: $c is missing (scripts/setup.sh)" >&2; exit 1; }
done

ns="vbench-dns-$$"
dir=$(mktemp -d /tmp/vantage-bench-dns.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  ip netns del "$ns" 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT

echo "==> building vantage (profile ci)"
cargo build --quiet --profile ci -p vantage
bin=$PWD/target/ci/vantage

ip netns add "$ns"
ip -n "$ns" link set lo up
ip -n "$ns" addr add "$SERVER/32" dev lo
# nsenter execs the command itself (ip netns exec forks), so $! of a backgrounded nsenter is the
# prober's own PID.
inns() { nsenter --net="/run/netns/$ns" "$@"; }

cat > "$dir/unbound.conf" <<EOF
server:
    interface: $SERVER@53
    do-daemonize: no
    username: ""
    chroot: ""
    directory: "$dir"
    pidfile: ""
    use-syslog: no
    logfile: ""
    verbosity: 0
    num-threads: 1
    access-control: 0.0.0.0/0 allow
    module-config: "iterator"
    local-zone: "test." nodefault
    local-zone: "bench.test." static
    local-data: "www.bench.test. 300 IN A 192.0.2.10"
remote-control:
    control-enable: yes
    control-use-cert: no
    control-interface: "$dir/unbound.ctl"
EOF
nsenter --net="/run/netns/$ns" unbound -d -c "$dir/unbound.conf" 2>"$dir/unbound.log" &
pids+=($!)
for _ in $(seq 50); do [ -S "$dir/unbound.ctl" ] && break; sleep 0.1; done
queries() { unbound-control -c "$dir/unbound.conf" stats_noreset | awk -F= '/^total.num.queries=/{print $2}'; }

# CPU ticks (user+system) and RSS of a process.
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
rss_kib() { awk '/^VmRSS/{print $2}' "/proc/$1/status"; }
hz=$(getconf CLK_TCK)

# measure NAME PID [DRIVER_PID]: prints NAME qps cpu% rss; the CPU of a driver (Prometheus
# scraping blackbox_exporter) over the same window is printed on its own line.
measure() {
  local name=$1 pid=$2 driver=${3:-}
  sleep "$WARMUP"
  local q0 t0 s0 q1 t1 s1 d0=0 d1=0
  q0=$(queries); t0=$(ticks "$pid"); [ -z "$driver" ] || d0=$(ticks "$driver"); s0=$(date +%s.%N)
  sleep "$DURATION"
  q1=$(queries); t1=$(ticks "$pid"); [ -z "$driver" ] || d1=$(ticks "$driver"); s1=$(date +%s.%N)
  awk -v n="$name" -v q=$((q1 - q0)) -v t=$((t1 - t0)) -v a="$s0" -v b="$s1" -v hz="$hz" -v rss="$(rss_kib "$pid")" \
    'BEGIN { d = b - a; printf "%-26s %10.0f %9.1f %10.1f\n", n, q / d, 100 * t / hz / d, rss / 1024 }' | tee -a "$dir/results"
  if [ -n "$driver" ]; then
    awk -v t=$((d1 - d0)) -v a="$s0" -v b="$s1" -v hz="$hz" -v rss="$(rss_kib "$driver")" \
      'BEGIN { d = b - a; printf "  (driver: prometheus %.1f %% CPU, %.1f MiB RSS)\n", 100 * t / hz / d, rss / 1024 }'
  fi
}

echo "==> $TARGETS targets, one A query each every $INTERVAL; ${WARMUP}s warm-up, ${DURATION}s window"
printf "%-26s %10s %9s %10s\n" "prober" "queries/s" "CPU %" "RSS MiB" | tee "$dir/results"

if [ "$ONLY" != blackbox ]; then
  {
    echo "[defaults]"
    echo "interval = \"$INTERVAL\""
    echo "[defaults.dns]"
    echo "query = \"www.bench.test\""
    echo "timeout = \"$TIMEOUT\""
    echo "answer_contains = [\"192.0.2.10\"]"
    for i in $(seq -w 1 "$TARGETS"); do
      printf '[[targets]]\nname = "dns-%s"\nhost = "%s"\nprobes = ["dns"]\n' "$i" "$SERVER"
    done
  } > "$dir/vantage.toml"
  "$bin" check-config "$dir/vantage.toml" | tail -3
  nsenter --net="/run/netns/$ns" "$bin" --log-level warn run --config "$dir/vantage.toml" --listen 127.0.0.1:19430 --data-dir "$dir/vdata" &
  vpid=$!
  pids+=($vpid)
  measure "vantage $("$bin" --version | awk '{print $2}')" "$vpid"
  ok=$(inns curl -s 127.0.0.1:19430/metrics | awk '/^vantage_probe_success\{probe="dns"/{s+=$2; n++} END {printf "%d/%d", s, n}')
  echo "    vantage: targets succeeding at the end: $ok"
  kill "$vpid"; wait "$vpid" 2>/dev/null || true
fi

if [ "$ONLY" != vantage ]; then
  cat > "$dir/blackbox.yml" <<EOF
modules:
  dns:
    prober: dns
    timeout: $TIMEOUT
    dns:
      query_name: "www.bench.test"
      query_type: "A"
      transport_protocol: udp
      preferred_ip_protocol: ip4
      ip_protocol_fallback: false
      valid_rcodes: [NOERROR]
      validate_answer_rrs:
        fail_if_none_matches_regexp: ["192\\\\.0\\\\.2\\\\.10"]
EOF
  nsenter --net="/run/netns/$ns" prometheus-blackbox-exporter --config.file "$dir/blackbox.yml" --web.listen-address 127.0.0.1:19115 \
    --log.level warn 2>"$dir/blackbox.log" &
  bpid=$!
  pids+=($bpid)
  # One scrape target per DNS target, told apart by a label, as 1,000 blackbox targets are.
  awk -v n="$TARGETS" -v s="$SERVER" 'BEGIN { printf "["; for (i = 1; i <= n; i++) printf "%s{\"targets\":[\"%s\"],\"labels\":{\"i\":\"%d\"}}", (i > 1 ? "," : ""), s, i; print "]" }' \
    > "$dir/targets.json"
  cat > "$dir/prometheus.yml" <<EOF
global:
  scrape_interval: $INTERVAL
  scrape_timeout: 1s
scrape_configs:
  - job_name: blackbox-dns
    metrics_path: /probe
    params: { module: [dns] }
    file_sd_configs: [{ files: ["$dir/targets.json"] }]
    relabel_configs:
      - source_labels: [__address__]
        target_label: __param_target
      - target_label: __address__
        replacement: 127.0.0.1:19115
EOF
  nsenter --net="/run/netns/$ns" prometheus --config.file "$dir/prometheus.yml" --storage.tsdb.path "$dir/prom" \
    --web.listen-address 127.0.0.1:19090 --log.level warn 2>"$dir/prometheus.log" &
  ppid_=$!
  pids+=($ppid_)
  measure "blackbox_exporter $(prometheus-blackbox-exporter --version 2>&1 | awk 'NR == 1 {print $3}')" "$bpid" "$ppid_"
  ok=$(inns curl -s '127.0.0.1:19090/api/v1/query?query=sum(probe_success)' | grep -o '"[0-9.e+]*"\]' | tr -d '"]')
  echo "    blackbox: targets succeeding at the last scrape: ${ok:-?}/$TARGETS"
fi
echo "==> $(nproc) cores; $(uname -r)"
