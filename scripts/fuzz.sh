#!/usr/bin/env bash
# Runs every fuzz target (fuzz/fuzz_targets/) for SECONDS each (default 30), starting from the
# seed corpus in fuzz/corpus/<target>/; fails if any target finds a crash, a hang (10 s for one
# input) or a memory blow-up (2 GiB). Inputs found on the way go to a scratch directory, never
# into the committed corpus; a failing input is kept in fuzz/artifacts/<target>/.
# Needs the nightly toolchain and cargo-fuzz. See docs/fuzzing.md.
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-30}"

cargo +nightly fuzz build -O
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
failed=()
for src in fuzz/fuzz_targets/*.rs; do
    t="$(basename "$src" .rs)"
    mkdir -p "$scratch/$t"
    if cargo +nightly fuzz run -O "$t" "$scratch/$t" "fuzz/corpus/$t" -- \
        -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 >"$scratch/$t.log" 2>&1; then
        execs="$(grep -o 'number_of_executed_units: [0-9]*' "$scratch/$t.log" | awk '{print $2}')"
        echo "fuzz $t: ${secs}s, ${execs:-?} executions, no failure"
    else
        tail -40 "$scratch/$t.log"
        echo "fuzz $t: FAILED (input in fuzz/artifacts/$t/)"
        failed+=("$t")
    fi
done
if [ "${#failed[@]}" -gt 0 ]; then
    echo "fuzz targets that failed: ${failed[*]}"
    exit 1
fi
