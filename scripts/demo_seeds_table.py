#!/usr/bin/env python3
"""Aggregates scripts/demo-seeds.sh runs: τ mean ± sample standard deviation over seeds per
target and method, with each method's cost (trainable parameters, samples, steps, seconds).
Writes OUT/summary.md and prints it. Standard library only."""
import json
import statistics
import sys
from pathlib import Path

out = Path(sys.argv[1] if len(sys.argv) > 1 else "eda-out-seeds")
cells = {}  # (target, label) -> list of rows
seeds = set()
for res in sorted(out.glob("seed*/*/results.json")):
    variant = res.parent.name  # e.g. mean-0.5
    pooling, fraction = variant.split("-")
    data = json.loads(res.read_text())
    seeds.add(data["seed"])
    for r in data["rows"]:
        m = r["method"]
        if m == "random" and pooling != "mean":
            continue  # random selection does not depend on the pooling rule: count it once
        if m in ("eda", "random"):
            label = f"{m} {float(fraction):.0%}" + (f" ({pooling})" if m == "eda" else "")
        elif variant != "mean-0.5":
            continue  # the other methods do not depend on the selection: count them once
        else:
            label = m
        cells.setdefault((r["target"], label), []).append(r)


def fmt(vals):
    if len(vals) < 2:
        return f"{vals[0]:.2f} (n=1)"
    return f"{statistics.mean(vals):.2f} ± {statistics.stdev(vals):.2f}"


order = ["stage1", "no-adapt", "full-ft", "stage2-original", "stage2-regen-all"]
def key(k):
    t, label = k
    head = label.split(" ")[0]
    return (["base", "math", "code"].index(t) if t in ("base", "math", "code") else 9,
            order.index(head) if head in order else len(order), label)

lines = [f"seeds: {sorted(seeds)}", "",
         "| target | method | τ mean ± sd | n | trainable params | train samples | train steps | train s (mean) |",
         "|---|---|---:|---:|---:|---:|---:|---:|"]
for k in sorted(cells, key=key):
    rows = cells[k]
    taus = [r["tau"] for r in rows]
    lines.append(
        f"| {k[0]} | {k[1]} | {fmt(taus)} | {len(rows)} | {rows[0]['trainable_params']:,} | "
        f"{rows[0]['train_samples']} | {rows[0]['train_steps']} | {statistics.mean(r['train_seconds'] for r in rows):.1f} |"
    )
lines += ["", "A 100 % budget is `stage2-regen-all` (every regenerated sample, selection or not)."]
text = "\n".join(lines) + "\n"
(out / "summary.md").write_text(text)
print(text)
