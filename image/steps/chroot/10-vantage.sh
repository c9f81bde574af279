#!/bin/bash -e
# The vantage package, installed by dpkg as on any Debian system: its postinst enables the unit
# (it cannot start it here: no systemd runs in the chroot).
cp "$WORK/vantage.deb" "$ROOT/tmp/vantage.deb"
chroot "$ROOT" dpkg -i /tmp/vantage.deb
rm -f "$ROOT/tmp/vantage.deb"
chroot "$ROOT" vantage --version

# A device on a LAN watches its gateway ([uplink]); the package's default config, the one the
# binary embeds, leaves it off so test runs and laptops stay quiet. The image switches it on in
# the file the unit runs until the page first saves (`--default-config /etc/vantage/vantage.toml`;
# that save copies it). [discovery] stays off here: avahi is the image's mDNS responder, and a
# second responder claiming the same host name with another address set makes avahi rename the
# host (vantage-XXXX-2). avahi announces _vantage._tcp instead (20-overlay puts its service file in place).
conf="$ROOT/etc/vantage/vantage.toml"
sed -i -e 's/^# \[uplink\]$/[uplink]/' "$conf"
grep -qx '\[uplink\]' "$conf" || {
  echo "/etc/vantage/vantage.toml: no '# [uplink]' line to switch on" >&2
  exit 1
}
chroot "$ROOT" vantage check-config /etc/vantage/vantage.toml
