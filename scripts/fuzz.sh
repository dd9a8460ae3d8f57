#!/usr/bin/env bash
# Bounded-time fuzzing of eda's parsers (feature shards, config.json, GGUF and safetensors
# headers, JSONL/ShareGPT prompts, manifests, JSON files).
#
# The fuzzers are proptest properties (`tests/fuzz_parsers.rs` in eda-core, eda-models and
# eda-regen) that also run, with few cases, inside `cargo test`; this script reruns them with many
# more cases, each suite under a wall-clock limit.
#
#   scripts/fuzz.sh [SECONDS_PER_SUITE=120] [CASES=20000]
#
# A failure prints the minimal failing input; pin it as a regression test next to the property
# (see the `regression_*` tests in crates/eda-core/tests/fuzz_parsers.rs) before fixing it.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-120}
cases=${2:-20000}
# One build for all suites, with the workspace's feature set (building per package would
# recompile burn with different features).
cargo test --workspace --locked --test fuzz_parsers --no-run
bins=$(cargo test --workspace --locked --test fuzz_parsers --no-run --message-format=json 2>/dev/null \
    | grep -o '"executable":"[^"]*fuzz_parsers[^"]*"' | cut -d'"' -f4)
status=0
for bin in $bins; do
    echo "== $bin: up to $cases cases per property, ${secs}s limit"
    set +e
    PROPTEST_CASES=$cases timeout --signal=INT "$secs" "$bin" --test-threads 2 -q
    rc=$?
    set -e
    case $rc in
        0) echo "== all cases passed" ;;
        124) echo "== time limit reached without a failure" ;;
        *) echo "== FAILED (exit $rc)"; status=1 ;;
    esac
done
exit $status
