//! Greedy evaluation against a *recorded* target: τ of many drafts at the cost of the drafts alone.
//!
//! Greedy speculative decoding emits exactly the target's greedy continuation, so every token the
//! verifier accepts lies on that continuation, and the only target outputs that decide anything
//! are the logits and hidden states of positions on it. A regenerated dataset records exactly
//! those: the target's greedy answer to each prompt and its last hidden state at every position
//! (`eda regenerate`). [`ReplayTarget`] serves them as a [`TargetModel`]: a node whose path from
//! the root follows the recording gets a one-hot logit row on the recorded next token and the
//! recorded hidden state; any other node gets zeros, which cannot matter (its parent already
//! rejected it). The unchanged chain and tree strategies then run against it, and the draft's τ,
//! α and acceptance per depth come out as against the live target, while the target costs
//! nothing. Comparing many drafts (budgets, seeds, baselines) on one fine-tuned target then needs
//! one regeneration instead of one live decode per draft.
//!
//! What a replay does not give: wall-clock speedup and the cost ratio c (the target's time is
//! not spent), and sampling (`temperature > 0`), whose accepted tokens are random. The features
//! of a recording come from a teacher-forced pass; the live KV-cached pass agrees to float
//! rounding, so a draft's near-tie could in rare cases go the other way.
//!
//! ```
//! use eda_core::{backend::{device_from_name, to_vec_f32}, generate::generate_autoregressive, GenerationConfig, TargetModel};
//! use eda_spec::{evaluate, replay::{evaluate_replay, Recording, ReplayTarget}, TreeStrategy};
//! use eda_testkit::{ToyEagleDraft, ToyLm};
//! let device = device_from_name("cpu").unwrap();
//! let mut target = ToyLm::random(24, 128, 3.0, 1, &device);
//! let cfg = GenerationConfig { max_new_tokens: 20, ..GenerationConfig::greedy() };
//! let prompt = vec![3, 4];
//! // Record the target's greedy answer and its hidden states (what `eda regenerate` stores).
//! let answer = generate_autoregressive(&mut target, &prompt, &cfg).unwrap().tokens;
//! let all: Vec<u32> = prompt.iter().chain(&answer).copied().collect();
//! target.reset_cache();
//! let hidden = to_vec_f32(target.forward(&all).unwrap().hidden).unwrap();
//! let rec = Recording::new(prompt.clone(), answer, hidden, 24).unwrap();
//!
//! let mut tree = TreeStrategy { depth: 3, top_k: 2, total_tokens: 8 };
//! let mut draft = ToyEagleDraft::for_target(&target, 1.0, 2);
//! let live = evaluate(&mut target, Some(&mut draft), &mut tree, &[prompt], &cfg).unwrap();
//! let mut replay = ReplayTarget::new(target.info().clone(), target.embedding_weight(), target.lm_head_weight(), vec![rec]).unwrap();
//! let replayed = evaluate_replay(&mut replay, &mut draft, &mut tree, &cfg).unwrap();
//! assert_eq!(replayed.aggregate.tau, live.aggregate.tau);
//! assert_eq!(replayed.aggregate.acceptance_per_depth, live.aggregate.acceptance_per_depth);
//! ```

use burn::tensor::{Device, Tensor, TensorData};

use eda_core::data::FeatureSample;
use eda_core::{
    AttentionMask, DecodeMetrics, DraftModel, EdaError, GenerationConfig, GenerationOutput, ModelInfo, Result, TargetModel, TargetOutput,
    TokenId,
};

use crate::eval::{evaluate_planned_lengths, BaselinePlan, EvalReport};
use crate::SpeculativeStrategy;

/// One recorded greedy generation: the prompt, the target's answer, and the target's last hidden
/// state at every position of `prompt ++ answer`.
#[derive(Debug, Clone, PartialEq)]
pub struct Recording {
    prompt: Vec<TokenId>,
    answer: Vec<TokenId>,
    /// `prompt ++ answer`.
    tokens: Vec<TokenId>,
    /// Row-major `[tokens.len(), hidden_size]`.
    hidden: Vec<f32>,
    hidden_size: usize,
}

impl Recording {
    /// A recording from its parts. Errors: [`EdaError::EmptyDataset`] for an empty prompt or
    /// answer, [`EdaError::Mismatch`] when `hidden` does not hold `hidden_size` values per token.
    pub fn new(prompt: Vec<TokenId>, answer: Vec<TokenId>, hidden: Vec<f32>, hidden_size: usize) -> Result<Self> {
        if prompt.is_empty() || answer.is_empty() {
            return Err(EdaError::EmptyDataset("a recording needs a prompt and an answer of at least one token each".into()));
        }
        let tokens: Vec<TokenId> = prompt.iter().chain(&answer).copied().collect();
        if hidden_size == 0 || hidden.len() != tokens.len() * hidden_size {
            return Err(EdaError::mismatch("recorded hidden values (tokens × hidden size)", tokens.len() * hidden_size, hidden.len()));
        }
        Ok(Recording { prompt, answer, tokens, hidden, hidden_size })
    }

    /// The recording stored in a regenerated sample: the answer starts at the first loss-masked
    /// position, or one later when the mask was started one token early (the manifest's
    /// `start_one_early`, the reference's convention).
    pub fn from_sample(sample: &FeatureSample, start_one_early: bool) -> Result<Self> {
        let first = sample
            .loss_mask
            .iter()
            .position(|&m| m != 0)
            .ok_or_else(|| EdaError::EmptyDataset(format!("sample `{}` has no answer (empty loss mask)", sample.id)))?;
        let start = first + usize::from(start_one_early);
        if start == 0 || start >= sample.input_ids.len() {
            return Err(EdaError::EmptyDataset(format!("sample `{}` has no prompt or no answer token", sample.id)));
        }
        Recording::new(sample.input_ids[..start].to_vec(), sample.input_ids[start..].to_vec(), sample.hidden.clone(), sample.hidden_size)
    }

    /// The prompt tokens.
    pub fn prompt(&self) -> &[TokenId] {
        &self.prompt
    }

    /// The recorded answer tokens.
    pub fn answer(&self) -> &[TokenId] {
        &self.answer
    }
}

/// A [`TargetModel`] that replays [`Recording`]s (see the [module docs](self)).
///
/// The prefill (the first forward after a reset) chooses the recording whose prompt equals the
/// prefilled tokens; a prompt with no recording is an error.
#[derive(Debug, Clone)]
pub struct ReplayTarget {
    info: ModelInfo,
    device: Device,
    embedding: Tensor<2>,
    lm_head: Tensor<2>,
    recordings: Vec<Recording>,
    /// The recording being replayed (chosen at prefill).
    active: Option<usize>,
    /// Per cached row (row `k` sits at position `k`): whether its context follows the recording.
    on_path: Vec<bool>,
}

impl ReplayTarget {
    /// A replay of `recordings` on behalf of the target described by `info`, whose embedding and
    /// LM head (`[vocab_size, hidden_size]`) the draft may read. Errors:
    /// [`EdaError::EmptyDataset`] without recordings, [`EdaError::Mismatch`] when a recording's
    /// width is not `info.hidden_size` or a token is outside the vocabulary.
    pub fn new(info: ModelInfo, embedding: Tensor<2>, lm_head: Tensor<2>, recordings: Vec<Recording>) -> Result<Self> {
        if recordings.is_empty() {
            return Err(EdaError::EmptyDataset("no recordings to replay".into()));
        }
        for r in &recordings {
            if r.hidden_size != info.hidden_size {
                return Err(EdaError::mismatch("hidden size of a recording", info.hidden_size, r.hidden_size));
            }
            if let Some(&t) = r.tokens.iter().find(|&&t| t as usize >= info.vocab_size) {
                return Err(EdaError::mismatch("recorded token id below the vocabulary size", info.vocab_size, t as usize));
            }
        }
        let device = embedding.device();
        Ok(ReplayTarget { info, device, embedding, lm_head, recordings, active: None, on_path: Vec::new() })
    }

    /// The recordings, in order.
    pub fn recordings(&self) -> &[Recording] {
        &self.recordings
    }

    fn choose(&self, tokens: &[TokenId]) -> Result<usize> {
        self.recordings.iter().position(|r| r.prompt == tokens).ok_or_else(|| {
            EdaError::InvalidArgument(format!(
                "replay: no recording has this {}-token prompt (prefill must be a recorded prompt)",
                tokens.len()
            ))
        })
    }
}

impl TargetModel for ReplayTarget {
    fn info(&self) -> &ModelInfo {
        &self.info
    }

    fn device(&self) -> Device {
        self.device.clone()
    }

    fn cache_len(&self) -> usize {
        self.on_path.len()
    }

    fn reset_cache(&mut self) {
        self.on_path.clear();
        self.active = None;
    }

    fn truncate_cache(&mut self, len: usize) -> Result<()> {
        self.on_path.truncate(len);
        if self.on_path.is_empty() {
            self.active = None;
        }
        Ok(())
    }

    fn retain_cache(&mut self, keep: &[usize]) -> Result<()> {
        let len = self.on_path.len();
        if keep.windows(2).any(|w| w[0] >= w[1]) || keep.last().is_some_and(|&k| k >= len) {
            return Err(EdaError::InvalidArgument(format!("replay: bad retain list {keep:?} for a cache of {len}")));
        }
        self.on_path = keep.iter().map(|&k| self.on_path[k]).collect();
        if self.on_path.is_empty() {
            self.active = None;
        }
        Ok(())
    }

    fn forward_masked(&mut self, tokens: &[TokenId], positions: &[usize], mask: &AttentionMask) -> Result<TargetOutput> {
        let past = self.on_path.len();
        if positions.len() != tokens.len() || mask.past() != past || mask.new_len() != tokens.len() {
            return Err(EdaError::InvalidArgument(format!(
                "replay: {} tokens, {} positions and a mask of {} new over {} past for a cache of {past}",
                tokens.len(),
                positions.len(),
                mask.new_len(),
                mask.past()
            )));
        }
        if tokens.is_empty() {
            return Err(EdaError::InvalidArgument("replay: a forward needs at least one token".into()));
        }
        let rec_index = match self.active {
            Some(i) => i,
            None => {
                let i = self.choose(tokens)?;
                self.active = Some(i);
                i
            }
        };
        let rec = &self.recordings[rec_index];
        let (v, h) = (self.info.vocab_size, self.info.hidden_size);
        let n = tokens.len();
        let mut logits = vec![0.0f32; n * v];
        let mut hidden = vec![0.0f32; n * h];
        let mut new_on_path = Vec::with_capacity(n);
        for i in 0..n {
            let p = positions[i];
            // The node's parent: the newest visible new row one position back, else the cached row
            // at that position (cached rows sit at their index).
            let parent_on_path = if p == 0 {
                true
            } else {
                match (0..i).rev().find(|&j| positions[j] + 1 == p && mask.allowed(i, past + j)) {
                    Some(j) => new_on_path[j],
                    None => p - 1 < past && mask.allowed(i, p - 1) && self.on_path[p - 1],
                }
            };
            let on = parent_on_path && rec.tokens.get(p) == Some(&tokens[i]);
            if on {
                if let Some(&next) = rec.tokens.get(p + 1) {
                    logits[i * v + next as usize] = 1.0;
                }
                hidden[i * h..(i + 1) * h].copy_from_slice(&rec.hidden[p * h..(p + 1) * h]);
            }
            new_on_path.push(on);
        }
        self.on_path.extend(new_on_path);
        Ok(TargetOutput {
            logits: Tensor::<2>::from_data(TensorData::new(logits, [n, v]), &self.device),
            hidden: Tensor::<2>::from_data(TensorData::new(hidden, [n, h]), &self.device),
        })
    }

    fn embedding_weight(&self) -> Tensor<2> {
        self.embedding.clone()
    }

    fn lm_head_weight(&self) -> Tensor<2> {
        self.lm_head.clone()
    }
}

/// Evaluates `strategy` with `draft` against every recording of `target`, greedily: each
/// recording's prompt is decoded until its answer's stop token (`cfg`'s stop tokens, under
/// `cfg.max_new_tokens`), or for as many tokens as an answer without one has (it was cut by a
/// length limit). The report is
/// [`evaluate`](crate::evaluate)'s, with the recordings as the autoregressive baseline
/// (`greedy_matches` counts reproduced answers) and every timing-derived figure (tok/s, c,
/// predicted and measured speedup) set to 0: the target's time is not spent in a replay.
///
/// Errors: [`EdaError::InvalidArgument`] for a sampling `cfg`, and when a decode does not
/// reproduce its recording, which happens only when the recording is not a greedy continuation
/// under `cfg`'s stop tokens (for example an answer that runs past a stop token of `cfg`).
pub fn evaluate_replay<S: SpeculativeStrategy + ?Sized>(
    target: &mut ReplayTarget,
    draft: &mut dyn DraftModel,
    strategy: &mut S,
    cfg: &GenerationConfig,
) -> Result<EvalReport> {
    if !cfg.is_greedy() {
        return Err(EdaError::InvalidArgument("a replay evaluates greedy decoding only (temperature 0)".into()));
    }
    let prompts: Vec<Vec<TokenId>> = target.recordings.iter().map(|r| r.prompt.clone()).collect();
    // The expected output: the answer up to and including its first stop token. An answer that
    // ends at a stop token is decoded under `cfg`'s length, as it was recorded (strategies draft
    // less when few tokens remain, so the length changes τ); one without was cut by a length
    // limit, its own.
    let mut lengths = Vec::with_capacity(prompts.len());
    let mut expected = Vec::with_capacity(prompts.len());
    for r in &target.recordings {
        let stop = r.answer.iter().position(|t| cfg.stop_tokens.contains(t));
        let end = stop.map_or(r.answer.len(), |i| i + 1);
        lengths.push(if stop.is_some() { cfg.max_new_tokens.max(end) } else { r.answer.len() });
        expected.push(GenerationOutput { tokens: r.answer[..end].to_vec(), metrics: DecodeMetrics::default() });
    }
    let (mut report, _) =
        evaluate_planned_lengths(target, Some(draft), strategy, &prompts, cfg, Some(&lengths), 0, BaselinePlan::Given(&expected))?;
    if let Some(bad) = report.prompts.iter().find(|p| p.greedy_match == Some(false)) {
        return Err(EdaError::InvalidArgument(format!(
            "replay: recording {} was not reproduced ({} tokens decoded, {} recorded); is it the greedy answer under these stop tokens?",
            bad.index,
            bad.tokens.len(),
            expected[bad.index].tokens.len()
        )));
    }
    report.strategy = format!("{} (replayed target)", report.strategy);
    for p in &mut report.prompts {
        (p.cost_ratio, p.predicted_speedup, p.tokens_per_second, p.baseline_tokens_per_second, p.speedup) = (0.0, 0.0, 0.0, 0.0, 0.0);
    }
    let a = &mut report.aggregate;
    (a.cost_ratio, a.predicted_speedup, a.tokens_per_second, a.baseline_tokens_per_second, a.speedup) = (0.0, 0.0, 0.0, 0.0, 0.0);
    report.baseline = None;
    Ok(report)
}
