#!/usr/bin/env python3
"""Aggregates scripts/smollm2-eda.sh: per target and method, τ mean ± sample standard deviation
over seeds (replayed EAGLE-2 tree, greedy), α, and the cost of the adaptation: samples, optimiser
steps, wall seconds (total and per step), trainable parameters, AdamW state bytes and analytic
training FLOPs. Also τ per draft position (accepted tokens per verification cycle at each
position; table and WORK/tau_per_position.svg) and the conditional acceptance rate per position.
Writes WORK/summary.md and prints it. Standard library only.

Training FLOPs are counted per processed token from the draft's shapes (2 FLOPs per multiply-add;
attention scores, norms and activations left out, as in the usual 6·N·T estimate):
  forward                         2·M        (M: multiply-adds of one token through fc, attention
                                               projections, the active experts and routers, LM head)
  backward, activation gradients  2·M        (needed from the loss back to the first trainable
                                               layer; `fc` trains in both plans, so everywhere)
  backward, weight gradients      2·M_train  (only for parameters that train)
Which parts need activation gradients and which train depends on the method (PLANS below).
The table prints the total over the run: per-token FLOPs × tokens processed.
"""
import json
import statistics
import sys
from pathlib import Path

work = Path(sys.argv[1] if len(sys.argv) > 1 else "eda-smollm2-eda")
METHODS = ["base", "no-adapt", "full", "stage2-original", "stage2-regen-all",
           "eda-0.1", "eda-0.25", "eda-0.5", "random-0.1", "random-0.25", "random-0.5", "eda-pooled-0.5", "lora-r16", "stage2-shared-group"]
LABEL = {"base": "stage-1 draft on the base target", "no-adapt": "no adaptation", "full": "full fine-tuning of the stage-1 draft (all regenerated)",
         "stage2-original": "stage 2, original answers", "stage2-regen-all": "stage 2, all regenerated (100 %)",
         "eda-0.1": "EDA (Mahalanobis) 10 %", "eda-0.25": "EDA (Mahalanobis) 25 %", "eda-0.5": "EDA (Mahalanobis) 50 %",
         "random-0.1": "random 10 %", "random-0.25": "random 25 %", "random-0.5": "random 50 %", "lora-r16": "LoRA r 16 on the stage-1 draft (all regenerated)",
         "eda-pooled-0.5": "EDA 50 %, pooled rule (distance of the mean feature)",
         "stage2-shared-group": "stage 2 with fc frozen too (all regenerated)"}


def load(p):
    return json.loads(Path(p).read_text())


def macs(cfg):
    """Multiply-adds per token of the draft's forward, by part (`config.json` of an EDA draft)."""
    h, heads, kv = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"]
    hd = cfg.get("head_dim") or h // heads
    group = lambda n, k, inter: k * 3 * h * inter + (h * n if n > 1 else 0)  # active experts + router
    return {
        "fc": 2 * h * h,
        "attn": 2 * h * heads * hd + 2 * h * kv * hd,
        "shared": group(cfg["num_shared_experts"], cfg["top_k_shared"], cfg["intermediate_size"]),
        "private": group(cfg["num_private_experts"], cfg["top_k_private"], cfg["private_intermediate_size"]),
        "head": h * (cfg.get("draft_vocab_size") or cfg["vocab_size"]),
    }


# Per method: the parts whose activation gradients are needed (from the loss back to the first
# trainable weight) and the parts whose weights train. Full fine-tuning trains everything but the
# LM head; stage 2 (the reference plan, the default) trains `fc`, so the gradient runs back
# through attention; with `fc` frozen too it stops at the private experts; LoRA's adapters sit on
# attention and the experts, so it runs back to attention, and only adapter weights train.
ALL = ("fc", "attn", "shared", "private", "head")
PLANS = {
    "full": (ALL, ("fc", "attn", "shared", "private")),
    "stage2": (ALL, ("fc", "private")),
    "stage2-shared-group": (("private", "head"), ("private",)),
    "lora": (("attn", "shared", "private", "head"), None),
}


def plan(method):
    if method == "full" or method == "stage2-shared-group":
        return PLANS[method]
    return PLANS["lora"] if method.startswith("lora") else PLANS["stage2"]


def fmt(vals, digits=2):
    if not vals:
        return "–"
    if len(vals) < 2:
        return f"{vals[0]:.{digits}f}"
    return f"{statistics.mean(vals):.{digits}f} ± {statistics.stdev(vals):.{digits}f}"


def human(n):
    for unit, div in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.2f} {unit}"
    return f"{n:.0f}"


def position_table(title, series):
    """Markdown lines: `title`, then one row per method with a value per draft position."""
    width = max(len(v) for v in series.values())
    out = ["", title, "", "| method | " + " | ".join(f"d{i + 1}" for i in range(width)) + " |", "|---|" + "---:|" * width]
    return out + [f"| {LABEL[method]} | " + " | ".join(f"{x:.2f}" for x in v) + " |" for method, v in series.items()]


lines = []
svg_series = {}
for d in ("math", "code"):
    root = work / "runs" / d
    if not root.is_dir():
        continue
    seeds = sorted(p.name for p in root.glob("s*") if p.is_dir())
    cfg_path = work / "s1" / "draft" / "config.json"
    m = macs(load(cfg_path)) if cfg_path.is_file() else None
    rows = []
    depth_means, tau_pos = {}, {}
    full_flops = None
    for method in METHODS:
        evals, reports = [], []
        if method in ("base", "no-adapt"):
            if (root / f"{method}.json").is_file():
                evals.append(load(root / f"{method}.json"))
        else:
            for s in seeds:
                e, r = root / s / method / "eval.json", root / s / method / "report.json"
                if e.is_file():
                    evals.append(load(e))
                if r.is_file():
                    reports.append(load(r))
        if not evals:
            continue
        taus = [e["aggregate"]["tau"] for e in evals]
        alphas = [e["aggregate"]["alpha"] for e in evals]
        depths = [e["aggregate"]["acceptance_per_depth"] for e in evals]
        n = max(len(x) for x in depths)
        # A seed whose drafts never reached depth i has no rate there (not a rate of 0).
        depth_means[method] = [statistics.mean([x[i] for x in depths if i < len(x)]) for i in range(n)]
        # τ per position: tokens accepted at position i per verification cycle, i.e. the share of
        # cycles whose accepted draft reached position i (1 + their sum is τ up to the prompt's
        # first forward). Unlike the conditional rate it is defined (0) where no cycle got there.
        per_cycle = [[a / e["aggregate"]["metrics"]["target_forwards"] for a in e["aggregate"]["metrics"]["accepted_per_depth"]]
                     for e in evals]
        tau_pos[method] = [statistics.mean([x[i] if i < len(x) else 0.0 for x in per_cycle]) for i in range(n)]
        cost = {}
        if reports:
            steps = statistics.mean(r["steps"] for r in reports)
            secs = statistics.mean(r["seconds"] for r in reports)
            tokens = statistics.mean(r["tokens"] for r in reports)
            trainable = reports[0]["trainable_params"]
            cost = {"steps": steps, "secs": secs, "sps": secs / steps, "trainable": trainable, "adam": 8 * trainable, "tokens": tokens}
            if m:
                act, trains = plan(method)
                fwd = sum(m.values())
                # Adapters: one multiply-add per adapter weight per token.
                train_macs = trainable if trains is None else sum(m[k] for k in trains)
                flops = (2 * fwd + 2 * sum(m[k] for k in act) + 2 * train_macs) * tokens
                cost["flops"] = flops
                if method == "full":
                    full_flops = flops
        rows.append((method, taus, alphas, cost))
    lines += [f"### {d} target (seeds: {', '.join(s[1:] for s in seeds)})", "",
              "| method | τ mean ± sd | α | steps | wall s (s/step) | trainable params | AdamW moments (2 × f32) | training FLOPs (× full) |",
              "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for method, taus, alphas, c in rows:
        if c:
            ratio = f" ({c['flops'] / full_flops:.2f}×)" if full_flops and "flops" in c else ""
            flops = human(c["flops"]) + ratio if "flops" in c else "–"
            cost = f"{c['steps']:.0f} | {c['secs']:.0f} ({c['sps']:.2f}) | {c['trainable']:,} | {c['adam'] / 1e6:.2f} MB | {flops}"
        else:
            cost = "0 | – | 0 | – | –"
        lines.append(f"| {LABEL[method]} | {fmt(taus)} | {fmt(alphas, 3)} | {cost} |")
    full = next((c for mth, _, _, c in rows if mth == "full" and c), None)
    for name, label in (("stage2-regen-all", "stage 2"), ("stage2-shared-group", "stage 2 with fc frozen"), ("lora-r16", "LoRA")):
        c = next((c for mth, _, _, c in rows if mth == name and c), None)
        if c and full:
            lines += ["", f"Per optimiser step on the same data and batch, {label} vs full fine-tuning: {c['sps']:.2f} s vs "
                      f"{full['sps']:.2f} s ({c['sps'] / full['sps']:.2f}×); analytic training FLOPs per token "
                      f"{c['flops'] / c['tokens'] / 1e6:.1f} M vs {full['flops'] / full['tokens'] / 1e6:.1f} M "
                      f"({c['flops'] / c['tokens'] / (full['flops'] / full['tokens']):.2f}×); AdamW state {c['adam'] / full['adam']:.2f}×."]
    lines += position_table("τ per draft position: accepted tokens at each position per verification cycle (mean over seeds):", tau_pos)
    lines += position_table("Acceptance rate per draft position (of the proposals that reached it; mean over the seeds that reached it):",
                            depth_means)
    lines.append("")
    svg_series[d] = tau_pos

summary = "\n".join(lines)
(work / "summary.md").write_text(summary + "\n")
print(summary)

# τ per draft position: one panel per target, acceptance rate at each depth per method.
colors = {"base": "#000000", "no-adapt": "#999999", "full": "#d62728", "stage2-original": "#8c564b", "stage2-regen-all": "#1f77b4",
          "eda-0.1": "#2ca02c", "eda-0.25": "#55c255", "eda-0.5": "#98df8a", "random-0.1": "#ff7f0e", "random-0.25": "#ffa64d",
          "random-0.5": "#ffbb78", "lora-r16": "#9467bd", "eda-pooled-0.5": "#17becf", "stage2-shared-group": "#bcbd22"}
W, H, pad = 420, 300, 45
parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W * len(svg_series) + 380}" height="{H}" font-family="sans-serif" font-size="11">']
for k, (d, series) in enumerate(svg_series.items()):
    x0 = k * W
    n = max(len(v) for v in series.values())
    top = max(0.25, -(-max(max(v) for v in series.values()) // 0.25) * 0.25)  # next multiple of 0.25
    X = lambda i: x0 + pad + i * (W - 2 * pad) / max(n - 1, 1)
    Y = lambda v: H - pad - v / top * (H - 2 * pad)
    parts.append(f'<text x="{x0 + W / 2}" y="18" text-anchor="middle" font-size="13">{d} target: τ per draft position</text>')
    parts.append(f'<line x1="{x0 + pad}" y1="{Y(0)}" x2="{x0 + W - pad}" y2="{Y(0)}" stroke="black"/>')
    parts.append(f'<line x1="{x0 + pad}" y1="{Y(0)}" x2="{x0 + pad}" y2="{Y(top)}" stroke="black"/>')
    if k == 0:
        parts.append(f'<text x="12" y="{H / 2}" transform="rotate(-90 12 {H / 2})" text-anchor="middle">accepted tokens per cycle</text>')
    for t in [i * 0.25 for i in range(int(round(top / 0.25)) + 1)]:
        parts.append(f'<text x="{x0 + pad - 5}" y="{Y(t) + 4}" text-anchor="end">{t:.2f}</text>')
    for i in range(n):
        parts.append(f'<text x="{X(i)}" y="{H - pad + 15}" text-anchor="middle">{i + 1}</text>')
    parts.append(f'<text x="{x0 + W / 2}" y="{H - 8}" text-anchor="middle">draft position (depth)</text>')
    for method, v in series.items():
        pts = " ".join(f"{X(i):.1f},{Y(x):.1f}" for i, x in enumerate(v))
        parts.append(f'<polyline points="{pts}" fill="none" stroke="{colors[method]}" stroke-width="2"/>')
for j, method in enumerate(METHODS):
    y = 40 + j * 18
    parts.append(f'<line x1="{W * len(svg_series) + 5}" y1="{y}" x2="{W * len(svg_series) + 25}" y2="{y}" stroke="{colors[method]}" stroke-width="3"/>')
    parts.append(f'<text x="{W * len(svg_series) + 30}" y="{y + 4}">{LABEL[method]}</text>')
parts.append("</svg>")
(work / "tau_per_position.svg").write_text("\n".join(parts) + "\n")
