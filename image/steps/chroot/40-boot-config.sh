#!/bin/bash -e
# The Pi's boot partition is written by raspi-firmware's kernel and initramfs hooks from
# /etc/default/raspi-firmware*: they rewrite config.txt and cmdline.txt at every kernel update
# on the device too, so our settings live there and survive upgrades. (A PC image boots GRUB
# instead: chroot/45-grub.sh. The A/B Pi image starts U-Boot from the firmware, and rewrites
# config.txt and cmdline.txt for it: chroot/55-uboot.sh.)
case "$BOOTLOADER" in raspi-firmware | uboot) ;; *) exit 0 ;; esac
f="$ROOT/etc/default/raspi-firmware"
[ -f "$f" ] || { echo "raspi-firmware is not installed" >&2; exit 1; }
sed -i \
  -e "s|^#\?ROOTPART=.*|ROOTPART=LABEL=$ROOT_LABEL|" \
  -e "s|^#\?CONSOLES=.*|CONSOLES=\"$CONSOLES\"|" \
  "$f"
grep -q "^ROOTPART=LABEL=$ROOT_LABEL" "$f" || echo "ROOTPART=LABEL=$ROOT_LABEL" >>"$f"
grep -q '^CONSOLES=' "$f" || echo "CONSOLES=\"$CONSOLES\"" >>"$f"
# config.txt: appended after the generated lines (LED overlays, see docs/LEDS.md).
install -m 0644 "$SRC_DIR/image/files/config.txt" "$ROOT/etc/default/raspi-firmware-custom"
# cmdline.txt: appended to the generated line, which already has fsck.repair=yes (the boot
# repairs the root file system after a power cut instead of stopping at an emergency shell).
echo "quiet" >"$ROOT/etc/default/raspi-extra-cmdline"
