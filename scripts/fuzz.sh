#!/usr/bin/env bash
# Builds the fuzz targets in fuzz/ with libFuzzer on the stable toolchain and runs each for a
# given time, a few at a time (docs/FUZZING.md).
#   scripts/fuzz.sh [--seconds N] [--jobs J] [TARGET...]
# Prints per target the runs, libFuzzer's coverage (cov: edges, ft: features) and crashes;
# exits non-zero when a target crashed, timed out or ran out of memory, naming the input.
set -uo pipefail
cd "$(dirname "$0")/.."

seconds=60
jobs=$(nproc)
targets=()
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) seconds=$2; shift 2 ;;
    --jobs) jobs=$2; shift 2 ;;
    -h|--help) sed -n '2,6p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "fuzz.sh: unknown option $1" >&2; exit 2 ;;
    *) targets+=("$1"); shift ;;
  esac
done
all=$(sed -n 's/^name = "\(.*\)"$/\1/p' fuzz/Cargo.toml | grep -vx vantage-fuzz)
[ ${#targets[@]} -gt 0 ] || mapfile -t targets <<<"$all"
for t in "${targets[@]}"; do
  grep -qx "$t" <<<"$all" || { echo "fuzz.sh: no target $t (targets: $(echo $all))" >&2; exit 2; }
done

# What cargo-fuzz passes, minus the sanitizers that need nightly: libFuzzer's coverage
# counters, its comparison tracing, and `cfg(fuzzing)` for the entry points in vantage-core.
# With an explicit --target, RUSTFLAGS stay off build scripts and proc macros.
host=$(rustc -vV | sed -n 's/^host: //p')
export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Cdebug-assertions -Coverflow-checks"
# Its own directory under the workspace's target: the instrumented build never mixes with the
# normal one, and `cargo clean` removes both.
target_dir=${CARGO_TARGET_DIR:-$PWD/target}/fuzz
bins=()
for t in "${targets[@]}"; do bins+=(--bin "$t"); done
echo "==> building ${#targets[@]} fuzz targets"
if ! (cd fuzz && CARGO_TARGET_DIR=$target_dir cargo build --locked --release --target "$host" "${bins[@]}"); then
  echo "FAILED: the fuzz build"
  echo "0 passed, ${#targets[@]} failed"
  exit 1
fi

work=${FUZZ_WORK:-$target_dir/fuzz-runs}
# One target: its own growing corpus (the committed seeds are read, never written) and its
# crashing inputs under $work/TARGET/.
run() {
  local t=$1 dir=$work/$1 seeds=()
  [ -d "fuzz/corpus/$t" ] && seeds+=("fuzz/corpus/$t")
  # The config loader's own test files, good and bad, are the config target's seeds: the core's
  # and those of the crates that read their own sections.
  [ "$t" = config ] && seeds+=(firmware/{vantage-core,vantage-store,vantage-leds}/tests/testdata/{good,bad})
  mkdir -p "$dir/corpus"
  rm -f "$dir"/crash-* "$dir"/timeout-* "$dir"/oom-* "$dir"/slow-unit-*
  "$target_dir/$host/release/$t" "$dir/corpus" "${seeds[@]}" \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=1024 -max_len=4096 \
    -artifact_prefix="$dir/" -print_final_stats=1 >"$dir/log" 2>&1
}

pids=()
for t in "${targets[@]}"; do
  while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do wait -n; done
  echo "==> $t: ${seconds}s"
  run "$t" &
  pids+=($!)
done
failed=0
for i in "${!targets[@]}"; do
  t=${targets[$i]}
  wait "${pids[$i]}"; rc=$?
  log=$work/$t/log
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  status=$(grep -E '^#[0-9]+' "$log" | tail -1)
  cov=$(grep -o 'cov: [0-9]*' <<<"$status" | cut -d' ' -f2)
  ft=$(grep -o 'ft: [0-9]*' <<<"$status" | cut -d' ' -f2)
  inputs=$(ls "$work/$t"/crash-* "$work/$t"/timeout-* "$work/$t"/oom-* 2>/dev/null)
  printf '%-14s runs %-10s cov %-6s ft %-6s crashes %s\n' "$t" "${runs:-?}" "${cov:-?}" "${ft:-?}" \
    "$(grep -c . <<<"$inputs")"
  if [ "$rc" -ne 0 ] || [ -n "$inputs" ]; then
    failed=$((failed + 1))
    echo "FAILED: $t (exit $rc), log $log"
    for f in $inputs; do echo "  input: $f"; done
    grep -m1 -E "panicked at|ERROR: libFuzzer" "$log" | sed 's/^/  /'
  fi
done
echo "$((${#targets[@]} - failed)) passed, $failed failed"
[ "$failed" -eq 0 ]
