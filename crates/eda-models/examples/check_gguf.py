#!/usr/bin/env python3
"""Compares eda on a real GGUF file with transformers' own GGUF loader (not run in CI).

    CARGO_TARGET_DIR=/work/target-rel cargo build --release -p eda-models --example check_gguf
    python crates/eda-models/examples/check_gguf.py MODEL.gguf [BINARY [CONVERTED_DIR]]

BINARY defaults to /work/target-rel/release/examples/check_gguf. CONVERTED_DIR, if given, is the
output of `eda convert MODEL.gguf CONVERTED_DIR` (f32): it is loaded with plain transformers
(`from_pretrained(dir)`) and its weights and tokenizer are compared with the GGUF-loaded ones.

Needs torch, transformers and gguf. Checks (a) eda's tokenizer (rebuilt from the GGUF vocabulary)
encodes varied strings to the same ids as `AutoTokenizer.from_pretrained(dir, gguf_file=...)`,
(b) eda's logits on a short prompt match `AutoModelForCausalLM.from_pretrained(dir, gguf_file=...,
dtype=float32)` and the greedy continuations are equal. Prints the figures; exits non-zero on a
failed check.
"""

import json
import os
import subprocess
import sys
import tempfile

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

TEXTS = [
    "Hello, world!",
    "The year 2024 had 366 days; 3.14159 is pi, 1,000,000 is a million.",
    "def fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)\n",
    "  leading spaces,\ttabs\tand   runs of   spaces  \n\n\nnewlines",
    "I'm sure they'll say it's fine; we've done what you'd've.",
    "héllo wörld — naïve café, Ελληνικά, русский, 日本語のテキスト, 中文, 한국어 🚀🔥👍🏽",
    "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n",
    "<|endoftext|>x<repo_name>y<file_sep>",
    "emoji 🤗 and math ∑ x_i² ≤ ∞, URLs https://example.com/a?b=c&d=e#f",
    "ＡＢＣ full-width and e\u0301 combining accent",
]
PROMPT = "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
NEW_TOKENS = 32


def main():
    gguf = os.path.abspath(sys.argv[1])
    binary = sys.argv[2] if len(sys.argv) > 2 else "/work/target-rel/release/examples/check_gguf"
    directory, name = os.path.split(gguf)
    with tempfile.TemporaryDirectory() as tmp:
        inp, out = os.path.join(tmp, "in.json"), os.path.join(tmp, "out.json")
        with open(inp, "w") as f:
            json.dump({"texts": TEXTS, "prompt": PROMPT, "new_tokens": NEW_TOKENS}, f)
        subprocess.run([binary, gguf, inp, out], check=True)
        with open(out) as f:
            eda = json.load(f)
    print(f"eda: load {eda['seconds']['load']:.2f} s, prefill {eda['seconds']['prefill']:.3f} s, "
          f"{NEW_TOKENS} greedy tokens {eda['seconds']['generate']:.2f} s")

    ok = True
    tok = AutoTokenizer.from_pretrained(directory, gguf_file=name)
    same = 0
    for text, ids in zip(TEXTS, eda["ids"]):
        ref = tok(text, add_special_tokens=False)["input_ids"]
        if ref == ids:
            same += 1
        else:
            ok = False
            print(f"TOKENS DIFFER for {text!r}:\n  eda {ids}\n  hf  {ref}")
    print(f"tokenizer: {same}/{len(TEXTS)} strings encode identically")
    ref_prompt = tok(PROMPT, add_special_tokens=False)["input_ids"]
    if ref_prompt != eda["prompt_ids"]:
        ok = False
        print(f"PROMPT TOKENS DIFFER: eda {eda['prompt_ids']} hf {ref_prompt}")

    model = AutoModelForCausalLM.from_pretrained(directory, gguf_file=name, dtype=torch.float32)
    model.eval()
    ids = torch.tensor([eda["prompt_ids"]])
    with torch.no_grad():
        logits = model(ids).logits[0]
        gen = model.generate(ids, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, do_sample=False,
                             eos_token_id=None, pad_token_id=0, output_scores=True, return_dict_in_generate=True)
    mine = torch.tensor(eda["logits"])
    err = (mine - logits).abs().max().item()
    scale = logits.abs().max().item()
    print(f"logits: max abs error {err:.3e} over {tuple(logits.shape)} (max |logit| {scale:.2f}); "
          f"argmax equal at {(mine.argmax(-1) == logits.argmax(-1)).sum().item()}/{logits.shape[0]} positions")
    if err > 1e-3:
        ok = False
    greedy = gen.sequences[0, ids.shape[1]:].tolist()
    gap = min(float((s[0].topk(2).values[0] - s[0].topk(2).values[1])) for s in gen.scores)
    print(f"greedy {NEW_TOKENS}: {'identical' if greedy == eda['greedy'] else 'DIFFERENT'} "
          f"(smallest top-2 logit gap along the HF path {gap:.3e})")
    print(f"  eda: {eda['greedy_text']!r}")
    if greedy != eda["greedy"]:
        ok = False
        print(f"  hf:  {tok.decode(greedy)!r}")
    if len(sys.argv) > 3:
        conv = sys.argv[3]
        ok &= check_converted(conv, model, tok)
    cfg = eda["config"]
    hf = model.config
    for k in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
              "num_key_value_heads", "vocab_size", "max_position_embeddings", "tie_word_embeddings"):
        if cfg[k] != getattr(hf, k):
            ok = False
            print(f"CONFIG {k}: eda {cfg[k]} hf {getattr(hf, k)}")
    print("ALL CHECKS PASSED" if ok else "SOME CHECKS FAILED")
    sys.exit(0 if ok else 1)


def check_converted(conv, model, tok):
    """`eda convert`'s directory against transformers' own GGUF loading: weights and tokens."""
    ok = True
    other = AutoModelForCausalLM.from_pretrained(conv, dtype=torch.float32)
    mine, ref = other.state_dict(), model.state_dict()
    worst = 0.0
    for k, v in ref.items():
        if k not in mine:
            ok = False
            print(f"CONVERTED: missing {k}")
            continue
        worst = max(worst, (mine[k] - v).abs().max().item())
    print(f"converted checkpoint: {len(ref)} tensors, max abs weight difference {worst:.3e}")
    ok &= worst == 0.0
    tok2 = AutoTokenizer.from_pretrained(conv)
    same = sum(tok2(t, add_special_tokens=False)["input_ids"] == tok(t, add_special_tokens=False)["input_ids"] for t in TEXTS)
    print(f"converted tokenizer.json: {same}/{len(TEXTS)} strings encode identically")
    ok &= same == len(TEXTS)
    msgs = [{"role": "user", "content": "hi"}]
    rendered = tok2.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    print(f"converted chat template renders: {rendered!r}")
    return ok


if __name__ == "__main__":
    main()
