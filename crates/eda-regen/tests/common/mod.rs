//! Test helpers: a deterministic mock target and a tiny word-level tokenizer.
#![allow(dead_code)]

use std::str::FromStr;

use burn::tensor::{Device, Tensor, TensorData};
use eda_core::{AttentionMask, EdaError, ModelInfo, Result, TargetModel, TargetOutput, TokenId};
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

/// A deterministic causal "model": `h_p = tanh(sum_{j<=p} 0.6^(p-j) E[x_j])`, logits `= h E^T`.
pub struct MockTarget {
    info: ModelInfo,
    emb: Vec<f32>,
    cache: Vec<TokenId>,
    device: Device,
    pub forwards: usize,
}

impl MockTarget {
    pub fn new(max_positions: usize) -> Self {
        let v = VOCAB.len();
        let h = 8;
        // Fixed pseudo-random embeddings (LCG), so every test sees the same model.
        let mut state = 12345u64;
        let emb = (0..v * h)
            .map(|_| {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((state >> 33) as f32 / (1u64 << 31) as f32) * 2.0 - 1.0
            })
            .collect();
        MockTarget {
            info: ModelInfo {
                model_type: "mock".into(),
                vocab_size: v,
                hidden_size: h,
                max_position_embeddings: max_positions,
                eos_token_ids: vec![EOS],
                identity: "mock-identity-1".into(),
            },
            emb,
            cache: vec![],
            device: eda_core::backend::device_from_name("cpu").unwrap(),
            forwards: 0,
        }
    }

    fn hidden_at(&self, seq: &[TokenId], p: usize) -> Vec<f32> {
        let h = self.info.hidden_size;
        let mut acc = vec![0f32; h];
        for (j, &x) in seq[..=p].iter().enumerate() {
            let w = 0.6f32.powi((p - j) as i32);
            let row = &self.emb[x as usize * h..(x as usize + 1) * h];
            for (a, r) in acc.iter_mut().zip(row) {
                *a += w * r;
            }
        }
        acc.iter().map(|x| x.tanh()).collect()
    }
}

impl TargetModel for MockTarget {
    fn info(&self) -> &ModelInfo {
        &self.info
    }
    fn device(&self) -> Device {
        self.device.clone()
    }
    fn cache_len(&self) -> usize {
        self.cache.len()
    }
    fn reset_cache(&mut self) {
        self.cache.clear();
    }
    fn truncate_cache(&mut self, len: usize) -> Result<()> {
        self.cache.truncate(len);
        Ok(())
    }
    fn retain_cache(&mut self, keep: &[usize]) -> Result<()> {
        self.cache = keep.iter().map(|&i| self.cache[i]).collect();
        Ok(())
    }
    fn forward_masked(&mut self, tokens: &[TokenId], _positions: &[usize], mask: &AttentionMask) -> Result<TargetOutput> {
        if mask.past() != self.cache.len() {
            return Err(EdaError::mismatch("mask past", self.cache.len(), mask.past()));
        }
        if self.cache.len() + tokens.len() > self.info.max_position_embeddings {
            return Err(EdaError::SequenceTooLong { len: self.cache.len() + tokens.len(), max: self.info.max_position_embeddings });
        }
        self.forwards += 1;
        let past = self.cache.len();
        self.cache.extend_from_slice(tokens);
        let (v, h) = (self.info.vocab_size, self.info.hidden_size);
        let mut hidden = Vec::new();
        let mut logits = Vec::new();
        for p in past..self.cache.len() {
            let hp = self.hidden_at(&self.cache, p);
            for t in 0..v {
                logits.push((0..h).map(|k| hp[k] * self.emb[t * h + k]).sum::<f32>());
            }
            hidden.extend(hp);
        }
        let n = tokens.len();
        Ok(TargetOutput {
            logits: Tensor::<2>::from_data(TensorData::new(logits, [n, v]), &self.device),
            hidden: Tensor::<2>::from_data(TensorData::new(hidden, [n, h]), &self.device),
        })
    }
    fn embedding_weight(&self) -> Tensor<2> {
        Tensor::<2>::from_data(TensorData::new(self.emb.clone(), [self.info.vocab_size, self.info.hidden_size]), &self.device)
    }
    fn lm_head_weight(&self) -> Tensor<2> {
        self.embedding_weight()
    }
}
