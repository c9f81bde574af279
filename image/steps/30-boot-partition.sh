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
# The setup code the first-boot page asks for (docs/IMAGE.md). This one is the fallback for
# cards written by other tools: every copy of this build shares it, so scripts/flash.sh writes
# a fresh one per card. SETUP_CODE= pins it (two builds then compare byte for byte).
code_file=$("$SRC_DIR/scripts/setup-code.sh" --file)
code=${SETUP_CODE:-$("$SRC_DIR/scripts/setup-code.sh")}
printf '%s\n' "$code" >"$WORK/$code_file"
touch -d "@$SOURCE_DATE_EPOCH" "$WORK/$code_file"
mcopy -p -m -i "$img" "$WORK/$code_file" "::$code_file"
echo "    setup code (this build's fallback): $code"
used=$(du -sm "$WORK/boot" | cut -f1)
echo "    boot partition: ${boot_mib} MiB, ${used} MiB used"
echo "$boot_mib" >"$WORK/boot.mib"
