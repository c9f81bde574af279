#!/usr/bin/env bash
# The Pi image's slot choice, run by real U-Boot: Debian's qemu_arm64 build under
# qemu-system-aarch64 (-M virt) starts image/files/boot.cmd (as boot.scr, made by
# image/boot-scr.sh) from a small disk laid out like the image (MBR: FAT, slot A, slot B, data).
# Each slot holds a stand-in kernel: a valid arm64 Image header whose code only asks the
# firmware to power off, so a boot that reached booti ends QEMU by itself. Checked, boot by boot:
#   - the slot started, the kernel command line (root=PARTUUID of that slot, rauc.slot=,
#     vantage.bootenv=, cmdline.txt's line appended), and the trial mark U-Boot wrote back to
#     vantage.env and vantage.env.bak (read with /usr/lib/vantage-image/bootenv, the device's
#     RAUC backend, which also makes every change the device would);
#   - an installed slot boots once on trial; not marked good, the next boot falls back;
#   - an unreadable vantage.env is read from vantage.env.bak; both unreadable: slot A;
#   - a slot whose kernel is missing: the other slot starts.
# Needs qemu-system-aarch64, u-boot-qemu, mkimage, mtools, mkfs.vfat, mkfs.ext4, sfdisk;
# each boot takes a few seconds.
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1

# shellcheck source=scripts/lib/checks.sh
. scripts/lib/checks.sh
uboot=/usr/lib/u-boot/qemu_arm64/u-boot.bin
for t in qemu-system-aarch64 mkimage mcopy mkfs.vfat mkfs.ext4 sfdisk; do
  command -v "$t" >/dev/null || { bad "$t missing (scripts/deps.d/image.apt)"; finish; }
done
[ -r "$uboot" ] || { bad "$uboot missing (apt install u-boot-qemu)"; finish; }
# shellcheck source=/dev/null
. image/arch/arm64.conf

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
backend=$PWD/buildroot-overlay/usr/lib/vantage-image/bootenv
export MTOOLS_SKIP_CHECK=1

# le32 N: four bytes, little-endian, as printf escapes.
le32() { printf '\\x%02x\\x%02x\\x%02x\\x%02x' $(($1 & 255)) $(($1 >> 8 & 255)) $(($1 >> 16 & 255)) $(($1 >> 24 & 255)); }
# The stand-in kernel (arm64 boot protocol header, Documentation/arch/arm64/booting.rst):
# branch over the header; text_offset 0, image_size 64 KiB, flags 0xa (little-endian, 4K
# pages, anywhere in RAM); "ARM\x64" at 0x38. Code at 0x40: x0 = PSCI SYSTEM_OFF (0x84000008),
# hvc #0 (QEMU's PSCI conduit under -M virt), then spin.
fake_kernel() {
  {
    printf '%b' "$(le32 0x14000010)$(le32 0)"
    printf '%b' "$(le32 0)$(le32 0)$(le32 0x10000)$(le32 0)$(le32 0xa)$(le32 0)"
    printf '%b' "$(le32 0)$(le32 0)$(le32 0)$(le32 0)$(le32 0)$(le32 0)ARM\\x64$(le32 0)"
    printf '%b' "$(le32 0xd2800100)$(le32 0xf2b08000)$(le32 0xd4000002)$(le32 0x14000000)"
  } >"$1"
}

# The disk: 1 MiB gap, FAT32 40 MiB (the least FAT32 allows with 512-byte clusters), slots
# 8 MiB each, data 4 MiB.
mb=2048
fat_at=$((1 * mb)) a_at=$((41 * mb)) b_at=$((49 * mb)) d_at=$((57 * mb))
disk=$tmp/disk.img
truncate -s 62M "$disk"
sfdisk --quiet "$disk" <<SFDISK || { bad "sfdisk"; finish; }
label: dos
label-id: $DISK_ID
unit: sectors
start=$fat_at, size=$((40 * mb)), type=c, bootable
start=$a_at, size=$((8 * mb)), type=83
start=$b_at, size=$((8 * mb)), type=83
start=$d_at, size=$((4 * mb)), type=83
SFDISK
[ "$SLOT_A_PART" = 2 ] && [ "$SLOT_B_PART" = 3 ] || { bad "this disk has slots on 2 and 3, arm64.conf says $SLOT_A_PART and $SLOT_B_PART"; finish; }
slot() { # slot LETTER OFFSET: an ext4 slot as the image makes it, its kernel linked from /
  local root=$tmp/root-$1
  mkdir -p "$root/boot"
  fake_kernel "$root/boot/vmlinuz-6.12.0-$1"
  head -c 4096 /dev/zero >"$root/boot/initrd.img-6.12.0-$1"
  ln -sf "boot/vmlinuz-6.12.0-$1" "$root/vmlinuz"
  ln -sf "boot/initrd.img-6.12.0-$1" "$root/initrd.img"
  mkfs.ext4 -q -F -L VANTAGEROOT -m 1 -E root_owner=0:0 -d "$root" "$tmp/slot-$1.ext4" 8M >/dev/null &&
    dd if="$tmp/slot-$1.ext4" of="$disk" bs=512 seek="$2" conv=notrunc status=none
}
slot A "$a_at" && slot B "$b_at" || { bad "slot file systems"; finish; }
fat=$disk@@$((fat_at * 512))
mkfs.vfat -F 32 -s 1 -n VANTAGEBOOT -C "$tmp/boot.vfat" $((40 * 1024)) >/dev/null &&
  dd if="$tmp/boot.vfat" of="$disk" bs=512 seek="$fat_at" conv=notrunc status=none || { bad "FAT"; finish; }
image/boot-scr.sh "$tmp/boot.scr" && mcopy -o -i "$fat" "$tmp/boot.scr" ::boot.scr || { bad "boot.scr"; finish; }
printf 'console=ttyAMA0,115200 fsck.repair=yes quiet\n' >"$tmp/cmdline.txt"
mcopy -o -i "$fat" "$tmp/cmdline.txt" ::cmdline.txt

# The device's side of the environment: the FAT files copied out, changed by the backend, copied
# back (as RAUC and the health check change them on the mounted partition).
be() { # be ARGS...: the backend on the disk's vantage.env, as booted from slot $booted
  mcopy -o -i "$fat" ::vantage.env "$tmp/env/vantage.env" 2>/dev/null
  mcopy -o -i "$fat" ::vantage.env.bak "$tmp/env/vantage.env.bak" 2>/dev/null
  echo "root=PARTUUID=x rauc.slot=$booted ro" >"$tmp/cmdline"
  BOOTENV_FORMAT=uboot BOOTENV=$tmp/env/vantage.env BOOTENV_CMDLINE=$tmp/cmdline "$backend" "$@"
  local rc=$?
  for f in vantage.env vantage.env.bak; do [ -e "$tmp/env/$f" ] && mcopy -o -i "$fat" "$tmp/env/$f" "::$f"; done
  return $rc
}
state() { be list | sort | tr '\n' ' '; }
mkdir -p "$tmp/env"
booted=A
# The image's first environment (image/steps/chroot/55-uboot.sh): the backend's rebuild from slot A.
be repair 2>/dev/null
[ "$(state)" = "A_OK=1 A_TRY=0 B_OK=0 B_TRY=0 ORDER=A B " ] && ok "first environment: slot A good" ||
  bad "first environment: $(state)"

n=0
# boot: one power-on; sets $booted to the slot U-Boot started, $console to its output.
boot() {
  n=$((n + 1))
  console=$tmp/console-$n.log
  timeout 120 qemu-system-aarch64 -M virt -cpu cortex-a53 -m 1024 -nographic -monitor none \
    -bios "$uboot" -drive "if=virtio,format=raw,file=$disk" -nic none -no-reboot >"$console" 2>&1
  local rc=$?
  tr -d '\r' <"$console" >"$console.txt"
  console=$console.txt
  booted=$(sed -n 's/.*rauc\.slot=\([AB]\).*/\1/p' "$console" | tail -1)
  [ $rc = 0 ] || echo "    (qemu exited $rc; last lines: $(tail -3 "$console" | tr '\n' '|'))"
}
expect() { # expect WHAT SLOT ENV: the boot started SLOT with the choice read from ENV
  local what=$1 slot=$2 env=$3 part uuid
  part=$SLOT_A_PART
  [ "$slot" = B ] && part=$SLOT_B_PART
  uuid=$(printf '%08x-%02x' "$DISK_ID" "$part")
  if grep -q "^Vantage: bootargs root=PARTUUID=$uuid rauc.slot=$slot vantage.bootenv=$env ro console=ttyAMA0,115200 fsck.repair=yes quiet$" "$console" &&
    grep -q "Starting kernel" "$console"; then
    ok "$what: U-Boot started slot $slot (choice from $env)"
  else
    bad "$what: expected slot $slot from $env; console: $(grep -E '^Vantage|Starting kernel|rror' "$console" | tr '\n' '|')"
  fi
}
expect_state() { # expect_state WHAT STATE: the environment after the boot, both copies equal
  local s
  s=$(state)
  if [ "$s" = "$2" ] && mcopy -o -i "$fat" ::vantage.env "$tmp/e1" && mcopy -o -i "$fat" ::vantage.env.bak "$tmp/e2" && cmp -s "$tmp/e1" "$tmp/e2"; then
    ok "$1: $2"
  else
    bad "$1: expected '$2', got '$s' (copies equal: $(cmp -s "$tmp/e1" "$tmp/e2" && echo yes || echo no))"
  fi
}

boot
expect "first boot" A vantage.env
expect_state "first boot marks slot A on trial" "A_OK=1 A_TRY=1 B_OK=0 B_TRY=0 ORDER=A B "
be set-state A good
boot
expect "second boot" A vantage.env

# An update: RAUC writes slot B and makes it primary.
be set-state A good
be set-primary B
boot
expect "after an install" B vantage.env
expect_state "the installed slot is on trial" "A_OK=1 A_TRY=0 B_OK=1 B_TRY=1 ORDER=B A "
# Not marked good (the daemon never got ready): the next boot falls back.
boot
expect "an installed slot never marked good" A vantage.env
expect_state "the fallback" "A_OK=1 A_TRY=1 B_OK=1 B_TRY=1 ORDER=B A "
# The health check on A marks A good and B bad (the rollback).
be set-state A good
be set-state B bad
boot
expect "after the rollback" A vantage.env

# A good update: installed, booted, marked good, booted again.
be set-state A good
be set-primary B
boot
expect "second install" B vantage.env
be set-state B good
boot
expect "the update marked good" B vantage.env
be set-state B good

# Torn writes: garbage over vantage.env, then also over the backup.
head -c 4096 /dev/urandom >"$tmp/garbage"
mcopy -o -i "$fat" "$tmp/garbage" ::vantage.env
boot
expect "vantage.env unreadable" B vantage.env.bak
grep -q "vantage.env unreadable, slot choice read from vantage.env.bak" "$console" &&
  ok "U-Boot says it read the backup" || bad "no message about the backup"
# U-Boot's trial mark went to both copies: the torn one is whole again.
expect_state "the torn copy rewritten by U-Boot" "A_OK=1 A_TRY=0 B_OK=1 B_TRY=1 ORDER=B A "
booted=B
be repair
mcopy -o -i "$fat" "$tmp/garbage" ::vantage.env
mcopy -o -i "$fat" "$tmp/garbage" ::vantage.env.bak
boot
expect "both copies unreadable" A none

# A slot whose kernel cannot be loaded: the other slot starts.
be repair
be set-state A good
be set-state B good
be set-primary B
debugfs -w -R "rm /vmlinuz" "$tmp/slot-B.ext4" >/dev/null 2>&1 &&
  dd if="$tmp/slot-B.ext4" of="$disk" bs=512 seek="$b_at" conv=notrunc status=none
boot
if grep -q "Vantage: slot B could not be started" "$console"; then
  expect "slot B without a kernel" A vantage.env
else
  bad "slot B without a kernel: no message; $(grep -E '^Vantage' "$console" | tr '\n' '|')"
fi

echo "$n boots"
finish
