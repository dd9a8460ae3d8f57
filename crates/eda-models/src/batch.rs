//! Batched target passes: several independent sequences per forward.
//!
//! Sequences are *packed*, not padded: the tokens of all sequences go back to back into one
//! `[1, N, hidden]` tensor, so the projections, the MLP and the LM head (almost all of the
//! work) run once over all `N` tokens, while attention runs per sequence at its exact length
//! with its own rotary positions and its own KV cache ([`CausalLm::forward_hidden_varlen`]).
//! Nothing is wasted on padding, and every sequence gets the numbers a batch-1 forward gives it
//! (bit for bit on the NdArray CPU backend).
//!
//! * [`Target::forward_batch`](eda_core::TargetModel::forward_batch) /
//!   [`hidden_batch`](eda_core::TargetModel::hidden_batch): teacher-forced passes (feature
//!   extraction), no cache;
//! * [`BatchSession`]: prefill plus one-token steps with per-sequence caches, driven by
//!   [`eda_core::generate::generate_batch_with`] in
//!   [`Target::generate_batch`](eda_core::TargetModel::generate_batch); finished sequences
//!   leave the batch.
//!
//! ```
//! use eda_core::{GenerationConfig, TargetModel};
//! use eda_models::{CausalLm, ModelConfig, Target};
//! let device = eda_core::backend::device_from_name("cpu").unwrap();
//! let mut t = Target::new(CausalLm::new(&ModelConfig::llama(32, 16, 32, 1, 2, 1, 64), &device), "random".into());
//! let outs = t.forward_batch(&[vec![1, 2, 3], vec![4]]).unwrap();
//! assert_eq!(outs[0].logits.dims(), [3, 32]);
//! assert_eq!(outs[1].hidden.dims(), [1, 16]);
//! let cfg = GenerationConfig { max_new_tokens: 4, ..GenerationConfig::greedy() };
//! let gen = t.generate_batch(&[vec![1, 2], vec![3, 4, 5]], &[cfg.clone(), cfg]).unwrap();
//! assert_eq!(gen[1].tokens.len(), 4);
//! ```

use burn::tensor::{Device, Int, Tensor, TensorData};

use eda_core::backend::to_vec_f32;
use eda_core::generate::BatchDecoder;
use eda_core::{EdaError, Result, TokenId};

use crate::layers::KvCache;
use crate::model::CausalLm;

/// Most sequences one batched call accepts (the packed activations grow with the batch).
pub const MAX_BATCH_SIZE: usize = 256;

/// Checks a batch: non-empty, at most [`MAX_BATCH_SIZE`] sequences, none empty, none longer than
/// the model's positions, every token in the vocabulary.
pub(crate) fn check_batch<S: AsRef<[TokenId]>>(lm: &CausalLm, seqs: &[S]) -> Result<()> {
    if seqs.is_empty() {
        return Err(EdaError::InvalidArgument("a batch needs at least one sequence".into()));
    }
    if seqs.len() > MAX_BATCH_SIZE {
        return Err(EdaError::InvalidArgument(format!("a batch of {} sequences exceeds the maximum of {MAX_BATCH_SIZE}", seqs.len())));
    }
    let cfg = lm.config();
    for (i, s) in seqs.iter().enumerate() {
        let s = s.as_ref();
        if s.is_empty() {
            return Err(EdaError::InvalidArgument(format!("sequence {i} of the batch is empty")));
        }
        if s.len() > cfg.max_position_embeddings {
            return Err(EdaError::SequenceTooLong { len: s.len(), max: cfg.max_position_embeddings });
        }
        check_vocab(lm, s)?;
    }
    Ok(())
}

fn check_vocab(lm: &CausalLm, tokens: &[TokenId]) -> Result<()> {
    let vocab = lm.config().vocab_size;
    match tokens.iter().find(|&&t| t as usize >= vocab) {
        Some(t) => Err(EdaError::InvalidArgument(format!("token id {t} is outside the vocabulary of {vocab}"))),
        None => Ok(()),
    }
}

/// The packed `[1, N]` token ids of `seqs` and their lengths.
fn pack<S: AsRef<[TokenId]>>(seqs: &[S], device: &Device) -> (Tensor<2, Int>, Vec<usize>) {
    let lens: Vec<usize> = seqs.iter().map(|s| s.as_ref().len()).collect();
    let ids: Vec<i64> = seqs.iter().flat_map(|s| s.as_ref().iter().map(|&t| t as i64)).collect();
    let n = ids.len();
    (Tensor::from_data(TensorData::new(ids, [1, n]), device), lens)
}

/// Teacher-forced packed forward of `seqs` (validated): final-norm hidden states `[1, N, hidden]`
/// and the sequence lengths.
pub(crate) fn packed_hidden<S: AsRef<[TokenId]>>(lm: &CausalLm, seqs: &[S], device: &Device) -> Result<(Tensor<3>, Vec<usize>)> {
    check_batch(lm, seqs)?;
    let (ids, lens) = pack(seqs, device);
    Ok((lm.forward_hidden_varlen(lm.embed(ids), &lens, None), lens))
}

/// Splits a packed `[1, N, width]` tensor into per-sequence `[len, width]` tensors.
pub(crate) fn split_rows(packed: Tensor<3>, lens: &[usize]) -> Vec<Tensor<2>> {
    let [_, _, w] = packed.dims();
    let mut offset = 0;
    lens.iter()
        .map(|&l| {
            let t = packed.clone().narrow(1, offset, l).reshape([l, w]);
            offset += l;
            t
        })
        .collect()
}

/// Several sequences decoded together, each with its own per-layer KV caches: the
/// [`BatchDecoder`] behind [`Target::generate_batch`](eda_core::TargetModel::generate_batch).
///
/// Every call runs one packed forward over the new tokens of the live sequences (whole prompts
/// at [`prefill`](BatchDecoder::prefill), one token each at [`step`](BatchDecoder::step)) and
/// computes logits only at each sequence's last position. Sequences a step does not list are
/// finished and their caches are dropped, so the batch shrinks as sequences end.
///
/// ```
/// use eda_core::generate::BatchDecoder;
/// use eda_models::{CausalLm, ModelConfig, Target};
/// let device = eda_core::backend::device_from_name("cpu").unwrap();
/// let t = Target::new(CausalLm::new(&ModelConfig::qwen2(32, 16, 32, 1, 2, 1, 64), &device), "random".into());
/// let mut s = t.batch_session();
/// let first = s.prefill(&[&[1, 2, 3], &[4]]).unwrap();
/// assert_eq!((first.len(), first[0].len()), (2, 32));
/// let next = s.step(&[1], &[7]).unwrap(); // sequence 0 finished
/// assert_eq!(s.live(), &[1]);
/// assert_eq!(s.cache_lens(), vec![2]);
/// # let _ = next;
/// ```
#[derive(Debug)]
pub struct BatchSession<'a> {
    lm: &'a CausalLm,
    /// LM head `[hidden, vocab]` (the target's materialised copy).
    head: &'a Tensor<2>,
    /// KV caches indexed `[layer][slot]`.
    caches: Vec<Vec<KvCache>>,
    /// The sequence (prefill index) held by each slot, increasing.
    live: Vec<usize>,
    device: Device,
}

impl<'a> BatchSession<'a> {
    /// An empty session over `lm` with LM head `head` (`[hidden, vocab]`).
    pub(crate) fn new(lm: &'a CausalLm, head: &'a Tensor<2>, device: Device) -> Self {
        BatchSession { lm, head, caches: Vec::new(), live: Vec::new(), device }
    }

    /// The sequences still in the batch (prefill indices, increasing).
    pub fn live(&self) -> &[usize] {
        &self.live
    }

    /// Cached positions of each live sequence, in [`live`](Self::live) order.
    pub fn cache_lens(&self) -> Vec<usize> {
        self.caches.first().map(|l| l.iter().map(KvCache::len).collect()).unwrap_or_default()
    }

    /// Runs the new tokens of the live sequences and returns each one's last-position logits.
    fn run(&mut self, ids: Tensor<2, Int>, lens: &[usize]) -> Result<Vec<Vec<f32>>> {
        let hidden = self.lm.forward_hidden_varlen(self.lm.embed(ids), lens, Some(&mut self.caches));
        let [_, n, h] = hidden.dims();
        let last = if n == lens.len() {
            hidden
        } else {
            let idx: Vec<i64> = lens
                .iter()
                .scan(0usize, |end, &l| {
                    *end += l;
                    Some(*end as i64 - 1)
                })
                .collect();
            hidden.select(1, Tensor::<1, Int>::from_data(TensorData::new(idx, [lens.len()]), &self.device))
        };
        debug_assert_eq!(last.dims(), [1, lens.len(), h]);
        let vocab = self.lm.config().vocab_size;
        let logits = to_vec_f32(last.matmul(self.head.clone().unsqueeze::<3>()))?;
        Ok(logits.chunks_exact(vocab).map(<[f32]>::to_vec).collect())
    }
}

impl BatchDecoder for BatchSession<'_> {
    /// Starts a new batch (any previous one is dropped). Errors as
    /// [`forward_batch`](eda_core::TargetModel::forward_batch).
    fn prefill(&mut self, prompts: &[&[TokenId]]) -> Result<Vec<Vec<f32>>> {
        check_batch(self.lm, prompts)?;
        let layers = self.lm.layers.len();
        self.caches = (0..layers).map(|_| (0..prompts.len()).map(|_| KvCache::new()).collect()).collect();
        self.live = (0..prompts.len()).collect();
        let (ids, lens) = pack(prompts, &self.device);
        self.run(ids, &lens)
    }

    /// Errors: [`EdaError::InvalidArgument`] when `seqs` is empty, not strictly increasing, names
    /// a sequence that is not live, or differs in length from `tokens`, or a token is outside the
    /// vocabulary; [`EdaError::SequenceTooLong`] when a sequence would pass the maximum
    /// positions. A failed step changes nothing.
    fn step(&mut self, seqs: &[usize], tokens: &[TokenId]) -> Result<Vec<Vec<f32>>> {
        if seqs.is_empty() || seqs.len() != tokens.len() {
            return Err(EdaError::InvalidArgument(format!(
                "a step needs one token per sequence, got {} sequences and {} tokens",
                seqs.len(),
                tokens.len()
            )));
        }
        if seqs.windows(2).any(|w| w[1] <= w[0]) {
            return Err(EdaError::InvalidArgument(format!("step sequences must be strictly increasing, got {seqs:?}")));
        }
        let mut keep = Vec::with_capacity(seqs.len());
        let mut slot = 0;
        for &s in seqs {
            while slot < self.live.len() && self.live[slot] < s {
                slot += 1;
            }
            if self.live.get(slot) != Some(&s) {
                return Err(EdaError::InvalidArgument(format!("sequence {s} is not live in this batch (live: {:?})", self.live)));
            }
            keep.push(slot);
        }
        check_vocab(self.lm, tokens)?;
        let max = self.lm.config().max_position_embeddings;
        let lens = self.cache_lens();
        if let Some(&l) = keep.iter().map(|&k| &lens[k]).max() {
            if l >= max {
                return Err(EdaError::SequenceTooLong { len: l + 1, max });
            }
        }
        if keep.len() != self.live.len() {
            // Finished sequences leave the batch: later steps only pay for live ones.
            for layer in &mut self.caches {
                *layer = keep.iter().map(|&k| std::mem::take(&mut layer[k])).collect();
            }
            self.live = seqs.to_vec();
        }
        let (ids, lens) = pack(&tokens.iter().map(std::slice::from_ref).collect::<Vec<_>>(), &self.device);
        self.run(ids, &lens)
    }
}
