#!/usr/bin/env bash
# Browser end-to-end test of the web page: a fresh device in its own network namespace, a
# headless Chromium driven over WebDriver (chromedriver) by scripts/e2e/web-e2e.mjs.
#   fresh device -> set password -> log in -> add a target pinging a peer namespace -> green
#   -> edit -> delete -> settings: a remote_write endpoint added and edited (checked in the
#   file), store and LED limits -> an update bundle uploaded and refused (no trusted keyring
#   here) -> HTTPS -> a trace and a ping target's page (the chart's buckets against the API, a
#   link to a range)
#   -> "Run now" of a ping burst and of traces through a router (two hops), read as they
#   stream -> the router's address changes: the path before and after -> a DNS
#   target (unbound on the device's loopback) and an HTTPS target (a certificate valid for 10
#   days) added by hand: their phases against /api/samples, the last answer's records, the
#   certificate's warning; screenshots in target/e2e-artifacts/ (CI artefacts).
# Everything (daemon, browser, driver) runs inside the test's namespaces; nothing touches the
# host's network. Needs root; skips without it unless VANTAGE_REQUIRE_ROOT_TESTS=1.
set -uo pipefail
cd "$(dirname "$0")/../.."

if [ "$(id -u)" -ne 0 ]; then
  if [ "${VANTAGE_REQUIRE_ROOT_TESTS:-0}" = 1 ]; then
    echo "web e2e: needs root for network namespaces"; echo "0 passed, 1 failed"; exit 1
  fi
  echo "web e2e: skipped (needs root for network namespaces)"; echo "0 passed, 0 failed"; exit 0
fi
for tool in chromium chromedriver node ip curl unbound openssl python3; do
  command -v "$tool" >/dev/null || { echo "web e2e: $tool is missing (scripts/setup.sh installs it)"; echo "0 passed, 1 failed"; exit 1; }
done

cargo build -p vantage --locked -q || { echo "0 passed, 1 failed"; exit 1; }
BIN=$PWD/target/debug/vantage
ART=$PWD/target/e2e-artifacts
mkdir -p "$ART"
rm -f "$ART"/web-*.png

DEV=vwdev$$ TGT=vwtgt$$ FAR=vwfar$$
DATA=$(mktemp -d /tmp/vantage-web-e2e.XXXXXX)
DAEMON_PID=
cleanup() {
  [ -n "$DAEMON_PID" ] && kill "$DAEMON_PID" 2>/dev/null && wait "$DAEMON_PID" 2>/dev/null
  ip netns pids "$DEV" 2>/dev/null | xargs -r kill 2>/dev/null
  ip netns del "$DEV" 2>/dev/null
  ip netns del "$TGT" 2>/dev/null
  ip netns del "$FAR" 2>/dev/null
  rm -rf "$DATA"
}
trap cleanup EXIT

# The device namespace (daemon, browser) and a peer to ping, joined by a veth pair; the peer
# also routes to a far host, two hops from the device (no ICMP rate limit: every probe of a
# trace gets its answer). The peer's 192.0.2.3 is its source for ICMP errors once the test
# changes the path (--router-ns).
ip netns add "$DEV" && ip netns add "$TGT" && ip netns add "$FAR" || { echo "0 passed, 1 failed"; exit 1; }
ip link add "vd$$" netns "$DEV" type veth peer name "vt$$" netns "$TGT"
ip link add "vr$$" netns "$TGT" type veth peer name "vf$$" netns "$FAR"
ip -n "$DEV" link set lo up && ip -n "$TGT" link set lo up && ip -n "$FAR" link set lo up
ip -n "$DEV" addr add 192.0.2.1/24 dev "vd$$" && ip -n "$DEV" link set "vd$$" up
ip -n "$TGT" addr add 192.0.2.2/24 dev "vt$$" && ip -n "$TGT" addr add 192.0.2.3/24 dev "vt$$"
ip -n "$TGT" link set "vt$$" up
ip -n "$TGT" addr add 198.51.100.1/24 dev "vr$$" && ip -n "$TGT" link set "vr$$" up
ip -n "$FAR" addr add 198.51.100.2/24 dev "vf$$" && ip -n "$FAR" link set "vf$$" up
ip -n "$FAR" route add default via 198.51.100.1
ip -n "$DEV" route add 198.51.100.0/24 via 192.0.2.2
ip netns exec "$TGT" sysctl -qw net.ipv4.ip_forward=1 net.ipv4.icmp_ratelimit=0

# On the device's loopback: a DNS server answering three records for one name, and an HTTPS
# server whose self-signed certificate is valid for CERT_DAYS days (under the page's warning).
DNS_PORT=5353 WEB_PORT=8443 CERT_DAYS=10
cat >"$DATA/unbound.conf" <<EOF
server:
    interface: 127.0.0.1@$DNS_PORT
    do-daemonize: no
    username: ""
    chroot: ""
    directory: "$DATA"
    pidfile: ""
    use-syslog: no
    logfile: ""
    num-threads: 1
    access-control: 127.0.0.0/8 allow
    module-config: "iterator"
    local-zone: "test." nodefault
    local-zone: "page.test." static
    local-data: "www.page.test. 300 IN A 192.0.2.21"
    local-data: "www.page.test. 300 IN A 192.0.2.22"
    local-data: "www.page.test. 300 IN A 192.0.2.23"
EOF
ip netns exec "$DEV" unbound -d -c "$DATA/unbound.conf" >/dev/null 2>"$ART/web-unbound.log" &
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=127.0.0.1 -days "$CERT_DAYS" \
  -keyout "$DATA/web.key" -out "$DATA/web.crt" 2>/dev/null
ip netns exec "$DEV" python3 scripts/e2e/https_server.py 127.0.0.1 "$WEB_PORT" "$DATA/web.crt" "$DATA/web.key" 2>"$ART/web-https.log" &
for _ in $(seq 50); do grep -q "start of service" "$ART/web-unbound.log" && break; sleep 0.2; done
for _ in $(seq 50); do ip netns exec "$DEV" curl -skf "https://127.0.0.1:$WEB_PORT/" >/dev/null && break; sleep 0.2; done

ip netns exec "$DEV" "$BIN" run --listen 127.0.0.1:9430 --data-dir "$DATA" >"$ART/web-daemon.log" 2>&1 &
DAEMON_PID=$!
for _ in $(seq 1 100); do
  ip netns exec "$DEV" curl -fs -o /dev/null http://127.0.0.1:9430/-/healthy && break
  sleep 0.1
done

ip netns exec "$DEV" env HOME="$DATA" node scripts/e2e/web-e2e.mjs \
  --url http://127.0.0.1:9430/ --artifacts "$ART" --data-dir "$DATA" --peer 192.0.2.2 \
  --far 198.51.100.2 --router-ns "$TGT" --router-dev "vt$$" \
  --dns-port "$DNS_PORT" --web-port "$WEB_PORT" --cert-days "$CERT_DAYS"
