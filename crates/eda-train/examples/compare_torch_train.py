"""PyTorch side of `compare_torch_train.rs`: the EDA draft layer (1 shared + 1 private SwiGLU
expert, top-1) trained with the same step as `eda_train::DraftTrainer`.

Usually spawned by the Rust example (set EDA_TORCH_PYTHON); standalone:

    python compare_torch_train.py --vocab 8192 --hidden 512 --inter 1408 --private-inter 1408 \
        --heads 8 --kv-heads 2 --batch 4 --seq 128 --warmup 2 --steps 6 --device cpu --threads 2
    # Qwen2.5-7B shape on a GPU:
    python compare_torch_train.py --vocab 152064 --hidden 3584 --inter 18944 --private-inter 18944 \
        --heads 28 --kv-heads 4 --theta 1e6 --device cuda

Layer: u = fc([embed(tok); feature]) (bias); a = u + o(attn(u)) with GQA, RoPE (rotate-half),
causal softmax attention written out (eager, like burn's); hidden = a + shared(n) + private(n)
with n = RMSNorm(a), SwiGLU experts down(silu(gate(n)) * up(n)). Embedding and LM head frozen.
Loss: SmoothL1(hidden - next feature) averaged over the hidden dim + 0.1 * soft CE
-sum softmax(target @ head^T) * log_softmax(hidden @ head^T), masked mean over tokens.
Step: features + U(-0.1, 0.1) noise, backward, clip_grad_norm_(0.5), AdamW(betas 0.9/0.95,
eps 1e-8, weight_decay 0), cosine LR from 2e-4, loss and top-1 read back every step.
Prints one JSON line: tokens_per_s over the timed steps, median_step_s, versions.
"""

import argparse
import json
import math
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class RMSNorm(nn.Module):
    def __init__(self, h, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(h))
        self.eps = eps

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class SwiGLU(nn.Module):
    def __init__(self, h, i):
        super().__init__()
        self.gate_proj = nn.Linear(h, i, bias=False)
        self.up_proj = nn.Linear(h, i, bias=False)
        self.down_proj = nn.Linear(i, h, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat([-x[..., h:], x[..., :h]], dim=-1)


class EdaDraftLayer(nn.Module):
    def __init__(self, a, emb, head):
        super().__init__()
        h = a.hidden
        self.nh, self.nkv, self.hd = a.heads, a.kv_heads, h // a.heads
        self.embedding = nn.Parameter(emb, requires_grad=False)
        self.lm_head = nn.Parameter(head, requires_grad=False)
        self.fc = nn.Linear(2 * h, h, bias=True)
        self.q_proj = nn.Linear(h, self.nh * self.hd, bias=False)
        self.k_proj = nn.Linear(h, self.nkv * self.hd, bias=False)
        self.v_proj = nn.Linear(h, self.nkv * self.hd, bias=False)
        self.o_proj = nn.Linear(self.nh * self.hd, h, bias=False)
        self.post_attention_layernorm = RMSNorm(h, 1e-6)
        self.shared = SwiGLU(h, a.inter)
        self.private = SwiGLU(h, a.private_inter)
        inv = 1.0 / (a.theta ** (torch.arange(0, self.hd, 2, dtype=torch.float64) / self.hd))
        ang = torch.outer(torch.arange(a.seq, dtype=torch.float64), inv)
        ang = torch.cat([ang, ang], dim=-1)
        self.register_buffer("cos", ang.cos().float(), persistent=False)
        self.register_buffer("sin", ang.sin().float(), persistent=False)
        self.register_buffer("causal", torch.full((a.seq, a.seq), float("-inf")).triu(1), persistent=False)

    def forward(self, tokens, feats):
        b, t = tokens.shape
        e = F.embedding(tokens, self.embedding)
        u = self.fc(torch.cat([e, feats], dim=-1))
        q = self.q_proj(u).view(b, t, self.nh, self.hd).transpose(1, 2)
        k = self.k_proj(u).view(b, t, self.nkv, self.hd).transpose(1, 2)
        v = self.v_proj(u).view(b, t, self.nkv, self.hd).transpose(1, 2)
        cos, sin = self.cos[:t], self.sin[:t]
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        rep = self.nh // self.nkv
        # GQA: fold the `rep` query heads of a kv group into rows (no repeated kv materialised).
        q = (q / math.sqrt(self.hd)).reshape(b, self.nkv, rep * t, self.hd)
        scores = (q @ k.transpose(2, 3)).view(b, self.nh, t, t) + self.causal[:t, :t]
        probs = torch.softmax(scores, dim=-1).view(b, self.nkv, rep * t, t)
        attn = (probs @ v).view(b, self.nh, t, self.hd).transpose(1, 2).reshape(b, t, self.nh * self.hd)
        a = u + self.o_proj(attn)
        n = self.post_attention_layernorm(a)
        return a + self.shared(n) + self.private(n)

    def logits(self, x):
        return x @ self.lm_head.t()


def loss_fn(model, tokens, feats, target, mask):
    hidden = model(tokens, feats)
    norm = mask.sum().clamp_min(1.0)
    reg = (F.smooth_l1_loss(hidden, target, reduction="none").mean(-1) * mask).sum() / norm
    with torch.no_grad():
        tlog = model.logits(target)
        p = torch.softmax(tlog, dim=-1)
    dlog = model.logits(hidden)
    ce = -(p * torch.log_softmax(dlog, dim=-1)).sum(-1)
    cls = (ce * mask).sum() / norm
    correct = ((dlog.detach().argmax(-1) == tlog.argmax(-1)).float() * mask).sum()
    return reg + 0.1 * cls, correct


def main():
    ap = argparse.ArgumentParser()
    for k, d in [("vocab", 8192), ("hidden", 512), ("inter", 1408), ("private-inter", 1408), ("heads", 8), ("kv-heads", 2),
                 ("batch", 4), ("seq", 128), ("warmup", 2), ("steps", 6), ("threads", 2)]:
        ap.add_argument(f"--{k}", type=int, default=d)
    ap.add_argument("--theta", type=float, default=1e4)
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    dev = torch.device(a.device)
    v, h, b, t = a.vocab, a.hidden, a.batch, a.seq
    emb = (torch.rand(v, h) * 0.2 - 0.1).to(dev)
    head = (torch.rand(v, h) * 0.2 - 0.1).to(dev)
    model = EdaDraftLayer(a, emb, head).to(dev)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=2e-4, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.0)
    # Host-side samples like the Rust side's FeatureSample set (features in U(-1, 1)).
    n_samples = max(2 * b, 8)
    feats_all = torch.rand(n_samples, t, h) * 2 - 1
    ids_all = torch.randint(0, v, (n_samples, t))
    total = a.warmup + a.steps
    times, loss_v = [], float("nan")
    for step in range(total):
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        idx = torch.randperm(n_samples)[:b]
        f = feats_all[idx]
        feats = (f + (torch.rand_like(f) * 0.2 - 0.1)).to(dev)          # noisy input features
        target = torch.cat([f[:, 1:], torch.zeros(b, 1, h)], 1).to(dev)  # next-position features
        tokens = torch.cat([ids_all[idx][:, 1:], torch.zeros(b, 1, dtype=torch.long)], 1).to(dev)
        mask = torch.ones(b, t)
        mask[:, -1] = 0
        mask[:, 0] = 0
        mask = mask.to(dev)
        lr = 0.5 * 2e-4 * (1 + math.cos(math.pi * step / total))
        for g in opt.param_groups:
            g["lr"] = lr
        loss, correct = loss_fn(model, tokens, feats, target, mask)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 0.5)
        opt.step()
        loss_v, _ = float(loss.item()), float(correct.item())
        if dev.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    timed = times[a.warmup:]
    timed_sorted = sorted(timed)
    m = len(timed_sorted)
    median = timed_sorted[m // 2] if m % 2 else 0.5 * (timed_sorted[m // 2 - 1] + timed_sorted[m // 2])
    print(json.dumps({
        "tokens_per_s": b * t * len(timed) / sum(timed),
        "median_step_s": median,
        "step_s": timed,
        "final_loss": loss_v,
        "trainable_params": sum(p.numel() for p in params),
        "torch": torch.__version__,
        "device": str(dev),
        "threads": torch.get_num_threads(),
    }))


if __name__ == "__main__":
    main()
