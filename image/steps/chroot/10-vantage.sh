#!/bin/bash -e
# The vantage package, installed by dpkg as on any Debian system: its postinst enables the unit
# (it cannot start it here: no systemd runs in the chroot).
cp "$WORK/vantage.deb" "$ROOT/tmp/vantage.deb"
chroot "$ROOT" dpkg -i /tmp/vantage.deb
rm -f "$ROOT/tmp/vantage.deb"
chroot "$ROOT" vantage --version

# A device on a LAN announces itself over mDNS ([discovery], `vantage discover`) and watches its
# gateway ([uplink]). The package's default config, the one the binary embeds, leaves both off
# so test runs and laptops stay quiet; the image switches them on in the file the unit runs until
# the page first saves (`--default-config /etc/vantage/vantage.toml`; that save copies it).
conf="$ROOT/etc/vantage/vantage.toml"
sed -i -e 's/^# \[discovery\]$/[discovery]/' -e 's/^# \[uplink\]$/[uplink]/' "$conf"
grep -qx '\[discovery\]' "$conf" && grep -qx '\[uplink\]' "$conf" || {
  echo "/etc/vantage/vantage.toml: no '# [discovery]' and '# [uplink]' lines to switch on" >&2
  exit 1
}
chroot "$ROOT" vantage check-config /etc/vantage/vantage.toml
