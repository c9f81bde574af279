#!/usr/bin/env bash
# Fleet monitoring: alert and recording rules (promtool check + unit tests), the Alertmanager
# example (amtool, and a real Alertmanager inhibiting target alerts during an uplink outage),
# the Prometheus examples, and every Grafana panel's PromQL against a real Prometheus
# scraping a real daemon with the rules loaded.
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

for tool in promtool prometheus amtool prometheus-alertmanager python3 curl jq; do
  command -v "$tool" >/dev/null || { bad "tool $tool is installed (scripts/deps.d/fleet.apt)"; echo "$passed passed, $failed failed"; exit 1; }
done

work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
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

cargo build -q -p vantage || { bad "cargo build -p vantage"; echo "$passed passed, $failed failed"; exit 1; }
bin=target/debug/vantage
v_port=$(free_port)
cat >"$work/vantage.toml" <<EOF
[device]
name = "dash-check"
labels = { site = "lab" }
[[targets]]
name = "lo"
host = "127.0.0.1"
probes = ["ping"]
interval = "500ms"
EOF
"$bin" run --config "$work/vantage.toml" --listen "127.0.0.1:$v_port" --data-dir "$work/data" >"$work/vantage.log" 2>&1 &
pids+=($!)
p_port=$(free_port)
mkdir -p "$work/rules"
# The rules as shipped, but evaluated every second so recorded series exist within the test.
sed 's/^    interval: 30s$/    interval: 1s/' monitoring/recording.yml >"$work/rules/recording.yml"
cp monitoring/alerts.yml "$work/rules/alerts.yml"
cat >"$work/prometheus.yml" <<EOF
global: { scrape_interval: 1s, scrape_timeout: 1s, evaluation_interval: 1s }
rule_files: ['$work/rules/*.yml']
scrape_configs:
  - job_name: vantage
    static_configs: [{ targets: ['127.0.0.1:$v_port'] }]
EOF
prometheus --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/tsdb" \
  --web.listen-address="127.0.0.1:$p_port" >"$work/prometheus.log" 2>&1 &
pids+=($!)
prom="http://127.0.0.1:$p_port"
has_data() { curl -fs --data-urlencode "query=$1" "$prom/api/v1/query" | jq -e '.data.result | length > 0' >/dev/null; }
for _ in $(seq 60); do has_data 'vantage_target:ping_rtt_seconds:mean5m{target="lo"}' && break; sleep 0.5; done
if has_data 'up{job="vantage"} == 1' && has_data 'vantage_build_info{job="vantage", device="dash-check", site="lab"}'; then
  ok "Prometheus scrapes the daemon, its series carry the device labels"
else
  bad "Prometheus scrapes the daemon, its series carry the device labels"
  tail -n 5 "$work/prometheus.log" "$work/vantage.log" | sed 's/^/     /'
fi
has_data 'vantage_target:ping_rtt_seconds:mean5m{target="lo"}' && ok "recording rules produce series from the daemon's metrics" \
  || bad "recording rules produce series from the daemon's metrics"

# Every query runs without error; the core panels of each dashboard also show the daemon's data.
if out=$(python3 monitoring/tests/check_dashboards.py "$prom" monitoring/grafana/dashboards/*.json \
    --var job=vantage --var "instance=127.0.0.1:$v_port" --var target=lo --var site=lab \
    --require-data "vantage-fleet:Devices up" --require-data "vantage-fleet:Devices" \
    --require-data "vantage-device:Targets" --require-data "vantage-device:Mean RTT per target (5m)" \
    --require-data "vantage-target:RTT distribution" --require-data "vantage-target:Loss" 2>&1); then
  ok "every dashboard query evaluates without error, core panels have data ($(echo "$out" | tail -1))"
else
  bad "every dashboard query evaluates without error, core panels have data"; echo "$out" | grep -v '^ok' | sed 's/^/     /'
fi

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
