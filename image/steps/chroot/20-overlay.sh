#!/bin/bash -e
# buildroot-overlay/ mirrors the device's /: copied as is. Files git keeps as executable stay
# executable; everything else gets 0644 and directories 0755, whatever the checkout's umask.
src="$SRC_DIR/buildroot-overlay"
(cd "$src" && find . -type d) | while read -r d; do install -d -m 0755 "$ROOT/$d"; done
(cd "$src" && find . -type f) | while read -r f; do
  if [ -x "$src/$f" ]; then mode=0755; else mode=0644; fi
  install -m "$mode" "$src/$f" "$ROOT/$f"
done
echo "       $(cd "$src" && find . -type f | wc -l) files"
# avahi's _vantage._tcp announcement carries the daemon's version, as the daemon's own would.
sed -i "s/@VERSION@/$(chroot "$ROOT" vantage --version | awk '{print $2}')/" \
  "$ROOT/etc/avahi/services/vantage-image-discovery.service"
