#!/bin/bash
# Runs the timing-sensitive suites several times in a row and prints one line per run: the
# core's and the daemon's `cargo test` (as CI runs them, root tests included when root), and
# the core's unit tests for aarch64 under qemu-user. Meant for a busy machine: start a
# `cargo build --release` (or anything heavy) beside it. A suite that fails once here would
# block a merge some day.
#
#   scripts/repeat-timing-suites.sh [--runs N] [--logs DIR]
set -euo pipefail
cd "$(dirname "$0")/.."

runs=5
logs=target/repeat-timing
while [ $# -gt 0 ]; do
  case "$1" in
    --runs) runs=$2; shift 2 ;;
    --logs) logs=$2; shift 2 ;;
    -h|--help) sed -n '2,8p' "$0"; exit 0 ;;
    *) echo "repeat-timing-suites: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
case "$runs" in ''|*[!0-9]*) echo "repeat-timing-suites: --runs must be a number, got $runs" >&2; exit 2 ;; esac
[ "$runs" -ge 1 ] && [ "$runs" -le 50 ] || { echo "repeat-timing-suites: --runs must be 1 to 50" >&2; exit 2; }

if [ "$(id -u)" -eq 0 ]; then export VANTAGE_REQUIRE_ROOT_TESTS=1; fi
export CARGO_TERM_COLOR=never CARGO_INCREMENTAL=${CARGO_INCREMENTAL:-0}
export CARGO_PROFILE_DEV_DEBUG=${CARGO_PROFILE_DEV_DEBUG:-line-tables-only}
mkdir -p "$logs"
host=(cargo test --locked -p vantage-core -p vantage)
arm=(cargo test --locked -p vantage-core --lib --target aarch64-unknown-linux-gnu)

echo "commit $(git rev-parse --short HEAD), $(date -u +%FT%TZ), building"
"${host[@]}" --no-run >"$logs/build.log" 2>&1 || { tail -20 "$logs/build.log"; exit 1; }
"${arm[@]}" --no-run >>"$logs/build.log" 2>&1 || { tail -20 "$logs/build.log"; exit 1; }

counts() { grep -h '^test result' "$1" | awk '{ p += $4; f += $6 } END { print p + 0 " passed, " f + 0 " failed" }'; }
failed=0
for i in $(seq "$runs"); do
  load=$(cut -d' ' -f1 /proc/loadavg)
  s=$SECONDS
  rc1=0; "${host[@]}" >"$logs/host-$i.log" 2>&1 || rc1=$?
  t1=$((SECONDS - s)); s=$SECONDS
  rc2=0; "${arm[@]}" >"$logs/aarch64-$i.log" 2>&1 || rc2=$?
  t2=$((SECONDS - s))
  echo "run $i (load $load): host ${t1}s $(counts "$logs/host-$i.log") rc=$rc1;" \
    "aarch64 under qemu-user ${t2}s $(counts "$logs/aarch64-$i.log") rc=$rc2"
  [ $rc1 -eq 0 ] && [ $rc2 -eq 0 ] || failed=1
done
exit $failed
