#!/usr/bin/env bash
# Writes a Vantage image to an SD card (or USB stick), carefully.
#
#   scripts/flash.sh IMAGE DEVICE        e.g. dist/vantage-0.1.0-arm64.img.xz /dev/sdb
#
#   --yes          do not ask for confirmation (needed when stdin is not a terminal)
#   --force        also write to a disk that is not removable or hot-pluggable, or to a
#                  regular file; never to the system disk or a mounted device
#   --no-verify    skip the checksum check (no IMAGE.sha256 next to the image)
#   --no-readback  skip reading the device back to compare it with the image
#   --no-setup-code  keep the image's setup code instead of writing a fresh one
#
# Before writing: IMAGE's sha256 matches IMAGE.sha256; DEVICE is a whole disk, not a partition;
# neither it nor any of its partitions is mounted or used as swap; it holds none of the running
# system's file systems; it is removable (an SD card reader, a USB disk) unless --force; the
# image fits on it. Then it writes with progress, syncs, and reads the device back to compare.
# Last, it writes a fresh one-time setup code to the card's boot partition (setup-code.txt,
# with mtools: nothing is mounted) and prints it: the device's first-boot page asks for it.
set -euo pipefail

die() { echo "flash.sh: $*" >&2; exit 1; }
usage() { sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; }

yes=0 force=0 verify=1 readback=1 setup_code=1
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --yes|-y) yes=1 ;;
    --force) force=1 ;;
    --no-verify) verify=0 ;;
    --no-readback) readback=0 ;;
    --no-setup-code) setup_code=0 ;;
    -h|--help) usage; exit 0 ;;
    -*) echo "flash.sh: unknown option '$1' (try --help)" >&2; exit 2 ;;
    *) args+=("$1") ;;
  esac
  shift
done
[ ${#args[@]} -eq 2 ] || { usage >&2; exit 2; }
image=${args[0]} dev=${args[1]}

[ -f "$image" ] || die "no such image: $image"
case "$image" in
  *.img.xz) decompress=(xz -dc -- "$image") ;;
  *.img) decompress=(cat -- "$image") ;;
  *) die "$image: expected a .img or .img.xz file" ;;
esac

# 1. The image is the one that was published.
if [ "$verify" = 1 ]; then
  sumfile="$image.sha256"
  [ -f "$sumfile" ] || die "no checksum file $sumfile (--no-verify to write without checking)"
  want=$(awk 'NR == 1 { print tolower($1) }' "$sumfile")
  [[ "$want" =~ ^[0-9a-f]{64}$ ]] || die "$sumfile: no sha256 on its first line"
  echo "checking sha256 of $image ..."
  got=$(sha256sum -- "$image" | cut -d' ' -f1)
  [ "$got" = "$want" ] || die "$image: sha256 is $got, $sumfile says $want: download it again"
  echo "sha256 OK"
fi
if [[ "$image" == *.xz ]]; then
  xz -t -- "$image" 2>/dev/null || die "$image: not a valid .xz file"
  size=$(xz --robot --list -- "$image" | awk '$1 == "totals" { print $5 }')
else
  size=$(stat -c %s -- "$image")
fi

# 2. The target.
[ -e "$dev" ] || die "no such device: $dev"
if [ -b "$dev" ]; then
  real=$(readlink -f -- "$dev")
  name=${real##*/}
  [ -e "/sys/class/block/$name" ] || die "$dev: not found in /sys/class/block"
  if [ -e "/sys/class/block/$name/partition" ]; then
    parent=$(basename "$(dirname "$(readlink -f "/sys/class/block/$name")")")
    die "$dev is a partition; give the whole disk (/dev/$parent)"
  fi
  # Every block device on this disk: itself, its partitions, and what sits on top of them
  # (LVM, dm-crypt, md), by major:minor.
  mapfile -t devnums < <(lsblk -nrpo MAJ:MIN "$real" | tr -d ' ')
  mapfile -t names < <(lsblk -nrpo NAME "$real")
  # Mounted anywhere (any mount namespace we can see), or swap.
  for mm in "${devnums[@]}"; do
    if awk -v mm="$mm" '$3 == mm { found = 1 } END { exit !found }' /proc/self/mountinfo; then
      mp=$(awk -v mm="$mm" '$3 == mm { print $5; exit }' /proc/self/mountinfo)
      die "$dev is in use: a file system on it is mounted at $mp (unmount it first)"
    fi
  done
  for n in "${names[@]}"; do
    if awk -v n="$n" 'NR > 1 && $1 == n { found = 1 } END { exit !found }' /proc/swaps; then
      die "$dev is in use: $n is active swap"
    fi
  done
  # The system disk: whatever holds /, /boot, /usr, /var or /home of the running system,
  # even if we got here through a symlink or another name for it.
  for m in / /boot /boot/efi /usr /var /home; do
    src=$(findmnt -nvo SOURCE --target "$m" 2>/dev/null || true)
    [ -b "$src" ] || continue
    for d in $(lsblk -nrpso NAME "$src" 2>/dev/null); do
      [ "$(readlink -f "$d")" = "$real" ] && die "$dev holds the running system ($m): refusing"
    done
  done
  rm=$(cat "/sys/class/block/$name/removable" 2>/dev/null || echo 0)
  read -r hotplug tran < <(lsblk -dnro HOTPLUG,TRAN "$real"; echo)
  removable=0
  if [ "$rm" = 1 ] || [ "${hotplug:-0}" = 1 ] || [ "${tran:-}" = usb ] || [[ "$name" == mmcblk* ]]; then
    removable=1
  fi
  if [ "$removable" = 0 ] && [ "$force" = 0 ]; then
    die "$dev is not a removable disk (an SD card reader or USB disk); --force to write anyway"
  fi
  devsize=$(blockdev --getsize64 "$real")
  desc="$(lsblk -dnro MODEL "$real" 2>/dev/null | sed 's/\\x20/ /g') $((devsize / 1000000)) MB"
  [ "$size" -le "$devsize" ] || die "$dev holds $devsize bytes; the image needs $size"
  target=$real
elif [ -f "$dev" ]; then
  [ "$force" = 1 ] || die "$dev is a regular file, not a block device; --force to write the image into it"
  desc="regular file"
  target=$dev
else
  die "$dev is neither a block device nor a regular file"
fi

# 3. Last word from the user.
echo "about to write $image ($((size / 1048576)) MiB) to $dev ($desc); everything on it is lost"
if [ "$yes" = 0 ]; then
  [ -t 0 ] || die "stdin is not a terminal: pass --yes to confirm"
  read -r -p "type 'yes' to continue: " answer
  [ "$answer" = yes ] || die "cancelled"
fi

# 4. Write, flush, read back.
if [ -b "$target" ]; then
  "${decompress[@]}" | dd of="$target" bs=4M iflag=fullblock oflag=direct conv=fsync status=progress
else
  "${decompress[@]}" | dd of="$target" bs=4M iflag=fullblock conv=fsync,notrunc status=progress
fi
sync
if [ "$readback" = 1 ]; then
  echo "reading $dev back ..."
  if [ -b "$target" ]; then
    # Past the page cache: what the card holds, not what we just handed the kernel.
    blockdev --flushbufs "$target"
  fi
  cmp -n "$size" <("${decompress[@]}") "$target" ||
    die "$dev does not read back as the image: the card may be failing"
  echo "read back OK"
fi

# 5. This card's own setup code, replacing the one every copy of the image shares.
code=""
if [ "$setup_code" = 1 ]; then
  code_file=$("$(dirname "$0")/setup-code.sh" --file)
  # Partition 1, the FAT boot partition of every Vantage image.
  start=$(sfdisk --dump "$target" 2>/dev/null | sed -n '/^[^ ]*1 : start=/{s/.*start= *\([0-9]*\).*/\1/p;q}')
  fat="$target@@$((${start:-0} * 512))"
  export MTOOLS_SKIP_CHECK=1
  # blkid first: mtools, told to skip its checks, takes random bytes for a FAT now and then.
  if [ -n "$start" ] &&
    [ "$(blkid -p -O "$((start * 512))" -o value -s TYPE "$target" 2>/dev/null)" = vfat ] &&
    mdir -i "$fat" ::/ >/dev/null 2>&1; then
    code=$("$(dirname "$0")/setup-code.sh")
    tmpcode=$(mktemp)
    trap 'rm -f "$tmpcode"' EXIT
    printf '%s\n' "$code" >"$tmpcode"
    mcopy -o -i "$fat" "$tmpcode" "::$code_file" || die "could not write $code_file to $dev's boot partition"
    sync
    [ -b "$target" ] && blockdev --flushbufs "$target"
    [ "$(mtype -i "$fat" "::$code_file" | head -n 1)" = "$code" ] ||
      die "$code_file on $dev does not read back as written"
  else
    echo "note: $image has no FAT boot partition 1: no setup code written"
  fi
fi
if [ -b "$target" ]; then
  blockdev --rereadpt "$target" 2>/dev/null || true
fi
echo "done: $dev can be removed"
if [ -n "$code" ]; then
  echo
  echo "setup code: $code"
  echo "  The device's first-boot page asks for it before anyone can set its admin password."
  echo "  Note it down (it is also in $code_file on the card's boot partition)."
fi
