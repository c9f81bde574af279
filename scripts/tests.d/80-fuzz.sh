#!/usr/bin/env bash
# Every fuzz target for FUZZ_SECONDS (default 60) each, two at a time (docs/FUZZING.md). A crash,
# timeout or out-of-memory fails the suite and names the input under the target directory.
set -uo pipefail
cd "$(dirname "$0")/../.."
scripts/fuzz.sh --seconds "${FUZZ_SECONDS:-60}" --jobs 2
