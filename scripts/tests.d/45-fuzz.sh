#!/usr/bin/env bash
# Every fuzz target for FUZZ_SECONDS (default 30) each, FUZZ_JOBS (default 1) at a time
# (docs/FUZZING.md). A crash, timeout or out-of-memory fails the suite and names the input under
# the target directory. One job by default: scripts/test.sh runs this beside the central-view
# suite, whose outage leaves a core idle.
set -uo pipefail
cd "$(dirname "$0")/../.."
scripts/fuzz.sh --seconds "${FUZZ_SECONDS:-30}" --jobs "${FUZZ_JOBS:-1}"
