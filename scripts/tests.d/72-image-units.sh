#!/usr/bin/env bash
# The image's update plumbing that runs outside the daemon, checked without an image:
#   - vantage-image-reboot.path/.service pass `systemd-analyze verify`;
#   - /usr/lib/vantage-image/reboot-request reboots (a fake systemctl) for a request written
#     during this boot, removes it, logs why; drops a request from before this boot; refuses a
#     symlink; does nothing without a request.
# Needs systemd; a second.
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1

pass=0 fail=0
ok() { echo "ok   $1"; pass=$((pass + 1)); }
bad() { echo "FAIL $1"; fail=$((fail + 1)); }
finish() { echo "$pass passed, $fail failed"; [ "$fail" -eq 0 ]; exit; }
command -v systemd-analyze >/dev/null || { bad "systemd-analyze missing (apt install systemd)"; finish; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
overlay=$PWD/buildroot-overlay
units=$overlay/usr/lib/systemd/system
tool=$overlay/usr/lib/vantage-image/reboot-request

# --- The units, with ExecStart pointing into the overlay (verify wants the program to exist).
mkdir "$tmp/units"
cp "$units/vantage-image-reboot.path" "$units/vantage-image-reboot.service" "$tmp/units/"
sed -i "s|^ExecStart=/usr/lib/vantage-image/|ExecStart=$overlay/usr/lib/vantage-image/|" \
  "$tmp/units/vantage-image-reboot.service"
if systemd-analyze verify --man=no "$tmp/units/vantage-image-reboot.path" \
  "$tmp/units/vantage-image-reboot.service" >"$tmp/verify.log" 2>&1 && ! grep -q . "$tmp/verify.log"; then
  ok "systemd-analyze verify vantage-image-reboot.path and .service"
else
  bad "systemd-analyze verify: $(cat "$tmp/verify.log")"
fi
grep -qx 'PathExists=/var/lib/private/vantage/reboot-request' "$units/vantage-image-reboot.path" &&
  grep -q '^REBOOT_REQUEST_FILE\|"reboot-request"' firmware/vantage/src/update/fleet.rs &&
  ok "the path unit watches the file the daemon writes" || bad "the path unit and fleet.rs disagree on the file"
grep -qx 'enable vantage-image-reboot.path' "$overlay/usr/lib/systemd/system-preset/70-vantage-image.preset" &&
  ok "the path unit is enabled by the image's preset" || bad "vantage-image-reboot.path not in the preset"

# --- The reboot script, with a fake systemctl and a fake /proc/stat.
mkdir -p "$tmp/bin" "$tmp/state" "$tmp/run"
printf '#!/bin/sh\necho "$*" >>"%s/systemctl.log"\n' "$tmp" >"$tmp/bin/systemctl"
chmod +x "$tmp/bin/systemctl"
req=$tmp/state/reboot-request
boot=$(($(date +%s) - 100))
printf 'cpu  1 2 3\nbtime %s\nprocesses 9\n' "$boot" >"$tmp/stat"
run() { PATH="$tmp/bin:$PATH" VANTAGE_REBOOT_REQUEST=$req VANTAGE_PROC_STAT=$tmp/stat \
  VANTAGE_RUN_DIR=$tmp/run "$tool" >"$tmp/out" 2>&1; }

run; rc=$?
[ "$rc" = 0 ] && [ ! -e "$tmp/systemctl.log" ] && ok "no request: no reboot" || bad "no request: rc $rc, $(cat "$tmp/out")"

printf 'fleet update 1.3.0 installed\n\033[31m' >"$req"
run; rc=$?
[ "$rc" = 0 ] && [ "$(cat "$tmp/systemctl.log" 2>/dev/null)" = reboot ] && ok "a request reboots" ||
  bad "a request: rc $rc, systemctl: $(cat "$tmp/systemctl.log" 2>/dev/null), $(cat "$tmp/out")"
[ ! -e "$req" ] && ok "the request is removed" || bad "the request is still there"
grep -q 'asks for a reboot: fleet update 1.3.0 installed\[31m$' "$tmp/out" &&
  ok "why is logged, printable characters only" || bad "log: $(cat -v "$tmp/out")"
[ -z "$(ls -A "$tmp/run")" ] && ok "nothing left in the run directory" || bad "left: $(ls "$tmp/run")"
rm -f "$tmp/systemctl.log"

echo 'fleet update 1.3.0 installed' >"$req"
touch -d "@$((boot - 60))" "$req"
run; rc=$?
[ "$rc" = 0 ] && [ ! -e "$tmp/systemctl.log" ] && [ ! -e "$req" ] && grep -q 'before this boot dropped' "$tmp/out" &&
  ok "a request from before this boot is dropped, no reboot" || bad "stale request: rc $rc, $(cat "$tmp/out")"

echo secret >"$tmp/secret"
ln -s "$tmp/secret" "$req"
run; rc=$?
[ "$rc" != 0 ] && [ ! -e "$tmp/systemctl.log" ] && [ ! -L "$req" ] && ! grep -q secret "$tmp/out" &&
  ok "a symlink is refused and removed, its target not read" || bad "symlink: rc $rc, $(cat "$tmp/out")"

finish
