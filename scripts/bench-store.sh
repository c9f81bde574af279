#!/usr/bin/env bash
# Store benchmark: fjall and sled side by side.
#   - ingest: samples/s (raw, default group commit);
#   - wear: a simulated day of a device probing 100 targets at 1 s with a commit every 5 s:
#     bytes on disk per sample, bytes written per sample (this process's write_bytes from
#     /proc/self/io, i.e. what reached the block layer, syncs and engine rewrites included),
#     bytes the store handed to the engine per sample;
#   - drain: time to ship a 1 h backlog of 100 targets at 1 s (360,000 rounds) into a local
#     Prometheus with the remote-write receiver, at the default rate limit and unlimited;
#   - per probe kind (fjall): the same wear figures for ping, DNS and 12-hop trace rounds.
#   scripts/bench-store.sh [HOURS_OF_WEAR]      (default 24)
set -euo pipefail
cd "$(dirname "$0")/.."
hours=${1:-24}
command -v prometheus >/dev/null || { echo "bench-store: needs the prometheus package" >&2; exit 1; }

cargo build --profile ci -p vantage-store --features sled --bin vantage-store-bench >&2
bin=target/ci/vantage-store-bench
work=$(mktemp -d /var/tmp/vantage-bench.XXXXXX)
prom_pid=
cleanup() { [ -n "$prom_pid" ] && kill "$prom_pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

start_prometheus() {
  local d=$1 port=$2
  mkdir -p "$d"
  printf 'global:\n  scrape_interval: 1h\nstorage:\n  tsdb:\n    out_of_order_time_window: 24h\n' >"$d/p.yml"
  prometheus --config.file="$d/p.yml" --storage.tsdb.path="$d/tsdb" \
    --web.listen-address=127.0.0.1:"$port" --web.enable-remote-write-receiver >"$d/log" 2>&1 &
  prom_pid=$!
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/-/ready" >/dev/null && return; sleep 0.2; done
  echo "prometheus did not start" >&2; cat "$d/log" >&2; exit 1
}
stop_prometheus() { kill "$prom_pid"; wait "$prom_pid" 2>/dev/null || true; prom_pid=; }

field() { tr ' ' '\n' <<<"$1" | sed -n "s/^$2=//p"; }

fjall_ing=
printf '%-6s | %12s | %10s | %13s | %14s | %12s | %14s | %14s\n' \
  backend "ingest/s" "disk B/s." "written B/s." "committed B/s." "block B/s." "drain 1h (s)" "unlimited (s)"
for backend in fjall sled; do
  ing=$("$bin" ingest "$backend" "$work/$backend-wear" "$hours")
  rm -rf "$work/$backend-wear"
  [ "$backend" = fjall ] && fjall_ing=$ing
  "$bin" ingest "$backend" "$work/$backend-1h" 1 >/dev/null
  cp -a "$work/$backend-1h" "$work/$backend-1h-copy"
  port=$((20000 + RANDOM % 20000))
  start_prometheus "$work/prom-$backend" "$port"
  drain=$("$bin" drain "$backend" "$work/$backend-1h" "http://127.0.0.1:$port/api/v1/write" 10000)
  stop_prometheus
  start_prometheus "$work/prom-$backend-unlimited" "$port"
  fast=$("$bin" drain "$backend" "$work/$backend-1h-copy" "http://127.0.0.1:$port/api/v1/write" 0)
  stop_prometheus
  rm -rf "$work/$backend-1h" "$work/$backend-1h-copy" "$work"/prom-*
  echo "# $ing" >&2
  echo "# $drain" >&2
  echo "# $fast" >&2
  printf '%-6s | %12s | %10s | %13s | %14s | %12s | %14s | %14s\n' "$backend" \
    "$(field "$ing" raw_ingest_per_s)" "$(field "$ing" disk_per_sample)" \
    "$(field "$ing" written_per_sample)" "$(field "$ing" committed_per_sample)" \
    "$(field "$ing" block_bytes_per_sample)" "$(field "$drain" drain_s)" "$(field "$fast" drain_s)"
done
echo "(wear over $hours simulated hours of 100 targets at 1 s, one commit per 5 s of samples; drain of 360,000 rounds = 3.6M series points)"

# Bytes per round by probe kind: a DNS round and a trace round keep their own figures.
echo
printf '%-6s | %10s | %13s | %14s | %12s | %12s\n' \
  probe "disk B/r." "written B/r." "committed B/r." "block B/r." "ingest/s"
for kind in ping dns trace; do
  if [ "$kind" = ping ]; then
    ing=$fjall_ing
  else
    ing=$("$bin" ingest fjall "$work/kind-$kind" "$hours" "$kind")
    rm -rf "$work/kind-$kind"
    echo "# $ing" >&2
  fi
  printf '%-6s | %10s | %13s | %14s | %12s | %12s\n' "$kind" \
    "$(field "$ing" disk_per_sample)" "$(field "$ing" written_per_sample)" \
    "$(field "$ing" committed_per_sample)" "$(field "$ing" block_bytes_per_sample)" \
    "$(field "$ing" raw_ingest_per_s)"
done
echo "(fjall; every round of the run is of that probe: ping one packet, DNS an answered UDP query, trace 12 hops of 3 probes with one silent)"
