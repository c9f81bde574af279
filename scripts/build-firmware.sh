#!/usr/bin/env bash
# Builds the vantage binary for each target into dist/ and prints size, sha256 and the glibc
# version it needs.
#
#   scripts/build-firmware.sh                      all three targets, dist profile (what ships)
#   scripts/build-firmware.sh aarch64 armv7        some targets (short names or full triples)
#   scripts/build-firmware.sh --profile ci x86_64  the workspace's `ci` profile (no LTO): faster,
#                                                  for tests; shipping builds use `dist` (fat LTO)
#   --no-install   fail instead of installing missing rustup targets or Debian linkers
#
# Cross linking uses Debian's cross GCC (linkers set in .cargo/config.toml); see the README for
# the `cross` alternative. Artefacts: dist/vantage-<version>-<target> and dist/SHA256SUMS.
set -euo pipefail
cd "$(dirname "$0")/.."

ALL_TARGETS=(aarch64-unknown-linux-gnu armv7-unknown-linux-gnueabihf x86_64-unknown-linux-gnu)
profile=dist
install=1
targets=()

usage() { sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; }

while [ $# -gt 0 ]; do
  case "$1" in
    --profile) profile="${2:?--profile needs a value (dist, release or ci)}"; shift 2 ;;
    --profile=*) profile="${1#*=}"; shift ;;
    --no-install) install=0; shift ;;
    -h|--help) usage; exit 0 ;;
    aarch64|arm64) targets+=(aarch64-unknown-linux-gnu); shift ;;
    armv7|armhf) targets+=(armv7-unknown-linux-gnueabihf); shift ;;
    x86_64|amd64) targets+=(x86_64-unknown-linux-gnu); shift ;;
    *-*-*) targets+=("$1"); shift ;;
    *) echo "build-firmware.sh: unknown argument '$1' (try --help)" >&2; exit 2 ;;
  esac
done
[ ${#targets[@]} -gt 0 ] || targets=("${ALL_TARGETS[@]}")
case "$profile" in
  dist|release|ci) ;;
  *) echo "build-firmware.sh: --profile must be 'dist', 'release' or 'ci', not '$profile'" >&2; exit 2 ;;
esac

# The cross linker each target needs and the Debian packages with it and the target's libc
# (the libc is only a Recommends of the compiler); nothing for the host's own architecture.
linker_pkgs() {
  case "$1" in
    "$(uname -m)"-*) echo "" ;;
    aarch64-unknown-linux-gnu) echo "aarch64-linux-gnu-gcc gcc-aarch64-linux-gnu libc6-dev-arm64-cross" ;;
    armv7-unknown-linux-gnueabihf) echo "arm-linux-gnueabihf-gcc gcc-arm-linux-gnueabihf libc6-dev-armhf-cross" ;;
    x86_64-unknown-linux-gnu)
      echo "build-firmware.sh: building x86_64 on $(uname -m) is not set up here; use cross (Cross.toml)" >&2
      return 1 ;;
    *) echo "build-firmware.sh: unsupported target '$1' (supported: ${ALL_TARGETS[*]})" >&2; return 1 ;;
  esac
}

# Install what is missing, all at once, before building anything.
missing_targets=()
missing_pkgs=()
installed_targets=$(rustup target list --installed)
for t in "${targets[@]}"; do
  lp=$(linker_pkgs "$t") || exit 2
  grep -qx "$t" <<<"$installed_targets" || missing_targets+=("$t")
  [ -n "$lp" ] || continue
  read -r cmd pkgs <<<"$lp"
  for p in $pkgs; do
    if command -v dpkg-query >/dev/null; then
      dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing_pkgs+=("$p")
    elif ! command -v "$cmd" >/dev/null; then
      echo "build-firmware.sh: $cmd not found; install a cross GCC for $t" >&2
      exit 1
    fi
  done
done
if [ ${#missing_targets[@]} -gt 0 ]; then
  [ $install = 1 ] || { echo "missing rustup targets: ${missing_targets[*]} (rustup target add ...)" >&2; exit 1; }
  rustup target add "${missing_targets[@]}"
fi
if [ ${#missing_pkgs[@]} -gt 0 ]; then
  if [ $install = 0 ] || [ "$(id -u)" -ne 0 ]; then
    echo "missing cross linkers; install them with: apt-get install ${missing_pkgs[*]}" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing_pkgs[@]}" >/dev/null
fi

version=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version *= *"\(.*\)"/\1/p' Cargo.toml)
mkdir -p dist

# The highest GLIBC_x.y symbol version the binary references: the oldest glibc it runs on.
glibc_needed() {
  readelf -W --dyn-syms "$1" | grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/GLIBC_//' | sort -V | tail -1
}

# With --target, RUSTFLAGS reach only the target's code, not build scripts or proc macros.
if [ "$profile" = dist ]; then
  RUSTFLAGS="${RUSTFLAGS:+$RUSTFLAGS }$(grep -v '^#' scripts/dist-rustflags)"
  export RUSTFLAGS
fi

built=()
for t in "${targets[@]}"; do
  echo "==> building $t ($profile)"
  cargo build --locked --profile "$profile" --target "$t" -p vantage --bin vantage
  out="dist/vantage-$version-$t"
  # Every profile strips (`dist` and `ci` inherit it from `release`). Cargo names the output
  # directory after the profile.
  cp "${CARGO_TARGET_DIR:-target}/$t/$profile/vantage" "$out.tmp"
  mv "$out.tmp" "$out"
  built+=("$out")
done

# SHA256SUMS covers every artefact in dist/, also those of earlier runs for other targets.
(cd dist && sha256sum vantage-"$version"-* | grep -v '\.tmp$' > SHA256SUMS)

printf '\n%-52s %10s  %-8s %s\n' artefact bytes glibc sha256
for f in "${built[@]}"; do
  printf '%-52s %10s  >=%-6s %s\n' "$f" "$(stat -c %s "$f")" "$(glibc_needed "$f")" \
    "$(sha256sum "$f" | cut -d' ' -f1)"
done
