#!/usr/bin/env bash
# Browser end-to-end test of the web page: a fresh device in its own network namespace, a
# headless Chromium driven over WebDriver (chromedriver) by scripts/e2e/web-e2e.mjs.
#   fresh device -> set password -> log in -> add a target pinging a peer namespace -> green
#   -> edit -> delete -> settings: a remote_write endpoint added and edited (checked in the
#   file), store and LED limits -> HTTPS -> a trace and a ping target's page (the chart's buckets
#   against the API) -> "Run now" of a ping burst and of traces, read as they stream, with
#   screenshots in target/e2e-artifacts/ (CI artefacts).
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
for tool in chromium chromedriver node ip curl; do
  command -v "$tool" >/dev/null || { echo "web e2e: $tool is missing (scripts/setup.sh installs it)"; echo "0 passed, 1 failed"; exit 1; }
done

cargo build -p vantage --locked -q || { echo "0 passed, 1 failed"; exit 1; }
BIN=$PWD/target/debug/vantage
ART=$PWD/target/e2e-artifacts
mkdir -p "$ART"
rm -f "$ART"/web-*.png

DEV=vwdev$$ TGT=vwtgt$$
DATA=$(mktemp -d /tmp/vantage-web-e2e.XXXXXX)
DAEMON_PID=
cleanup() {
  [ -n "$DAEMON_PID" ] && kill "$DAEMON_PID" 2>/dev/null && wait "$DAEMON_PID" 2>/dev/null
  ip netns pids "$DEV" 2>/dev/null | xargs -r kill 2>/dev/null
  ip netns del "$DEV" 2>/dev/null
  ip netns del "$TGT" 2>/dev/null
  rm -rf "$DATA"
}
trap cleanup EXIT

# The device namespace (daemon, browser) and a peer to ping, joined by a veth pair.
ip netns add "$DEV" && ip netns add "$TGT" || { echo "0 passed, 1 failed"; exit 1; }
ip link add "vd$$" netns "$DEV" type veth peer name "vt$$" netns "$TGT"
ip -n "$DEV" link set lo up && ip -n "$TGT" link set lo up
ip -n "$DEV" addr add 192.0.2.1/24 dev "vd$$" && ip -n "$DEV" link set "vd$$" up
ip -n "$TGT" addr add 192.0.2.2/24 dev "vt$$" && ip -n "$TGT" link set "vt$$" up

ip netns exec "$DEV" "$BIN" run --listen 127.0.0.1:9430 --data-dir "$DATA" >"$ART/web-daemon.log" 2>&1 &
DAEMON_PID=$!
for _ in $(seq 1 100); do
  ip netns exec "$DEV" curl -fs -o /dev/null http://127.0.0.1:9430/-/healthy && break
  sleep 0.1
done

ip netns exec "$DEV" env HOME="$DATA" node scripts/e2e/web-e2e.mjs \
  --url http://127.0.0.1:9430/ --artifacts "$ART" --data-dir "$DATA" --peer 192.0.2.2
