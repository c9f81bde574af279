#!/usr/bin/env bash
# Soak benchmark: does the daemon's memory or its open files grow under steady use?
#
#   scripts/bench-soak.sh [--targets 1000] [--duration 3600] [--warmup 60] [--interval 1s]
#                         [--csv FILE]
#
# Runs the daemon with --targets ping targets on loopback addresses (127.1.X.Y; Linux answers
# every address of 127.0.0.0/8 on lo) and, for the whole run, steady traffic as a device sees it:
#   /probe      about 2 a second, module=ping, the target varying over 127.2.X.Y
#   page        one login, then GET /api/status every 2 s (the status view polls it every
#               5 s) and one target's /api/history every 10 s
#   /metrics    a scrape every 15 s, as Prometheus would
# After the warm-up (--warmup, 60 s) it reads VmRSS (/proc/PID/status) and the number of open fds
# (/proc/PID/fd) at the start, every 5 minutes and at the end, into a CSV, and prints the
# growth from start to end against the goal (< 5 %), with the share of non-200 answers.
# Every request goes to 127.0.0.1; every loop ends at the run's end time. Needs curl; run as root
# or with unprivileged ICMP allowed (net.ipv4.ping_group_range) so the pings are answered.
set -euo pipefail
cd "$(dirname "$0")/.."

targets=1000
duration=3600
interval=1s
csv=""
warmup=60
sample_every=300
goal_pct=5
while [ $# -gt 0 ]; do
  case "$1" in
    --targets) targets="$2"; shift 2 ;;
    --duration) duration="$2"; shift 2 ;;
    --warmup) warmup="$2"; shift 2 ;;
    --interval) interval="$2"; shift 2 ;;
    --csv) csv="$2"; shift 2 ;;
    -h|--help) sed -n "2,17p" "$0"; exit 0 ;;
    *) echo "bench-soak.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
case "$targets$duration$warmup" in
  *[!0-9]*) echo "bench-soak.sh: --targets, --duration and --warmup take whole numbers" >&2; exit 2 ;;
esac
[ "$targets" -ge 1 ] && [ "$targets" -le 65000 ] \
  || { echo "bench-soak.sh: --targets must be 1..65000" >&2; exit 2; }
command -v curl >/dev/null || { echo "bench-soak.sh: missing curl" >&2; exit 1; }

profile=${BENCH_PROFILE:-ci}
[ "${BENCH_NO_BUILD:-0}" = 1 ] || cargo build -q --profile "$profile" -p vantage
vantage=$PWD/target/$profile/vantage

work=$(mktemp -d /tmp/vantage-soak.XXXXXX)
[ -n "$csv" ] || csv=$work/soak.csv
port=$((20000 + RANDOM % 20000))
url="http://127.0.0.1:$port"
jar=$work/cookies
pids=()

# Stops the daemon and the traffic loops; keeps the work directory with BENCH_KEEP=1.
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ "${BENCH_KEEP:-0}" = 1 ]; then echo "kept $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT INT TERM

# The Nth address of 127.P.0.0/16, N from 1 (127.P.0.0 and .255 endings are skipped).
addr() { local p=$1 n=$2; echo "127.$p.$(( (n - 1) / 254 )).$(( (n - 1) % 254 + 1 ))"; }

# The config: one ping target per loopback address, every target every $interval.
write_config() {
  {
    printf '[defaults]\ninterval = "%s"\n' "$interval"
    for i in $(seq "$targets"); do
      printf '[[targets]]\nname = "t%05d"\nhost = "%s"\nprobes = ["ping"]\n' "$i" "$(addr 1 "$i")"
    done
  } >"$work/soak.toml"
}

# Starts the daemon on loopback; sets daemon_pid and waits until it answers.
start_daemon() {
  "$vantage" run --config "$work/soak.toml" --listen "127.0.0.1:$port" \
    --data-dir "$work/data" --log-level warn >"$work/daemon.log" 2>&1 &
  daemon_pid=$!
  pids+=("$daemon_pid")
  for _ in $(seq 300); do
    curl -fs -o /dev/null --max-time 2 "$url/-/healthy" && return 0
    kill -0 "$daemon_pid" 2>/dev/null || break
    sleep 0.2
  done
  echo "bench-soak.sh: the daemon did not come up; its log:" >&2
  cat "$work/daemon.log" >&2
  exit 1
}

# Sets the admin password and logs in once; the session cookie goes to $jar.
log_in() {
  local pw='soak benchmark password'
  curl -fs -o /dev/null -H 'Content-Type: application/json' \
    -d "{\"password\":\"$pw\"}" "$url/api/auth/setup"
  curl -fs -o /dev/null -c "$jar" -H 'Content-Type: application/json' \
    -d "{\"password\":\"$pw\"}" "$url/api/auth/login"
}

# One GET; appends its HTTP status to $work/codes.NAME ("000" if it failed outright).
get() {
  local name=$1; shift
  curl -s -o /dev/null --max-time 30 -w '%{http_code}\n' "$@" >>"$work/codes.$name" || true
}

# Runs "$@" every $1 seconds until $end (the run's end time), in the background.
every() {
  local period=$1; shift
  (
    while [ "$(date +%s)" -lt "$end" ]; do
      "$@"
      sleep "$period"
    done
  ) &
  pids+=($!)
}

probe_once() {
  local n=$(( RANDOM % targets + 1 ))
  get probe "$url/probe?module=ping&target=$(addr 2 "$n")"
}
page_status() { get status -b "$jar" "$url/api/status"; }
page_history() { get history -b "$jar" "$url/api/history?target=t00001&probe=ping"; }
scrape() { get metrics "$url/metrics"; }

# The traffic, until $end.
start_traffic() {
  every 0.5 probe_once
  every 2 page_status
  every 10 page_history
  every 15 scrape
}

# Appends "seconds,rss_kib,fds" for the daemon to the CSV and sets rss and fds.
sample() {
  rss=$(awk '/^VmRSS/ { print $2 }' "/proc/$daemon_pid/status")
  fds=$(find "/proc/$daemon_pid/fd" -mindepth 1 -maxdepth 1 | wc -l)
  echo "$(( $(date +%s) - t0 )),$rss,$fds" >>"$csv"
}

# Samples every $sample_every seconds until $end; sets rss0/fds0 (start) and rss/fds (end).
measure() {
  t0=$(date +%s)
  echo "seconds,rss_kib,fds" >"$csv"
  sample
  rss0=$rss fds0=$fds
  local next=$(( t0 + sample_every ))
  while [ "$(date +%s)" -lt "$end" ]; do
    kill -0 "$daemon_pid" 2>/dev/null || { echo "bench-soak.sh: the daemon died" >&2; exit 1; }
    local now left
    now=$(date +%s)
    left=$(( (next < end ? next : end) - now ))
    [ "$left" -le 0 ] || sleep "$left"
    if [ "$(date +%s)" -ge "$next" ] && [ "$(date +%s)" -lt "$end" ]; then
      sample; next=$(( next + sample_every ))
    fi
  done
  sample
}

# "N requests, M not 200" for one kind of traffic.
tally() {
  local f=$work/codes.$1
  [ -f "$f" ] || { echo "0 requests"; return; }
  awk '{ n++; if ($1 != "200") bad++ } END { printf "%d requests, %d not 200\n", n, bad }' "$f"
}

# Growth from a to b in per cent.
pct() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%+.1f", (b - a) * 100 / a }'; }

report() {
  echo "soak: $targets ping targets every $interval, ${duration}s after ${warmup}s warm-up, $(nproc) CPUs"
  echo "load at the end: $(uptime | sed 's/.*load average/load average/')"
  printf '%-8s %12s %12s %9s\n' "" start end growth
  printf '%-8s %12s %12s %8s%%\n' "RSS KiB" "$rss0" "$rss" "$(pct "$rss0" "$rss")"
  printf '%-8s %12s %12s %8s%%\n' "fds" "$fds0" "$fds" "$(pct "$fds0" "$fds")"
  echo "goal: growth < ${goal_pct} % for both"
  for k in probe status history metrics; do printf '  %-8s %s\n' "$k" "$(tally "$k")"; done
  echo "samples ($csv):"
  cat "$csv"
}

write_config
start_daemon
log_in
end=$(( $(date +%s) + warmup + duration ))
start_traffic
sleep "$warmup"
measure
report
