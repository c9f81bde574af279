#!/usr/bin/env bash
# A target page's cost: 30 days of one target pinged every second (2.59 M rounds), generated
# into a store, then
#   - the store alone (vantage-store-bench range): time of each range query through the
#     per-minute aggregates, cold (just opened) and warm, blocks read, and reading the same
#     30 days of rounds from the blocks for comparison;
#   - the daemon on that store: time and bytes of GET /api/targets/bench/history for each
#     range (curl's time_total and size_download; no compression), logged in as the page is;
#   - the page in headless Chromium (scripts/e2e/chart-timing.mjs, when chromium, chromedriver
#     and node are installed): per range, from the navigation's start to the chart laid out,
#     and the bytes of the page, its JS and CSS, and its API answers.
#
#   scripts/bench-target-range.sh [DAYS]          default 30
#   PROFILE=debug scripts/bench-target-range.sh   without the ci build (times are then upper bounds)
#   BENCH_NO_BUILD=1 scripts/bench-target-range.sh   with the binaries already built
#
# The daemon listens on 127.0.0.1 and pings 127.0.0.1 only. Needs root (ICMP).
set -euo pipefail
cd "$(dirname "$0")/.."
days=${1:-30}
profile=${PROFILE:-ci}
[ "$(id -u)" -eq 0 ] || { echo "bench-target-range.sh: run as root (ICMP)" >&2; exit 1; }
dir=target/$profile
if [ "${BENCH_NO_BUILD:-0}" != 1 ]; then
  if [ "$profile" = debug ]; then
    cargo build -q -p vantage -p vantage-store --bin vantage --bin vantage-store-bench >&2
  else
    cargo build -q --profile "$profile" -p vantage -p vantage-store --bin vantage --bin vantage-store-bench >&2
  fi
fi
work=$(mktemp -d /var/tmp/vantage-bench-range.XXXXXX)
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

"$dir/vantage-store-bench" range fjall "$work" "$days"

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat >"$work/vantage.toml" <<TOML
[[targets]]
name = "bench"
host = "127.0.0.1"
probes = ["ping"]
TOML
"$dir/vantage" run --config "$work/vantage.toml" --data-dir "$work" --listen "127.0.0.1:$port" >"$work/log" 2>&1 &
pid=$!
url=http://127.0.0.1:$port
for _ in $(seq 1 300); do curl -fs -o /dev/null "$url/-/healthy" && break; sleep 0.1; done
password='bench password, long enough'
curl -fs -c "$work/jar" -H 'Content-Type: application/json' \
  -d "{\"password\":\"$password\"}" "$url/api/auth/setup" >/dev/null
for range in 1h 24h 7d 30d; do
  for pass in first second; do
    curl -fs -b "$work/jar" -o "$work/body.json" \
      -w "range=$range pass=$pass time_total_ms=%{time_total} bytes=%{size_download}\n" \
      "$url/api/targets/bench/history?probe=ping&range=$range" |
      awk '{ for (i = 1; i <= NF; i++) if ($i ~ /^time_total_ms=/) { split($i, a, "="); $i = sprintf("time_total_ms=%.1f", a[2] * 1000) } print }'
  done
  python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); s=d["summary"]; print("  points=%d rounds=%d median_ms=%s loss=%s" % (len(d["points"]), s["rounds"], s["median_ms"], s["loss"]))' "$work/body.json"
done
if command -v chromium >/dev/null && command -v chromedriver >/dev/null && command -v node >/dev/null; then
  echo "the page in headless Chromium (ms from the navigation's start; bytes as sent):"
  node scripts/e2e/chart-timing.mjs --url "$url" --password "$password" --target bench
else
  echo "the page: not timed (chromium, chromedriver or node is missing)"
fi
