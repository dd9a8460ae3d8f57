//! Plain autoregressive decoding with a [`TargetModel`]: the baseline speculative decoding is
//! measured against, and the generator used by regeneration.

use std::time::Instant;

use crate::backend::to_vec_f32;
use crate::sampling::{next_token, seeded_rng};
use crate::{DecodeMetrics, EdaError, GenerationConfig, GenerationOutput, Result, TargetModel, TokenId};

/// Generates up to `cfg.max_new_tokens` tokens after `prompt`, one target forward per token.
/// The cache is reset first. Generation stops after emitting a stop token.
pub fn generate_autoregressive(target: &mut dyn TargetModel, prompt: &[TokenId], cfg: &GenerationConfig) -> Result<GenerationOutput> {
    cfg.validate()?;
    if prompt.is_empty() {
        return Err(EdaError::InvalidArgument("prompt must contain at least one token".into()));
    }
    let max_pos = target.info().max_position_embeddings;
    if prompt.len() > max_pos {
        return Err(EdaError::SequenceTooLong { len: prompt.len(), max: max_pos });
    }
    let start = Instant::now();
    let mut rng = seeded_rng(cfg.seed);
    let mut metrics = DecodeMetrics::default();
    target.reset_cache();
    let out = target.forward(prompt)?;
    let n = prompt.len();
    let mut logits = last_row(out.logits, n)?;
    let mut tokens = Vec::new();
    while tokens.len() < cfg.max_new_tokens && n + tokens.len() < max_pos {
        let t = next_token(&logits, cfg, &mut rng)?;
        tokens.push(t);
        if cfg.stop_tokens.contains(&t) || tokens.len() == cfg.max_new_tokens || n + tokens.len() >= max_pos {
            break;
        }
        let out = target.forward(&[t])?;
        metrics.target_forwards += 1;
        logits = last_row(out.logits, 1)?;
    }
    // The prefill emitted the first token, so plain decoding has τ = 1.
    metrics.target_forwards += 1;
    metrics.new_tokens = tokens.len();
    metrics.wall_seconds = start.elapsed().as_secs_f64();
    metrics.target_seconds = metrics.wall_seconds;
    Ok(GenerationOutput { tokens, metrics })
}

fn last_row(logits: burn::tensor::Tensor<2>, n: usize) -> Result<Vec<f32>> {
    let [rows, _] = logits.dims();
    if rows != n {
        return Err(EdaError::mismatch("logit rows", n, rows));
    }
    to_vec_f32(logits.narrow(0, n - 1, 1))
}
