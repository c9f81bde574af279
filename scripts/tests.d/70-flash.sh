#!/usr/bin/env bash
# scripts/flash.sh against plain files and loop devices: every refusal it promises, and a real
# write that reads back identical, then a fresh setup code written and printed. Needs root (losetup, mount); a few seconds.
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1

# shellcheck source=scripts/lib/checks.sh
. scripts/lib/checks.sh

if [ "$(id -u)" -ne 0 ]; then
  if [ "${VANTAGE_REQUIRE_ROOT_TESTS:-0}" = 1 ]; then
    echo "FAIL needs root (losetup, mount)"; echo "0 passed, 1 failed"; exit 1
  fi
  echo "skip: needs root (losetup, mount)"; echo "0 passed, 0 failed"; exit 0
fi

tmp=$(mktemp -d)
loops=()
cleanup() {
  umount "$tmp/mnt" 2>/dev/null || true
  [ -n "${made_node:-}" ] && rm -f "$made_node"
  for l in "${loops[@]}"; do losetup -d "$l" 2>/dev/null || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT

flash=scripts/flash.sh
# expect_refusal NAME PATTERN ARGS...: flash.sh must fail, say PATTERN, and leave the target alone.
expect_refusal() {
  local name=$1 pattern=$2; shift 2
  local out rc=0
  out=$("$flash" "$@" </dev/null 2>&1) || rc=$?
  if [ "$rc" -ne 0 ] && grep -q -- "$pattern" <<<"$out"; then ok "$name"; else
    bad "$name (rc=$rc, wanted '$pattern'): $(tail -2 <<<"$out" | tr '\n' ' ')"; fi
}

# A small image with a real partition table, like the built one: 16 MiB, two partitions.
img=$tmp/test.img
head -c $((16 << 20)) /dev/urandom >"$img"
printf 'label: dos\nstart=2048, size=8192, type=c\nstart=10240, type=83\n' | sfdisk --quiet "$img"
xz -T1 -0 -k "$img"
(cd "$tmp" && sha256sum test.img.xz >test.img.xz.sha256 && sha256sum test.img >test.img.sha256)

# Checksums.
cp "$img.xz" "$tmp/nosum.img.xz"
expect_refusal "missing .sha256 refused" "no checksum file" "$tmp/nosum.img.xz" "$tmp/out" --yes --force
cp "$img.xz" "$tmp/badsum.img.xz"
echo "$(printf '0%.0s' $(seq 64))  badsum.img.xz" >"$tmp/badsum.img.xz.sha256"
expect_refusal "wrong sha256 refused" "sha256 is" "$tmp/badsum.img.xz" "$tmp/out" --yes --force
expect_refusal "unknown image type refused" "expected a .img" "$tmp/test.img.sha256" "$tmp/out" --yes --force

# A regular file: only with --force; then it holds the image byte for byte.
: >"$tmp/out"
expect_refusal "regular file refused without --force" "not a block device" "$img.xz" "$tmp/out" --yes
if "$flash" --yes --force "$img.xz" "$tmp/out" >"$tmp/log" 2>&1 </dev/null && cmp -s "$img" "$tmp/out"; then
  ok "regular file written with --force, identical to the image"
else bad "regular file write: $(tail -3 "$tmp/log" | tr '\n' ' ')"; fi

# No confirmation without a terminal unless --yes.
expect_refusal "no --yes without a terminal refused" "stdin is not a terminal" "$img.xz" "$tmp/out" --force

# A loop device: a whole disk, not removable.
truncate -s 32M "$tmp/disk"
loop=$(losetup --find --show "$tmp/disk"); loops+=("$loop")
expect_refusal "non-removable disk refused without --force" "not a removable disk" "$img.xz" "$loop" --yes
if "$flash" --yes --force "$img.xz" "$loop" >"$tmp/log" 2>&1 </dev/null &&
  grep -q "read back OK" "$tmp/log" && cmp -s -n $((16 << 20)) "$img" "$loop"; then
  ok "loop device written with --force, read back identical"
else bad "loop device write: $(tail -3 "$tmp/log" | tr '\n' ' ')"; fi
if grep -q "%\|bytes.*copied" "$tmp/log"; then ok "progress shown while writing"; else bad "no progress output"; fi

# The plain .img works too (checksum from test.img.sha256).
dd if=/dev/zero of="$loop" bs=1M count=16 conv=fsync status=none
if "$flash" --yes --force "$img" "$loop" >"$tmp/log" 2>&1 </dev/null && cmp -s -n $((16 << 20)) "$img" "$loop"; then
  ok "uncompressed .img written"
else bad "uncompressed .img write: $(tail -3 "$tmp/log" | tr '\n' ' ')"; fi

# A partition instead of the disk.
loopp=$(losetup --find --show --partscan "$img"); loops+=("$loopp")
# Kernels without the MBR parser in the partition scan: add them by hand.
[ -e "/sys/class/block/${loopp##*/}p1" ] || partx -a "$loopp" 2>/dev/null || true
udevadm settle 2>/dev/null || true
# Without udev (containers) the partition's node is not made for us: make it from sysfs.
part_sys=/sys/class/block/${loopp##*/}p1
if [ ! -b "${loopp}p1" ] && [ -r "$part_sys/dev" ]; then
  mknod "${loopp}p1" b "$(cut -d: -f1 "$part_sys/dev")" "$(cut -d: -f2 "$part_sys/dev")"
  made_node=${loopp}p1
fi
if [ -b "${loopp}p1" ]; then
  expect_refusal "partition refused" "is a partition" "$img.xz" "${loopp}p1" --yes --force
else bad "partition refused: ${loopp}p1 did not appear"; fi

# Too small.
truncate -s 8M "$tmp/small"
small=$(losetup --find --show "$tmp/small"); loops+=("$small")
expect_refusal "device smaller than the image refused" "the image needs" "$img.xz" "$small" --yes --force

# Mounted, even with --force.
truncate -s 16M "$tmp/fs"
mkfs.ext4 -q "$tmp/fs"
fsloop=$(losetup --find --show "$tmp/fs"); loops+=("$fsloop")
mkdir -p "$tmp/mnt"
if mount "$fsloop" "$tmp/mnt"; then
  expect_refusal "mounted device refused even with --force" "is mounted at" "$img.xz" "$fsloop" --yes --force
  umount "$tmp/mnt"
  if [ "$(head -c 1082 "$tmp/fs" | tail -c 2 | od -An -tx1 | tr -d ' ')" = 53ef ]; then
    ok "refused device left untouched (ext4 superblock intact)"
  else bad "refused device was written to"; fi
else bad "could not mount a test ext4 file system"; fi

# The disk that holds the running system, even with --force.
root_src=$(findmnt -nvo SOURCE --target /)
if [ -b "$root_src" ]; then
  sysdisk=/dev/$(lsblk -ndo PKNAME "$root_src" | head -1)
  [ "$sysdisk" = /dev/ ] && sysdisk=$root_src
  # It is mounted too; either refusal is right, as long as nothing is written.
  expect_refusal "system disk refused even with --force" "running system\|is mounted at" "$img.xz" "$sysdisk" --yes --force
else
  echo "skip system disk: / is on '$root_src', not a block device"
fi

expect_refusal "missing device refused" "no such device" "$img.xz" /dev/does-not-exist --yes --force

# The setup code: an image laid out like a built one (partition 1 FAT with the build's code).
export MTOOLS_SKIP_CHECK=1
code_file=$(scripts/setup-code.sh --file)
vimg=$tmp/vantage.img
head -c $((16 << 20)) /dev/urandom >"$vimg"
printf 'label: dos\nstart=2048, size=8192, type=c\nstart=10240, type=83\n' | sfdisk --quiet "$vimg"
mkfs.vfat -n VANTAGEBOOT -C "$tmp/boot.vfat" 4096 >/dev/null
echo "build-code" >"$tmp/$code_file"
mcopy -i "$tmp/boot.vfat" "$tmp/$code_file" "::$code_file"
dd if="$tmp/boot.vfat" of="$vimg" bs=1M seek=1 conv=notrunc status=none
xz -T1 -0 -k "$vimg"
(cd "$tmp" && sha256sum vantage.img.xz >vantage.img.xz.sha256)
fat_of() { echo "$1@@$((2048 * 512))"; }
card_code() { mtype -i "$(fat_of "$1")" "::$code_file" 2>/dev/null | head -n 1; }
printed_code() { sed -n 's/^setup code: //p' "$1"; }
for run in 1 2; do
  : >"$tmp/card$run"
  "$flash" --yes --force "$tmp/vantage.img.xz" "$tmp/card$run" >"$tmp/log" 2>&1 </dev/null || true
  printed=$(printed_code "$tmp/log")
  if [[ "$printed" =~ ^[0-9a-f]{4}(-[0-9a-f]{4}){3}$ ]] && [ "$(card_code "$tmp/card$run")" = "$printed" ]; then
    ok "flash $run: a fresh setup code printed ($printed) and on the card's boot partition"
  else bad "flash $run: printed '$printed', card has '$(card_code "$tmp/card$run")': $(tail -3 "$tmp/log" | tr '\n' ' ')"; fi
done
c1=$(card_code "$tmp/card1") c2=$(card_code "$tmp/card2")
[ -n "$c1" ] && [ "$c1" != "$c2" ] && [ "$c1" != build-code ] &&
  ok "each card gets its own code, not the image's" || bad "codes not fresh: '$c1' '$c2'"
cmp -s -i $((5 << 20)) "$vimg" "$tmp/card1" &&
  ok "the rest of the card is the image, byte for byte" || bad "the code write changed more than the boot partition"
: >"$tmp/card3"
"$flash" --yes --force --no-setup-code "$tmp/vantage.img.xz" "$tmp/card3" >"$tmp/log" 2>&1 </dev/null || true
[ "$(card_code "$tmp/card3")" = build-code ] && ! grep -q "^setup code:" "$tmp/log" &&
  ok "--no-setup-code keeps the image's code" || bad "--no-setup-code: card has '$(card_code "$tmp/card3")'"
"$flash" --yes --force "$img.xz" "$tmp/out" >"$tmp/log" 2>&1 </dev/null
grep -q "no FAT boot partition 1: no setup code written" "$tmp/log" && ! grep -q "^setup code:" "$tmp/log" &&
  ok "an image without a FAT boot partition: said so, no code claimed" || bad "image without FAT: $(tail -2 "$tmp/log" | tr '\n' ' ')"
truncate -s 32M "$tmp/disk2"
vloop=$(losetup --find --show "$tmp/disk2"); loops+=("$vloop")
"$flash" --yes --force "$tmp/vantage.img.xz" "$vloop" >"$tmp/log" 2>&1 </dev/null || true
printed=$(printed_code "$tmp/log")
if grep -q "read back OK" "$tmp/log" && [ -n "$printed" ] && [ "$(card_code "$vloop")" = "$printed" ]; then
  ok "loop device: read back OK, then its own setup code written and printed"
else bad "loop device setup code: printed '$printed', device has '$(card_code "$vloop")'"; fi

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
