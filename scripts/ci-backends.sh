#!/usr/bin/env bash
# GPU-backend checks run by .ci/run after the main test suite (also runnable by hand):
#   1. a Vulkan driver (software lavapipe when the machine has none);
#   2. the `eda` binary and the backend tests built with `--features wgpu`;
#   3. the backend conformance suite and the half-precision tests on the wgpu device;
#   4. the cuda backend type-checked (DOCS_RS=1 skips the LLVM download; nothing is linked).
# Fails on the first failing step.
set -euo pipefail
cd "$(dirname "$0")/.."

# True when any Vulkan driver manifest (ICD) is installed, system-wide or in /etc.
have_vulkan_icd() {
    local f
    for f in /usr/share/vulkan/icd.d/*.json /etc/vulkan/icd.d/*.json; do
        [ -e "$f" ] && return 0
    done
    return 1
}
if ! have_vulkan_icd; then
    echo "no Vulkan driver found: installing Mesa's software driver (lavapipe)"
    if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
    ($SUDO apt-get update && $SUDO apt-get install -y --no-install-recommends mesa-vulkan-drivers) >/dev/null
fi
have_vulkan_icd || { echo "still no Vulkan ICD after installing mesa-vulkan-drivers" >&2; exit 1; }

step() { echo; echo "== $* ($(date +%T))"; }
# winit/wgpu warn on every device open without a runtime dir (headless CI); give them one.
if [ -z "${XDG_RUNTIME_DIR:-}" ]; then
    export XDG_RUNTIME_DIR
    XDG_RUNTIME_DIR=$(mktemp -d)
fi

# One feature resolution for the build and the tests: `cargo test --workspace` with the same
# features and targets both times, so the tests reuse what the build compiled. (A `cargo build
# --workspace` followed by `cargo test -p eda` resolved features differently and compiled the
# whole wgpu stack twice: 17 + 15 minutes on 2 cores.)
wgpu_targets=(--workspace --features eda/wgpu,eda-cli/wgpu --test backend_conformance --test backend_f16 --test backend_bf16)

step "build: the eda binary (its unit-test build) and the backend tests with --features wgpu"
cargo test --locked "${wgpu_targets[@]}" --bin eda --no-run

step "test: backend conformance and half precision on wgpu"
# Test threads share one device queue; two keep lavapipe's CPU threads busy without thrashing.
cargo test --locked "${wgpu_targets[@]}" -- --test-threads 2

step "check: cuda backend type-checks (DOCS_RS=1: no LLVM download, no linking)"
DOCS_RS=1 cargo check --locked -p eda-cli --features cuda
