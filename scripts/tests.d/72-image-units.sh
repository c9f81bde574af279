#!/usr/bin/env bash
# The image's update plumbing that runs outside the daemon, checked without an image:
#   - vantage-image-reboot.path/.service pass `systemd-analyze verify`;
#   - /usr/lib/vantage-image/reboot-request reboots (a fake systemctl) for a request written
#     during this boot, removes it, logs why; drops a request from before this boot; refuses a
#     symlink; does nothing without a request;
#   - the image declares a static user for the daemon (dbus-daemon cannot name a DynamicUser
#     UID and closes its connection);
#   - dbus-daemon loads the RAUC policy for the vantage-update group (invalid XML fails the
#     load; a group it cannot resolve is the only complaint allowed, when this machine has no
#     such group), and the policy allows exactly the calls `rauc install` makes.
# What the policy lets a real RAUC service do for the real daemon is checked only on an image
# (scripts/test-image.sh --update; docs/IMAGE.md). Needs systemd and dbus-daemon; a second.
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1

# shellcheck source=scripts/lib/checks.sh
. scripts/lib/checks.sh
for t in systemd-analyze dbus-daemon; do
  command -v "$t" >/dev/null || { bad "$t missing (apt install systemd dbus-daemon)"; finish; }
done

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
overlay=$PWD/buildroot-overlay
units=$overlay/usr/lib/systemd/system
tool=$overlay/usr/lib/vantage-image/reboot-request

# --- The units.
verify_units "$tmp" vantage-image-reboot.path vantage-image-reboot.service
grep -qx 'PathExists=/var/lib/private/vantage/reboot-request' "$units/vantage-image-reboot.path" &&
  grep -q '^REBOOT_REQUEST_FILE\|"reboot-request"' firmware/vantage/src/update/fleet.rs &&
  ok "the path unit watches the file the daemon writes" || bad "the path unit and fleet.rs disagree on the file"
grep -qx 'enable vantage-image-reboot.path' "$overlay/usr/lib/systemd/system-preset/70-vantage-image.preset" &&
  ok "the path unit is enabled by the image's preset" || bad "vantage-image-reboot.path not in the preset"
# dbus-daemon cannot name a dynamic UID (it runs with SYSTEMD_NSS_DYNAMIC_BYPASS=1) and closes
# its connection: on the image the daemon must run as a static user of the unit's name.
sysusers=$overlay/usr/lib/sysusers.d/vantage-image.conf
if grep -qx 'DynamicUser=yes' "$units/vantage.service" && ! grep -q '^User=' "$units/vantage.service"; then
  grep -Eq '^u[[:space:]]+vantage[[:space:]]' "$sysusers" && grep -Eq '^m[[:space:]]+vantage[[:space:]]+vantage-update$' "$sysusers" &&
    ok "the image gives the daemon a static user vantage in vantage-update (a dynamic UID cannot use the system bus)" ||
    bad "vantage.service has DynamicUser=yes and $sysusers declares no static user vantage in vantage-update: dbus-daemon would drop the daemon's connection to RAUC"
fi

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

# --- The D-Bus policy, in a private bus with the system bus's default policy.
policy=$overlay/usr/share/dbus-1/system.d/vantage-image-rauc.conf
grep -qx 'g vantage-update -' "$overlay/usr/lib/sysusers.d/vantage-image.conf" &&
  grep -qx 'SupplementaryGroups=vantage-update' "$units/vantage.service.d/vantage-image-update.conf" &&
  grep -q '<policy group="vantage-update">' "$policy" &&
  ok "one group: sysusers.d, the daemon's drop-in and the policy agree" || bad "the group names disagree"
bus() { # bus POLICY-FILE: starts a bus with it, stops it; its messages in $tmp/bus.log
  local up=0 pid _
  private_bus "$tmp" "  <policy context=\"default\">
    <allow user=\"*\"/><deny own=\"*\"/><deny send_type=\"method_call\"/>
    <allow send_type=\"signal\"/><allow receive_type=\"*\"/>
    <allow send_requested_reply=\"true\" send_type=\"method_return\"/>
    <allow send_requested_reply=\"true\" send_type=\"error\"/>
  </policy>
  <include>$1</include>" || up=1
  pid=$bus_pid
  kill "$pid" 2>/dev/null
  for _ in $(seq 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null; wait "$pid" 2>/dev/null
  rm -f "$tmp/address" "$tmp/bus"
  grep -v 'Failed to set fd limit' "$tmp/bus.log" >"$tmp/bus.msgs"
  return $up
}
sed "s/group=\"vantage-update\"/group=\"$(id -gn)\"/" "$policy" >"$tmp/own-group.conf"
bus "$tmp/own-group.conf" && ! grep -q . "$tmp/bus.msgs" &&
  ok "dbus-daemon loads the policy without a complaint (group $(id -gn) in its place)" ||
  bad "the policy does not load: $(cat "$tmp/bus.msgs")"
if getent group vantage-update >/dev/null; then
  bus "$policy" && ! grep -q . "$tmp/bus.msgs" && ok "dbus-daemon loads the policy as shipped" ||
    bad "the shipped policy: $(cat "$tmp/bus.msgs")"
else
  unknown='Unknown group "vantage-update" in message bus configuration file'
  bus "$policy" && grep -q "$unknown" "$tmp/bus.msgs" && ! grep -v "$unknown" "$tmp/bus.msgs" | grep -q . &&
    ok "dbus-daemon loads the policy as shipped (this machine has no vantage-update group, its only complaint)" ||
    bad "the shipped policy: $(cat "$tmp/bus.msgs")"
fi
sed 's|</policy>|</policy|' "$policy" >"$tmp/broken.conf"
if bus "$tmp/broken.conf"; then bad "a broken policy file was loaded: the check proves nothing"; else
  ok "a broken policy file stops dbus-daemon (the check above means something)"; fi
# Exactly what `rauc install` calls: InstallBundle (Install on an older service), the Installer's
# properties; nothing else (not Mark, not method calls to any other destination).
allowed=$(tr '\n' ' ' <"$policy" | grep -o '<allow [^>]*>' | sed 's/  */ /g' | sort | tr '\n' ';')
want='<allow send_destination="de.pengutronix.rauc" send_interface="de.pengutronix.rauc.Installer" send_member="Install"/>;<allow send_destination="de.pengutronix.rauc" send_interface="de.pengutronix.rauc.Installer" send_member="InstallBundle"/>;<allow send_destination="de.pengutronix.rauc" send_interface="org.freedesktop.DBus.Properties" send_member="Get"/>;<allow send_destination="de.pengutronix.rauc" send_interface="org.freedesktop.DBus.Properties" send_member="GetAll"/>;'
[ "$allowed" = "$want" ] && ! grep -q '<deny\|own=' "$policy" &&
  ok "the policy allows the install calls and property reads, nothing else" || bad "the policy allows: $allowed"
finish
