#!/usr/bin/env bash
# The Debian packages: builds one per architecture (`ci` profile), installs the amd64 one on this
# machine with dpkg, verifies the unit with systemd-analyze, runs the installed daemon the way its
# unit does (no capabilities, an unprivileged uid) to show the sysctl drop-in is all ICMP needs,
# checks that `dpkg -r` keeps config and data and `dpkg -P` removes them, and runs lintian on
# every .deb. Needs root (dpkg); restores net.ipv4.ping_group_range afterwards.
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1

pass=0 fail=0
ok() { echo "ok   $*"; pass=$((pass + 1)); }
bad() { echo "FAIL $*"; fail=$((fail + 1)); }
finish() {
  echo "$pass passed, $fail failed"
  [ "$fail" -eq 0 ]
  exit
}
check() { # check DESCRIPTION COMMAND...
  local what=$1
  shift
  if "$@"; then ok "$what"; else bad "$what"; fi
}

if [ "$(id -u)" -ne 0 ]; then
  if [ "${VANTAGE_REQUIRE_ROOT_TESTS:-0}" = 1 ]; then
    bad "60-deb needs root (dpkg -i) and VANTAGE_REQUIRE_ROOT_TESTS=1 is set"
  else
    echo "skip: 60-deb installs a package and needs root"
  fi
  finish
fi

work=$(mktemp -d)
daemon=""
ping_range_before=$(cat /proc/sys/net/ipv4/ping_group_range)
cleanup() {
  [ -n "$daemon" ] && kill "$daemon" 2>/dev/null && wait "$daemon" 2>/dev/null
  dpkg-query -W vantage >/dev/null 2>&1 && dpkg -P vantage >/dev/null 2>&1
  # postinst opened ping sockets on this machine; put back what was there.
  echo "$ping_range_before" > /proc/sys/net/ipv4/ping_group_range 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

if dpkg-query -W -f='${Status}' vantage 2>/dev/null | grep -q installed; then
  bad "a vantage package is already installed here; refusing to touch it"
  finish
fi

if scripts/build-deb.sh --profile ci > "$work/build.log" 2>&1; then
  ok "build-deb.sh --profile ci (all three architectures)"
  grep '\.deb ' "$work/build.log"
else
  tail -30 "$work/build.log"
  bad "build-deb.sh --profile ci"
  finish
fi
version=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version *= *"\(.*\)"/\1/p' Cargo.toml)
deb=dist/vantage_${version}_amd64.deb

for arch in amd64 arm64 armhf; do
  f=dist/vantage_${version}_$arch.deb
  check "$arch: Architecture field" test "$(dpkg-deb -f "$f" Architecture)" = "$arch"
  check "$arch: /etc/vantage/vantage.toml is a conffile" \
    test "$(dpkg-deb --ctrl-tarfile "$f" | tar -xO ./conffiles)" = /etc/vantage/vantage.toml
  if lintian --fail-on error "$f" > "$work/lintian-$arch.log" 2>&1; then
    ok "$arch: lintian: no errors ($(grep -c '^W:' "$work/lintian-$arch.log") warnings)"
  else
    bad "$arch: lintian"
    cat "$work/lintian-$arch.log"
  fi
done

# --- install ---
if dpkg -i "$deb" > "$work/dpkg.log" 2>&1; then ok "dpkg -i $deb"; else bad "dpkg -i"; cat "$work/dpkg.log"; finish; fi
check "installed binary runs" test "$(/usr/bin/vantage --version)" = "vantage $version"
check "installed config is valid" /usr/bin/vantage check-config /etc/vantage/vantage.toml
check "config is the sample config" cmp -s /etc/vantage/vantage.toml firmware/vantage/vantage.toml
check "unit and sysctl drop-in installed" \
  test -f /usr/lib/systemd/system/vantage.service -a -f /usr/lib/sysctl.d/60-vantage.conf
# postinst applies the drop-in at once unless /proc/sys is read-only (then only at boot).
if [ -w /proc/sys/net/ipv4/ping_group_range ]; then
  check "postinst opened net.ipv4.ping_group_range" \
    test "$(tr -s '\t ' ' ' < /proc/sys/net/ipv4/ping_group_range)" = "0 2147483647"
fi
check "postinst enabled vantage.service" \
  test -L /etc/systemd/system/multi-user.target.wants/vantage.service
check "postinst enabled vantage-leds-boot.service" \
  test -L /etc/systemd/system/sysinit.target.wants/vantage-leds-boot.service
missing=""
for cmd in $(vantage --help | sed -n '/^Commands:/,/^$/s/^  \([a-z][a-z-]*\) .*/\1/p' | grep -vx help); do
  zcat /usr/share/man/man1/vantage.1.gz | grep -qi "^\.SH \"OPTIONS OF VANTAGE $cmd\"" ||
    missing+=" $cmd"
done
check "vantage(1) has a section for every subcommand${missing:+ (missing:$missing)}" \
  test -z "$missing" -a -n "$(vantage --help | grep -A1 '^Commands:' | tail -1)"
# Each unit with its drop-ins (vantage.service.d/) as systemd would load them; any output is a
# problem systemd would log.
for u in vantage.service vantage-leds-boot.service; do
  if systemd-analyze verify --man=no "/usr/lib/systemd/system/$u" > "$work/verify.log" 2>&1 &&
    ! grep -q . "$work/verify.log"; then
    ok "systemd-analyze verify $u"
  else
    bad "systemd-analyze verify $u"
    cat "$work/verify.log"
  fi
done
# systemd's own sandbox score (0 = locked down, 10 = none): keep it in the "OK" band, at most 2.
exposure=$(systemd-analyze security --offline=true /usr/lib/systemd/system/vantage.service 2>&1 |
  sed -n 's/.*Overall exposure level for vantage.service: \([0-9.]*\).*/\1/p')
if systemd-analyze security --offline=true --threshold=20 /usr/lib/systemd/system/vantage.service \
  > /dev/null 2>&1; then
  ok "systemd-analyze security: exposure $exposure (at most 2.0)"
else
  bad "systemd-analyze security: exposure ${exposure:-unknown} is above 2.0"
fi
# The unit grants no capabilities and runs as a dynamic uid: do the same by hand (no systemd is
# needed for this part) and expect working ICMP thanks to the sysctl drop-in alone.
unit=/usr/lib/systemd/system/vantage.service
for line in 'DynamicUser=yes' 'CapabilityBoundingSet=' 'ProtectSystem=strict' 'Type=notify' \
  'StateDirectory=vantage'; do
  check "unit sets $line" grep -qx "$line" "$unit"
done
check "unit sets WatchdogSec" grep -qE '^WatchdogSec=[0-9]+' "$unit"
if command -v setpriv >/dev/null && [ -w /proc/sys/net/ipv4/ping_group_range ]; then
  port=$((20000 + $$ % 20000 + 2))
  state="$work/state"
  mkdir -p "$state" && chown 61184:61184 "$state"
  chmod 0755 "$work"
  # The unit's own command line, word by word (it has no shell syntax), run as systemd would:
  # a uid of its own, no capabilities, $STATE_DIRECTORY set.
  read -r -a exec_start <<<"$(sed -n 's/^ExecStart=//p' "$unit")"
  STATE_DIRECTORY=$state VANTAGE_LISTEN=127.0.0.1:$port setpriv --reuid 61184 --regid 61184 \
    --clear-groups --inh-caps=-all --bounding-set=-all --no-new-privs \
    "${exec_start[@]}" > "$work/run.log" 2>&1 &
  daemon=$!
  received=0
  for _ in $(seq 60); do
    received=$(curl -sf --max-time 2 "http://127.0.0.1:$port/metrics" |
      sed -n 's/^vantage_ping_packets_received_total{.*target="loopback-v4".*} \([0-9]*\)$/\1/p')
    [ "${received:-0}" -ge 2 ] && break
    sleep 0.5
  done
  if [ "${received:-0}" -ge 2 ]; then
    ok "the unit's ExecStart, unprivileged and without capabilities, pings 127.0.0.1 ($received replies)"
  else
    bad "the unit's ExecStart, unprivileged: no ping replies"
    tail -20 "$work/run.log"
  fi
  # The page saves where the sandbox lets it: the state directory, starting from /etc's file.
  api="http://127.0.0.1:$port/api"
  token=$(curl -sf --max-time 5 -c "$work/jar" -H 'Content-Type: application/json' \
    -d '{"password":"deb-suite-password"}' "$api/auth/setup" | sed -n 's/.*"csrf_token":"\([^"]*\)".*/\1/p')
  code=$(curl -s --max-time 10 -o "$work/save.json" -w '%{http_code}' -b "$work/jar" \
    -H "X-CSRF-Token: $token" -H 'Content-Type: application/json' \
    -d '{"name":"saved-by-page","host":"127.0.0.2","probes":["ping"]}' "$api/targets")
  if [ "$code" = 201 ] && grep -q 'saved-by-page' "$state/vantage.toml" &&
    grep -q 'loopback-v4' "$state/vantage.toml" && ! grep -q 'saved-by-page' /etc/vantage/vantage.toml; then
    ok "a target added on the page is saved to \$STATE_DIRECTORY/vantage.toml, /etc untouched"
  else
    bad "saving from the page under the unit's command line: HTTP $code $(cat "$work/save.json" 2>/dev/null)"
  fi
  kill "$daemon" 2>/dev/null
  wait "$daemon" 2>/dev/null
  daemon=""
else
  echo "note: setpriv missing or /proc/sys read-only: unprivileged run not checked"
fi

# --- an admin edits the config, the daemon writes data; reinstalling (an upgrade) keeps both ---
echo '# local edit' >> /etc/vantage/vantage.toml
mkdir -p /var/lib/private/vantage && ln -sfn private/vantage /var/lib/vantage
echo sample > /var/lib/private/vantage/store
if dpkg -i "$deb" > "$work/dpkg.log" 2>&1; then ok "dpkg -i over the installed package"; else bad "dpkg -i (upgrade)"; cat "$work/dpkg.log"; fi
check "upgrade keeps the edited config" grep -qx '# local edit' /etc/vantage/vantage.toml
check "upgrade keeps the data" test -f /var/lib/vantage/store

# --- remove ---
if dpkg -r vantage > "$work/dpkg.log" 2>&1; then ok "dpkg -r vantage"; else bad "dpkg -r"; cat "$work/dpkg.log"; fi
check "remove deletes the binary" test ! -e /usr/bin/vantage
check "remove deletes the unit" test ! -e /usr/lib/systemd/system/vantage.service
check "remove keeps the edited config" grep -qx '# local edit' /etc/vantage/vantage.toml
check "remove keeps the data" test -f /var/lib/vantage/store
check "package state is config-files" \
  test "$(dpkg-query -W -f='${db:Status-Status}' vantage)" = config-files

# --- purge ---
if dpkg -P vantage > "$work/dpkg.log" 2>&1; then ok "dpkg -P vantage"; else bad "dpkg -P"; cat "$work/dpkg.log"; fi
check "purge deletes /etc/vantage" test ! -e /etc/vantage
check "purge deletes the data" test ! -e /var/lib/vantage -a ! -e /var/lib/private/vantage
check "purge removes the enablement symlinks" test ! -e \
  /etc/systemd/system/multi-user.target.wants/vantage.service -a ! -e \
  /etc/systemd/system/sysinit.target.wants/vantage-leds-boot.service
check "package is gone from dpkg's database" \
  test -z "$(dpkg-query -W -f='${db:Status-Status}' vantage 2>/dev/null | grep -v not-installed)"

# Purge leaves files it did not install and says so.
dpkg -i "$deb" > /dev/null 2>&1
echo keep > /etc/vantage/notes.txt
dpkg -P vantage > "$work/dpkg.log" 2>&1
check "purge keeps a file the admin added, and says so" \
  test -f /etc/vantage/notes.txt -a -n "$(grep 'left in place' "$work/dpkg.log")"
rm -rf /etc/vantage

finish
