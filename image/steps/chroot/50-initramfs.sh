#!/bin/bash -e
# The real update-initramfs back, and one initramfs built for the installed kernel; its
# post-update hook (raspi-firmware) copies kernel, initramfs and device trees to /boot/firmware
# and writes config.txt and cmdline.txt.
rm -f "$ROOT/usr/sbin/update-initramfs"
chroot "$ROOT" dpkg-divert --quiet --local --rename --remove /usr/sbin/update-initramfs
kver=$(cd "$ROOT/lib/modules" && ls | sort -V | tail -1)
chroot "$ROOT" update-initramfs -c -k "$kver"
echo "       /boot/firmware: $(ls "$ROOT/boot/firmware" | wc -l) files"
for f in config.txt cmdline.txt "vmlinuz-$kver" "initrd.img-$kver" bootcode.bin start.elf; do
  [ -s "$ROOT/boot/firmware/$f" ] || { echo "raspi-firmware wrote no $f" >&2; exit 1; }
done
