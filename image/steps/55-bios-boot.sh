#!/bin/bash -e
# Legacy BIOS boot of the PC image, written straight into the disk file as grub-bios-setup
# would on a disk (it cannot here: it insists on finding the disk that holds its own files).
# The BIOS runs the MBR's code, GRUB's boot.img, which reads the first sector of the core image
# from the LBA stored at offset 0x5c; that sector (diskboot) reads the rest from the block list
# in its last 12 bytes. The MBR's partition table (from byte 440 on) is left as sfdisk wrote it.
[ "$BOOTLOADER" = grub ] || { echo "    not needed (boot loader: $BOOTLOADER)"; exit 0; }
img="$WORK/$IMAGE_NAME.img"
core="$WORK/bios/core.img"
# Partition 3, the BIOS boot partition.
read -r start size < <(sfdisk --dump "$img" | sed -n "s|^$img""3 : start= *\([0-9]*\), size= *\([0-9]*\),.*|\1 \2|p")
[ -n "$start" ] || { echo "no BIOS boot partition (3) on $img" >&2; exit 1; }
sectors=$((($(stat -c %s "$core") + 511) / 512))
[ "$sectors" -le "$size" ] || { echo "core image: $sectors sectors, BIOS boot partition: $size" >&2; exit 1; }
# n little-endian bytes of a number, as printf escapes.
le() { local v=$1 n=$2 i; for ((i = 0; i < n; i++)); do printf '\\x%02x' $(((v >> (8 * i)) & 255)); done; }
put() { printf "$3" | dd of="$1" bs=1 seek="$2" conv=notrunc status=none; }
work="$WORK/bios"
cp "$WORK/bios/boot.img" "$work/mbr.img"
put "$work/mbr.img" $((0x5c)) "$(le "$start" 8)"   # where the core image starts
put "$work/mbr.img" $((0x66)) '\x90\x90'            # a hard disk: check the BIOS's drive number
cp "$core" "$work/core-patched.img"
# diskboot's block list: the rest of the core image, from the sector after its first.
put "$work/core-patched.img" $((512 - 12)) "$(le $((start + 1)) 8)"
listed=$(od -An -tu2 -j $((512 - 4)) -N 2 "$work/core-patched.img" | tr -d ' ')
[ "$listed" -eq $((sectors - 1)) ] || { echo "core image block list says $listed sectors, not $((sectors - 1))" >&2; exit 1; }
dd if="$work/core-patched.img" of="$img" bs=512 seek="$start" conv=notrunc status=none
dd if="$work/mbr.img" of="$img" bs=440 count=1 conv=notrunc status=none
echo "    MBR: GRUB boot.img; BIOS boot partition: core image at sector $start, $sectors sectors"
