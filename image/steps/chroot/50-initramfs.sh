#!/bin/bash -e
# The real update-initramfs back, and one initramfs built for the installed kernel. On a Pi its
# post-update hook (raspi-firmware) copies kernel, initramfs and device trees to /boot/firmware
# and writes config.txt and cmdline.txt; on a PC both stay in /boot, where GRUB reads them.
rm -f "$ROOT/usr/sbin/update-initramfs"
chroot "$ROOT" dpkg-divert --quiet --local --rename --remove /usr/sbin/update-initramfs
kver=$(cd "$ROOT/lib/modules" && ls | sort -V | tail -1)
chroot "$ROOT" update-initramfs -c -k "$kver"
echo "       /boot/firmware: $(ls "$ROOT/boot/firmware" | wc -l) files"
case "$BOOTLOADER" in
  raspi-firmware | uboot)
    for f in config.txt cmdline.txt "vmlinuz-$kver" "initrd.img-$kver" bootcode.bin start.elf; do
      [ -s "$ROOT/boot/firmware/$f" ] || { echo "raspi-firmware wrote no $f" >&2; exit 1; }
    done ;;&
  grub | uboot)
    # GRUB and U-Boot boot Debian's links in / (image/files/grub.cfg, boot.cmd): they must lead to
    # this kernel.
    for f in vmlinuz initrd.img; do
      [ "$(readlink "$ROOT/$f")" = "boot/$f-$kver" ] && [ -s "$ROOT/boot/$f-$kver" ] ||
        { echo "/$f does not lead to /boot/$f-$kver" >&2; exit 1; }
    done
    echo "       /boot/initrd.img-$kver: $(($(stat -c %s "$ROOT/boot/initrd.img-$kver") / 1048576)) MiB" ;;
  *) ;;
esac
