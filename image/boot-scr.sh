#!/usr/bin/env bash
# Makes the Pi image's U-Boot script: image/files/boot.cmd with the board's slot partitions
# filled in, wrapped by mkimage (u-boot-tools) as boot.scr. Used by the image build
# (image/steps/chroot/55-uboot.sh) and by scripts/tests.d/75-image-uboot.sh, so both run the
# same script.
#   image/boot-scr.sh OUT        partitions from image/arch/arm64.conf (SLOT_A_PART, SLOT_B_PART)
set -euo pipefail
out=${1:?usage: image/boot-scr.sh OUT}
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=/dev/null
. "$here/arch/arm64.conf"
command -v mkimage >/dev/null || { echo "boot-scr.sh: mkimage missing (apt install u-boot-tools)" >&2; exit 1; }
cmd=$(mktemp)
trap 'rm -f "$cmd"' EXIT
sed -e "s|@SLOT_A_PART@|$SLOT_A_PART|g" -e "s|@SLOT_B_PART@|$SLOT_B_PART|g" "$here/files/boot.cmd" >"$cmd"
if grep -n '@[A-Z_]*@' "$cmd" >&2; then echo "boot-scr.sh: unfilled placeholders above" >&2; exit 1; fi
mkimage -A arm64 -O linux -T script -C none -n "Vantage slot choice" -d "$cmd" "$out" >/dev/null
