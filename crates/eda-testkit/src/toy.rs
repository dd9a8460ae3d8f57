//! Tiny, exact toy models for tests and doc examples.
//!
//! [`ToyLm`] is a second-order Markov language model implementing [`TargetModel`] with burn
//! tensors: the logits at a position depend on its own token and on the token of the *nearest
//! earlier key it may attend to* under the attention mask. Under a causal mask that is the
//! previous token; under a tree mask it is the node's parent. Its KV "cache" honestly stores the
//! tokens and positions it was fed, and every call checks the mask, the positions and the cache
//! bookkeeping (a wrong `retain_cache` or a wrong tree position makes it return an error or
//! change its predictions), so speculative decoding over it exercises the real code paths.
//!
//! [`ToyEagleDraft`] is an EAGLE-style [`DraftModel`] for a [`ToyLm`]: it reads pairs (target
//! feature `h_t`, token `x_{t+1}`) and predicts `x_{t+2}`; with zero noise it is a perfect draft.
//! [`ReducedDraft`] restricts any draft to a subset of the vocabulary (sparse logits with
//! `token_ids`), as an EAGLE-3 style reduced-vocabulary draft.
//!
//! ```
//! use eda_core::{backend::device_from_name, generate::generate_autoregressive, GenerationConfig};
//! use eda_testkit::ToyLm;
//! let device = device_from_name("cpu").unwrap();
//! let mut lm = ToyLm::random(8, 64, 3.0, 1, &device);
//! let out = generate_autoregressive(&mut lm, &[1, 2], &GenerationConfig { max_new_tokens: 5, ..GenerationConfig::greedy() }).unwrap();
//! assert_eq!(out.tokens.len(), 5);
//! assert_eq!(lm.cache_len(), 2 + 5 - 1);
//! # use eda_core::TargetModel;
//! ```

use burn::tensor::{Device, Int, Tensor, TensorData};
use rand::Rng;

use eda_core::sampling::seeded_rng;
use eda_core::{AttentionMask, DraftInfo, DraftModel, DraftOutput, EdaError, ModelInfo, Result, TargetModel, TargetOutput, TokenId};

fn random_table(rows: usize, cols: usize, scale: f32, seed: u64) -> Vec<f32> {
    let mut rng = seeded_rng(seed);
    // Sum of three uniforms: roughly normal, bounded.
    (0..rows * cols).map(|_| scale * (rng.random::<f32>() + rng.random::<f32>() + rng.random::<f32>() - 1.5)).collect()
}

fn tensor2(values: Vec<f32>, rows: usize, cols: usize, device: &Device) -> Tensor<2> {
    Tensor::<2>::from_data(TensorData::new(values, [rows, cols]), device)
}

fn index_tensor(idx: &[usize], device: &Device) -> Tensor<1, Int> {
    Tensor::<1, Int>::from_data(TensorData::new(idx.iter().map(|&i| i as i64).collect::<Vec<_>>(), [idx.len()]), device)
}

/// For each new row of `mask`, the key column of the nearest earlier allowed key (`None` if the
/// row attends to nothing before itself). Fails when a row does not see itself or sees a later
/// new position.
fn nearest_predecessors(mask: &AttentionMask) -> Result<Vec<Option<usize>>> {
    let past = mask.past();
    let mut out = Vec::with_capacity(mask.new_len());
    for i in 0..mask.new_len() {
        if !mask.allowed(i, past + i) {
            return Err(EdaError::InvalidArgument(format!("toy model: mask row {i} does not attend to itself")));
        }
        if (past + i + 1..mask.total()).any(|c| mask.allowed(i, c)) {
            return Err(EdaError::InvalidArgument(format!("toy model: mask row {i} attends to a later position")));
        }
        out.push((0..past + i).rev().find(|&c| mask.allowed(i, c)));
    }
    Ok(out)
}

/// A tiny second-order Markov LM: `logits(i) = A[x_i] + B[x_prev(i)]`, where `x_prev(i)` is the
/// token at the nearest earlier key position `i` attends to (a learned "start" row when none).
/// Hidden states are one-hot encodings of `x_i` (so `hidden_size == vocab_size`).
#[derive(Debug, Clone)]
pub struct ToyLm {
    info: ModelInfo,
    device: Device,
    vocab: usize,
    a: Vec<f32>,
    b: Vec<f32>,
    a_t: Tensor<2>,
    b_t: Tensor<2>,
    eye: Tensor<2>,
    /// Cached (token, position) pairs.
    cache: Vec<(TokenId, usize)>,
    /// Calls of `forward_masked` so far.
    forward_calls: usize,
}

impl ToyLm {
    /// A random toy LM over `vocab` tokens with `max_positions` positions; logits have a spread
    /// of about `scale` (larger is more peaked). Deterministic in `seed`.
    pub fn random(vocab: usize, max_positions: usize, scale: f32, seed: u64, device: &Device) -> Self {
        let a = random_table(vocab, vocab, scale, seed.wrapping_mul(2).wrapping_add(11));
        let b = random_table(vocab + 1, vocab, scale, seed.wrapping_mul(2).wrapping_add(12));
        Self::from_tables(vocab, max_positions, a, b, device, format!("toy-lm-{vocab}-{seed}"))
    }

    /// A "wrong domain" relative of `self`: the same tables plus random noise of spread `noise`.
    pub fn perturbed(&self, noise: f32, seed: u64) -> Self {
        let v = self.vocab;
        let na = random_table(v, v, noise, seed.wrapping_add(1000));
        let nb = random_table(v + 1, v, noise, seed.wrapping_add(2000));
        let a = self.a.iter().zip(na).map(|(x, n)| x + n).collect();
        let b = self.b.iter().zip(nb).map(|(x, n)| x + n).collect();
        Self::from_tables(v, self.info.max_position_embeddings, a, b, &self.device, format!("{}-perturbed-{seed}", self.info.identity))
    }

    fn from_tables(vocab: usize, max_positions: usize, a: Vec<f32>, b: Vec<f32>, device: &Device, identity: String) -> Self {
        let mut eye = vec![0.0; vocab * vocab];
        for i in 0..vocab {
            eye[i * vocab + i] = 1.0;
        }
        ToyLm {
            info: ModelInfo {
                model_type: "toy".into(),
                vocab_size: vocab,
                hidden_size: vocab,
                max_position_embeddings: max_positions,
                eos_token_ids: vec![],
                identity,
            },
            device: device.clone(),
            vocab,
            a_t: tensor2(a.clone(), vocab, vocab, device),
            b_t: tensor2(b.clone(), vocab + 1, vocab, device),
            eye: tensor2(eye, vocab, vocab, device),
            a,
            b,
            cache: Vec::new(),
            forward_calls: 0,
        }
    }

    /// Sets the maximum number of positions.
    pub fn with_max_positions(mut self, max_positions: usize) -> Self {
        self.info.max_position_embeddings = max_positions;
        self
    }

    /// Sets the end-of-sequence tokens of [`ModelInfo::eos_token_ids`] (none by default).
    pub fn with_eos_tokens(mut self, eos: Vec<TokenId>) -> Self {
        self.info.eos_token_ids = eos;
        self
    }

    /// Calls of [`TargetModel::forward_masked`] so far (every forward, prefill, decode or tree
    /// pass, is one call; clones copy the count).
    pub fn forward_calls(&self) -> usize {
        self.forward_calls
    }

    /// The exact next-token logits after the token pair (`prev`, `cur`), computed on the host
    /// from the model's tables, independently of the tensor forward pass: `A[cur] + B[prev]`,
    /// with the learned start row of `B` when `prev` is `None` (`cur` is the first token).
    /// `None` for a token outside the vocabulary.
    ///
    /// ```
    /// use eda_core::{backend::{device_from_name, to_vec_f32}, TargetModel};
    /// let mut lm = eda_testkit::ToyLm::random(6, 16, 2.0, 3, &device_from_name("cpu").unwrap());
    /// let out = to_vec_f32(lm.forward(&[4, 1]).unwrap().logits).unwrap();
    /// assert_eq!(&out[6..], &lm.next_logits(Some(4), 1).unwrap()[..]);
    /// assert_eq!(&out[..6], &lm.next_logits(None, 4).unwrap()[..]);
    /// ```
    pub fn next_logits(&self, prev: Option<TokenId>, cur: TokenId) -> Option<Vec<f32>> {
        let v = self.vocab;
        let cur = cur as usize;
        let prev = match prev {
            Some(p) if (p as usize) < v => p as usize,
            Some(_) => return None,
            None => v,
        };
        if cur >= v {
            return None;
        }
        Some(self.a[cur * v..(cur + 1) * v].iter().zip(&self.b[prev * v..(prev + 1) * v]).map(|(a, b)| a + b).collect())
    }

    /// The cached tokens, in cache order.
    pub fn cached_tokens(&self) -> Vec<TokenId> {
        self.cache.iter().map(|c| c.0).collect()
    }

    fn check_tokens(&self, tokens: &[TokenId]) -> Result<()> {
        if let Some(t) = tokens.iter().find(|&&t| t as usize >= self.vocab) {
            return Err(EdaError::InvalidArgument(format!("toy model: token {t} outside vocabulary of {}", self.vocab)));
        }
        Ok(())
    }
}

/// Refuses a retain list that is not strictly increasing or reaches past a cache of `len`.
fn check_keep(who: &str, keep: &[usize], len: usize) -> Result<()> {
    if keep.windows(2).any(|w| w[0] >= w[1]) || keep.last().is_some_and(|&k| k >= len) {
        return Err(EdaError::InvalidArgument(format!("{who}: bad retain list {keep:?} for cache of {len}")));
    }
    Ok(())
}

impl TargetModel for ToyLm {
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
        check_keep("toy model", keep, self.cache.len())?;
        let kept: Vec<(TokenId, usize)> = keep.iter().map(|&k| self.cache[k]).collect();
        // Positions must be contiguous after retaining: a retained tree path has depths 0, 1, 2...
        if let Some((j, _)) = kept.iter().enumerate().find(|(j, c)| c.1 != *j) {
            return Err(EdaError::InvalidArgument(format!("toy model: retained row {j} has position {}, expected {j}", kept[j].1)));
        }
        self.cache = kept;
        Ok(())
    }

    fn forward_masked(&mut self, tokens: &[TokenId], positions: &[usize], mask: &AttentionMask) -> Result<TargetOutput> {
        self.forward_calls += 1;
        self.check_tokens(tokens)?;
        let past = self.cache.len();
        if mask.past() != past || mask.new_len() != tokens.len() || positions.len() != tokens.len() || tokens.is_empty() {
            return Err(EdaError::InvalidArgument(format!(
                "toy model: mask past {} / new {} vs cache {past} / {} tokens / {} positions",
                mask.past(),
                mask.new_len(),
                tokens.len(),
                positions.len()
            )));
        }
        if let Some(&p) = positions.iter().find(|&&p| p >= self.info.max_position_embeddings) {
            return Err(EdaError::SequenceTooLong { len: p + 1, max: self.info.max_position_embeddings });
        }
        let preds = nearest_predecessors(mask)?;
        let mut prev_tokens = Vec::with_capacity(tokens.len());
        for (i, pred) in preds.iter().enumerate() {
            let (prev_tok, expected_pos) = match pred {
                None => (self.vocab, 0),
                Some(c) if *c < past => (self.cache[*c].0 as usize, self.cache[*c].1 + 1),
                Some(c) => (tokens[c - past] as usize, positions[c - past] + 1),
            };
            if positions[i] != expected_pos {
                return Err(EdaError::InvalidArgument(format!(
                    "toy model: row {i} at position {} but its predecessor implies {expected_pos}",
                    positions[i]
                )));
            }
            prev_tokens.push(prev_tok);
        }
        for (t, p) in tokens.iter().zip(positions) {
            self.cache.push((*t, *p));
        }
        let cur: Vec<usize> = tokens.iter().map(|&t| t as usize).collect();
        let logits = self.a_t.clone().select(0, index_tensor(&cur, &self.device))
            + self.b_t.clone().select(0, index_tensor(&prev_tokens, &self.device));
        let hidden = self.eye.clone().select(0, index_tensor(&cur, &self.device));
        Ok(TargetOutput { logits, hidden })
    }

    fn embedding_weight(&self) -> Tensor<2> {
        self.eye.clone()
    }

    fn lm_head_weight(&self) -> Tensor<2> {
        self.a_t.clone()
    }
}

/// An EAGLE-style draft for a [`ToyLm`]: input pair (feature `h_t`, token `x_{t+1}`) at position
/// `t`; it decodes `x_t = argmax h_t` and predicts `x_{t+2}` with
/// `A[x_{t+1}] + B[x_t] + noise[x_{t+1}]`. Its output feature is `onehot(x_{t+1})`, the target's
/// `h_{t+1}`. With `noise = 0` it reproduces the target exactly.
#[derive(Debug, Clone)]
pub struct ToyEagleDraft {
    vocab: usize,
    device: Device,
    a_t: Tensor<2>,
    b_t: Tensor<2>,
    eye: Tensor<2>,
    cache: Vec<(TokenId, usize)>,
}

impl ToyEagleDraft {
    /// A draft for `target` whose logits get random noise of spread `noise` (0 = perfect draft).
    pub fn for_target(target: &ToyLm, noise: f32, seed: u64) -> Self {
        let v = target.vocab;
        let n = random_table(v, v, noise, seed.wrapping_add(3000));
        let a: Vec<f32> = target.a.iter().zip(n).map(|(x, n)| x + n).collect();
        ToyEagleDraft {
            vocab: v,
            device: target.device.clone(),
            a_t: tensor2(a, v, v, &target.device),
            b_t: target.b_t.clone(),
            eye: target.eye.clone(),
            cache: Vec::new(),
        }
    }
}

impl DraftModel for ToyEagleDraft {
    fn info(&self) -> DraftInfo {
        DraftInfo { vocab_size: self.vocab, hidden_size: self.vocab, uses_target_features: true }
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
        check_keep("toy draft", keep, self.cache.len())?;
        self.cache = keep.iter().map(|&k| self.cache[k]).collect();
        Ok(())
    }

    fn forward_masked(
        &mut self,
        tokens: &[TokenId],
        features: Option<Tensor<2>>,
        positions: &[usize],
        mask: &AttentionMask,
    ) -> Result<DraftOutput> {
        let features = features.ok_or_else(|| EdaError::InvalidArgument("toy EAGLE draft needs target features".into()))?;
        let [rows, h] = features.dims();
        let past = self.cache.len();
        if rows != tokens.len()
            || h != self.vocab
            || mask.past() != past
            || mask.new_len() != tokens.len()
            || positions.len() != tokens.len()
            || tokens.is_empty()
        {
            return Err(EdaError::InvalidArgument(format!(
                "toy draft: {} tokens, features {rows}x{h}, {} positions, mask past {} new {}, cache {past}",
                tokens.len(),
                positions.len(),
                mask.past(),
                mask.new_len()
            )));
        }
        if let Some(t) = tokens.iter().find(|&&t| t as usize >= self.vocab) {
            return Err(EdaError::InvalidArgument(format!("toy draft: token {t} outside vocabulary")));
        }
        // Positions must follow the mask (nearest visible predecessor + 1) like in the target.
        for (i, pred) in nearest_predecessors(mask)?.iter().enumerate() {
            let expected = match pred {
                None => 0,
                Some(c) if *c < past => self.cache[*c].1 + 1,
                Some(c) => positions[c - past] + 1,
            };
            if positions[i] != expected {
                return Err(EdaError::InvalidArgument(format!(
                    "toy draft: row {i} at position {} but its predecessor implies {expected}",
                    positions[i]
                )));
            }
        }
        let prev: Vec<i64> = features
            .argmax(1)
            .reshape([rows])
            .into_data()
            .convert::<i64>()
            .try_into_vec::<i64>()
            .map_err(|e| EdaError::InvalidArgument(format!("{e:?}")))?;
        let prev: Vec<usize> = prev.iter().map(|&p| p as usize).collect();
        let cur: Vec<usize> = tokens.iter().map(|&t| t as usize).collect();
        for (t, p) in tokens.iter().zip(positions) {
            self.cache.push((*t, *p));
        }
        let logits =
            self.a_t.clone().select(0, index_tensor(&cur, &self.device)) + self.b_t.clone().select(0, index_tensor(&prev, &self.device));
        let hidden = self.eye.clone().select(0, index_tensor(&cur, &self.device));
        Ok(DraftOutput::new(logits, hidden))
    }
}

/// Any [`DraftModel`] restricted to a subset of the vocabulary (EAGLE-3's reduced draft
/// vocabulary): its logits keep only the columns of `ids` and the output declares them in
/// [`DraftOutput::token_ids`], so the draft can never propose another token.
///
/// ```
/// use eda_core::{backend::device_from_name, AttentionMask, DraftModel};
/// use eda_testkit::{ReducedDraft, ToyEagleDraft, ToyLm};
/// let device = device_from_name("cpu").unwrap();
/// let target = ToyLm::random(8, 32, 2.0, 7, &device);
/// let mut d = ReducedDraft::new(Box::new(ToyEagleDraft::for_target(&target, 0.0, 1)), vec![1, 5, 6]).unwrap();
/// let feature = burn::tensor::Tensor::<2>::zeros([1, 8], &device);
/// let out = d.forward_masked(&[2], Some(feature), &[0], &AttentionMask::causal(0, 1)).unwrap();
/// assert_eq!(out.logits.dims(), [1, 3]);
/// assert_eq!(out.token(1), Some(5));
/// ```
pub struct ReducedDraft {
    inner: Box<dyn DraftModel>,
    ids: std::sync::Arc<[TokenId]>,
    columns: Vec<usize>,
}

impl ReducedDraft {
    /// Restricts `inner` to the target tokens `ids` (distinct, inside its vocabulary;
    /// [`EdaError::InvalidArgument`] otherwise).
    pub fn new(inner: Box<dyn DraftModel>, ids: Vec<TokenId>) -> Result<Self> {
        let vocab = inner.info().vocab_size;
        let mut seen = vec![false; vocab];
        for &t in &ids {
            match seen.get_mut(t as usize) {
                Some(s) if !*s => *s = true,
                _ => {
                    return Err(EdaError::InvalidArgument(format!(
                        "reduced draft: token {t} is outside the vocabulary of {vocab} or listed twice"
                    )))
                }
            }
        }
        if ids.is_empty() {
            return Err(EdaError::InvalidArgument("reduced draft: empty vocabulary".into()));
        }
        let columns = ids.iter().map(|&t| t as usize).collect();
        Ok(ReducedDraft { inner, ids: ids.into(), columns })
    }
}

impl std::fmt::Debug for ReducedDraft {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReducedDraft").field("ids", &self.ids).finish()
    }
}

impl DraftModel for ReducedDraft {
    fn info(&self) -> DraftInfo {
        self.inner.info()
    }

    fn cache_len(&self) -> usize {
        self.inner.cache_len()
    }

    fn reset_cache(&mut self) {
        self.inner.reset_cache()
    }

    fn truncate_cache(&mut self, len: usize) -> Result<()> {
        self.inner.truncate_cache(len)
    }

    fn retain_cache(&mut self, keep: &[usize]) -> Result<()> {
        self.inner.retain_cache(keep)
    }

    fn forward_masked(
        &mut self,
        tokens: &[TokenId],
        features: Option<Tensor<2>>,
        positions: &[usize],
        mask: &AttentionMask,
    ) -> Result<DraftOutput> {
        let out = self.inner.forward_masked(tokens, features, positions, mask)?;
        let index = index_tensor(&self.columns, &out.logits.device());
        Ok(DraftOutput::new(out.logits.select(1, index), out.hidden).with_token_ids(self.ids.clone()))
    }
}
