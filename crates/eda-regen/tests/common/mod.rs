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

/// A target whose hidden states are the wrapped target's divided by 3, so that they are not
/// exactly representable in bfloat16 (the toy's one-hot states are).
pub struct Thirds<T>(pub T);

impl<T: eda_core::TargetModel> eda_core::TargetModel for Thirds<T> {
    fn info(&self) -> &eda_core::ModelInfo {
        self.0.info()
    }
    fn device(&self) -> burn::tensor::Device {
        self.0.device()
    }
    fn cache_len(&self) -> usize {
        self.0.cache_len()
    }
    fn reset_cache(&mut self) {
        self.0.reset_cache()
    }
    fn truncate_cache(&mut self, len: usize) -> eda_core::Result<()> {
        self.0.truncate_cache(len)
    }
    fn retain_cache(&mut self, keep: &[usize]) -> eda_core::Result<()> {
        self.0.retain_cache(keep)
    }
    fn forward_masked(
        &mut self,
        tokens: &[u32],
        positions: &[usize],
        mask: &eda_core::AttentionMask,
    ) -> eda_core::Result<eda_core::TargetOutput> {
        let out = self.0.forward_masked(tokens, positions, mask)?;
        Ok(eda_core::TargetOutput { hidden: out.hidden.div_scalar(3.0), ..out })
    }
    fn embedding_weight(&self) -> burn::tensor::Tensor<2> {
        self.0.embedding_weight()
    }
    fn lm_head_weight(&self) -> burn::tensor::Tensor<2> {
        self.0.lm_head_weight()
    }
}
