#!/usr/bin/env bash
# Ping benchmark: Vantage beside prometheus-smokeping-prober and fping, on the same targets.
#
#   scripts/bench-ping.sh [--sizes "100 1000 5000 10000"] [--duration 60] [--delay-ms 10]
#                         [--tools "vantage smokeping fping"] [--scrape-every 15] [--nice -10]
#                         [--budget [--inflated-us 1000]]
#   --delay-ms 0 runs without the delay holder (the truth is then the bare veth RTT, ~50 µs).
#   --budget runs each tool twice: without limits, then (as TOOL@budget) inside a cgroup held to
#             a quarter of a CPU and 128 MB, a Raspberry Pi's share. Vantage's rows then add
#             its stored rounds' check: how many rounds' RTT was inflated (more than
#             --inflated-us, default 1000, above the truth) and how many of those the daemon
#             did not flag (late, cpu or memory); each round is in the work directory's
#             vantage-N*.rounds (kept with BENCH_KEEP=1).
#
# Needs root. Builds two network namespaces joined by a veth pair; the server namespace answers
# every address of 198.18.0.0/15 (the benchmarking range, routed to its loopback as local), and
# an NFQUEUE holder (nfq-delay) there holds every echo request for --delay-ms, the truth the RTT
# errors are measured against. Each tool then pings the first N addresses once a second for
# --duration seconds, alone on the machine, one after the other. Reported per tool and size:
#   cpu_s     user+system CPU seconds spent in the --duration window, which opens once the
#             tool is up (smokeping_prober starts its pingers 10 ms apart: 100 s for 10,000)
#   rss_mb    peak resident memory (VmHWM) at the end of the window
#   loss      share of echo requests without a reply
#   err_p50/err_p99   RTT minus the delay, in microseconds. Vantage: every target's last-round
#             RTT gauge, read every --scrape-every seconds. smokeping_prober: its RTT histogram,
#             given 25 µs buckets around the delay. fping: its per-packet output (which has
#             0.1 ms resolution at 10 ms).
#   lag_p99   Vantage's p99 scheduler lag, from vantage_scheduler_lag_seconds.
# After each row, a "holder:" line: the delay holder's own error over that window, how late
# after their due time it released the requests (p50, p99, max), which bounds how close to the
# truth any pinger can come; each hold starts at the kernel's receive stamp of the request.
# After each daemon's row, a "scrapes:" line (the median and slowest /metrics scrape of the
# window and the size of the last one) and a "CPU stall:" line (the share of the window during
# which some task waited for a CPU: PSI of the whole system, and of the budget cgroup); after
# Vantage's, a "rounds:" line: rounds run in the window and those flagged, by reason
# (vantage_probe_rounds_total, vantage_rounds_flagged_total).
# The daemons are scraped every --scrape-every seconds, as Prometheus would; that cost is in
# their CPU figures. Every tool runs at the same --nice level (default -10) so that unrelated
# work on a shared machine disturbs the figures less; the delay holder runs at a real-time
# priority, being the reference.
set -euo pipefail
cd "$(dirname "$0")/.."

sizes="100 1000 5000 10000"
duration=60
delay_ms=10
tools="vantage smokeping fping"
scrape_every=15
nice=-10
budget=0
inflated_us=1000
holder_pid="" rig=""
while [ $# -gt 0 ]; do
  case "$1" in
    --sizes) sizes="$2"; shift 2 ;;
    --duration) duration="$2"; shift 2 ;;
    --delay-ms) delay_ms="$2"; shift 2 ;;
    --tools) tools="$2"; shift 2 ;;
    --scrape-every) scrape_every="$2"; shift 2 ;;
    --nice) nice="$2"; shift 2 ;;
    --budget) budget=1; shift ;;
    --inflated-us) inflated_us="$2"; shift 2 ;;
    -h|--help) sed -n "2,40p" "$0"; exit 0 ;;
    *) echo "bench-ping.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

if [ "$(id -u)" -ne 0 ]; then
  echo "bench-ping.sh: run as root (it builds network namespaces)" >&2
  exit 1
fi
for t in ip iptables fping prometheus-smokeping-prober curl jq; do
  command -v "$t" >/dev/null || { echo "bench-ping.sh: missing $t (run scripts/setup.sh)" >&2; exit 1; }
done

# Optimised, without the dist profile's slow fat LTO.
profile=${BENCH_PROFILE:-ci}
[ "${BENCH_NO_BUILD:-0}" = 1 ] || cargo build -q --profile "$profile" -p vantage -p vantage-testkit
vantage=$PWD/target/$profile/vantage
nfq_delay=$PWD/target/$profile/nfq-delay

tag=$$
cns=vbench-c-$tag
sns=vbench-s-$tag
work=$(mktemp -d /tmp/vbench.XXXXXX)
pids=()
cgroups=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  for g in "${cgroups[@]}"; do rmdir "$g" 2>/dev/null || true; done
  ip netns del "$cns" 2>/dev/null || true
  ip netns del "$sns" 2>/dev/null || true
  if [ "${BENCH_KEEP:-0}" = 1 ]; then echo "kept $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT INT TERM

ip netns add "$cns"
ip netns add "$sns"
ip -n "$cns" link set lo up
ip -n "$sns" link set lo up
ip -n "$cns" link add veth0 type veth peer name veth0 netns "$sns"
ip -n "$cns" addr add 192.0.2.1/24 dev veth0
ip -n "$sns" addr add 192.0.2.2/24 dev veth0
ip -n "$cns" link set veth0 up
ip -n "$sns" link set veth0 up
ip -n "$cns" neigh replace 192.0.2.2 lladdr "$(ip -n "$sns" -o link show veth0 | awk '{for(i=1;i<NF;i++) if($i=="link/ether") print $(i+1)}')" dev veth0 nud permanent
ip -n "$sns" neigh replace 192.0.2.1 lladdr "$(ip -n "$cns" -o link show veth0 | awk '{for(i=1;i<NF;i++) if($i=="link/ether") print $(i+1)}')" dev veth0 nud permanent
ip -n "$sns" route add local 198.18.0.0/15 dev lo
ip -n "$cns" route add 198.18.0.0/15 via 192.0.2.2
# Unprivileged ICMP sockets for every pinger, as on a device.
ip netns exec "$cns" sh -c 'echo "0 2147483647" > /proc/sys/net/ipv4/ping_group_range'

if [ "$delay_ms" != 0 ]; then
  ip netns exec "$sns" "$nfq_delay" --queue 0 --delay-ms "$delay_ms" >"$work/delay.out" 2>"$work/delay.err" &
  pids+=($!)
  holder_pid=$!
  for _ in $(seq 50); do grep -q ready "$work/delay.out" 2>/dev/null && break; sleep 0.1; done
  grep -q ready "$work/delay.out" || { cat "$work/delay.err" >&2; exit 1; }
  # Requests, not replies: a held reply counts against the kernel ICMP socket's small send buffer.
  ip netns exec "$sns" iptables -w -A INPUT -p icmp --icmp-type echo-request -j NFQUEUE --queue-num 0
fi

# smokeping_prober opens a socket per target.
ulimit -n "$(ulimit -Hn)"

# The Nth address of 198.18.0.0/15, N from 1.
addr() { local n=$1; echo "198.$((18 + n / 65536)).$(((n / 256) % 256)).$((n % 256))"; }
delay_s=$(awk -v d="$delay_ms" 'BEGIN { printf "%.6f", d / 1000 }')

# Quantiles of a file of numbers, one a line: prints "p50 p99".
quantiles() {
  sort -g "$1" | awk '{ v[NR] = $1 } END {
    if (NR == 0) { print "- -"; exit }
    i50 = int(NR * 0.50 + 0.999999); i99 = int(NR * 0.99 + 0.999999)
    printf "%.0f %.0f\n", v[i50], v[i99] }'
}

# Quantile from summed cumulative histogram buckets "le count" lines: like histogram_quantile.
hist_quantile() {
  local q=$1 file=$2
  sort -g "$file" | awk -v q="$q" '
    { le[NR] = $1; c[NR] = $2 }
    END {
      if (NR == 0 || c[NR] == 0) { print "nan"; exit }
      rank = q * c[NR]; prev_le = 0; prev_c = 0
      for (i = 1; i <= NR; i++) {
        if (c[i] >= rank) {
          if (le[i] == "+Inf" || le[i] > 1e300) { print prev_le; exit }
          print prev_le + (le[i] - prev_le) * (rank - prev_c) / (c[i] - prev_c); exit
        }
        prev_le = le[i]; prev_c = c[i]
      }
    }'
}

# Sums a histogram's buckets over all series: prints "le count" lines (le +Inf as 1e308).
sum_buckets() {
  local name=$1 file=$2
  grep "^${name}_bucket" "$file" | sed -E 's/.*le="([^"]+)".* ([0-9.e+-]+)$/\1 \2/' \
    | sed 's/^+Inf/1e308/' | awk '{ s[$1] += $2 } END { for (k in s) print k, s[k] }'
}

scrape() { ip netns exec "$cns" curl -fsS --max-time 60 "http://$1/metrics"; }

# A scrape of the measurement window into $2, its time and size appended to $3.
timed_scrape() {
  ip netns exec "$cns" curl -fsS --max-time 60 -o "$2" -w '%{time_total} %{size_download}\n' \
    "http://$1/metrics" >>"$3"
}

# "scrapes: median X s, slowest Y s, last Z MB" from a file of "seconds bytes" lines.
scrape_note() {
  local bytes
  bytes=$(tail -n 1 "$1" | awk '{ print $2 }')
  sort -g "$1" | awk -v b="${bytes:-0}" '{ t[NR] = $1 } END {
    if (NR == 0) { print "scrapes: none"; exit }
    printf "scrapes: %d, median %.3f s, slowest %.3f s, last %.1f MB\n", NR, t[int((NR + 1) / 2)], t[NR], b / 1e6 }'
}

# --budget: a cgroup held to a quarter of a CPU (25 ms of every 100 ms) and 128 MB without swap.
# cgroup v2 with its cpu and memory controllers where the machine has them; else the v1 cpu and
# memory hierarchies, joined by a group of the v2 hierarchy beside them (if mounted) so that the
# tool's cgroup has pressure files of its own. Sets budget_procs (the cgroup.procs files a tool
# joins) and budget_psi (the group's cpu.pressure, or -).
budget_bytes=$((128 * 1024 * 1024))
make_budget_cgroup() {
  local name=vbench-$tag root=/sys/fs/cgroup
  if grep -qw cpu "$root/cgroup.controllers" 2>/dev/null && grep -qw memory "$root/cgroup.controllers"; then
    echo "+cpu +memory" >"$root/cgroup.subtree_control"
    mkdir "$root/$name"
    cgroups+=("$root/$name")
    echo "25000 100000" >"$root/$name/cpu.max"
    echo "$budget_bytes" >"$root/$name/memory.max"
    [ ! -f "$root/$name/memory.swap.max" ] || echo 0 >"$root/$name/memory.swap.max"
    budget_procs=("$root/$name/cgroup.procs")
    budget_psi=$root/$name/cpu.pressure
  elif [ -f "$root/cpu/cpu.cfs_quota_us" ] && [ -f "$root/memory/memory.limit_in_bytes" ]; then
    mkdir "$root/cpu/$name" "$root/memory/$name"
    cgroups+=("$root/cpu/$name" "$root/memory/$name")
    echo 100000 >"$root/cpu/$name/cpu.cfs_period_us"
    echo 25000 >"$root/cpu/$name/cpu.cfs_quota_us"
    echo "$budget_bytes" >"$root/memory/$name/memory.limit_in_bytes"
    local memsw=$root/memory/$name/memory.memsw.limit_in_bytes
    [ ! -f "$memsw" ] || echo "$budget_bytes" >"$memsw"
    budget_procs=("$root/cpu/$name/cgroup.procs" "$root/memory/$name/cgroup.procs")
    budget_psi=-
    if [ -f "$root/unified/cgroup.procs" ]; then
      mkdir "$root/unified/$name"
      cgroups+=("$root/unified/$name")
      budget_procs+=("$root/unified/$name/cgroup.procs")
      budget_psi=$root/unified/$name/cpu.pressure
    fi
  else
    echo "bench-ping.sh: --budget needs cgroup v2 with the cpu and memory controllers at $root," \
      "or cgroup v1's cpu and memory hierarchies under it: found neither" >&2
    exit 1
  fi
}

# What a tool starts under: nothing, or (limited=1) a shell that joins the budget cgroup first.
limited=0
wrap() {
  [ "$limited" = 1 ] || return 0
  printf '%s\0' sh -c 'for f in $0; do echo $$ >"$f"; done; exec "$@"' "${budget_procs[*]}"
}

# Starts "$@" in the client namespace; sets tool_pid. nsenter, not `ip netns exec`, which mounts
# a sysfs of its own over /sys and so hides the cgroup files from the tool.
start_tool() {
  local out=$1 pre=(); shift
  mapfile -d '' pre < <(wrap)
  nice -n "$nice" "${pre[@]}" nsenter --net="/run/netns/$cns" "$@" >"$out.stdout" 2>"$out.stderr" &
  tool_pid=$!
  pids+=("$tool_pid")
}

# CPU ticks (user + system, all threads) of a live process.
ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }

# Waits until a daemon serves /metrics (smokeping_prober starts its pingers 10 ms apart and
# serves only once all have started), then a little longer to settle.
wait_ready() {
  local listen=$1 limit=$2 t=0
  until scrape "$listen" >/dev/null 2>&1; do
    sleep 1; t=$((t + 1))
    [ "$t" -lt "$limit" ] || { echo "bench-ping.sh: $listen not up after ${limit}s" >&2; return 1; }
    kill -0 "$tool_pid" 2>/dev/null || { echo "bench-ping.sh: the tool died" >&2; return 1; }
  done
  sleep 3
}

# The `some total=` µs of a PSI file.
psi_total() { awk -F 'total=' '/^some/ { print $2 }' "$1"; }

# The measurement window: scrapes at its start and every $scrape_every s to its end
# ($out.scrape0 .. $out.scrapeN), and sets cpu (seconds used in the window), rss (peak MB),
# win_from and win_to (its bounds, seconds since the epoch) and stall (the share of the window
# during which some task was stalled on the CPU: the whole system's, and the budget cgroup's).
# The holder's own release lateness over a window: SIGUSR1 has it print the packets since the
# last SIGUSR1 (a "window:" line) and start again. `rig_window end` sets $rig for the report.
rig_window() { # rig_window start|end
  [ -n "$holder_pid" ] || return 0
  local before
  before=$(grep -c 'window:' "$work/delay.err" || true)
  kill -USR1 "$holder_pid"
  for _ in $(seq 100); do
    [ "$(grep -c 'window:' "$work/delay.err" || true)" -gt "$before" ] && break
    sleep 0.02
  done
  [ "$1" = start ] || rig="holder: $(grep 'window:' "$work/delay.err" | tail -1 | sed 's/^nfq-delay: window: //')"
}

measure() {
  local listen=$1 out=$2 start n=0 t0 t1 hz s0 c0=-
  hz=$(getconf CLK_TCK)
  rig_window start
  [ -z "$listen" ] || timed_scrape "$listen" "$out.scrape0" "$out.times"
  t0=$(ticks "$tool_pid")
  s0=$(psi_total /proc/pressure/cpu)
  [ "$limited" = 0 ] || [ "$budget_psi" = - ] || c0=$(psi_total "$budget_psi")
  start=$(date +%s)
  win_from=$start
  while [ $(( $(date +%s) - start )) -lt "$duration" ]; do
    local left=$(( duration - ($(date +%s) - start) ))
    sleep "$(( left < scrape_every ? left : scrape_every ))"
    n=$((n + 1))
    [ -z "$listen" ] || timed_scrape "$listen" "$out.scrape$n" "$out.times"
  done
  t1=$(ticks "$tool_pid")
  rig_window end
  win_to=$(date +%s)
  # Slow scrapes can stretch the window past --duration.
  local d=$(( win_to - win_from ))
  stall=$(awk -v a="$s0" -v b="$(psi_total /proc/pressure/cpu)" -v d="$d" \
    'BEGIN { printf "CPU stall: whole system %.1f%% of the %d s window", (b - a) / d / 1e4, d }')
  [ "$c0" = - ] || stall+=$(awk -v a="$c0" -v b="$(psi_total "$budget_psi")" -v d="$d" \
    'BEGIN { printf ", budget cgroup %.1f%%", (b - a) / d / 1e4 }')
  cpu=$(awk -v a="$t0" -v b="$t1" -v hz="$hz" 'BEGIN { printf "%.1f", (b - a) / hz }')
  rss=$(awk '/^VmHWM/ { printf "%.0f", $2 / 1024 }' "/proc/$tool_pid/status")
  last=$out.scrape$n
}

stop_tool() {
  kill "-${1:-TERM}" "$tool_pid" 2>/dev/null || true
  wait "$tool_pid" 2>/dev/null || true
}

# Sum of a counter over all series in a scrape.
total() { { grep "^$1" "$2" || true; } | awk '{ s += $NF } END { printf "%d", s }'; }

# Buckets of the window: last scrape minus first, as "le count" lines.
window_buckets() {
  local name=$1 out=$2
  sum_buckets "$name" "$out.scrape0" >"$out.b0"
  sum_buckets "$name" "$last" >"$out.b1"
  awk 'NR == FNR { a[$1] = $2; next } { print $1, $2 - a[$1] }' "$out.b0" "$out.b1"
}

# "rounds: R, flagged: late A, cpu B, memory C" over the window, from Vantage's counters.
rounds_note() {
  local out=$1 r reason note
  r=$(( $(total vantage_probe_rounds_total "$last") - $(total vantage_probe_rounds_total "$out.scrape0") ))
  note="rounds: $r, flagged:"
  for reason in late cpu memory; do
    local series="vantage_rounds_flagged_total{.*reason=\"$reason\""
    note+=" $reason $(( $(total "$series" "$last") - $(total "$series" "$out.scrape0") ))"
  done
  echo "$note"
}

# Every window round of some targets (all up to 200, else 200 spread over them) from the
# daemon's store (/api/samples, after taking the fresh daemon's first password): how many were
# inflated (RTT more than --inflated-us above the truth) and how many of those carry no flag.
stored_rounds_note() {
  local n=$1 out=$2 listen=$3 step i
  ip netns exec "$cns" curl -fsS -c "$out.jar" -H 'Content-Type: application/json' \
    -d '{"password":"bench-ping-budget"}' "http://$listen/api/auth/setup" >/dev/null
  step=$(( (n + 199) / 200 ))
  for i in $(seq 1 "$step" "$n"); do
    ip netns exec "$cns" curl -fsS --max-time 60 -b "$out.jar" \
      "http://$listen/api/samples?target=$(printf 't%05d' "$i")&probe=ping&from=$win_from&to=$win_to"
  done | jq -r '.samples[] | "\(.values.rtt_avg_seconds // "-") \(.flags // ["-"] | join(",")) \(.timestamp)"' \
    | tee "$out.rounds" | awk -v d="$delay_s" -v lim="$inflated_us" -v t="$(seq 1 "$step" "$n" | wc -l)" '
      { rounds++; if ($2 != "-") flagged++
        if ($1 != "-" && ($1 - d) * 1e6 > lim) { inflated++; if ($2 == "-") bare++ } }
      END { printf "stored rounds of %d targets: %d, flagged %d, inflated (> %d us) %d, of them unflagged %d\n",
        t, rounds, flagged, lim, inflated, bare }'
}

run_vantage() {
  local n=$1 out=$work/vantage-$n$label
  {
    echo '[defaults]'
    echo 'interval = "1s"'
    for i in $(seq "$n"); do
      printf '[[targets]]\nname = "t%05d"\nhost = "%s"\nprobes = ["ping"]\n' "$i" "$(addr "$i")"
    done
  } >"$out.toml"
  start_tool "$out" "$vantage" run --config "$out.toml" --listen 127.0.0.1:9430 --data-dir "$out.data"
  if ! wait_ready 127.0.0.1:9430 60; then
    stop_tool
    report vantage "$n" "not up" - 0 0 - - -
    return
  fi
  measure 127.0.0.1:9430 "$out"
  local stored=""
  [ "$budget" = 0 ] || stored=$(stored_rounds_note "$n" "$out" 127.0.0.1:9430)
  stop_tool
  # Every scrape's last-round RTTs (one packet a round: the RTT itself).
  cat "$out".scrape[1-9]* | { grep '^vantage_ping_round_rtt_seconds{.*stat="avg"' || true; } \
    | awk '{ print $NF }' | { grep -v -i nan || true; } \
    | awk -v d="$delay_s" '{ printf "%.1f\n", ($1 - d) * 1e6 }' >"$out.err"
  read -r e50 e99 < <(quantiles "$out.err")
  local sent recv
  sent=$(( $(total vantage_ping_packets_sent_total "$last") - $(total vantage_ping_packets_sent_total "$out.scrape0") ))
  recv=$(( $(total vantage_ping_packets_received_total "$last") - $(total vantage_ping_packets_received_total "$out.scrape0") ))
  window_buckets vantage_scheduler_lag_seconds "$out" >"$out.lag"
  local lag
  lag=$(hist_quantile 0.99 "$out.lag" | awk '{ printf "%.0f", $1 * 1e6 }')
  report vantage "$n" "$cpu" "$rss" "$sent" "$recv" "$e50" "$e99" "$lag"
  {
    echo "  vantage$label $n $(scrape_note "$out.times")"
    echo "  vantage$label $n $(rounds_note "$out")"
    [ -z "$stored" ] || echo "  vantage$label $n $stored"
    echo "  vantage$label $n $stall"
  } | tee -a "$results"
}

run_smokeping() {
  local n=$1 out=$work/smokeping-$n$label
  {
    echo 'targets:'
    echo '- interval: 1s'
    echo '  network: ip4'
    echo '  hosts:'
    for i in $(seq "$n"); do echo "  - $(addr "$i")"; done
  } >"$out.yml"
  # The default buckets plus 25 µs steps around the delay, so its RTT error can be read.
  local buckets
  buckets=$(awk -v d="$delay_s" 'BEGIN {
    n = split("5e-05,0.0001,0.0002,0.0004,0.0008,0.0016,0.0032,0.0064,0.0128,0.0256,0.0512,0.1024,0.2048,0.4096,0.8192,1.6384,3.2768,6.5536,13.1072,26.2144", b, ",")
    for (i = 1; i <= n; i++) v[b[i]] = 1
    for (x = d - 0.0001; x <= d + 0.001 + 1e-9; x += 0.000025) v[sprintf("%.6f", x)] = 1
    s = ""; for (k in v) s = s (s == "" ? "" : ",") k; print s }' | tr ',' '\n' | sort -g | paste -sd,)
  start_tool "$out" prometheus-smokeping-prober --config.file "$out.yml" \
    --web.listen-address 127.0.0.1:9374 --buckets "$buckets"
  # Four times as long to come up in a quarter of a CPU.
  if ! wait_ready 127.0.0.1:9374 $(( (n * 3 / 100 + 60) * (limited ? 4 : 1) )); then
    stop_tool
    report smokeping_prober "$n" "not up" - 0 0 - - -
    return
  fi
  measure 127.0.0.1:9374 "$out"
  stop_tool
  window_buckets smokeping_response_duration_seconds "$out" >"$out.hist"
  local e50 e99
  e50=$(hist_quantile 0.50 "$out.hist" | awk -v d="$delay_s" '{ printf "%.0f", ($1 - d) * 1e6 }')
  e99=$(hist_quantile 0.99 "$out.hist" | awk -v d="$delay_s" '{ printf "%.0f", ($1 - d) * 1e6 }')
  local sent recv
  sent=$(( $(total smokeping_requests_total "$last") - $(total smokeping_requests_total "$out.scrape0") ))
  recv=$(( $(total smokeping_response_duration_seconds_count "$last") - $(total smokeping_response_duration_seconds_count "$out.scrape0") ))
  report smokeping_prober "$n" "$cpu" "$rss" "$sent" "$recv" "$e50" "$e99" "-"
  {
    echo "  smokeping_prober$label $n $(scrape_note "$out.times")"
    echo "  smokeping_prober$label $n $stall"
  } | tee -a "$results"
}

run_fping() {
  local n=$1 out=$work/fping-$n$label
  for i in $(seq "$n"); do addr "$i"; done >"$out.targets"
  # One request per target a second, spread evenly: the gap between any two sends is 1 s / N.
  local gap
  gap=$(awk -v n="$n" 'BEGIN { g = 1000 / n; if (g > 10) g = 10; printf "%.3f", g }')
  start_tool "$out" fping -C "$((duration + 10))" -p 1000 -i "$gap" -t 1000 -q -f "$out.targets"
  sleep 3
  measure "" "$out"
  # fping prints its per-target results on SIGINT.
  stop_tool INT
  { grep ' : ' "$out.stderr" || true; } | cut -d: -f2 | tr ' ' '\n' | { grep -v '^$' || true; } >"$out.all"
  local sent recv
  sent=$(wc -l <"$out.all")
  { grep -v '^-$' "$out.all" || true; } | awk -v d="$delay_ms" '{ printf "%.1f\n", ($1 - d) * 1000 }' >"$out.err"
  recv=$(wc -l <"$out.err")
  read -r e50 e99 < <(quantiles "$out.err")
  report fping "$n" "$cpu" "$rss" "$sent" "$recv" "$e50" "$e99" "-"
}

results=$work/results
report() {
  local tool=$1 n=$2 cpu=$3 rss=$4 sent=$5 recv=$6 e50=$7 e99=$8 lag=$9 loss
  # The counters are read at two scrapes: replies to requests in flight at the first one count
  # in the window, so a loss-free run may show a few more replies than requests (floored at 0).
  loss=$(awk -v s="$sent" -v r="$recv" 'BEGIN { if (s > 0) { l = 100 * (s - r) / s; printf "%.2f%%", l < 0 ? 0 : l } else print "-" }')
  printf '%-17s %7s %8s %8s %9s %10s %10s %10s %12s\n' "$tool$label" "$n" "$cpu" "$rss" "$loss" "$e50" "$e99" "$lag" "$sent" | tee -a "$results"
  [ -z "$rig" ] || echo "  $tool$label $n $rig" | tee -a "$results"
}

echo "ping benchmark: ${duration}s per run, 1 s interval, ${delay_ms} ms NFQUEUE delay, $(nproc) CPUs, kernel $(uname -r)"
limits=0
label=""
if [ "$budget" = 1 ]; then
  make_budget_cgroup
  limits="0 1"
  echo "TOOL@budget: 0.25 CPU and 128 MB, cgroups ${budget_procs[*]%/cgroup.procs}"
fi
printf '%-17s %7s %8s %8s %9s %10s %10s %10s %12s\n' tool targets cpu_s rss_mb loss err_p50us err_p99us lag_p99us requests
for n in $sizes; do
  for t in $tools; do
    for limited in $limits; do
      label="" rig=""
      [ "$limited" = 0 ] || label=@budget
      case "$t" in
        vantage) run_vantage "$n" ;;
        smokeping) run_smokeping "$n" ;;
        fping) run_fping "$n" ;;
        *) echo "unknown tool $t" >&2; exit 2 ;;
      esac
    done
  done
done
