#!/usr/bin/env bash
# Proves eda's exported drafts with the peers' own Python code (issue 13), on CPU:
#   1. EAGLE (`eagle-llm` 1.2.1, the authors' PyPI package) loads `eda export --format eagle`
#      with EaModel.from_pretrained next to the tiny Llama fixture target; its target features
#      and draft hidden states match eda's within 1e-4 and its greedy eagenerate equals eda's.
#   2. vLLM's `speculators` (0.3.0, the last release with the EAGLE-1/2 `EagleSpeculator`) loads
#      `eda export --format speculators`, reports architecture, verifier and sizes, and its
#      forward pass gives eda's draft logits within 1e-4.
# The target is tests/fixtures/llama-tiny: eagle-llm 1.2.1 hard-codes the rotary base 10000,
# which SmolLM2 (100000) does not use.
#
# Usage: scripts/interop-check.sh [WORKDIR]     (default WORKDIR: /tmp/eda-interop)
# Needs PyPI once (torch, transformers, eagle-llm, speculators: about 3 GB with torch's CUDA
# libraries); later runs reuse the venvs in WORKDIR. Prints the figures; exits non-zero when a
# check fails.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
work=${1:-/tmp/eda-interop}
mkdir -p "$work"
work=$(cd "$work" && pwd)

# Two venvs: eagle-llm 1.2.1 needs transformers 4.36 internals, speculators 0.3.0 a current 4.x.
# The second reuses the first's torch through a .pth file instead of downloading it again.
if [ ! -x "$work/venv-eagle/bin/python" ] || ! "$work/venv-eagle/bin/python" -c 'import eagle, torch' 2>/dev/null; then
    python3 -m venv "$work/venv-eagle"
    "$work/venv-eagle/bin/pip" install -q torch "transformers==4.36.2" safetensors "numpy<2"
    # Its declared pins (gradio, openai 0.28, fschat, ...) serve its web demo, not the model code.
    "$work/venv-eagle/bin/pip" install -q --no-deps eagle-llm==1.2.1
fi
if [ ! -x "$work/venv-spec/bin/python" ] || ! "$work/venv-spec/bin/python" -c 'import speculators' 2>/dev/null; then
    python3 -m venv "$work/venv-spec"
    site=$("$work/venv-spec/bin/python" -c 'import site; print(site.getsitepackages()[0])')
    "$work/venv-eagle/bin/python" -c 'import os, torch; print(os.path.dirname(os.path.dirname(torch.__file__)))' > "$site/zz-shared-torch.pth"
    "$work/venv-spec/bin/pip" install -q "transformers>=4.55,<5" safetensors "numpy<2" "pydantic>=2" pydantic-settings loguru pyyaml
    # Its declared deps include deepspeed and datasets (training only).
    "$work/venv-spec/bin/pip" install -q --no-deps speculators==0.3.0
fi

cd "$root"
# EDA_PROFILE=dev reuses a debug build (the numbers are the same; only slower).
profile=${EDA_PROFILE:-release}
cargo build -q --locked --profile "$profile" -p eda-cli --bin eda
cargo build -q --locked --profile "$profile" -p eda-spec --example eagle_interop
[ "$profile" = dev ] && profile=debug
bin=${CARGO_TARGET_DIR:-$root/target}/$profile
eda=$bin/eda
interop=$bin/examples/eagle_interop
target=$root/tests/fixtures/llama-tiny

rm -rf "$work/draft" "$work/eagle" "$work/spec"
"$interop" init "$target" "$work/draft" 7
NO_COLOR=1 "$eda" export --draft "$work/draft" --target "$target" --format eagle --out "$work/eagle"
NO_COLOR=1 "$eda" export --draft "$work/draft" --target "$target" --format speculators \
    --verifier "$target" --out "$work/spec"
"$interop" dump "$target" "$work/draft" 1,5,17,42,99,3,8,250,12,77,31,64 "$work/eda.json" 24

echo "== EAGLE (eagle-llm 1.2.1)"
"$work/venv-eagle/bin/python" scripts/interop/eagle_check.py "$target" "$work/eagle" "$work/eda.json"
echo "== speculators 0.3.0"
"$work/venv-spec/bin/python" scripts/interop/speculators_check.py "$work/spec" "$target" "$work/eda.json"
echo "interop checks passed"
