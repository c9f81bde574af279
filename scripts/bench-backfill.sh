#!/usr/bin/env bash
# Backfill after an uplink outage: a device probing 100 targets at 1 s kept an hour of rounds
# while its remote_write endpoint was unreachable; then the link comes back. Prints the time
# from the link's return until the backlog is shipped and until the central Prometheus holds
# every round of the hour (what a dashboard over that hour needs), the bytes pushed per round,
# and the daemon's CPU while catching up (it keeps probing its 100 targets meanwhile).
#
#   scripts/bench-backfill.sh [OUTAGE_SECONDS]     default 3600; shorter for a quick look
#   PROFILE=debug scripts/bench-backfill.sh 300    without the ci build (CPU figures then mean little)
#
# The outage is simulated: its rounds (synthetic ping rounds, one packet, as the device stores
# them) are written into the daemon's store by vantage-store-bench before the daemon starts;
# the daemon's endpoint then points at a Prometheus (remote-write receiver, out-of-order window)
# that is up: the link's return. Targets are loopback addresses. Needs root (ICMP), prometheus.
set -euo pipefail
cd "$(dirname "$0")/.."
outage=${1:-3600}
profile=${PROFILE:-ci}
[ "$(id -u)" -eq 0 ] || { echo "bench-backfill.sh: run as root (ICMP)" >&2; exit 1; }
command -v prometheus >/dev/null || { echo "bench-backfill.sh: needs the prometheus package" >&2; exit 1; }

if [ "$profile" = debug ]; then
  cargo build -q -p vantage -p vantage-store --bin vantage --bin vantage-store-bench >&2
  dir=target/debug
else
  cargo build -q --profile "$profile" -p vantage -p vantage-store --bin vantage --bin vantage-store-bench >&2
  dir=target/$profile
fi
work=$(mktemp -d /var/tmp/vantage-bench-backfill.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# The outage's rounds, ending now: 100 targets "target-000".. at 1 s.
hours=$(awk -v s="$outage" 'BEGIN { printf "%.6f", s / 3600 }')
# The bench names the store directory DIR/store, as the daemon does under its data directory.
"$dir/vantage-store-bench" ingest fjall "$work/data" "$hours" >/dev/null
rounds=$((outage * 100))

p_port=$(free_port)
printf 'global: { scrape_interval: 1h }\nstorage: { tsdb: { out_of_order_time_window: 1d } }\n' >"$work/p.yml"
prometheus --config.file="$work/p.yml" --storage.tsdb.path="$work/tsdb" \
  --web.listen-address=127.0.0.1:"$p_port" --web.enable-remote-write-receiver >"$work/prom.log" 2>&1 &
pids+=($!)
prom=http://127.0.0.1:$p_port
for _ in $(seq 100); do curl -sf "$prom/-/ready" >/dev/null && break; sleep 0.2; done

v_port=$(free_port)
{
  echo '[device]'
  echo 'name = "bench"'
  echo '[[remote_write]]'
  echo 'name = "central"'
  echo "url = \"$prom/api/v1/write\""
  for i in $(seq 0 99); do
    printf '[[targets]]\nname = "target-%03d"\nhost = "127.0.0.1"\nprobes = ["ping"]\nlabels = { site = "bench" }\n' "$i"
  done
} >"$work/vantage.toml"
t0=$(date +%s.%N)
"$dir/vantage" run --config "$work/vantage.toml" --listen 127.0.0.1:"$v_port" --data-dir "$work/data" \
  >"$work/vantage.log" 2>&1 &
vpid=$!
pids+=($vpid)
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)
metric() { curl -sf "http://127.0.0.1:$v_port/metrics" | awk -v n="$1" 'index($0, n "{") == 1 && index($0, "endpoint=\"central\"") && v == "" { v = $NF } END { print v }'; }
c0=$(ticks "$vpid")
shipped=
for _ in $(seq 36000); do
  b=$(metric vantage_remote_write_backlog_samples || true)
  sent=$(metric vantage_remote_write_samples_sent_total || true)
  if [ -n "$b" ] && [ "${sent:-0}" -ge "$rounds" ] && [ "$b" -lt 200 ]; then
    shipped=$(date +%s.%N); break
  fi
  sleep 0.1
done
[ -n "$shipped" ] || { echo "backlog not shipped" >&2; tail "$work/vantage.log" >&2; exit 1; }
c1=$(ticks "$vpid")
bytes=$(metric vantage_remote_write_sent_bytes_total)
sent=$(metric vantage_remote_write_samples_sent_total)
rejected=$(metric vantage_remote_write_rejected_samples_total)
# Until Prometheus answers for the whole hour: the last target's rounds of the outage, all there.
want=$outage
visible=
for _ in $(seq 600); do
  n=$(curl -sf --data-urlencode "query=count_over_time(vantage_probe_success{target=\"target-099\",instance=\"bench\"}[$((outage + 120))s])" \
    "$prom/api/v1/query" | python3 -c 'import json,sys; r=json.load(sys.stdin)["data"]["result"]; print(int(float(r[0]["value"][1])) if r else 0)')
  if [ "$n" -ge "$want" ]; then visible=$(date +%s.%N); break; fi
  sleep 0.2
done
[ -n "$visible" ] || { echo "Prometheus never held the whole outage ($n of $want rounds)" >&2; exit 1; }
awk -v t0="$t0" -v ts="$shipped" -v tv="$visible" -v c="$((c1 - c0))" -v hz="$hz" -v by="$bytes" \
  -v s="$sent" -v r="$rounds" -v rej="$rejected" -v o="$outage" -v p="$profile" 'BEGIN {
  printf "outage_s=%d rounds=%d profile=%s shipped_s=%.1f prometheus_complete_s=%.1f bytes_per_round=%.1f cpu_s=%.2f cpu_cores=%.2f sent=%d rejected=%d\n",
    o, r, p, ts - t0, tv - t0, by / s, c / hz, (c / hz) / (ts - t0), s, rej }'
