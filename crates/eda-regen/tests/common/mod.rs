//! Test helpers: the kit's toy target over a tiny word-level tokenizer's vocabulary.
#![allow(dead_code)]

use std::str::FromStr;

use eda_testkit::ToyLm;
use tokenizers::Tokenizer;

/// Words of the test vocabulary; the index is the token id.
pub const VOCAB: &[&str] = &[
    "<unk>",
    "<|im_start|>",
    "<|im_end|>",
    "system",
    "user",
    "assistant",
    "\n",
    "hello",
    "world",
    "what",
    "is",
    "two",
    "plus",
    "four",
    "be",
    "brief",
    "<|endoftext|>",
    "Assistant:",
    "User:",
    "yes",
];
pub const IM_START: u32 = 1;
pub const IM_END: u32 = 2;
pub const EOS: u32 = 16;

/// A WordLevel tokenizer: `\n` is its own token, spaces separate words, ChatML tokens are special.
pub fn tokenizer() -> Tokenizer {
    let vocab: serde_json::Map<String, serde_json::Value> =
        VOCAB.iter().enumerate().map(|(i, w)| (w.to_string(), serde_json::json!(i))).collect();
    let special = |id: usize| serde_json::json!({"id": id, "content": VOCAB[id], "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true});
    let json = serde_json::json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": [special(1), special(2), special(16)],
        "normalizer": null,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"String": "\n"}, "behavior": "Isolated", "invert": false},
            {"type": "Split", "pattern": {"String": " "}, "behavior": "Removed", "invert": false}
        ]},
        "post_processor": null,
        "decoder": null,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "<unk>"}
    });
    Tokenizer::from_str(&json.to_string()).expect("test tokenizer")
}

/// The test target: the kit's exact toy LM over the test vocabulary, with `EOS` as its
/// end-of-sequence token and `max_positions` positions (fixed seed: every test sees the same
/// model).
pub fn toy_target(max_positions: usize) -> ToyLm {
    ToyLm::random(VOCAB.len(), max_positions, 2.0, 17, &eda_core::backend::device_from_name("cpu").unwrap()).with_eos_tokens(vec![EOS])
}
