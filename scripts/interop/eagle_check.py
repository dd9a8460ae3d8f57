"""EAGLE's own code (PyPI `eagle-llm` 1.2.1) against `eda export --format eagle`.

Run by scripts/interop-check.sh in a venv with torch, transformers 4.36 and eagle-llm:

    python eagle_check.py TARGET_DIR EAGLE_DIR EDA_JSON

Loads the exported draft with `EaModel.from_pretrained` (EAGLE's loader: its `EConfig` from
config.json, `torch.load` of pytorch_model.bin into its draft class with strict=True) next to
the HF target, then checks:
  1. the target's last hidden states (EAGLE's KV-Llama) equal eda's features (|diff| <= 1e-4);
  2. EAGLE's draft layer, given eda's (token, feature) pairs, outputs eda's draft hidden states
     (|diff| <= 1e-4);
  3. EAGLE's greedy `eagenerate` (its static tree) gives eda's greedy tokens.
Prints the figures and one JSON line; exits non-zero on a failed check.
"""

import json
import sys
import types

import torch

import eagle.model.ea_model as ea_model_module
from eagle.model.ea_model import EaModel

TOL = 1e-4


def main():
    target_dir, eagle_dir, eda_json = sys.argv[1:4]
    eda = json.load(open(eda_json))
    eos = eda["eos_token_ids"][0] if eda["eos_token_ids"] else -1
    # EaModel.__init__ loads the target's tokenizer only to read `eos_token_id` during
    # generation; the tiny fixture target ships none, so that single attribute is supplied.
    ea_model_module.AutoTokenizer = types.SimpleNamespace(
        from_pretrained=lambda *_a, **_k: types.SimpleNamespace(eos_token_id=eos)
    )
    torch.manual_seed(0)
    model = EaModel.from_pretrained(
        base_model_path=target_dir, ea_model_path=eagle_dir, torch_dtype=torch.float32
    ).eval()

    ids = torch.tensor([eda["prompt_ids"]])
    with torch.no_grad():
        out = model.base_model.model(input_ids=ids)
        feats = out[0][0]
    eda_feats = torch.tensor(eda["features"])
    feat_diff = (feats - eda_feats).abs().max().item()

    with torch.no_grad():
        # A plain causal pass: no cached keys, no tree mask left from generation.
        model.ea_layer.reset_kv()
        model.ea_layer.reset()
        draft = model.ea_layer(eda_feats[None, :-1], input_ids=ids[:, 1:])[0]
    draft_diff = (draft - torch.tensor(eda["draft_hidden"])).abs().max().item()
    logits = draft @ model.base_model.lm_head.weight.T
    logit_diff = (logits - torch.tensor(eda["draft_logits"])).abs().max().item()

    with torch.no_grad():
        out_ids = model.eagenerate(ids, temperature=0.0, max_new_tokens=len(eda["generate"]["autoregressive"]["tokens"]))
    eagle_tokens = out_ids[0, ids.shape[1]:].tolist()
    want = eda["generate"]["autoregressive"]["tokens"]
    n = min(len(eagle_tokens), len(want))
    same = eagle_tokens[:n] == want[:n] and n > 0
    # eda stops at its token budget; EAGLE overshoots by up to one tree step, or stops at EOS.
    covers = n == len(want) or (n == len(eagle_tokens) and eos in eagle_tokens)
    chain_tree_equal = all(eda["generate"][k]["tokens"] == want for k in ("chain", "tree"))

    report = {
        "feature_max_abs_diff": feat_diff,
        "draft_hidden_max_abs_diff": draft_diff,
        "draft_logits_max_abs_diff": logit_diff,
        "eagle_greedy_tokens": eagle_tokens,
        "eda_greedy_tokens": want,
        "greedy_equal": same and covers,
        "eda_chain_tree_equal_autoregressive": chain_tree_equal,
        "eda_tau": {k: eda["generate"][k]["tau"] for k in ("chain", "tree")},
    }
    print(f"target features   max |EAGLE - eda| = {feat_diff:.3e}")
    print(f"draft hidden      max |EAGLE - eda| = {draft_diff:.3e}")
    print(f"draft logits      max |EAGLE - eda| = {logit_diff:.3e}")
    print(f"greedy: EAGLE eagenerate {'==' if same and covers else '!='} eda ({n} tokens compared)")
    print(json.dumps(report))
    ok = feat_diff <= TOL and draft_diff <= TOL and same and covers and chain_tree_equal
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
