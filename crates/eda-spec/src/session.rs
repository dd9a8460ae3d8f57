//! State shared by every strategy during one generation: committed sequence, draft catch-up,
//! emission with stop conditions, cache bookkeeping and metrics.

use std::sync::Arc;
use std::time::Instant;

use burn::tensor::{Int, Tensor, TensorData};
use rand::Rng;

use eda_core::backend::to_vec_f32;
use eda_core::sampling::{next_token, seeded_rng, EdaRng};
use eda_core::{
    AttentionMask, DecodeMetrics, DraftModel, DraftOutput, EdaError, GenerationConfig, GenerationOutput, Result, TargetModel, TokenId,
};

/// How drafted tokens are verified. The test-only variants exist to prove that the statistical
/// tests can fail: each is a lossy, broken verifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verify {
    Lossless,
    /// Accepts every drafted token.
    #[cfg(test)]
    AcceptAll,
    /// Lossless, except that the token after a fully accepted chain or at a tree node without
    /// children is the argmax of the target's `p` there instead of a sample.
    #[cfg(test)]
    BonusArgmax,
    /// Lossless, except that the token after a fully accepted chain or at a tree node without
    /// children is sampled from the target's distribution one row early (the parent's), an
    /// off-by-one row.
    #[cfg(test)]
    BonusFromParent,
}

impl Verify {
    /// The token after a fully accepted chain or at a tree node without children: a sample of
    /// the target's distribution `p` at that node. `parent` is the verified row before it, read
    /// only by the test-only broken verifiers (with `logits` and `cfg`).
    #[cfg_attr(not(test), allow(unused_variables))]
    pub fn bonus_from_p(self, p: &[f32], logits: &Tensor<2>, parent: usize, cfg: &GenerationConfig, rng: &mut EdaRng) -> Result<TokenId> {
        #[cfg(test)]
        match self {
            Verify::BonusArgmax => return Ok(eda_core::sampling::argmax(p) as TokenId),
            Verify::BonusFromParent => {
                let q = eda_core::sampling::probabilities(&row(logits, parent)?, cfg)?;
                return Ok(eda_core::sampling::sample(&q, rng) as TokenId);
            }
            Verify::Lossless | Verify::AcceptAll => {}
        }
        Ok(eda_core::sampling::sample(p, rng) as TokenId)
    }
}

pub use eda_core::generate::CommitCallback;

/// The draft of a drafting strategy (`who`), or [`EdaError::InvalidArgument`] without one.
pub(crate) fn require_draft<'d>(draft: Option<&'d mut dyn DraftModel>, who: &str) -> Result<&'d mut dyn DraftModel> {
    draft.ok_or_else(|| EdaError::InvalidArgument(format!("{who} needs a draft model (only autoregressive decoding runs without one)")))
}

pub(crate) struct Session<'a, 'c> {
    pub target: &'a mut dyn TargetModel,
    pub draft: &'a mut dyn DraftModel,
    pub cfg: &'a GenerationConfig,
    /// The draft reads target features (EAGLE) rather than tokens only.
    pub eagle: bool,
    /// Prompt followed by every emitted token.
    pub seq: Vec<TokenId>,
    pub prompt_len: usize,
    /// EAGLE drafts: target hidden states of committed positions not yet fed to the draft.
    pub pending: Option<Tensor<2>>,
    pub metrics: DecodeMetrics,
    pub rng: EdaRng,
    pub max_pos: usize,
    pub done: bool,
    start: Instant,
    callback: Option<CommitCallback<'c>>,
}

pub(crate) fn row(logits: &Tensor<2>, i: usize) -> Result<Vec<f32>> {
    to_vec_f32(logits.clone().narrow(0, i, 1))
}

/// The logit columns of a draft output: the full vocabulary, or a reduced draft vocabulary
/// (`token_ids`). Checks that the columns fit (`Mismatch` otherwise).
pub(crate) fn draft_columns(out: &DraftOutput, vocab: usize) -> Result<Option<Arc<[TokenId]>>> {
    let [_, cols] = out.logits.dims();
    match &out.token_ids {
        None if cols != vocab => Err(EdaError::mismatch("draft logit columns (target vocabulary)", vocab, cols)),
        Some(ids) if ids.len() != cols => Err(EdaError::mismatch("draft logit columns (draft vocabulary mapping)", ids.len(), cols)),
        other => Ok(other.clone()),
    }
}

/// Target token of draft logit column `col` (`ids`: the reduced draft vocabulary, if any).
pub(crate) fn column_token(ids: Option<&Arc<[TokenId]>>, col: usize, vocab: usize) -> Result<TokenId> {
    let t = match ids {
        Some(ids) => *ids
            .get(col)
            .ok_or_else(|| EdaError::InvalidArgument(format!("draft logit column {col} has no token in the draft vocabulary mapping")))?,
        None => col as TokenId,
    };
    if t as usize >= vocab {
        return Err(EdaError::InvalidArgument(format!("the draft proposed token {t}, outside the target vocabulary of {vocab}")));
    }
    Ok(t)
}

/// One row of draft logits on the host, with the target token of each column.
#[derive(Debug, Clone)]
pub(crate) struct DraftRow {
    /// Logits over the draft's columns (`K` for a reduced vocabulary).
    pub logits: Vec<f32>,
    /// Target token id of each column (`None`: column = token).
    pub ids: Option<Arc<[TokenId]>>,
}

impl DraftRow {
    /// Row `i` of `out`, whose columns must fit the target vocabulary `vocab`.
    pub fn from_output(out: &DraftOutput, i: usize, vocab: usize) -> Result<Self> {
        let ids = draft_columns(out, vocab)?;
        Ok(DraftRow { logits: row(&out.logits, i)?, ids })
    }

    /// Target token of column `col`.
    pub fn token(&self, col: usize, vocab: usize) -> Result<TokenId> {
        column_token(self.ids.as_ref(), col, vocab)
    }

    /// A distribution over the draft's columns spread over the whole target vocabulary (0 for
    /// tokens the draft cannot propose), for rejection sampling against the target's `p`.
    pub fn to_vocab(&self, q: Vec<f32>, vocab: usize) -> Result<Vec<f32>> {
        let Some(ids) = &self.ids else { return Ok(q) };
        let mut dense = vec![0.0f32; vocab];
        for (col, &p) in q.iter().enumerate() {
            dense[column_token(Some(ids), col, vocab)? as usize] = p;
        }
        Ok(dense)
    }
}

pub(crate) fn index_tensor(idx: &[usize], device: &burn::tensor::Device) -> Tensor<1, Int> {
    Tensor::<1, Int>::from_data(TensorData::new(idx.iter().map(|&i| i as i64).collect::<Vec<_>>(), [idx.len()]), device)
}

/// Uniform draw in `[0, 1)`.
pub(crate) fn uniform(rng: &mut EdaRng) -> f64 {
    rng.random::<f64>()
}

impl<'a, 'c> Session<'a, 'c> {
    /// Validates the inputs, resets both caches, runs the target prefill and emits the first token.
    pub fn start(
        target: &'a mut dyn TargetModel,
        draft: &'a mut dyn DraftModel,
        prompt: &[TokenId],
        cfg: &'a GenerationConfig,
        callback: Option<CommitCallback<'c>>,
    ) -> Result<Self> {
        let start = Instant::now();
        cfg.validate()?;
        if prompt.is_empty() {
            return Err(EdaError::InvalidArgument("prompt must contain at least one token".into()));
        }
        let info = target.info().clone();
        if let Some(t) = prompt.iter().find(|&&t| t as usize >= info.vocab_size) {
            return Err(EdaError::InvalidArgument(format!("prompt token {t} is outside the target vocabulary of {}", info.vocab_size)));
        }
        let dinfo = draft.info();
        if dinfo.vocab_size != info.vocab_size {
            return Err(EdaError::mismatch("vocabulary size (draft vs target)", info.vocab_size, dinfo.vocab_size));
        }
        if dinfo.uses_target_features && dinfo.hidden_size != info.hidden_size {
            return Err(EdaError::mismatch("feature width (EAGLE draft vs target hidden size)", info.hidden_size, dinfo.hidden_size));
        }
        let max_pos = info.max_position_embeddings;
        if prompt.len() > max_pos {
            return Err(EdaError::SequenceTooLong { len: prompt.len(), max: max_pos });
        }
        target.reset_cache();
        draft.reset_cache();
        let mut s = Session {
            target,
            draft,
            cfg,
            eagle: dinfo.uses_target_features,
            seq: prompt.to_vec(),
            prompt_len: prompt.len(),
            pending: None,
            metrics: DecodeMetrics::default(),
            rng: seeded_rng(cfg.seed),
            max_pos,
            done: false,
            start,
            callback,
        };
        if cfg.max_new_tokens == 0 || prompt.len() >= max_pos {
            s.done = true;
            return Ok(s);
        }
        let t0 = Instant::now();
        let out = s.target.forward(prompt)?;
        let [rows, _] = out.logits.dims();
        if rows != prompt.len() {
            return Err(EdaError::mismatch("target logit rows (prefill)", prompt.len(), rows));
        }
        let last = row(&out.logits, rows - 1)?;
        s.metrics.target_seconds += t0.elapsed().as_secs_f64();
        s.metrics.target_forwards += 1;
        let first = next_token(&last, cfg, &mut s.rng)?;
        if s.eagle {
            s.pending = Some(out.hidden);
        }
        s.commit(&[first]);
        Ok(s)
    }

    /// Tokens emitted so far.
    pub fn emitted(&self) -> usize {
        self.seq.len() - self.prompt_len
    }

    /// The last committed token: the root of the next draft.
    pub fn root(&self) -> TokenId {
        *self.seq.last().expect("sequence is never empty")
    }

    /// The most drafted tokens a cycle may accept so that neither `max_new_tokens` nor the
    /// position limit is overshot (the bonus token takes one more slot).
    pub fn budget(&self) -> usize {
        let by_pos = self.max_pos.saturating_sub(self.seq.len() + 1);
        let by_new = self.cfg.max_new_tokens.saturating_sub(self.emitted() + 1);
        by_pos.min(by_new)
    }

    /// Emits `tokens` in order, honouring stop tokens, `max_new_tokens` and the position limit.
    /// Returns how many were emitted.
    pub fn commit(&mut self, tokens: &[TokenId]) -> usize {
        let mut n = 0;
        for &t in tokens {
            if self.done {
                break;
            }
            self.seq.push(t);
            n += 1;
            if self.cfg.stop_tokens.contains(&t) || self.emitted() >= self.cfg.max_new_tokens || self.seq.len() >= self.max_pos {
                self.done = true;
            }
        }
        self.metrics.new_tokens = self.emitted();
        if let Some(cb) = self.callback.as_mut() {
            cb(&self.seq[self.seq.len() - n..], &self.metrics);
        }
        n
    }

    /// The target's vocabulary size.
    pub fn vocab(&self) -> usize {
        self.target.info().vocab_size
    }

    /// Feeds the committed positions the draft has not seen yet. Returns the host logits of the
    /// last fed position and the draft's output features `[1, hidden]` there.
    pub fn draft_catch_up(&mut self) -> Result<(DraftRow, Tensor<2>)> {
        let dlen = self.draft.cache_len();
        let (tokens, features) = if self.eagle {
            let features =
                self.pending.take().ok_or_else(|| EdaError::InvalidArgument("EAGLE draft: no pending target features".into()))?;
            (self.seq[dlen + 1..].to_vec(), Some(features))
        } else {
            (self.seq[dlen..].to_vec(), None)
        };
        if tokens.is_empty() {
            return Err(EdaError::InvalidArgument("draft catch-up with no new committed tokens".into()));
        }
        if let Some(f) = &features {
            let [r, _] = f.dims();
            if r != tokens.len() {
                return Err(EdaError::mismatch("pending target feature rows (draft catch-up)", tokens.len(), r));
            }
        }
        let positions: Vec<usize> = (dlen..dlen + tokens.len()).collect();
        let t0 = Instant::now();
        let out = self.draft.forward_masked(&tokens, features, &positions, &AttentionMask::causal(dlen, tokens.len()))?;
        let [rows, _] = out.logits.dims();
        if rows != tokens.len() {
            return Err(EdaError::mismatch("draft logit rows (catch-up)", tokens.len(), rows));
        }
        let last = DraftRow::from_output(&out, rows - 1, self.vocab())?;
        self.metrics.draft_seconds += t0.elapsed().as_secs_f64();
        self.metrics.draft_forwards += 1;
        Ok((last, out.hidden.narrow(0, rows - 1, 1)))
    }

    /// Records per-depth proposals/acceptances of one cycle: the drafted tokens `accepted`, plus
    /// one rejected proposal at depth `accepted.len()` when `rejected_proposal`. Acceptance ends
    /// at a stop token: drafted tokens verified past it are never emitted, so they do not count
    /// (nor does a rejection after them).
    pub fn record_depths(&mut self, accepted: &[TokenId], rejected_proposal: bool) {
        let (accepted, rejected_proposal) = match accepted.iter().position(|t| self.cfg.stop_tokens.contains(t)) {
            Some(k) => (k + 1, false),
            None => (accepted.len(), rejected_proposal),
        };
        let need = accepted + usize::from(rejected_proposal);
        for v in [&mut self.metrics.proposed_per_depth, &mut self.metrics.accepted_per_depth] {
            if v.len() < need {
                v.resize(need, 0);
            }
        }
        for d in 0..accepted {
            self.metrics.proposed_per_depth[d] += 1;
            self.metrics.accepted_per_depth[d] += 1;
        }
        if rejected_proposal {
            self.metrics.proposed_per_depth[accepted] += 1;
        }
    }

    /// Keeps the verified path in the target cache, stores its features for the draft and emits
    /// the accepted tokens plus the bonus token.
    ///
    /// `past` is the target cache length before verification, `path` the node indices (root 0
    /// first) of the accepted path inside the verified block, `contiguous` whether the path is
    /// `0..path.len()` (chain) so a truncation suffices.
    pub fn accept(&mut self, past: usize, path: &[usize], hidden: Tensor<2>, contiguous: bool, new_tokens: &[TokenId]) -> Result<()> {
        if contiguous {
            self.target.truncate_cache(past + path.len())?;
        } else {
            let keep: Vec<usize> = (0..past).chain(path.iter().map(|&p| past + p)).collect();
            self.target.retain_cache(&keep)?;
        }
        if self.eagle {
            let device = hidden.device();
            self.pending = Some(hidden.select(0, index_tensor(path, &device)));
        }
        let n = self.commit(new_tokens);
        if n < new_tokens.len() {
            // Stopped early: keep the invariant cache_len == prompt + emitted - 1.
            self.target.truncate_cache(self.seq.len() - 1)?;
        }
        Ok(())
    }

    /// One plain target step (no draft): feeds the root and samples the next token.
    pub fn plain_step(&mut self) -> Result<()> {
        let root = self.root();
        let t0 = Instant::now();
        let out = self.target.forward(&[root])?;
        let logits = row(&out.logits, 0)?;
        self.metrics.target_seconds += t0.elapsed().as_secs_f64();
        self.metrics.target_forwards += 1;
        let next = next_token(&logits, self.cfg, &mut self.rng)?;
        if self.eagle {
            self.pending = Some(match self.pending.take() {
                Some(prev) => Tensor::cat(vec![prev, out.hidden], 0),
                None => out.hidden,
            });
        }
        self.commit(&[next]);
        Ok(())
    }

    /// Finishes the generation.
    pub fn finish(mut self) -> GenerationOutput {
        self.metrics.new_tokens = self.emitted();
        self.metrics.wall_seconds = self.start.elapsed().as_secs_f64();
        GenerationOutput { tokens: self.seq[self.prompt_len..].to_vec(), metrics: self.metrics }
    }
}
