#!/usr/bin/env bash
# The long fuzz campaign (docs/fuzzing.md, "Long campaign"): runs TARGET for exactly RUNS more
# executions, at nice 19 so that it only takes what the machine does not otherwise use, from a
# corpus that persists between runs (DIR/corpus/TARGET, seeded from fuzz/corpus/TARGET the first
# time). The log goes to DIR/log-TARGET-<date>.txt; the final statistics are printed at the end.
# A run stopped early (Ctrl-C, end of a session) says how far it got in its log: its last
# "#N" line is the executions done.
#
#   scripts/fuzz-campaign.sh [--asan] [--dir DIR] TARGET RUNS
#
# Without --asan the target is built without AddressSanitizer (`cargo fuzz build -s none`):
# 2.5-6x the executions a second (docs/fuzzing.md, part 3). The unsafe code the targets reach
# (the AEAD backends, key wiping, the X25519 call into aws-lc, all under `interface_receive`)
# stays under ASan in CI's 30 s per target and in part 1 of the campaign. The build goes to its
# own target directory, so CI's ASan build in fuzz/target is left alone.
# Needs the nightly toolchain and cargo-fuzz.
set -euo pipefail
cd "$(dirname "$0")/.."

asan=0
dir=/var/tmp/veil-fuzz-campaign
while [ $# -gt 0 ]; do
    case "$1" in
        --asan) asan=1; shift ;;
        --dir) dir="$2"; shift 2 ;;
        -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
        -*) echo "unknown option $1" >&2; exit 2 ;;
        *) break ;;
    esac
done
if [ $# -ne 2 ]; then
    echo "usage: $0 [--asan] [--dir DIR] TARGET RUNS" >&2
    exit 2
fi
target="$1"
runs="$2"
if [ ! -f "fuzz/fuzz_targets/$target.rs" ]; then
    echo "no fuzz target $target (fuzz/fuzz_targets/)" >&2
    exit 2
fi
case "$runs" in
    ''|*[!0-9]*) echo "RUNS must be a number of executions, not $runs" >&2; exit 2 ;;
esac

if [ "$asan" = 1 ]; then
    tdir="$PWD/fuzz/target"
    cargo +nightly fuzz build -O "$target"
else
    tdir="$PWD/fuzz/target-no-sanitizer"
    cargo +nightly fuzz build -O -s none --target-dir "$tdir" "$target"
fi
bin="$tdir/x86_64-unknown-linux-gnu/release/$target"

mkdir -p "$dir/corpus/$target"
if [ -z "$(ls -A "$dir/corpus/$target")" ]; then
    cp "fuzz/corpus/$target/"* "$dir/corpus/$target/"
fi
log="$dir/log-$target-$(date -u +%Y%m%dT%H%M%S).txt"
echo "fuzz $target: $runs executions from $dir/corpus/$target ($(git rev-parse --short HEAD), $([ "$asan" = 1 ] && echo ASan || echo no sanitizer)); log $log"
cd "$dir"
status=0
nice -n 19 "$bin" -runs="$runs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="$dir/artifacts-$target-" "corpus/$target" >"$log" 2>&1 || status=$?
grep -E '^(Done|stat::)' "$log" || tail -40 "$log"
exit "$status"
