#!/bin/bash -e
# The disk: an MBR (every Pi boots from it; GPT only the Pi 4 and later), the boot partition
# at 4 MiB (erase-block aligned), the root partition right after it.
img="$WORK/$IMAGE_NAME.img"
boot_mib=$(cat "$WORK/boot.mib")
root_mib=$(cat "$WORK/root.mib")
start_mib=4
total_mib=$((start_mib + boot_mib + root_mib))
rm -f "$img"
truncate -s "${total_mib}M" "$img"
diskid=$(printf '0x%08x' $((SOURCE_DATE_EPOCH & 0xffffffff)))
sfdisk --quiet "$img" <<SFDISK
label: dos
label-id: $diskid
unit: sectors
start=$((start_mib * 2048)), size=$((boot_mib * 2048)), type=c, bootable
start=$(((start_mib + boot_mib) * 2048)), size=$((root_mib * 2048)), type=83
SFDISK
dd if="$WORK/boot.vfat" of="$img" bs=1M seek=$start_mib conv=notrunc,fsync status=none
dd if="$WORK/root.ext4" of="$img" bs=1M seek=$((start_mib + boot_mib)) conv=notrunc,fsync status=none
sfdisk --list "$img" | sed 's/^/    /'
