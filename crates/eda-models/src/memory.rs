//! Device memory a target needs, computed from its shapes alone (nothing is allocated), so a
//! user can check that a 7B target fits a GPU at a given precision before loading it.
//!
//! Counted: weights; the KV cache for `batch` sequences of `tokens` positions; the largest
//! transient activations of one forward pass over `batch × chunk` new tokens (hidden states,
//! q/k/v, the MLP's gate/up, attention scores, logits). Not counted: allocator slack and the
//! backend's own workspace, which [`MemoryEstimate::total_with_slack`] covers with a margin.

use eda_core::backend::Precision;

use crate::ModelConfig;

/// Bytes a target needs on a device, by part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryEstimate {
    /// Number of weight elements.
    pub params: u64,
    /// Weights.
    pub weights: u64,
    /// KV cache.
    pub kv_cache: u64,
    /// Peak transient activations of one forward pass.
    pub activations: u64,
}

impl MemoryEstimate {
    /// Weights + KV cache + activations.
    pub fn total(&self) -> u64 {
        self.weights + self.kv_cache + self.activations
    }

    /// [`total`](Self::total) plus 10 % for allocator fragmentation and kernel workspaces.
    pub fn total_with_slack(&self) -> u64 {
        self.total() + self.total() / 10
    }
}

/// Number of weight elements of a target with configuration `cfg`.
///
/// ```
/// use eda_models::{memory::target_params, ModelConfig};
/// // Qwen2.5-0.5B: 494 M parameters.
/// let cfg = ModelConfig::qwen2(151_936, 896, 4864, 24, 14, 2, 32_768);
/// let mut tied = cfg.clone();
/// tied.tie_word_embeddings = true;
/// assert_eq!(target_params(&tied), 494_032_768);
/// ```
pub fn target_params(cfg: &ModelConfig) -> u64 {
    let (h, i, v) = (cfg.hidden_size as u64, cfg.intermediate_size as u64, cfg.vocab_size as u64);
    let (q, kv) = ((cfg.num_attention_heads * cfg.head_dim) as u64, (cfg.num_key_value_heads * cfg.head_dim) as u64);
    let bias = if cfg.attention_bias { q + 2 * kv } else { 0 };
    let attn = h * q + 2 * h * kv + q * h + bias;
    let mlp = 3 * h * i;
    let norms = 2 * h;
    let layers = cfg.num_hidden_layers as u64 * (attn + mlp + norms);
    let embed = v * h;
    let head = if cfg.tie_word_embeddings { 0 } else { v * h };
    layers + embed + head + h
}

/// Memory for `batch` sequences of up to `tokens` positions, prefilled `chunk` tokens at a time,
/// at `precision`.
///
/// ```
/// use eda_core::backend::Precision;
/// use eda_models::{memory::target_memory, ModelConfig};
/// // Qwen2.5-7B in bf16: about 15.2 GB of weights.
/// let cfg = ModelConfig::qwen2(152_064, 3584, 18_944, 28, 28, 4, 32_768);
/// let m = target_memory(&cfg, Precision::BF16, 1, 4096, 512);
/// assert_eq!(m.weights, 2 * m.params);
/// assert!(m.weights > 15_000_000_000 && m.weights < 15_500_000_000);
/// ```
pub fn target_memory(cfg: &ModelConfig, precision: Precision, batch: usize, tokens: usize, chunk: usize) -> MemoryEstimate {
    let b = precision.bytes() as u64;
    let params = target_params(cfg);
    let (n, t) = ((batch * chunk.min(tokens).max(1)) as u64, tokens as u64);
    let kv_row = 2 * (cfg.num_key_value_heads * cfg.head_dim) as u64;
    let kv_cache = cfg.num_hidden_layers as u64 * batch as u64 * t * kv_row * b;
    let (h, i, v) = (cfg.hidden_size as u64, cfg.intermediate_size as u64, cfg.vocab_size as u64);
    let q = (cfg.num_attention_heads * cfg.head_dim) as u64;
    // Live at once inside a layer: residual + normed input, q/k/v, scores and probabilities over
    // the whole cache, gate/up/activated MLP rows; then the logits of every new row.
    let layer = n * (2 * h + q + kv_row) + 2 * (cfg.num_attention_heads as u64) * n * t + 3 * n * i;
    let activations = (layer.max(n * v) + n * h) * b;
    MemoryEstimate { params, weights: params * b, kv_cache, activations }
}

/// Formats a byte count as GiB with two decimals.
///
/// ```
/// assert_eq!(eda_models::memory::gib(3 * 1024 * 1024 * 1024), "3.00 GiB");
/// ```
pub fn gib(bytes: u64) -> String {
    format!("{:.2} GiB", bytes as f64 / (1u64 << 30) as f64)
}
