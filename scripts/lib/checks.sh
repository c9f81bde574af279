# shellcheck shell=bash
# The tally of a scripts/tests.d suite: an "ok ..." or "FAIL ..." line per check, then
# "N passed, N failed". Sourced from the repository root: . scripts/lib/checks.sh
pass=0 fail=0
ok() { echo "ok   $*"; pass=$((pass + 1)); }
bad() { echo "FAIL $*"; fail=$((fail + 1)); }
# The tally, and the exit status: 0 when nothing failed.
finish() { echo "$pass passed, $fail failed"; [ "$fail" -eq 0 ]; exit; }
# verify_units TMPDIR UNIT...: `systemd-analyze verify` of buildroot-overlay's units, with their
# ExecStart= pointed into the overlay (verify wants the program to exist); one check.
verify_units() {
  local tmp=$1 overlay=$PWD/buildroot-overlay u files=()
  shift
  mkdir -p "$tmp/units"
  for u; do
    sed "s|^ExecStart=/usr/lib/vantage-image/|ExecStart=$overlay/usr/lib/vantage-image/|" \
      "$overlay/usr/lib/systemd/system/$u" >"$tmp/units/$u"
    files+=("$tmp/units/$u")
  done
  if systemd-analyze verify --man=no "${files[@]}" >"$tmp/verify.log" 2>&1 && ! grep -q . "$tmp/verify.log"; then
    ok "systemd-analyze verify $*"
  else
    bad "systemd-analyze verify $*: $(cat "$tmp/verify.log")"
  fi
}
# private_bus DIR POLICY: a dbus-daemon of the system bus's type listening on DIR/bus, with
# POLICY (XML inside <busconfig>); waits up to 5 s for its address (DIR/address). Sets
# $bus_pid; its messages go to DIR/bus.log. Returns 1 when it did not come up. Started
# directly, not under timeout(1): a TERM that reached timeout sometimes left dbus-daemon
# running, holding the suite's stdout.
private_bus() {
  cat >"$1/bus.conf" <<CONF
<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path=$1/bus</listen>
$2
</busconfig>
CONF
  rm -f "$1/address"
  dbus-daemon --config-file="$1/bus.conf" --nofork --nopidfile --print-address=3 \
    3>"$1/address" 2>"$1/bus.log" &
  bus_pid=$!
  local _
  for _ in $(seq 50); do
    [ -s "$1/address" ] && return 0
    kill -0 "$bus_pid" 2>/dev/null || return 1
    sleep 0.1
  done
  return 1
}
