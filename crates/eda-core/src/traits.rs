//! The traits that compose eda. Each concrete crate implements one of them.

use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::data::FeatureSample;
use crate::{AttentionMask, GenerationConfig, GenerationOutput, Result, TokenId, TokenTree};

/// Static facts about a target model that other components must agree with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    /// Architecture family (`"qwen2"`, `"llama"`, ...).
    pub model_type: String,
    /// Rows of the embedding / LM head.
    pub vocab_size: usize,
    /// Width of the hidden states returned by the model.
    pub hidden_size: usize,
    /// Maximum number of positions the model supports.
    pub max_position_embeddings: usize,
    /// End-of-sequence token ids from the checkpoint's configuration.
    pub eos_token_ids: Vec<TokenId>,
    /// Identity of the weights (for example a hash of config and tensors), recorded in manifests.
    pub identity: String,
}

/// Output of a target forward pass over `n` new positions.
#[derive(Debug, Clone)]
pub struct TargetOutput {
    /// Next-token logits, `[n, vocab_size]`.
    pub logits: Tensor<2>,
    /// Last-layer hidden states after the final norm (the LM-head input), `[n, hidden_size]`.
    /// This is HF's `hidden_states[-1]` and the feature EAGLE drafts read.
    pub hidden: Tensor<2>,
}

/// A target LLM with a KV cache: prefill, decode and tree verification.
///
/// Positions in the cache are contiguous: after [`retain_cache`](Self::retain_cache) the kept
/// rows are renumbered `0..k`, so the next token always sits at position `cache_len()`.
pub trait TargetModel {
    /// Static facts about the model.
    fn info(&self) -> &ModelInfo;

    /// Device the model's tensors live on.
    fn device(&self) -> Device;

    /// Number of positions in the KV cache.
    fn cache_len(&self) -> usize;

    /// Empties the KV cache.
    fn reset_cache(&mut self);

    /// Drops every cached position at index `len` and beyond.
    fn truncate_cache(&mut self, len: usize) -> Result<()>;

    /// Keeps only the cached rows listed in `keep` (strictly increasing), in that order.
    ///
    /// Used after tree verification to keep the committed prefix plus the accepted path.
    fn retain_cache(&mut self, keep: &[usize]) -> Result<()>;

    /// Appends `tokens` at `positions` (rotary positions) with an explicit attention mask whose
    /// `past()` must equal [`cache_len`](Self::cache_len). Every new position is added to the cache.
    fn forward_masked(&mut self, tokens: &[TokenId], positions: &[usize], mask: &AttentionMask) -> Result<TargetOutput>;

    /// Causal forward of `tokens` appended after the cache (prefill or decode).
    fn forward(&mut self, tokens: &[TokenId]) -> Result<TargetOutput> {
        let past = self.cache_len();
        let positions: Vec<usize> = (past..past + tokens.len()).collect();
        self.forward_masked(tokens, &positions, &AttentionMask::causal(past, tokens.len()))
    }

    /// Forward of a token tree appended after the cache: each node attends to the cache, its
    /// ancestors and itself, at position `cache_len() + depth`.
    fn forward_tree(&mut self, tree: &TokenTree) -> Result<TargetOutput> {
        let past = self.cache_len();
        let positions: Vec<usize> = tree.depths().iter().map(|d| past + d).collect();
        self.forward_masked(tree.tokens(), &positions, &AttentionMask::tree(past, tree))
    }

    /// The token embedding matrix, `[vocab_size, hidden_size]`.
    fn embedding_weight(&self) -> Tensor<2>;

    /// The LM head matrix, `[vocab_size, hidden_size]` (equal to the embedding when tied).
    fn lm_head_weight(&self) -> Tensor<2>;
}

/// Static facts about a draft model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DraftInfo {
    /// Vocabulary size; must equal the target's.
    pub vocab_size: usize,
    /// Width of the features the draft reads and produces.
    pub hidden_size: usize,
    /// EAGLE-style drafts read the target's feature `h_t` together with token `x_{t+1}`;
    /// plain LM drafts read tokens only (and then consume `x_0` too).
    pub uses_target_features: bool,
}

/// Output of a draft forward pass over `n` new positions.
#[derive(Debug, Clone)]
pub struct DraftOutput {
    /// Next-token logits, `[n, vocab_size]`.
    pub logits: Tensor<2>,
    /// Predicted features, `[n, hidden_size]`: fed back as input features when drafting deeper.
    pub hidden: Tensor<2>,
}

/// A draft model with its own KV cache.
///
/// For an EAGLE-style draft, the input at cache position `t` is the pair (target feature `h_t`,
/// token `x_{t+1}`) and the output predicts `h_{t+1}`, hence the distribution of `x_{t+2}`.
pub trait DraftModel {
    /// Static facts about the draft.
    fn info(&self) -> DraftInfo;

    /// Number of positions in the draft's KV cache.
    fn cache_len(&self) -> usize;

    /// Empties the KV cache.
    fn reset_cache(&mut self);

    /// Drops every cached position at index `len` and beyond.
    fn truncate_cache(&mut self, len: usize) -> Result<()>;

    /// Keeps only the cached rows listed in `keep` (strictly increasing), in that order.
    fn retain_cache(&mut self, keep: &[usize]) -> Result<()>;

    /// Appends `tokens` (and, for EAGLE drafts, `features` `[n, hidden]`) at `positions` with an
    /// explicit attention mask whose `past()` equals [`cache_len`](Self::cache_len).
    fn forward_masked(
        &mut self,
        tokens: &[TokenId],
        features: Option<Tensor<2>>,
        positions: &[usize],
        mask: &AttentionMask,
    ) -> Result<DraftOutput>;
}

/// Produces responses to prompts with a (fine-tuned) target: the first half of data regeneration.
pub trait Regenerator {
    /// Generates a response (prompt excluded) for an already tokenised prompt.
    fn regenerate(&mut self, prompt: &[TokenId], cfg: &GenerationConfig) -> Result<Vec<TokenId>>;
}

/// A ranked subset of samples.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Selection {
    /// Indices of kept samples, best first.
    pub indices: Vec<usize>,
    /// Score of every input sample (same order as the input).
    pub scores: Vec<f64>,
}

/// Scores samples by training value; the highest scores are kept.
pub trait SampleSelector {
    /// Short name for reports (`"mahalanobis"`, `"random"`, ...).
    fn name(&self) -> &str;

    /// Value of one sample; larger is kept first.
    fn score(&self, index: usize, sample: &FeatureSample) -> Result<f64>;

    /// Scores all samples and keeps the best `fraction` (at least one sample; ties keep the
    /// earlier index, so the result is deterministic).
    fn select(&self, samples: &[FeatureSample], fraction: f64) -> Result<Selection> {
        if samples.is_empty() {
            return Err(crate::EdaError::EmptyDataset("no samples to select from".into()));
        }
        if !(fraction > 0.0 && fraction <= 1.0) {
            return Err(crate::EdaError::InvalidArgument(format!("fraction must be in (0, 1], got {fraction}")));
        }
        let scores = samples.iter().enumerate().map(|(i, s)| self.score(i, s)).collect::<Result<Vec<_>>>()?;
        if let Some(i) = scores.iter().position(|s| !s.is_finite()) {
            return Err(crate::EdaError::NonFinite(format!("score of sample {i}")));
        }
        let keep = ((samples.len() as f64 * fraction).ceil() as usize).clamp(1, samples.len());
        let mut order: Vec<usize> = (0..samples.len()).collect();
        order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
        order.truncate(keep);
        Ok(Selection { indices: order, scores })
    }
}

/// A speculative (or plain) decoding strategy over a target and a draft.
pub trait DecodingStrategy {
    /// Generates a continuation of `prompt`. Implementations reset both caches first.
    fn generate(
        &mut self,
        target: &mut dyn TargetModel,
        draft: &mut dyn DraftModel,
        prompt: &[TokenId],
        cfg: &GenerationConfig,
    ) -> Result<GenerationOutput>;
}

/// Summary of a training run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainReport {
    /// Optimiser steps taken in total (including steps before a resume).
    pub steps: usize,
    /// Loss of the last step.
    pub final_loss: f64,
    /// Top-1 agreement of draft and target on the last step's masked tokens.
    pub final_top1: f64,
    /// Tokens processed in this process.
    pub tokens: usize,
    /// Wall-clock seconds spent in this process.
    pub seconds: f64,
    /// Trainable parameters.
    pub trainable_params: usize,
    /// All parameters of the model being trained.
    pub total_params: usize,
}

/// A training loop over precomputed feature samples.
pub trait Trainer {
    /// Trains on `data` until the configured number of steps; resumes from a checkpoint if one exists.
    fn train(&mut self, data: &[FeatureSample]) -> Result<TrainReport>;
}
