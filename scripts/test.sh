#!/usr/bin/env bash
# The whole test suite: installs what the tests need, then runs them all. Run as root: the
# network tests build their own network namespaces.
#   scripts/test.sh            everything
#   SKIP_SETUP=1 scripts/test.sh   skip the package installation step
set -euo pipefail
cd "$(dirname "$0")/.."

[ "${SKIP_SETUP:-0}" = 1 ] || scripts/setup.sh

# Tests that need root and network namespaces fail instead of skipping when this is set.
if [ "$(id -u)" -eq 0 ]; then export VANTAGE_REQUIRE_ROOT_TESTS=1; fi
export CARGO_TERM_COLOR=never
# The suite builds from clean for five target × profile pairs; incremental state and full debug
# info would only cost disk there (a CI run once ended on a full disk). A caller's choice wins.
export CARGO_INCREMENTAL=${CARGO_INCREMENTAL:-0}
export CARGO_PROFILE_DEV_DEBUG=${CARGO_PROFILE_DEV_DEBUG:-line-tables-only}
disk() { echo "at ${SECONDS}s, disk: $(df -h --output=avail . | tail -1 | tr -d ' ') free here, target $(du -sh "${CARGO_TARGET_DIR:-target}" 2>/dev/null | cut -f1)"; }
disk

echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "==> cargo test"
cargo test --workspace --locked

# Further suites (cross builds under qemu-user, packaging, browser, image...) live in
# scripts/tests.d and run in name order; each prints its own "N passed, N failed" line. Suites
# that share a number run side by side (each one's output is shown when it ends): the fuzz
# targets and the cross builds use the cores the central-view suite leaves idle during its
# link outage.
failed=0
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
for n in $(ls scripts/tests.d/ | sed -n 's/^\([0-9][0-9]\)-.*\.sh$/\1/p' | sort -u); do
  group=(scripts/tests.d/"$n"-*.sh)
  pids=()
  for t in "${group[@]}"; do
    if [ ${#group[@]} -eq 1 ]; then
      echo "==> $t"
      bash "$t" || { echo "FAILED: $t"; failed=1; }
    else
      bash "$t" > "$out/$(basename "$t").log" 2>&1 &
      pids+=($!)
    fi
  done
  for i in "${!pids[@]}"; do
    t=${group[$i]}
    rc=0
    wait "${pids[$i]}" || rc=$?
    echo "==> $t (side by side with the other $n- suites)"
    cat "$out/$(basename "$t").log"
    [ $rc -eq 0 ] || { echo "FAILED: $t"; failed=1; }
  done
  disk
done
exit $failed
