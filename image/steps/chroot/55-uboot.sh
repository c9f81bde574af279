#!/bin/bash -e
# The A/B Pi image: the Pi firmware starts U-Boot (Debian's u-boot-rpi, rpi_arm64: Pi 3, 4, 400,
# CM3/CM4, Zero 2 W) instead of a kernel, and U-Boot's script chooses root slot A or B
# (image/files/boot.cmd, as boot.scr) and starts that slot's own kernel. The FAT partition keeps
# the firmware and the device trees it hands to U-Boot; kernels come with the slots.
[ "$BOOTLOADER" = uboot ] || exit 0
fw=$ROOT/boot/firmware
install -m 0644 "$ROOT/usr/lib/u-boot/rpi_arm64/u-boot.bin" "$fw/u-boot.bin"
# config.txt as raspi-firmware wrote it, U-Boot for the kernel and no initramfs (the script
# loads the slot's). The mini UART needs enable_uart=1 for a stable clock under U-Boot too.
sed -i -e 's/^kernel=.*/kernel=u-boot.bin/' -e '/^initramfs[[:space:]]/d' \
  -e '/^# For details on the initramfs directive/,+1d' -e '/^# Do not modify this file!/,/raspi-extra-cmdline files\.$/d' \
  "$fw/config.txt"
# Nothing regenerates it on the device (the root is read-only, kernels come with updates): the
# header says where to edit instead of raspi-firmware's "do not modify".
sed -i '1i # Pi firmware settings. The firmware starts U-Boot (kernel=u-boot.bin), whose boot.scr\
# chooses the root slot and starts its kernel. Nothing on the device rewrites this file: edit\
# it here (cmdline.txt beside it holds the kernel command line). docs/IMAGE.md' "$fw/config.txt"
grep -q '^arm_64bit=1' "$fw/config.txt" || sed -i '1i arm_64bit=1' "$fw/config.txt"
grep -q '^enable_uart=1' "$fw/config.txt" || sed -i '1i enable_uart=1' "$fw/config.txt"
[ "$(grep -c '^kernel=' "$fw/config.txt")" = 1 ] && grep -q '^kernel=u-boot.bin$' "$fw/config.txt" ||
  { echo "config.txt does not start U-Boot" >&2; exit 1; }
# cmdline.txt: raspi-firmware's line without its root= and rw; the script puts the chosen
# slot's root= and ro in front of it.
sed -i -E -e 's/(^| )root=[^ ]*//g' -e 's/(^| )(rw|ro)( |$)/\1\3/g' -e 's/  +/ /g' -e 's/^ //' "$fw/cmdline.txt"
rm -f "$fw"/vmlinuz-* "$fw"/initrd.img-*
"$SRC_DIR/image/boot-scr.sh" "$fw/boot.scr"
# The slot choice: slot A good and first, slot B empty until an update, in both copies (the
# backend rebuilds it so when there is none, as on a device whose copies are both unreadable).
rm -f "$fw/vantage.env" "$fw/vantage.env.bak"
echo "rauc.slot=A" >"$WORK/uboot-cmdline"
BOOTENV_FORMAT=uboot BOOTENV=$fw/vantage.env BOOTENV_CMDLINE=$WORK/uboot-cmdline \
  "$SRC_DIR/buildroot-overlay/usr/lib/vantage-image/bootenv" repair 2>/dev/null
cmp -s "$fw/vantage.env" "$fw/vantage.env.bak" || { echo "no slot choice written" >&2; exit 1; }
echo "       u-boot.bin ($(chroot "$ROOT" dpkg-query -W -f '${Version}' u-boot-rpi)), boot.scr," \
  "cmdline.txt: $(cat "$fw/cmdline.txt")"
