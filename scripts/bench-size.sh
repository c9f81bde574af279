#!/usr/bin/env bash
# Binary sizes of the shipping build (release profile: fat LTO, one codegen unit, panic=abort,
# stripped) for every target, against the 10 MB aarch64 budget, side by side with the peer
# exporters' binaries where Debian has them installed, and the .deb sizes.
#
#   scripts/bench-size.sh            builds what is out of date first (a release build is slow)
set -euo pipefail
cd "$(dirname "$0")/.."

budget=$((10 * 1000 * 1000))
scripts/build-deb.sh >/dev/null 2>&1 || scripts/build-deb.sh
version=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version *= *"\(.*\)"/\1/p' Cargo.toml)

row() { printf '%-44s %10s %8s  %s\n' "$@"; }
mb() { awk -v b="$1" 'BEGIN { printf "%.2f MB", b / 1e6 }'; }

row binary bytes size note
for t in aarch64-unknown-linux-gnu armv7-unknown-linux-gnueabihf x86_64-unknown-linux-gnu; do
  f=dist/vantage-$version-$t
  b=$(stat -c %s "$f")
  note=""
  if [ "$t" = aarch64-unknown-linux-gnu ]; then
    if [ "$b" -le "$budget" ]; then note="budget 10 MB: ok"; else note="budget 10 MB: OVER"; fi
  fi
  row "vantage $t" "$b" "$(mb "$b")" "$note"
done
# Peers: the Go exporters Vantage is compared with (amd64, stripped as Debian ships them).
for peer in /usr/bin/prometheus-smokeping-prober /usr/bin/prometheus-blackbox-exporter; do
  [ -x "$peer" ] || continue
  b=$(stat -c %s "$peer")
  row "$(basename "$peer") (Debian, amd64)" "$b" "$(mb "$b")" \
    "$(dpkg-query -S "$peer" 2>/dev/null | cut -d: -f1) $(dpkg-query -W -f='${Version}' \
      "$(dpkg-query -S "$peer" | cut -d: -f1)")"
done
echo
row package bytes size ""
for a in arm64 armhf amd64; do
  f=dist/vantage_${version}_$a.deb
  b=$(stat -c %s "$f")
  row "$f" "$b" "$(mb "$b")" "installed: $(dpkg-deb -f "$f" Installed-Size) KiB"
done
