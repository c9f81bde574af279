#!/usr/bin/env bash
# Binary sizes of the shipping build (dist profile: fat LTO, one codegen unit, panic=abort,
# stripped) for every target, against the 8 MB aarch64 budget, side by side with the peer
# exporters' binaries where Debian has them installed, and the .deb sizes.
#
#   scripts/bench-size.sh                 builds what is out of date first (a dist build is slow)
#   scripts/bench-size.sh aarch64 x86_64  some targets only (no packages)
#   scripts/bench-size.sh --contributors aarch64
#                                         the largest crates and functions of one target's dist
#                                         binary, from an unstripped build in target/size/, by
#                                         symbol names (as `cargo bloat --crates` counts them)
set -euo pipefail
cd "$(dirname "$0")/.."

budget=$((8 * 1000 * 1000))
version=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version *= *"\(.*\)"/\1/p' Cargo.toml)

triple() {
  case "$1" in
    aarch64|arm64|aarch64-unknown-linux-gnu) echo aarch64-unknown-linux-gnu ;;
    armv7|armhf|armv7-unknown-linux-gnueabihf) echo armv7-unknown-linux-gnueabihf ;;
    x86_64|amd64|x86_64-unknown-linux-gnu) echo x86_64-unknown-linux-gnu ;;
    *) echo "bench-size.sh: unknown target '$1'" >&2; return 2 ;;
  esac
}

# A hex number's value (mawk has no strtonum).
hex='function hex(s,   i, v) { v = 0; s = tolower(s)
  for (i = 1; i <= length(s); i++) v = v * 16 + index("0123456789abcdef", substr(s, i, 1)) - 1
  return v }
'

# Bytes per crate of the symbols in an unstripped binary: the crate is the first path segment
# of the demangled name (inside `<...>` for trait impls); what has no path (C and assembly,
# such as ring's) is "[other]".
by_crate() {
  nm -S --size-sort -C "$1" 2>/dev/null | awk "$hex"'
    NF >= 4 && $3 ~ /^[tTrRdDbB]$/ {
      size = hex($2); name = $0
      sub(/^[^ ]+ [^ ]+ [^ ]+ /, "", name)
      # `<T as Trait>::f` and `<F as axum::Handler>::call`: the type if it has a path, else the trait.
      sub(/^<+/, "", name); sub(/^(dyn |impl |&(mut )?)/, "", name)
      if (name ~ /^[A-Za-z_][A-Za-z0-9_]* as /) sub(/^[A-Za-z_][A-Za-z0-9_]* as /, "", name)
      crate = "[other]"
      if (match(name, /^[A-Za-z_][A-Za-z0-9_]*::/)) crate = substr(name, 1, RLENGTH - 2)
      sum[crate] += size; total += size
    }
    END {
      for (c in sum) printf "%10d  %5.1f%%  %s\n", sum[c], 100 * sum[c] / total, c
    }' | sort -rn | head -25 || true  # head closes the pipe early (141 under pipefail)
}

contributors() {
  local t
  t=$(triple "$1")
  # Stripping is a link step: an unstripped twin of the dist build, in a directory of its own.
  # The binary's package override strips too (Cargo.toml says why), so it is turned off there.
  CARGO_TARGET_DIR=target/size CARGO_PROFILE_DIST_STRIP=false \
    RUSTFLAGS="${RUSTFLAGS:+$RUSTFLAGS }$(grep -v '^#' scripts/dist-rustflags)" \
    cargo build --locked --profile dist --target "$t" -p vantage --bin vantage \
    --config 'profile.dist.package.vantage.strip=false' >&2
  local bin=target/size/$t/dist/vantage
  echo "unstripped dist binary $t: $(stat -c %s "$bin") bytes"
  echo "bytes of symbols by crate:"
  by_crate "$bin"
  echo
  echo "largest symbols:"
  nm -S --size-sort -C -r "$bin" | awk "$hex"'NF >= 4 { printf "%10d %s\n", hex($2), substr($0, index($0, $4)) }' \
    | cut -c1-150 | head -15 || true
}

if [ "${1:-}" = --contributors ]; then
  contributors "${2:?--contributors needs a target}"
  exit 0
fi

targets=()
for a in "$@"; do targets+=("$(triple "$a")"); done
if [ ${#targets[@]} -eq 0 ]; then
  targets=(aarch64-unknown-linux-gnu armv7-unknown-linux-gnueabihf x86_64-unknown-linux-gnu)
  scripts/build-deb.sh >/dev/null 2>&1 || scripts/build-deb.sh
  debs=1
else
  scripts/build-firmware.sh "${targets[@]}" >/dev/null 2>&1 || scripts/build-firmware.sh "${targets[@]}"
  debs=0
fi

row() { printf '%-44s %10s %8s  %s\n' "$@"; }
mb() { awk -v b="$1" 'BEGIN { printf "%.2f MB", b / 1e6 }'; }

row binary bytes size note
for t in "${targets[@]}"; do
  f=dist/vantage-$version-$t
  b=$(stat -c %s "$f")
  note=""
  if [ "$t" = aarch64-unknown-linux-gnu ]; then
    if [ "$b" -le "$budget" ]; then note="budget 8 MB: ok"; else note="budget 8 MB: OVER"; fi
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
[ "$debs" = 1 ] || exit 0
echo
row package bytes size ""
for a in arm64 armhf amd64; do
  f=dist/vantage_${version}_$a.deb
  b=$(stat -c %s "$f")
  row "$f" "$b" "$(mb "$b")" "installed: $(dpkg-deb -f "$f" Installed-Size) KiB"
done
