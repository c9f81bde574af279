#!/bin/bash -e
# The vantage package, installed by dpkg as on any Debian system: its postinst enables the unit
# (it cannot start it here: no systemd runs in the chroot).
cp "$WORK/vantage.deb" "$ROOT/tmp/vantage.deb"
chroot "$ROOT" dpkg -i /tmp/vantage.deb
rm -f "$ROOT/tmp/vantage.deb"
chroot "$ROOT" vantage --version
