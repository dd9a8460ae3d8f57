#!/usr/bin/env bash
# The built-in demo's comparison over several seeds, selection budgets and both pooling rules,
# aggregated as τ mean ± standard deviation per cell (scripts/demo_seeds_table.py).
#
#   scripts/demo-seeds.sh [OUT] [SEEDS...]      (default: eda-out-seeds, seeds 0 1 2)
#
# Each seed is one full `eda demo` (≈ 5 min on 2 cores: its own targets, draft and methods at the
# default 50 % budget with mean pooling). The other budgets and the pooled rule reuse a copy of
# that run: `eda demo` redoes only the selection and the `eda`/`random` rows when the selection
# settings change. Needs a release build of `eda` (cargo build --release -p eda-cli).
set -euo pipefail
OUT=${1:-eda-out-seeds}
shift || true
SEEDS=${*:-0 1 2}
EDA=${EDA:-target/release/eda}
mkdir -p "$OUT"
for s in $SEEDS; do
  base="$OUT/seed$s/mean-0.5"
  [ -f "$base/results.json" ] || "$EDA" demo --seed "$s" --out "$base" --no-progress
  for variant in mean-0.1 mean-0.25 pooled-0.5; do
    dir="$OUT/seed$s/$variant"
    [ -f "$dir/results.json" ] && continue
    rm -rf "$dir" && cp -r "$base" "$dir"
    "$EDA" demo --seed "$s" --out "$dir" --no-progress --pooling "${variant%-*}" --select-fraction "${variant#*-}"
  done
done
python3 "$(dirname "$0")/demo_seeds_table.py" "$OUT"
