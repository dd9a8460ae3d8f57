"""HF transformers (eager attention) side of `compare_hf_decode.rs`.

Usually spawned by the Rust example (set EDA_TORCH_PYTHON to a python with torch +
transformers); it can also be run by hand on a checkpoint directory written by
`CausalLm::save_pretrained` (or any Qwen2/Llama HF checkpoint):

    python compare_hf_decode.py MODEL_DIR --prompt-ids 11,48,85 --decode 32 --device cpu --threads 2

Loads MODEL_DIR with AutoModelForCausalLM.from_pretrained(attn_implementation="eager",
dtype=float32), prefills the prompt under torch.no_grad(), then decodes greedily one token at a
time with past_key_values (use_cache=True), timing each decode step (forward + argmax to host,
synchronised on CUDA). A warm-up pass (prefill + 4 steps) comes first. Prints one JSON line on
stdout: prefill_s, step_ms (one per decode step), tokens (the greedy tokens: the first from the
prefill, then one per step but the last), versions; writes the last-position prefill logits as
little-endian f32 to MODEL_DIR/hf_prefill_logits.f32.
"""

import argparse
import json
import sys
import time

import torch
import transformers
from transformers import AutoModelForCausalLM


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


@torch.no_grad()
def run(model, prompt, decode, device):
    ids = torch.tensor([prompt], dtype=torch.long, device=device)
    sync(device)
    t0 = time.perf_counter()
    out = model(input_ids=ids, use_cache=True)
    last = out.logits[0, -1].float()
    tok = int(last.argmax().item())
    prefill = time.perf_counter() - t0
    past = out.past_key_values
    tokens = [tok]
    steps = []
    for i in range(decode):
        t0 = time.perf_counter()
        out = model(input_ids=torch.tensor([[tok]], dtype=torch.long, device=device), past_key_values=past, use_cache=True)
        nxt = int(out.logits[0, -1].argmax().item())
        steps.append(1e3 * (time.perf_counter() - t0))
        past = out.past_key_values
        tok = nxt
        if i + 1 < decode:
            tokens.append(tok)
    return prefill, steps, tokens, last.cpu()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model_dir")
    ap.add_argument("--prompt-ids", required=True, help="comma-separated token ids")
    ap.add_argument("--decode", type=int, default=32)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()

    torch.set_num_threads(a.threads)
    device = torch.device(a.device)
    prompt = [int(x) for x in a.prompt_ids.split(",") if x]
    t0 = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(a.model_dir, dtype=torch.float32, attn_implementation="eager").to(device)
    model.eval()
    print(f"HF load {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    run(model, prompt, min(4, a.decode), device)  # warm-up
    prefill, steps, tokens, last = run(model, prompt, a.decode, device)
    last.numpy().astype("<f4").tofile(f"{a.model_dir}/hf_prefill_logits.f32")
    print(json.dumps({
        "prefill_s": prefill,
        "step_ms": steps,
        "tokens": tokens,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "device": str(device),
        "threads": torch.get_num_threads(),
    }))


if __name__ == "__main__":
    main()
