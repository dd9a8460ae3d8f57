//! Plain autoregressive decoding with a [`TargetModel`]: the baseline speculative decoding is
//! measured against, and the generator used by regeneration.
//!
//! One decoding loop serves both a single sequence ([`generate_autoregressive`]) and a batch of
//! independent sequences ([`generate_batch_with`] over a [`BatchDecoder`]), so a batched
//! generation makes exactly the same per-sequence choices (stop rules, random draws) as
//! generating each sequence alone.

use std::time::Instant;

use crate::backend::to_vec_f32;
use crate::sampling::{next_token, seeded_rng, EdaRng};
use crate::{DecodeMetrics, EdaError, GenerationConfig, GenerationOutput, Result, TargetModel, TokenId};

/// Callback invoked after every commit with the newly emitted tokens and the running metrics
/// (for live printing).
pub type CommitCallback<'a> = &'a mut dyn FnMut(&[TokenId], &DecodeMetrics);

/// Generates up to `cfg.max_new_tokens` tokens after `prompt`, one target forward per token.
/// The cache is reset first. Generation stops after emitting a stop token.
///
/// This is the one implementation of plain autoregressive decoding: the regeneration pipeline,
/// batched generation and the autoregressive decoding strategy of `eda-spec` all run it.
pub fn generate_autoregressive(target: &mut dyn TargetModel, prompt: &[TokenId], cfg: &GenerationConfig) -> Result<GenerationOutput> {
    generate_one(target, prompt, cfg, None)
}

/// [`generate_autoregressive`], calling `on_commit(&[token], metrics)` after every emitted
/// token with the running metrics (`new_tokens`, `target_forwards`, seconds so far).
///
/// ```
/// # use eda_core::{generate::generate_autoregressive_streaming, GenerationConfig, TargetModel};
/// # fn f(target: &mut dyn TargetModel) -> eda_core::Result<()> {
/// let mut seen = Vec::new();
/// let cfg = GenerationConfig { max_new_tokens: 8, ..GenerationConfig::greedy() };
/// let out = generate_autoregressive_streaming(target, &[1, 2], &cfg, &mut |new, _| seen.extend_from_slice(new))?;
/// assert_eq!(seen, out.tokens);
/// # Ok(()) }
/// ```
pub fn generate_autoregressive_streaming(
    target: &mut dyn TargetModel,
    prompt: &[TokenId],
    cfg: &GenerationConfig,
    on_commit: CommitCallback<'_>,
) -> Result<GenerationOutput> {
    generate_one(target, prompt, cfg, Some(on_commit))
}

/// [`generate_autoregressive`] for any (possibly unsized) target; used by the default
/// [`TargetModel::generate_batch`].
pub(crate) fn generate_one<T: TargetModel + ?Sized>(
    target: &mut T,
    prompt: &[TokenId],
    cfg: &GenerationConfig,
    on_commit: Option<CommitCallback<'_>>,
) -> Result<GenerationOutput> {
    let max_pos = target.info().max_position_embeddings;
    let mut decoder = SingleDecoder { target };
    let mut out = decode_loop(&mut decoder, max_pos, &[prompt], std::slice::from_ref(cfg), on_commit)?;
    out.pop().ok_or_else(|| EdaError::InvalidArgument("generation produced no output".into()))
}

/// [`generate_autoregressive`] over each prompt in turn (the default
/// [`TargetModel::generate_batch`] for targets without native batching).
pub(crate) fn generate_each<T: TargetModel + ?Sized>(
    target: &mut T,
    prompts: &[Vec<TokenId>],
    cfgs: &[GenerationConfig],
) -> Result<Vec<GenerationOutput>> {
    check_batch(prompts.len(), cfgs.len())?;
    prompts.iter().zip(cfgs).map(|(p, c)| generate_one(target, p, c, None)).collect()
}

fn check_batch(prompts: usize, cfgs: usize) -> Result<()> {
    if prompts == 0 {
        return Err(EdaError::InvalidArgument("a batch needs at least one prompt".into()));
    }
    if prompts != cfgs {
        return Err(EdaError::mismatch("generation configs (one per prompt)", prompts, cfgs));
    }
    Ok(())
}

/// Several independent sequences decoded together, each with its own KV cache: the primitive
/// behind a native [`TargetModel::generate_batch`]. [`generate_batch_with`] drives it.
pub trait BatchDecoder {
    /// Starts a batch: runs every prompt from position 0 (fresh caches) and returns, for each
    /// prompt in order, the next-token logits at its last position.
    fn prefill(&mut self, prompts: &[&[TokenId]]) -> Result<Vec<Vec<f32>>>;

    /// Appends `tokens[i]` to sequence `seqs[i]` (indices into the prefill's prompts, strictly
    /// increasing) and returns their next-token logits in the same order. Sequences not listed
    /// are finished: they are never listed again and their caches may be dropped.
    fn step(&mut self, seqs: &[usize], tokens: &[TokenId]) -> Result<Vec<Vec<f32>>>;
}

/// A single-cache [`TargetModel`] seen as a batch of one.
struct SingleDecoder<'a, T: ?Sized> {
    target: &'a mut T,
}

impl<T: TargetModel + ?Sized> BatchDecoder for SingleDecoder<'_, T> {
    fn prefill(&mut self, prompts: &[&[TokenId]]) -> Result<Vec<Vec<f32>>> {
        let [prompt] = prompts else {
            return Err(EdaError::mismatch("prompts of a single-sequence decoder", 1, prompts.len()));
        };
        self.target.reset_cache();
        let out = self.target.forward(prompt)?;
        Ok(vec![last_row(out.logits, prompt.len())?])
    }

    fn step(&mut self, seqs: &[usize], tokens: &[TokenId]) -> Result<Vec<Vec<f32>>> {
        if seqs != [0] || tokens.len() != 1 {
            return Err(EdaError::InvalidArgument(format!("a single-sequence decoder steps sequence 0 only, got {seqs:?}")));
        }
        let out = self.target.forward(tokens)?;
        Ok(vec![last_row(out.logits, 1)?])
    }
}

/// Per-sequence state of the decoding loop.
struct Seq<'a> {
    cfg: &'a GenerationConfig,
    prompt_len: usize,
    rng: EdaRng,
    logits: Vec<f32>,
    tokens: Vec<TokenId>,
    steps: usize,
    finished_at: f64,
}

/// Decodes every prompt with its own configuration (stop tokens, `max_new_tokens`, sampling
/// seed), all sequences advancing together through `decoder`; a sequence leaves the batch after
/// emitting a stop token, after `max_new_tokens`, or when it reaches `max_positions`.
///
/// Each output equals what [`generate_autoregressive`] returns for that prompt and
/// configuration alone, given the same logits (each sequence has its own random generator).
/// `metrics.wall_seconds` is the time from the start of the batch until that sequence finished.
///
/// Errors: [`EdaError::InvalidArgument`] for an empty batch, an empty prompt or a bad
/// configuration, [`EdaError::Mismatch`] when `cfgs` and `prompts` differ in length,
/// [`EdaError::SequenceTooLong`] for a prompt longer than `max_positions`, and any decoder error.
pub fn generate_batch_with<P: AsRef<[TokenId]>>(
    decoder: &mut dyn BatchDecoder,
    max_positions: usize,
    prompts: &[P],
    cfgs: &[GenerationConfig],
) -> Result<Vec<GenerationOutput>> {
    decode_loop(decoder, max_positions, prompts, cfgs, None)
}

/// Running metrics of a sequence (also its final metrics once it finished).
fn seq_metrics(s: &Seq, seconds: f64) -> DecodeMetrics {
    // The prefill emitted the first token, so plain decoding has τ = 1.
    DecodeMetrics {
        target_forwards: s.steps + 1,
        new_tokens: s.tokens.len(),
        wall_seconds: seconds,
        target_seconds: seconds,
        ..DecodeMetrics::default()
    }
}

/// The loop of [`generate_batch_with`]; `on_commit` (single-sequence streaming) is called after
/// every token of every sequence.
fn decode_loop<P: AsRef<[TokenId]>>(
    decoder: &mut dyn BatchDecoder,
    max_positions: usize,
    prompts: &[P],
    cfgs: &[GenerationConfig],
    mut on_commit: Option<CommitCallback<'_>>,
) -> Result<Vec<GenerationOutput>> {
    check_batch(prompts.len(), cfgs.len())?;
    for (p, c) in prompts.iter().zip(cfgs) {
        c.validate()?;
        let p = p.as_ref();
        if p.is_empty() {
            return Err(EdaError::InvalidArgument("prompt must contain at least one token".into()));
        }
        if p.len() > max_positions {
            return Err(EdaError::SequenceTooLong { len: p.len(), max: max_positions });
        }
    }
    let start = Instant::now();
    let views: Vec<&[TokenId]> = prompts.iter().map(AsRef::as_ref).collect();
    let first = decoder.prefill(&views)?;
    if first.len() != views.len() {
        return Err(EdaError::mismatch("prefill logit rows (one per prompt)", views.len(), first.len()));
    }
    let mut seqs: Vec<Seq> = views
        .iter()
        .zip(cfgs)
        .zip(first)
        .map(|((p, cfg), logits)| Seq {
            cfg,
            prompt_len: p.len(),
            rng: seeded_rng(cfg.seed),
            logits,
            tokens: Vec::new(),
            steps: 0,
            finished_at: 0.0,
        })
        .collect();
    let mut live: Vec<usize> = (0..seqs.len()).collect();
    loop {
        let (mut next_seqs, mut next_tokens) = (Vec::with_capacity(live.len()), Vec::with_capacity(live.len()));
        for &i in &live {
            let s = &mut seqs[i];
            let (n, cfg) = (s.prompt_len, s.cfg);
            let mut more = false;
            if s.tokens.len() < cfg.max_new_tokens && n + s.tokens.len() < max_positions {
                let t = next_token(&s.logits, cfg, &mut s.rng)?;
                s.tokens.push(t);
                if let Some(cb) = on_commit.as_mut() {
                    cb(&[t], &seq_metrics(s, start.elapsed().as_secs_f64()));
                }
                more = !(cfg.stop_tokens.contains(&t) || s.tokens.len() == cfg.max_new_tokens || n + s.tokens.len() >= max_positions);
                if more {
                    next_seqs.push(i);
                    next_tokens.push(t);
                }
            }
            if !more {
                s.finished_at = start.elapsed().as_secs_f64();
            }
        }
        if next_seqs.is_empty() {
            break;
        }
        let rows = decoder.step(&next_seqs, &next_tokens)?;
        if rows.len() != next_seqs.len() {
            return Err(EdaError::mismatch("decode logit rows (one per live sequence)", next_seqs.len(), rows.len()));
        }
        for (&i, logits) in next_seqs.iter().zip(rows) {
            seqs[i].logits = logits;
            seqs[i].steps += 1;
        }
        live = next_seqs;
    }
    Ok(seqs
        .into_iter()
        .map(|s| {
            let metrics = seq_metrics(&s, s.finished_at);
            GenerationOutput { tokens: s.tokens, metrics }
        })
        .collect())
}

fn last_row(logits: burn::tensor::Tensor<2>, n: usize) -> Result<Vec<f32>> {
    let [rows, _] = logits.dims();
    if rows != n {
        return Err(EdaError::mismatch("logit rows", n, rows));
    }
    to_vec_f32(logits.narrow(0, n - 1, 1))
}
