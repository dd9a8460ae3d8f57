//! Chain drafting (classic speculative decoding) and the autoregressive baseline strategy.

use std::time::Instant;

use eda_core::generate::{generate_autoregressive, generate_autoregressive_streaming};
use eda_core::sampling::{argmax, normalize, probabilities, sample};
use eda_core::{AttentionMask, DecodingStrategy, DraftModel, EdaError, GenerationConfig, GenerationOutput, Result, TargetModel, TokenId};
use serde::{Deserialize, Serialize};

use crate::session::{require_draft, row, uniform, CommitCallback, DraftRow, Session, Verify};
use crate::SpeculativeStrategy;

/// Chain drafting: the draft proposes `gamma` tokens one after the other, the target verifies
/// them in one causal forward pass.
///
/// Greedy configurations accept drafted tokens while they equal the target's argmax. Sampling
/// configurations draw drafted tokens from the draft's distribution `q` (temperature and top-p
/// applied) and use standard rejection sampling: accept with `min(1, p/q)`, on rejection sample
/// from `norm(max(p - q, 0))`, on full acceptance sample a bonus token from `p`. The output
/// distribution equals the target's. A reduced-vocabulary draft has `q = 0` outside its
/// vocabulary, so such tokens are only ever emitted from the residual (or the bonus), with
/// exactly the target's probability.
///
/// ```
/// use eda_core::{backend::device_from_name, DecodingStrategy, GenerationConfig};
/// use eda_spec::{ChainStrategy, LmDraft};
/// use eda_testkit::ToyLm;
/// let device = device_from_name("cpu").unwrap();
/// let mut target = ToyLm::random(16, 64, 3.0, 1, &device);
/// let mut draft = LmDraft::new(Box::new(target.clone()));
/// let cfg = GenerationConfig { max_new_tokens: 12, ..GenerationConfig::greedy() };
/// let out = ChainStrategy { gamma: 4 }.generate(&mut target, Some(&mut draft), &[1, 2, 3], &cfg).unwrap();
/// assert_eq!(out.tokens.len(), 12);
/// assert!(out.metrics.tau() > 2.0); // a perfect draft is always accepted
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainStrategy {
    /// Drafted tokens per cycle (at least 1).
    pub gamma: usize,
}

impl ChainStrategy {
    pub(crate) fn run(
        &self,
        target: &mut dyn TargetModel,
        draft: &mut dyn DraftModel,
        prompt: &[TokenId],
        cfg: &GenerationConfig,
        mode: Verify,
        callback: Option<CommitCallback<'_>>,
    ) -> Result<GenerationOutput> {
        if self.gamma == 0 {
            return Err(EdaError::InvalidArgument("chain strategy: gamma must be at least 1".into()));
        }
        let mut s = Session::start(target, draft, prompt, cfg, callback)?;
        while !s.done {
            let g = self.gamma.min(s.budget());
            if g == 0 {
                s.plain_step()?;
                continue;
            }
            // Draft g tokens.
            let (mut logits, mut feat) = s.draft_catch_up()?;
            let dlen = s.draft.cache_len();
            let vocab = s.vocab();
            let mut drafted: Vec<TokenId> = Vec::with_capacity(g);
            let mut qs: Vec<Vec<f32>> = Vec::with_capacity(g);
            for i in 0..g {
                let tok = if cfg.is_greedy() {
                    logits.token(argmax(&logits.logits), vocab)?
                } else {
                    // q over the draft's columns (temperature/top-p there equal those over the
                    // full vocabulary with q = 0 outside), spread to the target vocabulary.
                    let q = probabilities(&logits.logits, cfg)?;
                    let t = logits.token(sample(&q, &mut s.rng), vocab)?;
                    qs.push(logits.to_vocab(q, vocab)?);
                    t
                };
                drafted.push(tok);
                if i + 1 == g {
                    break;
                }
                let t0 = Instant::now();
                let features = if s.eagle { Some(feat.clone()) } else { None };
                let out = s.draft.forward_masked(&[tok], features, &[dlen + i], &AttentionMask::causal(dlen + i, 1))?;
                logits = DraftRow::from_output(&out, 0, vocab)?;
                feat = out.hidden;
                s.metrics.draft_seconds += t0.elapsed().as_secs_f64();
                s.metrics.draft_forwards += 1;
            }
            s.draft.truncate_cache(dlen)?;

            // Verify root + drafted tokens in one causal target pass.
            let past = s.target.cache_len();
            let mut tokens = Vec::with_capacity(g + 1);
            tokens.push(s.root());
            tokens.extend_from_slice(&drafted);
            let t0 = Instant::now();
            let out = s.target.forward(&tokens)?;
            let [rows, _] = out.logits.dims();
            if rows != g + 1 {
                return Err(EdaError::mismatch("target logit rows (chain verification)", g + 1, rows));
            }
            s.metrics.target_forwards += 1;
            let mut accepted = 0;
            let bonus;
            match mode {
                Verify::Lossless if cfg.is_greedy() => loop {
                    let r = row(&out.logits, accepted)?;
                    let best = argmax(&r) as TokenId;
                    if accepted < g && drafted[accepted] == best {
                        accepted += 1;
                    } else {
                        bonus = best;
                        break;
                    }
                },
                #[cfg(test)]
                Verify::AcceptAll => {
                    accepted = g;
                    let p = probabilities(&row(&out.logits, g)?, cfg)?;
                    bonus = sample(&p, &mut s.rng) as TokenId;
                }
                // Lossless (and, in tests, the deliberately broken bonus variants).
                _ => loop {
                    let p = probabilities(&row(&out.logits, accepted)?, cfg)?;
                    if accepted == g {
                        bonus = mode.bonus_from_p(&p, &out.logits, g - 1, cfg, &mut s.rng)?;
                        break;
                    }
                    let x = drafted[accepted] as usize;
                    let q = &qs[accepted];
                    let ratio = if q[x] > 0.0 { (p[x] / q[x]) as f64 } else { 0.0 };
                    if uniform(&mut s.rng) < ratio {
                        accepted += 1;
                        continue;
                    }
                    let mut residual: Vec<f32> = p.iter().zip(q).map(|(a, b)| (a - b).max(0.0)).collect();
                    if residual.iter().all(|&v| v <= 0.0) {
                        residual = p;
                    }
                    normalize(&mut residual);
                    bonus = sample(&residual, &mut s.rng) as TokenId;
                    break;
                },
            }
            s.metrics.target_seconds += t0.elapsed().as_secs_f64();
            s.record_depths(&drafted[..accepted], accepted < g);
            let path: Vec<usize> = (0..=accepted).collect();
            let mut new_tokens = drafted[..accepted].to_vec();
            new_tokens.push(bonus);
            s.accept(past, &path, out.hidden, true, &new_tokens)?;
        }
        Ok(s.finish())
    }
}

impl DecodingStrategy for ChainStrategy {
    fn generate(
        &mut self,
        target: &mut dyn TargetModel,
        draft: Option<&mut dyn DraftModel>,
        prompt: &[TokenId],
        cfg: &GenerationConfig,
    ) -> Result<GenerationOutput> {
        self.run(target, require_draft(draft, "chain strategy")?, prompt, cfg, Verify::Lossless, None)
    }
}

impl SpeculativeStrategy for ChainStrategy {
    fn name(&self) -> String {
        format!("chain(gamma={})", self.gamma)
    }

    fn drafted_per_cycle(&self) -> usize {
        self.gamma
    }

    fn generate_streaming(
        &mut self,
        target: &mut dyn TargetModel,
        draft: Option<&mut dyn DraftModel>,
        prompt: &[TokenId],
        cfg: &GenerationConfig,
        on_commit: CommitCallback<'_>,
    ) -> Result<GenerationOutput> {
        self.run(target, require_draft(draft, "chain strategy")?, prompt, cfg, Verify::Lossless, Some(on_commit))
    }
}

/// Plain autoregressive target decoding (the baseline): one target forward per token; needs no
/// draft (one given is ignored). It runs [`eda_core::generate::generate_autoregressive`], the one
/// implementation of plain decoding, so output, sampling and metrics are exactly that function's.
///
/// ```
/// use eda_core::{backend::device_from_name, generate::generate_autoregressive, DecodingStrategy, GenerationConfig};
/// use eda_spec::Autoregressive;
/// use eda_testkit::ToyLm;
/// let device = device_from_name("cpu").unwrap();
/// let mut target = ToyLm::random(16, 64, 3.0, 1, &device);
/// let cfg = GenerationConfig { max_new_tokens: 8, ..GenerationConfig::sampling(1.0, 5) };
/// let a = Autoregressive.generate(&mut target, None, &[1, 2], &cfg).unwrap();
/// let b = generate_autoregressive(&mut target, &[1, 2], &cfg).unwrap();
/// assert_eq!(a.tokens, b.tokens);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Autoregressive;

impl DecodingStrategy for Autoregressive {
    fn generate(
        &mut self,
        target: &mut dyn TargetModel,
        _draft: Option<&mut dyn DraftModel>,
        prompt: &[TokenId],
        cfg: &GenerationConfig,
    ) -> Result<GenerationOutput> {
        generate_autoregressive(target, prompt, cfg)
    }
}

impl SpeculativeStrategy for Autoregressive {
    fn name(&self) -> String {
        "autoregressive".into()
    }

    fn drafted_per_cycle(&self) -> usize {
        0
    }

    fn generate_streaming(
        &mut self,
        target: &mut dyn TargetModel,
        _draft: Option<&mut dyn DraftModel>,
        prompt: &[TokenId],
        cfg: &GenerationConfig,
        on_commit: CommitCallback<'_>,
    ) -> Result<GenerationOutput> {
        generate_autoregressive_streaming(target, prompt, cfg, on_commit)
    }
}
