#!/usr/bin/env bash
# Fleet monitoring: alert and recording rules (promtool check + unit tests), the Alertmanager
# example (amtool, and a real Alertmanager inhibiting target alerts during an uplink outage),
# the Prometheus examples, and every Grafana panel's PromQL against two real Prometheus
# servers with the rules loaded: one scraping a real daemon (ping, DNS, trace, TCP with TLS and
# HTTPS rounds against a local HTTPS server), and
# a push-only one fed by the same daemon's remote_write. Every probe-result query with data
# in the first must have data in the second, also over an outage of the push path that the
# daemon backfills afterwards, and a loss injected only during the outage shows in it.
# As root this part runs in a network namespace of its own (the loss is an iptables rule
# there); without root it runs on the host's loopback without the loss, unless
# VANTAGE_REQUIRE_ROOT_TESTS=1 makes that a failure.
set -uo pipefail
cd "$(dirname "$0")/../.."

passed=0
failed=0
ok() { echo "ok   $1"; passed=$((passed + 1)); }
bad() { echo "FAIL $1"; failed=$((failed + 1)); }
check() { # check NAME CMD...
  local name=$1; shift
  local out
  if out=$("$@" 2>&1); then ok "$name"; else bad "$name"; echo "$out" | sed 's/^/     /'; fi
}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

for tool in promtool prometheus amtool prometheus-alertmanager unbound python3 openssl curl jq; do
  command -v "$tool" >/dev/null || { bad "tool $tool is installed (scripts/deps.d/fleet.apt)"; echo "$passed passed, $failed failed"; exit 1; }
done

work=$(mktemp -d)
pids=()
ns=
# A job started through `inns` is a subshell whose child is the server: stop both, and wait
# (up to 20 s) until the server is gone, so its port and files are free again.
stop_job() {
  local kids alive k _
  kids=$(pgrep -P "$1")
  # shellcheck disable=SC2086
  kill $kids "$1" 2>/dev/null
  for _ in $(seq 100); do
    alive=
    for k in $kids; do kill -0 "$k" 2>/dev/null && alive=1; done
    [ -z "$alive" ] && break
    sleep 0.2
  done
  wait "$1" 2>/dev/null
  return 0
}
cleanup() {
  for p in "${pids[@]}"; do stop_job "$p"; done
  # Whatever else still runs in the namespace.
  [ -n "$ns" ] && ip netns pids "$ns" 2>/dev/null | xargs -r kill 2>/dev/null
  [ -n "$ns" ] && ip netns del "$ns" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

# --- Rules -------------------------------------------------------------------------------
check "promtool check rules" promtool check rules monitoring/alerts.yml monitoring/recording.yml
check "promtool test rules (every alert fires and stays quiet)" promtool test rules monitoring/tests/*.test.yml
# Every alert in alerts.yml has a unit test.
missing=$(for a in $(grep -oP '^\s*- alert: \K\S+' monitoring/alerts.yml); do
  grep -q "alertname: $a\$" monitoring/tests/alerts.test.yml || echo "$a"; done)
if [ -z "$missing" ]; then ok "every alert has a unit test"; else bad "alerts without a unit test: $missing"; fi

# --- Prometheus and Alertmanager examples --------------------------------------------------
for f in monitoring/prometheus/*.yml; do
  check "promtool check config $f" promtool check config --syntax-only "$f"
done
check "amtool check-config monitoring/alertmanager.yml" amtool check-config monitoring/alertmanager.yml

# --- Inhibition in a real Alertmanager -----------------------------------------------------
am_port=$(free_port)
prometheus-alertmanager --config.file=monitoring/alertmanager.yml --storage.path="$work/am" \
  --web.listen-address="127.0.0.1:$am_port" --cluster.listen-address= >"$work/am.log" 2>&1 &
pids+=($!)
am="http://127.0.0.1:$am_port"
for _ in $(seq 50); do curl -fs "$am/-/ready" >/dev/null && break; sleep 0.2; done
now=$(date -u +%Y-%m-%dT%H:%M:%SZ)
alert() { # alertname scope instance device target
  jq -n --arg a "$1" --arg s "$2" --arg i "$3" --arg d "$4" --arg t "$5" --arg now "$now" \
    '{labels: ({alertname: $a, scope: $s, instance: $i, device: $d, severity: "critical"} + (if $t == "" then {} else {target: $t} end)), startsAt: $now}'
}
payload=$(jq -s . <(alert VantageUplinkDown uplink a:9430 dev-a "") \
  <(alert VantageTargetDown target a:9430 dev-a web) \
  <(alert VantageTargetPacketLoss target a:9430 dev-a web) \
  <(alert VantageTargetDown target b:9430 dev-b web) \
  <(alert VantageTargetPacketLoss target b:9430 dev-b web) \
  <(alert VantageTargetPacketLoss target b:9430 dev-b other))
if curl -fs -XPOST -H 'Content-Type: application/json' -d "$payload" "$am/api/v2/alerts" >/dev/null; then
  state() { curl -fs "$am/api/v2/alerts" | jq -r --arg a "$1" --arg i "$2" --arg t "$3" \
    '.[] | select(.labels.alertname == $a and .labels.instance == $i and (.labels.target // "") == $t) | .status.state'; }
  # Inhibition is computed when the alert list is read; give the API a moment to hold them all.
  for _ in $(seq 25); do [ "$(curl -fs "$am/api/v2/alerts" | jq length)" = 6 ] && break; sleep 0.2; done
  [ "$(state VantageUplinkDown a:9430 '')" = active ] && ok "uplink alert is active" || bad "uplink alert is active: $(state VantageUplinkDown a:9430 '')"
  [ "$(state VantageTargetDown a:9430 web)" = suppressed ] && ok "same device's target alert is inhibited by its uplink alert" \
    || bad "same device's target alert is inhibited: $(state VantageTargetDown a:9430 web)"
  [ "$(state VantageTargetDown b:9430 web)" = active ] && ok "another device's target alert is not inhibited" \
    || bad "another device's target alert is not inhibited: $(state VantageTargetDown b:9430 web)"
  [ "$(state VantageTargetPacketLoss b:9430 web)" = suppressed ] && ok "loss alert inhibited by the same target's down alert" \
    || bad "loss alert inhibited by the same target's down alert: $(state VantageTargetPacketLoss b:9430 web)"
  [ "$(state VantageTargetPacketLoss b:9430 other)" = active ] && ok "loss alert of another target stays" \
    || bad "loss alert of another target stays: $(state VantageTargetPacketLoss b:9430 other)"
else
  bad "post alerts to Alertmanager"; sed 's/^/     /' "$work/am.log"
fi

# --- Dashboards ----------------------------------------------------------------------------
check "dashboards match generate.py" python3 monitoring/grafana/generate.py --check
for f in monitoring/grafana/dashboards/*.json; do
  check "$f is JSON with a unique uid" jq -e '.uid and (.panels | length > 0)' "$f"
done
uids=$(jq -r .uid monitoring/grafana/dashboards/*.json | sort | uniq -d)
[ -z "$uids" ] && ok "dashboard uids are unique" || bad "duplicate dashboard uids: $uids"
check "dashboards read no recording rule, no stat has or vector(0), scrape-only panels say so" \
  python3 monitoring/tests/check_dashboards.py --lint-only monitoring/grafana/dashboards/*.json
# The lint itself: each kind of mistake, put into a copy of a shipped dashboard, is caught.
fleet=monitoring/grafana/dashboards/fleet.json
declare -A mistakes=(
  ["a stat with or vector(0)"]='(.panels[] | select(.type == "stat") | .targets[].expr) |= . + " or vector(0)"'
  ["a panel on a recording rule"]='(.panels[] | select(.title == "Targets failing") | .targets[0].expr) = "sum(vantage_device:targets_failing:count)"'
  ["a scrape-only panel that does not say so"]='(.panels[] | select(.title | test("scrape")) | .title, .description) |= "Backlog"'
)
for m in "${!mistakes[@]}"; do
  jq "${mistakes[$m]}" "$fleet" >"$work/mistake.json"
  if python3 monitoring/tests/check_dashboards.py --lint-only "$work/mistake.json" >/dev/null; then
    bad "the dashboard lint catches $m"
  else
    ok "the dashboard lint catches $m"
  fi
done

cargo build -q -p vantage || { bad "cargo build -p vantage"; echo "$passed passed, $failed failed"; exit 1; }
bin=target/debug/vantage

# Everything from here on (servers, daemon, queries) runs through inns: in the namespace as
# root, else on the host.
inns() { "$@"; }
if [ "$(id -u)" -eq 0 ] && command -v ip >/dev/null && command -v iptables >/dev/null; then
  ns=vmon$$
  if ip netns add "$ns" && ip -n "$ns" link set lo up; then
    inns() { ip netns exec "$ns" "$@"; }
  else
    bad "create network namespace $ns"; ns=
  fi
elif [ "${VANTAGE_REQUIRE_ROOT_TESTS:-0}" = 1 ]; then
  bad "the injected outage loss needs root, ip and iptables (VANTAGE_REQUIRE_ROOT_TESTS=1)"
else
  echo "note: not root, the outage runs without an injected loss"
fi

# A DNS server for the DNS probe: unbound on loopback, answering one local name.
dns_port=$(free_port)
cat >"$work/unbound.conf" <<EOF
server:
    interface: 127.0.0.1@$dns_port
    do-daemonize: no
    username: ""
    chroot: ""
    directory: "$work"
    pidfile: ""
    use-syslog: no
    logfile: ""
    num-threads: 1
    access-control: 127.0.0.0/8 allow
    module-config: "iterator"
    local-zone: "test." nodefault
    local-zone: "dash.test." static
    local-data: "www.dash.test. 300 IN A 192.0.2.10"
EOF
inns unbound -d -c "$work/unbound.conf" >/dev/null 2>"$work/unbound.log" &
pids+=($!)
for _ in $(seq 50); do grep -q "start of service" "$work/unbound.log" && break; sleep 0.2; done

# A plain HTTP server for /probe's TCP and HTTP rounds in blackbox's terms.
bb_port=$(free_port)
mkdir -p "$work/www" && echo ok >"$work/www/index.html"
inns python3 -m http.server "$bb_port" --bind 127.0.0.1 --directory "$work/www" >"$work/www.log" 2>&1 &
pids+=($!)

# A web server for the TCP and HTTP probes: HTTPS on loopback with a self-signed certificate
# valid for CERT_DAYS days, whose time left the dashboards must show.
CERT_DAYS=30
web_port=$(free_port)
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=127.0.0.1 -days "$CERT_DAYS" \
  -keyout "$work/web.key" -out "$work/web.crt" 2>/dev/null
inns python3 scripts/e2e/https_server.py 127.0.0.1 "$web_port" "$work/web.crt" "$work/web.key" 2>"$work/web.log" &
pids+=($!)
for _ in $(seq 50); do inns curl -skf "https://127.0.0.1:$web_port/" >/dev/null && break; sleep 0.2; done

# The two Prometheus servers, with the rules as shipped but evaluated every second so
# recorded series exist within the test. The push-only one has no scrape config at all: what
# it holds is what the daemon's remote_write delivered.
mkdir -p "$work/rules"
sed 's/^    interval: 30s$/    interval: 1s/' monitoring/recording.yml >"$work/rules/recording.yml"
cp monitoring/alerts.yml "$work/rules/alerts.yml"
p_port=$(free_port)
push_port=$(free_port)
v_port=$(free_port)
# One identity for both paths (docs/FLEET.md): job "vantage", instance the device's name.
cat >"$work/vantage.toml" <<EOF
[device]
name = "dash-check"
labels = { site = "lab" }
[store]
commit_interval = "500ms"
[[remote_write]]
name = "push-only"
url = "http://127.0.0.1:$push_port/api/v1/write"
labels = { job = "vantage", instance = "dash-check" }
max_backoff = "1s"
[[targets]]
name = "lo"
host = "127.0.0.1"
probes = ["ping", "dns", "trace", "tcp", "http"]
interval = "500ms"
dns = { query = "www.dash.test", port = $dns_port, interval = "1s", timeout = "500ms" }
trace = { interval = "2s", max_hops = 4, timeout = "500ms" }
tcp = { port = $web_port, tls = true, insecure = true, attempts = 2, interval = "1s", timeout = "500ms" }
http = { url = "https://127.0.0.1:$web_port/", insecure = true, interval = "1s", timeout = "500ms" }
# /probe reaches the test's own servers' ports besides the well-known ones.
[probe_endpoint]
ports = { dns = [53, 443, 853, $dns_port], http = [80, 443, $bb_port], tcp = [$bb_port] }
EOF
cat >"$work/prometheus.yml" <<EOF
global: { scrape_interval: 1s, scrape_timeout: 1s, evaluation_interval: 1s }
rule_files: ['$work/rules/*.yml']
scrape_configs:
  - job_name: vantage
    static_configs: [{ targets: ['127.0.0.1:$v_port'], labels: { instance: dash-check } }]
EOF
# A blackbox_exporter user's jobs, as its README writes them, with only the exporter's
# address changed to the daemon's (and DNS's query_name, which blackbox keeps in its module).
blackbox_job() { # blackbox_job MODULE TARGET [EXTRA PARAMS]
  cat <<EOF
  - job_name: blackbox_$1
    metrics_path: /probe
    params: { module: [$1]${3:-} }
    static_configs: [{ targets: ['$2'] }]
    relabel_configs:
      - source_labels: [__address__]
        target_label: __param_target
      - source_labels: [__param_target]
        target_label: instance
      - target_label: __address__
        replacement: 127.0.0.1:$v_port
EOF
}
{
  blackbox_job icmp 127.0.0.1
  blackbox_job dns "127.0.0.1:$dns_port" ", query_name: [www.dash.test]"
  blackbox_job tcp_connect "127.0.0.1:$bb_port"
  blackbox_job http_2xx "http://127.0.0.1:$bb_port/"
} >>"$work/prometheus.yml"
cat >"$work/push.yml" <<EOF
global: { evaluation_interval: 1s }
rule_files: ['$work/rules/*.yml']
storage: { tsdb: { out_of_order_time_window: 1h } }
EOF
inns prometheus --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/tsdb" \
  --web.listen-address="127.0.0.1:$p_port" >"$work/prometheus.log" 2>&1 &
pids+=($!)
start_push() {
  inns prometheus --config.file="$work/push.yml" --storage.tsdb.path="$work/tsdb-push" --web.enable-remote-write-receiver \
    --web.listen-address="127.0.0.1:$push_port" >>"$work/prometheus-push.log" 2>&1 &
  push_pid=$!
  pids+=($push_pid)
}
start_push
inns "$bin" run --config "$work/vantage.toml" --listen "127.0.0.1:$v_port" --data-dir "$work/data" >"$work/vantage.log" 2>&1 &
pids+=($!)
prom="http://127.0.0.1:$p_port"
push="http://127.0.0.1:$push_port"
has_data() { # has_data PROMETHEUS QUERY
  inns curl -fs --data-urlencode "query=$2" "$1/api/v1/query" | jq -e '.data.result | length > 0' >/dev/null; }
# Each setup is ready once it has a trace, a DNS, TCP and HTTP round and the recording rule's
# first result.
ready='vantage_trace_hops{target="lo"} and on () vantage_dns_rcode{target="lo"}
  and on () vantage_tcp_loss_ratio{target="lo"} and on () vantage_http_status_code{target="lo"}
  and on () vantage_target:ping_rtt_seconds:median5m{target="lo"}'
for _ in $(seq 120); do has_data "$prom" "$ready" && has_data "$push" "$ready" && break; sleep 0.5; done
if has_data "$prom" 'up{job="vantage", instance="dash-check"} == 1' \
  && has_data "$prom" 'vantage_build_info{job="vantage", instance="dash-check", device="dash-check", site="lab"}'; then
  ok "Prometheus scrapes the daemon, its series carry the device labels"
else
  bad "Prometheus scrapes the daemon, its series carry the device labels"
  tail -n 5 "$work/prometheus.log" "$work/vantage.log" | sed 's/^/     /'
fi
# Prometheus with blackbox's /probe relabel config scrapes the daemon as it would the exporter.
bb_ready='probe_success{job="blackbox_icmp"} == 1 and on () probe_success{job="blackbox_dns"} == 1 and on () probe_success{job="blackbox_tcp_connect"} == 1 and on () probe_success{job="blackbox_http_2xx"} == 1'
bb_started=$SECONDS
for _ in $(seq 20); do has_data "$prom" "$bb_ready" && break; sleep 0.5; done
for job in icmp dns tcp_connect http_2xx; do
  if has_data "$prom" "probe_success{job=\"blackbox_$job\"} == 1 and on () probe_duration_seconds{job=\"blackbox_$job\"} > 0"; then
    ok "blackbox relabel config: probe_success is 1 for module $job"
  else
    bad "blackbox relabel config: probe_success is 1 for module $job"
    inns curl -fs "$prom/api/v1/targets" | jq -r --arg j "blackbox_$job" \
      '.data.activeTargets[] | select(.labels.job == $j) | "\(.health) \(.lastError) \(.scrapeUrl)"' | sed 's/^/     /'
  fi
done
has_data "$prom" 'probe_http_status_code{job="blackbox_http_2xx"} == 200 and on () probe_dns_answer_rrs{job="blackbox_dns"} == 1' \
  && ok "blackbox relabel config: the dashboards' probe_http_status_code and probe_dns_answer_rrs ($((SECONDS - bb_started)) s for the blackbox checks)" \
  || bad "blackbox relabel config: the dashboards' probe_http_status_code and probe_dns_answer_rrs"
for probe in ping dns trace tcp http; do
  has_data "$push" "vantage_probe_success{job=\"vantage\", instance=\"dash-check\", device=\"dash-check\", site=\"lab\", target=\"lo\", probe=\"$probe\"}" \
    && ok "push-only Prometheus receives $probe rounds under the scrape's job and instance" \
    || { bad "push-only Prometheus receives $probe rounds under the scrape's job and instance"; tail -n 5 "$work/prometheus-push.log" "$work/vantage.log" | sed 's/^/     /'; }
done
has_data "$push" 'up or vantage_build_info or vantage_ping_packets_sent_total' \
  && bad "push-only Prometheus has scrape-only series (it must not scrape)" || ok "push-only Prometheus has no scrape-only series"
for p in "$prom" "$push"; do
  has_data "$p" 'vantage_target:ping_rtt_seconds:median5m{target="lo"}' && ok "recording rule produces series ($p)" \
    || bad "recording rule produces series ($p)"
done

# Every query runs without error in both; the probe-result panels of each dashboard show the
# daemon's rounds in both; and every probe-result query with series in the scrape setup has
# series in the push-only one.
dashboards=(monitoring/grafana/dashboards/*.json)
vars=(--var job=vantage --var instance=dash-check --var target=lo --var site=lab)
rounds=(--require-data "vantage-fleet:Devices reporting" --require-data "vantage-fleet:Targets failing"
  --require-data "vantage-fleet:Devices" --require-data "vantage-fleet:Worst targets by RTT p95 (5m)"
  --require-data "vantage-device:Last round" --require-data "vantage-device:Targets"
  --require-data "vantage-device:Median RTT per target" --require-data "vantage-device:Success per target"
  --require-data "vantage-device:Round duration per target"
  --require-data "vantage-target:Success (last round)" --require-data "vantage-target:RTT"
  --require-data "vantage-target:Loss" --require-data "vantage-target:DNS lookup time"
  --require-data "vantage-target:DNS rcode and answers" --require-data "vantage-target:Path changes"
  --require-data "vantage-target:Hop RTT" --require-data "vantage-target:Hop loss"
  --require-data "vantage-target:Ping replies"
  --require-data "vantage-target:HTTP status (last round)" --require-data "vantage-target:TCP connect (5m median)"
  --require-data "vantage-target:TCP loss (5m)" --require-data "vantage-target:Certificate expires in"
  --require-data "vantage-target:TCP connect time" --require-data "vantage-target:TCP connection loss"
  --require-data "vantage-target:HTTP phases" --require-data "vantage-target:HTTP status and redirects"
  --require-data "vantage-target:HTTP body size" --require-data "vantage-target:Certificate time left"
  --require-data "vantage-fleet:Certificates expiring soonest")
# What the TCP and HTTP panels read: the certificate's time left is CERT_DAYS less the minutes
# since it was made, and the server answers 200.
cert=(--expect "vantage-target:Certificate expires in:A<=$((CERT_DAYS * 86400))"
  --expect "vantage-target:Certificate expires in:A>=$((CERT_DAYS * 86400 - 3600))"
  --expect "vantage-target:HTTP status (last round):A>=200" --expect "vantage-target:HTTP status (last round):A<=200")
if out=$(inns python3 monitoring/tests/check_dashboards.py "$prom" "${dashboards[@]}" "${vars[@]}" "${rounds[@]}" \
    --require-data "vantage-fleet:Devices down (scrape)" --require-data "vantage-device:Scrape up" "${cert[@]}" \
    --save "$work/scrape.json" 2>&1); then
  ok "scrape: every dashboard query evaluates, probe-result and scrape panels have data ($(echo "$out" | tail -1))"
else
  bad "scrape: every dashboard query evaluates, probe-result and scrape panels have data"; echo "$out" | grep -v '^ok' | sed 's/^/     /'
fi
if out=$(inns python3 monitoring/tests/check_dashboards.py "$push" "${dashboards[@]}" "${vars[@]}" "${rounds[@]}" \
    --compare "$work/scrape.json" 2>&1); then
  ok "push-only: every dashboard query evaluates, every probe-result query with data in the scrape setup has data ($(echo "$out" | grep -c '^ok   --compare') compared; $(echo "$out" | tail -1))"
else
  bad "push-only: every dashboard query evaluates, every probe-result query with data in the scrape setup has data"; echo "$out" | grep -v '^ok' | sed 's/^/     /'
fi

# --- An outage of the push path -------------------------------------------------------------
# The push-only Prometheus goes away for 20 s while the daemon keeps probing and storing, and
# (as root) the target stops answering pings for just that time; once the Prometheus is back,
# the daemon ships the backlog with the rounds' own timestamps. Afterwards the push-only
# Prometheus holds exactly the rounds the device stored for the outage; every probe-result
# query of the dashboards, run over the outage alone with 5 s windows, has data at 95 % of its
# steps wherever the scrape setup (which kept scraping) has data; and the loss panel shows the
# outage's loss, and none before it.
drop=(-w -I INPUT -p icmp --icmp-type echo-request -j DROP)
stop_job "$push_pid"
[ -n "$ns" ] && inns iptables "${drop[@]}"
# Whole seconds inside the outage: the next one after it began, the last one before it ends.
t0=$(($(date +%s) + 1))
sleep 20
t1=$(date +%s)
[ -n "$ns" ] && inns iptables "${drop[@]/-I/-D}"
start_push
stored() { inns curl -fs "http://127.0.0.1:$v_port/api/samples?target=lo&probe=$1&from=$t0&to=$t1" | jq '.samples | length'; }
pushed() {
  inns curl -fs --data-urlencode "query=count_over_time(vantage_probe_success{job=\"vantage\", instance=\"dash-check\", target=\"lo\", probe=\"$1\"}[$((t1 - t0))s] @ $t1)" \
    "$push/api/v1/query" | jq -r '.data.result[0].value[1] // 0'; }
for _ in $(seq 120); do [ "$(pushed trace)" = "$(stored trace)" ] && [ "$(pushed ping)" = "$(stored ping)" ] && break; sleep 0.5; done
for probe in ping dns trace tcp http; do
  s_n=$(stored "$probe"); p_n=$(pushed "$probe")
  if [ -n "$s_n" ] && [ "$s_n" -gt 0 ] && [ "$s_n" = "$p_n" ]; then
    ok "outage: the push-only Prometheus holds all $s_n $probe rounds the device stored"
  else
    bad "outage: the push-only Prometheus holds the $probe rounds the device stored (stored $s_n, pushed $p_n)"
    tail -n 5 "$work/prometheus-push.log" "$work/vantage.log" | sed 's/^/     /'
  fi
done
outage=(--start $((t0 + 5)) --end "$t1" --step 1 --set __rate_interval=5s --set __interval=1s
  --set __range=$((t1 - t0))s)
inns python3 monitoring/tests/check_dashboards.py "$prom" "${dashboards[@]}" "${vars[@]}" "${outage[@]}" \
  --save "$work/scrape-outage.json" >"$work/scrape-outage.txt" 2>&1
# With every ping lost, no round has an RTT: the RTT panels are rightly empty for the outage.
# The scrape setup has NaN there, but also, for a step or two, the last RTT before the loss,
# which /metrics went on showing until the first lossy round ended.
loss=() outage_rounds=("${rounds[@]}")
if [ -n "$ns" ]; then
  loss=(--expect "vantage-target:Loss:A>=1" --compare-skip RTT)
  outage_rounds=()
  for ((i = 0; i < ${#rounds[@]}; i += 2)); do
    case ${rounds[i + 1]} in *RTT*) ;; *) outage_rounds+=("${rounds[i]}" "${rounds[i + 1]}") ;; esac
  done
fi
if out=$(inns python3 monitoring/tests/check_dashboards.py "$push" "${dashboards[@]}" "${vars[@]}" "${outage[@]}" \
    "${outage_rounds[@]}" "${loss[@]}" --compare "$work/scrape-outage.json" --min-coverage 0.95 2>&1); then
  ok "outage: every probe-result query has the outage's rounds at 95 % of its steps ($(echo "$out" | grep -c '^ok   --compare') compared; $(echo "$out" | tail -1))"
else
  bad "outage: every probe-result query has the outage's rounds at 95 % of its steps"; echo "$out" | grep -v '^ok' | sed 's/^/     /'
fi
if [ -n "$ns" ]; then
  # Before the outage the same panel shows no loss: the loss above is the outage's own.
  if out=$(inns python3 monitoring/tests/check_dashboards.py "$push" monitoring/grafana/dashboards/target.json \
      "${vars[@]}" --start $((t0 - 10)) --end $((t0 - 1)) --step 1 --set __rate_interval=5s \
      --expect "vantage-target:Loss:A<=0" 2>&1); then
    ok "outage: the loss panel shows 100 % loss for the outage's rounds only"
  else
    bad "outage: the loss panel shows 100 % loss for the outage's rounds only"; echo "$out" | grep -v '^ok' | sed 's/^/     /'
  fi
fi

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
