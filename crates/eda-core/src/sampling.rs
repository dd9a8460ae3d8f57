//! Host-side sampling utilities shared by plain decoding, regeneration and verification.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::{EdaError, GenerationConfig, Result, TokenId};

/// The random number generator used everywhere in eda (portable and seedable).
pub type EdaRng = ChaCha8Rng;

/// A generator seeded with `seed`.
pub fn seeded_rng(seed: u64) -> EdaRng {
    ChaCha8Rng::seed_from_u64(seed)
}

/// Index of the largest value (the first one on ties).
///
/// ```
/// assert_eq!(eda_core::sampling::argmax(&[0.1, 3.0, 3.0, -1.0]), 1);
/// ```
pub fn argmax(values: &[f32]) -> usize {
    let mut best = 0;
    for (i, v) in values.iter().enumerate() {
        if *v > values[best] {
            best = i;
        }
    }
    best
}

/// The sampling distribution of `cfg` over `logits`: softmax at `cfg.temperature`, then top-p.
/// For greedy configurations this is the one-hot distribution of the argmax.
///
/// ```
/// use eda_core::{sampling::probabilities, GenerationConfig};
/// let p = probabilities(&[0.0, 0.0], &GenerationConfig::sampling(1.0, 0)).unwrap();
/// assert!((p[0] - 0.5).abs() < 1e-6);
/// ```
pub fn probabilities(logits: &[f32], cfg: &GenerationConfig) -> Result<Vec<f32>> {
    if logits.is_empty() {
        return Err(EdaError::InvalidArgument("empty logits".into()));
    }
    if logits.iter().any(|l| l.is_nan()) {
        return Err(EdaError::NonFinite("logits".into()));
    }
    if cfg.is_greedy() {
        let mut p = vec![0.0; logits.len()];
        p[argmax(logits)] = 1.0;
        return Ok(p);
    }
    let mut p = softmax(logits, cfg.temperature);
    if cfg.top_p < 1.0 {
        top_p_filter(&mut p, cfg.top_p);
    }
    Ok(p)
}

/// Softmax of `logits / temperature`, computed stably in f64.
pub fn softmax(logits: &[f32], temperature: f32) -> Vec<f32> {
    let t = temperature.max(1e-6) as f64;
    let max = logits.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
    let exps: Vec<f64> = logits.iter().map(|&l| ((l as f64 - max) / t).exp()).collect();
    let sum: f64 = exps.iter().sum();
    exps.iter().map(|e| (e / sum) as f32).collect()
}

/// Keeps the smallest set of most likely tokens whose mass reaches `top_p`, renormalised.
pub fn top_p_filter(probs: &mut [f32], top_p: f32) {
    let mut order: Vec<usize> = (0..probs.len()).collect();
    order.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]).then(a.cmp(&b)));
    let mut mass = 0.0f64;
    let mut cut = order.len();
    for (rank, &i) in order.iter().enumerate() {
        mass += probs[i] as f64;
        if mass >= top_p as f64 {
            cut = rank + 1;
            break;
        }
    }
    for &i in &order[cut..] {
        probs[i] = 0.0;
    }
    normalize(probs);
}

/// Rescales `probs` to sum to one (no-op on an all-zero vector).
pub fn normalize(probs: &mut [f32]) {
    let sum: f64 = probs.iter().map(|&p| p as f64).sum();
    if sum > 0.0 {
        for p in probs.iter_mut() {
            *p = (*p as f64 / sum) as f32;
        }
    }
}

/// Draws an index from a probability vector (need not be exactly normalised).
pub fn sample(probs: &[f32], rng: &mut EdaRng) -> usize {
    let total: f64 = probs.iter().map(|&p| p as f64).sum();
    let mut u = rng.random::<f64>() * total;
    let mut last_nonzero = 0;
    for (i, &p) in probs.iter().enumerate() {
        if p > 0.0 {
            last_nonzero = i;
            if u < p as f64 {
                return i;
            }
            u -= p as f64;
        }
    }
    last_nonzero
}

/// Picks the next token from `logits` under `cfg` (argmax when greedy).
pub fn next_token(logits: &[f32], cfg: &GenerationConfig, rng: &mut EdaRng) -> Result<TokenId> {
    if cfg.is_greedy() {
        if logits.iter().any(|l| l.is_nan()) {
            return Err(EdaError::NonFinite("logits".into()));
        }
        return Ok(argmax(logits) as TokenId);
    }
    let p = probabilities(logits, cfg)?;
    Ok(sample(&p, rng) as TokenId)
}
