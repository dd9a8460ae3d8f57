"""vLLM's speculators package (PyPI `speculators` 0.3.0) against `eda export --format speculators`.

Run by scripts/interop-check.sh in a venv with torch, transformers and speculators:

    python speculators_check.py SPEC_DIR TARGET_DIR EDA_JSON

Loads the export with speculators' own loader (`SpeculatorModel.from_pretrained`, which picks
the class from `speculators_model_type`), then has speculators load and attach the verifier the
config names (`attach_verifier(name_or_path)`: attaching inside `from_pretrained` leaves the
verifier's weights on torch's meta device in this release),
prints the architecture, verifier and sizes it read, and checks that its forward pass on eda's
(token, feature) pairs gives eda's draft logits (|diff| <= 1e-4). Prints one JSON line; exits
non-zero on a failed check.
"""

import json
import sys

import torch
from speculators import SpeculatorModel

TOL = 1e-4


def main():
    spec_dir, target_dir, eda_json = sys.argv[1:4]
    eda = json.load(open(eda_json))
    model = SpeculatorModel.from_pretrained(spec_dir, verifier_attachment_mode="detached").eval()
    cfg = model.config
    layer = cfg.transformer_layer_config
    found = {
        "class": type(model).__name__,
        "speculators_model_type": cfg.speculators_model_type,
        "architectures": list(cfg.architectures),
        "verifier": cfg.speculators_config.verifier.name_or_path,
        "verifier_architectures": list(cfg.speculators_config.verifier.architectures),
        "hidden_size": layer.hidden_size,
        "intermediate_size": layer.intermediate_size,
        "vocab_size": layer.vocab_size,
        "speculative_tokens": cfg.speculators_config.proposal_methods[0].speculative_tokens,
    }
    model.attach_verifier(found["verifier"])
    found["verifier_attachment"] = model.verifier_attachment_mode
    print("speculators read:", json.dumps(found))
    # The decoder layer's config comes from the checkpoint, not from a loaded model, so no
    # attention kernel was chosen for it; pick the reference one.
    model.transformer.self_attn.config._attn_implementation = "eager"
    ids = torch.tensor([eda["prompt_ids"]])
    feats = torch.tensor(eda["features"])[None, :-1]
    # A 2-D mask makes EagleSpeculator build the causal mask (without one it attends both ways).
    mask = torch.ones(ids[:, 1:].shape, dtype=torch.long)
    with torch.no_grad():
        logits = model(input_ids=ids[:, 1:], hidden_states=feats, attention_mask=mask, return_dict=False)
    # With transformers >= 4.54 decoder layers return a tensor, and EagleSpeculator's
    # `layer_outputs[0]` then drops the batch dimension: [T, V] instead of [1, T, V].
    logits = logits.reshape(-1, logits.shape[-1])
    diff = (logits - torch.tensor(eda["draft_logits"])).abs().max().item()
    print(f"draft logits      max |speculators - eda| = {diff:.3e}")
    print(json.dumps({"loaded": found, "draft_logits_max_abs_diff": diff}))
    ok = (
        diff <= TOL
        and found["class"] == "EagleSpeculator"
        and found["verifier"] == target_dir
        and found["verifier_attachment"] == "full"
    )
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
