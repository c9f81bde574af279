#!/usr/bin/env bash
# The image's node exporter switch outside the daemon, checked without an image:
#   - vantage-image-node-exporter.path/.service pass `systemd-analyze verify`; the path unit
#     watches the file the daemon writes, the helper records where the daemon reads; the image's
#     preset leaves the exporter off and the switch's units on; image/packages installs it;
#   - /usr/lib/vantage-image/node-exporter, against a fake systemctl: records "off" with no
#     request; "on" enables and starts, "off" disables and stops, the request removed; refuses a
#     symlink (its target not read), a directory, anything but "on"/"off" (a long file too);
#     a power cut between the switch and its record (the helper killed inside systemctl) leaves
#     the request taken, and the next (boot) run applies it; a newer request wins over an older
#     one a cut left; a failing systemctl is recorded as failed and the request dropped.
# The real exporter switched through the page is checked on an image (scripts/test-image.sh).
# Needs systemd; a second.
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1

# shellcheck source=scripts/lib/checks.sh
. scripts/lib/checks.sh
command -v systemd-analyze >/dev/null || { bad "systemd-analyze missing (apt install systemd)"; finish; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
overlay=$PWD/buildroot-overlay
units=$overlay/usr/lib/systemd/system
tool=$overlay/usr/lib/vantage-image/node-exporter
preset=$overlay/usr/lib/systemd/system-preset/70-vantage-image.preset
rust=firmware/vantage/src/node_exporter.rs

# --- The units.
verify_units "$tmp" vantage-image-node-exporter.path vantage-image-node-exporter.service
grep -qx 'PathExists=/var/lib/private/vantage/node-exporter-request' "$units/vantage-image-node-exporter.path" &&
  grep -q '^pub const REQUEST_FILE: &str = "node-exporter-request";' "$rust" &&
  grep -q 'VANTAGE_NODE_EXPORTER_REQUEST:-/var/lib/private/vantage/node-exporter-request}' "$tool" &&
  ok "the path unit and the helper take the file the daemon writes" || bad "the path unit, the helper and $rust disagree on the request file"
grep -q '^pub const STATE_FILE: &str = "/var/lib/vantage-image/node-exporter/state";' "$rust" &&
  grep -q 'VANTAGE_NODE_EXPORTER_DIR:-/var/lib/vantage-image/node-exporter}' "$tool" &&
  ok "the helper records where the daemon reads" || bad "the helper and $rust disagree on the state file"
grep -qx 'disable prometheus-node-exporter.service' "$preset" &&
  grep -qx 'enable vantage-image-node-exporter.path' "$preset" &&
  grep -qx 'enable vantage-image-node-exporter.service' "$preset" &&
  ok "the preset: the exporter off, the switch's path unit and boot run on" || bad "$preset: the exporter or the switch's units"
grep -qx 'prometheus-node-exporter' image/packages && grep -q 'prometheus-node-exporter.service' image/steps/chroot/30-system.sh &&
  ok "image/packages installs the exporter, the build checks it is off" || bad "image/packages or 30-system.sh"

# --- The helper, with a fake systemctl that keeps the unit's state in files.
fake=$tmp/fake
mkdir -p "$tmp/bin" "$fake" "$tmp/state"
cat >"$tmp/bin/systemctl" <<FAKE
#!/bin/sh
echo "\$*" >>"$fake/log"
case "\$1" in
  is-enabled) [ -e "$fake/enabled" ] ;;
  is-active) if [ -e "$fake/active" ]; then echo active; else echo inactive; exit 3; fi ;;
  enable|disable)
    [ -e "$fake/fail" ] && exit 1
    if [ "\$1" = enable ]; then touch "$fake/enabled" "$fake/active"; else rm -f "$fake/enabled" "$fake/active"; fi
    # A power cut right after the switch, before the helper records it.
    [ -e "$fake/cut" ] && kill -9 "\$PPID"
    exit 0 ;;
esac
FAKE
chmod +x "$tmp/bin/systemctl"
req=$tmp/state/node-exporter-request
dir=$tmp/image
run() { : >"$fake/log"; PATH="$tmp/bin:$PATH" VANTAGE_NODE_EXPORTER_REQUEST=$req VANTAGE_NODE_EXPORTER_DIR=$dir \
  "$tool" >"$tmp/out" 2>&1; }
state() { cat "$dir/state" 2>/dev/null; }
switched() { grep -E '^(enable|disable)' "$fake/log" | tr '\n' ';'; }

run; rc=$?
[ "$rc" = 0 ] && [ "$(state)" = "off inactive" ] && [ -z "$(switched)" ] &&
  ok "no request: 'off inactive' recorded, nothing switched" || bad "no request: rc $rc, state '$(state)', $(switched) $(cat "$tmp/out")"

printf 'on\n' >"$req"
run; rc=$?
[ "$rc" = 0 ] && [ "$(switched)" = "enable --now prometheus-node-exporter.service;" ] && [ "$(state)" = "on active" ] &&
  ok "on: enabled and started, 'on active' recorded" || bad "on: rc $rc, $(switched), state '$(state)', $(cat "$tmp/out")"
[ ! -e "$req" ] && [ ! -e "$dir/request" ] && [ ! -e "$dir/state.tmp" ] &&
  ok "the request is gone, nothing left beside the state" || bad "left: $(ls "$tmp/state" "$dir")"
printf 'off' >"$req"
run; rc=$?
[ "$rc" = 0 ] && [ "$(switched)" = "disable --now prometheus-node-exporter.service;" ] && [ "$(state)" = "off inactive" ] &&
  ok "off (without a newline): disabled and stopped, 'off inactive' recorded" || bad "off: rc $rc, $(switched), state '$(state)'"

echo secret >"$tmp/secret"
ln -s "$tmp/secret" "$req"
run; rc=$?
[ "$rc" != 0 ] && [ -z "$(switched)" ] && [ ! -L "$req" ] && ! grep -q secret "$tmp/out" && [ "$(cat "$tmp/secret")" = secret ] &&
  [ "$(state)" = "off inactive" ] && ok "a symlink is refused and removed, its target not read" || bad "symlink: rc $rc, $(switched), $(cat "$tmp/out")"
mkdir -p "$req/x"
run; rc=$?
[ "$rc" != 0 ] && [ -z "$(switched)" ] && [ ! -e "$req" ] && ok "a directory is refused and removed" || bad "directory: rc $rc, $(switched)"
bad_ones=0
for body in 'yes\n' 'ON\n' 'on\nx' 'on\0' 'o\0n' '' ' on\n' 'on off\n'; do
  # shellcheck disable=SC2059 # the bodies are printf formats on purpose
  printf "$body" >"$req"
  run; rc=$?
  if [ "$rc" = 0 ] || [ -n "$(switched)" ] || [ -e "$req" ] || [ -e "$dir/request" ]; then
    bad "request '$body': rc $rc, $(switched)"; bad_ones=1
  fi
done
{ printf 'on\n'; head -c 1048576 /dev/zero; } >"$req"
run; rc=$?
[ "$rc" != 0 ] && [ -z "$(switched)" ] || { bad "a 1 MiB request starting with on: rc $rc, $(switched)"; bad_ones=1; }
[ "$bad_ones" = 0 ] && grep -q 'not "on" or "off": refused' "$tmp/out" &&
  ok "anything but on/off (case, spaces, NULs, empty, 1 MiB) is refused and removed, nothing switched" ||
  bad "the refusal does not say why: $(cat "$tmp/out")"

# A power cut between the switch and its record: the helper dies inside systemctl.
printf 'on\n' >"$req"
touch "$fake/cut"
(run) 2>/dev/null; rc=$?
rm -f "$fake/cut"
[ "$rc" != 0 ] && [ ! -e "$req" ] && [ "$(cat "$dir/request" 2>/dev/null)" = on ] && [ "$(state)" = "off inactive" ] &&
  ok "a cut after the switch leaves the request taken and the old record" || bad "cut: rc $rc, taken '$(cat "$dir/request" 2>/dev/null)', state '$(state)'"
run; rc=$?
[ "$rc" = 0 ] && [ "$(switched)" = "enable --now prometheus-node-exporter.service;" ] && [ "$(state)" = "on active" ] && [ ! -e "$dir/request" ] &&
  ok "the next boot's run applies it again and records it" || bad "after the cut: rc $rc, $(switched), state '$(state)'"
# A cut left an older request taken; a newer one came since: the newer one wins.
printf 'on\n' >"$dir/request"
printf 'off\n' >"$req"
run; rc=$?
[ "$rc" = 0 ] && [ "$(switched)" = "disable --now prometheus-node-exporter.service;" ] && [ "$(state)" = "off inactive" ] &&
  ok "a newer request wins over one a cut left" || bad "newer request: rc $rc, $(switched), state '$(state)'"

touch "$fake/fail"
printf 'on\n' >"$req"
run; rc=$?
rm -f "$fake/fail"
[ "$rc" != 0 ] && [ "$(state)" = "off inactive failed" ] && [ ! -e "$req" ] && [ ! -e "$dir/request" ] &&
  grep -q 'failed' "$tmp/out" && ok "a failing systemctl: 'off inactive failed' recorded, the request dropped (no loop)" ||
  bad "systemctl fails: rc $rc, state '$(state)', $(cat "$tmp/out")"
run
[ "$(state)" = "off inactive" ] && ok "the next run records the state without the failure" || bad "after the failure: '$(state)'"
finish
