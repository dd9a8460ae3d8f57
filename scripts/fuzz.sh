#!/usr/bin/env bash
# Bounded-time fuzzing of eda's parsers (feature shards, config.json, GGUF and safetensors
# headers, JSONL/ShareGPT prompts, manifests, JSON files).
#
# The fuzzers are proptest properties that also run, with few cases, inside `cargo test`; this
# script reruns them with many more cases, each suite under a wall-clock limit.
#
#   scripts/fuzz.sh [SECONDS_PER_SUITE=120] [CASES=20000]
#
# A failure prints the minimal failing input; pin it as a regression test next to the property
# (see `regression_*` tests in crates/eda-core/tests/fuzz_parsers.rs) before fixing it.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-120}
cases=${2:-20000}
status=0
for suite in eda-core eda-models eda-regen; do
    echo "== $suite: fuzz_parsers, up to $cases cases per property, ${secs}s limit"
    cargo test --locked -p "$suite" --test fuzz_parsers --no-run >/dev/null 2>&1 || cargo test --locked -p "$suite" --test fuzz_parsers --no-run
    set +e
    PROPTEST_CASES=$cases timeout --signal=INT "$secs" cargo test --locked -q -p "$suite" --test fuzz_parsers -- --test-threads 1
    rc=$?
    set -e
    case $rc in
        0) echo "== $suite: all cases passed" ;;
        124|130) echo "== $suite: time limit reached without a failure" ;;
        *) echo "== $suite: FAILED (exit $rc)"; status=1 ;;
    esac
done
exit $status
