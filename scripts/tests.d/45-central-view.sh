#!/usr/bin/env bash
# The central view through an uplink outage, end to end. Three network namespaces: the device
# (the daemon), a target beside it (answers pings, DNS from unbound, traces), and the central
# site with three receivers:
#   - Prometheus "central": scrapes the device by a DNS name (a hosts entry in its namespace)
#     and receives its remote_write with send = "gaps" (scrape + backfill);
#   - Prometheus "push" and VictoriaMetrics "vm": remote_write only, send = "all" (push only).
# The device's link to the central site goes down for OUTAGE seconds while 30 % of the pings
# to the target are dropped, then comes back. Once every backlog is shipped, every ping, DNS,
# trace, TCP and HTTP expression of the shipped dashboards, over the outage, must have data for
# 95 % of its steps in "central"; the loss panel must show the injected loss; no sample refused; and
# every expression with data in "central" must have data in the push-only receivers.
#
#   OUTAGE=360 (default, longer than any 5m window)   OUTAGE=90 for a quicker local run
# Needs root, prometheus, victoria-metrics, unbound, iptables, python3, openssl, curl, jq.
set -uo pipefail
cd "$(dirname "$0")/../.."

OUTAGE=${OUTAGE:-360}
BEFORE=${BEFORE:-60}
LOSS=0.3
NAME=probe1.corp.example.net

passed=0
failed=0
ok() { echo "ok   $1"; passed=$((passed + 1)); }
bad() { echo "FAIL $1"; failed=$((failed + 1)); }
finish() { echo "$passed passed, $failed failed"; [ "$failed" -eq 0 ]; exit $?; }

if [ "$(id -u)" -ne 0 ]; then
  if [ "${VANTAGE_REQUIRE_ROOT_TESTS:-}" = 1 ]; then bad "runs as root (network namespaces)"; finish; fi
  echo "SKIPPED: needs root (network namespaces)"; finish
fi
for tool in prometheus victoria-metrics unbound iptables python3 openssl curl jq; do
  command -v "$tool" >/dev/null || { bad "tool $tool is installed (scripts/deps.d/fleet.apt)"; finish; }
done

cargo build -q -p vantage || { bad "cargo build -p vantage"; finish; }
bin=$PWD/target/debug/vantage

work=$(mktemp -d /tmp/vantage-central-view.XXXXXX)
dev="vcv-dev-$$"
tgt="vcv-tgt-$$"
cen="vcv-cen-$$"
pids=()
cleanup() {
  for p in "${pids[@]}"; do pkill -P "$p" 2>/dev/null; kill "$p" 2>/dev/null; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null; done
  for n in "$dev" "$tgt" "$cen"; do ip netns del "$n" 2>/dev/null; done
  rm -rf "/etc/netns/$cen" "$work"
}
trap cleanup EXIT

# --- Network: device <-> target (198.51.100.0/24), device <-> central (203.0.113.0/24) ------
for n in "$dev" "$tgt" "$cen"; do ip netns add "$n" && ip -n "$n" link set lo up; done
ip -n "$dev" link add vt type veth peer name vd netns "$tgt"
ip -n "$dev" link add vc type veth peer name vd netns "$cen"
ip -n "$dev" addr add 198.51.100.1/24 dev vt
ip -n "$tgt" addr add 198.51.100.2/24 dev vd
ip -n "$dev" addr add 203.0.113.1/24 dev vc
ip -n "$cen" addr add 203.0.113.2/24 dev vd
for l in "$dev vt" "$dev vc" "$tgt vd" "$cen vd"; do set -- $l; ip -n "$1" link set "$2" up; done
# `ip netns exec` bind-mounts /etc/netns/NAME/hosts over /etc/hosts: the central site knows
# the device by a DNS name only.
mkdir -p "/etc/netns/$cen"
echo "203.0.113.1 $NAME" >"/etc/netns/$cen/hosts"
in_ns() { local n=$1; shift; ip netns exec "$n" "$@"; }

# --- Target: pings, traces, DNS (unbound), TCP and HTTPS (a self-signed certificate) ---------
cat >"$work/unbound.conf" <<EOF
server:
    interface: 198.51.100.2@53
    do-daemonize: no
    username: ""
    chroot: ""
    directory: "$work"
    pidfile: ""
    use-syslog: no
    logfile: ""
    num-threads: 1
    access-control: 0.0.0.0/0 allow
    module-config: "iterator"
    local-zone: "test." nodefault
    local-zone: "lab.test." static
    local-data: "www.lab.test. 300 IN A 198.51.100.2"
EOF
in_ns "$tgt" unbound -d -c "$work/unbound.conf" 2>"$work/unbound.log" &
pids+=($!)
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=198.51.100.2 -days 30 \
  -keyout "$work/web.key" -out "$work/web.crt" 2>/dev/null
in_ns "$tgt" python3 scripts/e2e/https_server.py 198.51.100.2 443 "$work/web.crt" "$work/web.key" 2>"$work/web.log" &
pids+=($!)

# --- Central: Prometheus scrape + backfill, Prometheus push only, VictoriaMetrics ------------
# The out-of-order window lets the backlog of an outage in beside the scraped samples. The
# shipped rules are loaded as a central Prometheus would.
mkdir -p "$work/rules"
cp monitoring/recording.yml monitoring/alerts.yml "$work/rules/"
prom_config() { # FILE [SCRAPE]
  {
    echo "global: { scrape_interval: 15s, scrape_timeout: 10s, evaluation_interval: 15s }"
    echo "storage: { tsdb: { out_of_order_time_window: 1d } }"
    echo "rule_files: ['$work/rules/*.yml']"
    if [ -n "${2:-}" ]; then
      echo "scrape_configs:"
      echo "  - job_name: vantage"
      echo "    static_configs: [{ targets: ['$NAME:9430'], labels: { instance: probe1 } }]"
    fi
  } >"$1"
}
prom_config "$work/central.yml" scrape
prom_config "$work/push.yml"
for p in "central 9090" "push 9091"; do
  set -- $p
  in_ns "$cen" prometheus --config.file="$work/$1.yml" --storage.tsdb.path="$work/$1-tsdb" \
    --web.listen-address="203.0.113.2:$2" --web.enable-remote-write-receiver \
    >"$work/$1.log" 2>&1 &
  pids+=($!)
done
in_ns "$cen" victoria-metrics -storageDataPath="$work/vm" -httpListenAddr=203.0.113.2:8428 \
  -retentionPeriod=1y -search.latencyOffset=0s >"$work/vm.log" 2>&1 &
pids+=($!)
central=http://203.0.113.2:9090
push=http://203.0.113.2:9091
vm=http://203.0.113.2:8428
cget() { in_ns "$cen" curl -fsS --max-time 30 "$@"; }
for _ in $(seq 100); do
  cget "$central/-/ready" >/dev/null 2>&1 && cget "$push/-/ready" >/dev/null 2>&1 \
    && cget "$vm/health" >/dev/null 2>&1 && break
  sleep 0.3
done

# --- Device ----------------------------------------------------------------------------------
cat >"$work/vantage.toml" <<EOF
[device]
name = "probe1"
labels = { site = "lab" }

[store]
commit_interval = "1s"

[[remote_write]]
name = "central"
url = "$central/api/v1/write"
send = "gaps"
min_backoff = "200ms"
max_backoff = "5s"
timeout = "10s"

[[remote_write]]
name = "push"
url = "$push/api/v1/write"
min_backoff = "200ms"
max_backoff = "5s"
timeout = "10s"

[[remote_write]]
name = "vm"
url = "$vm/api/v1/write"
min_backoff = "200ms"
max_backoff = "5s"
timeout = "10s"

[[targets]]
name = "lab"
host = "198.51.100.2"
probes = ["ping", "dns", "trace", "tcp", "http"]
interval = "1s"
ping = { packets = 4, spacing = "100ms", timeout = "500ms" }
dns = { query = "www.lab.test", type = "A", timeout = "500ms" }
trace = { max_hops = 4, timeout = "500ms", probes_per_hop = 1 }
tcp = { port = 443, tls = true, insecure = true, attempts = 2, timeout = "500ms" }
http = { url = "https://198.51.100.2/", insecure = true, timeout = "500ms" }
EOF
# Until /metrics answers under any Host, the name is allowed in the web settings.
mkdir -p "$work/data/web"
echo "{\"allowed_hosts\": [\"$NAME\"]}" >"$work/data/web/settings.json"
in_ns "$dev" "$bin" run --config "$work/vantage.toml" --listen 0.0.0.0:9430 \
  --data-dir "$work/data" >"$work/vantage.log" 2>&1 &
pids+=($!)
dget() { in_ns "$dev" curl -fsS --max-time 30 "$@"; }
for _ in $(seq 100); do dget http://127.0.0.1:9430/-/ready >/dev/null 2>&1 && break; sleep 0.3; done
metric() { # NAME ENDPOINT -> the endpoint's value on the device's /metrics
  dget http://127.0.0.1:9430/metrics \
    | awk -v n="$1" -v e="endpoint=\"$2\"" 'index($0, n "{") == 1 && index($0, e) && v == "" { v = $NF } END { print v }'
}
if in_ns "$cen" curl -fsS --max-time 10 -o /dev/null "http://$NAME:9430/metrics"; then
  ok "the central site reaches the device's /metrics by its DNS name ($NAME)"
else
  bad "the central site reaches the device's /metrics by its DNS name ($NAME)"
fi
if in_ns "$cen" curl -fsS --max-time 10 -o /dev/null -H "Host: other.corp.example.net:9430" \
    "http://203.0.113.1:9430/metrics"; then
  ok "/metrics answers under a Host name not in the web settings"
else
  bad "/metrics answers under a Host name not in the web settings (the Host check covers it)"
fi

# --- Before, outage, after -------------------------------------------------------------------
sleep "$BEFORE"
t_down=$(date +%s)
ip -n "$dev" link set vc down
in_ns "$tgt" iptables -w -I INPUT -p icmp --icmp-type echo-request \
  -m statistic --mode random --probability "$LOSS" -j DROP
echo "     outage of ${OUTAGE}s with ${LOSS} ping loss from $(date -u +%T)"
sleep "$OUTAGE"
in_ns "$tgt" iptables -w -D INPUT -p icmp --icmp-type echo-request \
  -m statistic --mode random --probability "$LOSS" -j DROP
ip -n "$dev" link set vc up
t_up=$(date +%s)
backlog_of() { metric vantage_remote_write_backlog_samples "$1"; }
oldest_of() { metric vantage_remote_write_oldest_unshipped_timestamp_seconds "$1"; }
echo "     backlog at the link's return: central $(backlog_of central), push $(backlog_of push), vm $(backlog_of vm)"
drained=no
for _ in $(seq 240); do
  # Push-only endpoints: nothing waits. Gaps: nothing from before the link came back waits
  # (the newest rounds wait for the next scrape, as they should).
  c=$(oldest_of central); p=$(backlog_of push); v=$(backlog_of vm)
  if [ "$p" = 0 ] && [ "$v" = 0 ] && awk -v c="${c:-1}" -v u="$t_up" 'BEGIN { exit !(c == 0 || c > u) }'; then
    drained=yes; break
  fi
  sleep 0.5
done
t_drained=$(date +%s)
[ "$drained" = yes ] && ok "every backlog shipped, $((t_drained - t_up))s after the link's return" \
  || bad "every backlog shipped (central oldest $(oldest_of central), push $(backlog_of push), vm $(backlog_of vm))"
# Two more scrapes, and VictoriaMetrics' in-memory parts searchable.
sleep 35

rejected=$(dget http://127.0.0.1:9430/metrics | awk '/^vantage_remote_write_rejected_samples_total/ { s += $NF } END { print s + 0 }')
# A round starting on the very millisecond of a central scrape meets that scrape's point (or a
# failed scrape's staleness marker): counted apart, as a collision, not as rejected.
collided=$(metric vantage_remote_write_scrape_collisions_total central)
[ "$rejected" = 0 ] && ok "vantage_remote_write_rejected_samples_total is 0 (${collided:-0} samples fell on a scrape's timestamp)" \
  || { bad "vantage_remote_write_rejected_samples_total is 0 (it is $rejected)"; dget http://127.0.0.1:9430/api/status 2>/dev/null | jq -c '.remote_write // .' | head -c 2000; echo; }
skipped=$(metric vantage_remote_write_skipped_samples_total central)
sent=$(metric vantage_remote_write_samples_sent_total central)
pushed=$(metric vantage_remote_write_samples_sent_total push)
if [ "${skipped:-0}" -gt 0 ] && [ "${sent:-0}" -gt 0 ] && [ "${sent:-0}" -lt "${pushed:-0}" ]; then
  ok "gaps mode: $sent rounds shipped to central, $skipped covered by scrapes (push-only: $pushed)"
else
  bad "gaps mode ships the gaps only (central sent ${sent:-?}, skipped ${skipped:-?}; push sent ${pushed:-?})"
fi
# Every outage round is in the scrape+backfill Prometheus, as in the push-only one.
count() { # URL -> ping rounds of the outage
  cget --data-urlencode "query=count_over_time(vantage_probe_success{instance=\"probe1\",target=\"lab\",probe=\"ping\"}[$((t_up - t_down))s])" \
    --data-urlencode "time=$t_up" "$1/api/v1/query" | jq -r '.data.result[0].value[1] // 0'
}
n_central=$(count "$central"); n_push=$(count "$push")
if [ "$n_push" -gt 0 ] && [ "$n_central" -ge $((n_push * 95 / 100)) ]; then
  ok "the outage's ping rounds are in central ($n_central samples) as in push ($n_push)"
else
  bad "the outage's ping rounds are in central ($n_central samples) as in push ($n_push)"
fi

# --- The dashboards over the outage ------------------------------------------------------------
out=$(in_ns "$cen" python3 scripts/e2e/central_view.py --scrape "$central" \
  --push "push=$push" --push "vm=$vm" --window "$t_down" "$t_up" \
  --before "$((t_down - BEFORE + 20))" "$t_down" --live "$t_up" "$(date +%s)" \
  --var job=vantage --var instance=probe1 --var target=lab --var site=lab \
  monitoring/grafana/dashboards/*.json 2>&1)
echo "$out" | sed '$d'
summary=$(echo "$out" | tail -1)
p=$(echo "$summary" | awk '{print $1}'); f=$(echo "$summary" | awk '{print $3}')
passed=$((passed + ${p:-0})); failed=$((failed + ${f:-1}))

if [ "$failed" -gt 0 ]; then
  echo "     logs: daemon, central Prometheus, VictoriaMetrics (last lines)"
  tail -n 5 "$work/vantage.log" "$work/central.log" "$work/vm.log" | sed 's/^/     /'
fi
finish
