#!/bin/bash -e
# The FAT32 boot partition, filled with mtools (no loop device or mount needed): firmware,
# kernel, initramfs, device trees, config.txt and cmdline.txt as raspi-firmware wrote them.
boot_mib=256
img="$WORK/boot.vfat"
rm -f "$img"
volid=$(printf '%08x' $((SOURCE_DATE_EPOCH & 0xffffffff)))
mkfs.vfat -F 32 -n "$BOOT_LABEL" -i "$volid" -C "$img" $((boot_mib * 1024)) >/dev/null
export MTOOLS_SKIP_CHECK=1
mcopy -s -p -m -i "$img" "$WORK/boot"/* ::/
used=$(du -sm "$WORK/boot" | cut -f1)
echo "    boot partition: ${boot_mib} MiB, ${used} MiB used"
echo "$boot_mib" >"$WORK/boot.mib"
