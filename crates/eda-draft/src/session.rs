//! [`DraftSession`]: an [`EdaDraft`] with its own KV cache, implementing [`DraftModel`].

use burn::tensor::{Tensor, TensorData};

use eda_core::{AttentionMask, DraftInfo, DraftModel, DraftOutput, EdaError, Result, TokenId};
use eda_models::layers::KvCache;

use crate::fast::FastDraft;
use crate::EdaDraft;

/// An [`EdaDraft`] plus a KV cache, for speculative decoding (docs/method.md §6.2).
///
/// Cache position `t` holds the pair (target feature `h_t`, token `x_{t+1}`); the output at that
/// position predicts `h_{t+1}` and hence `x_{t+2}`.
///
/// Decoding runs the [`FastDraft`] path built once in [`new`](Self::new): contiguous fused
/// weights and a materialised `[hidden, K]` LM head on the non-autodiff device, experts evaluated
/// only where routed. A reduced-vocabulary draft returns `[n, K]` logits with
/// [`DraftOutput::token_ids`] set to its `d2t` mapping.
///
/// ```
/// use burn::tensor::Tensor;
/// use eda_core::{AttentionMask, DraftModel};
/// use eda_draft::{DraftSession, EdaDraft, EdaDraftConfig};
/// let d = eda_core::backend::device_from_name("cpu").unwrap();
/// let cfg = EdaDraftConfig::tiny(32, 16);
/// let emb = Tensor::<2>::random([32, 16], burn::tensor::Distribution::Normal(0.0, 1.0), &d);
/// let mut s = DraftSession::new(EdaDraft::new(&cfg, emb.clone(), emb, &d).unwrap());
/// let out = s.forward_masked(&[3, 4], Some(Tensor::zeros([2, 16], &d)), &[0, 1], &AttentionMask::causal(0, 2)).unwrap();
/// assert_eq!(out.logits.dims(), [2, 32]);
/// assert_eq!(s.cache_len(), 2);
/// ```
#[derive(Debug, Clone)]
pub struct DraftSession {
    model: EdaDraft,
    fast: FastDraft,
    cache: KvCache,
}

impl DraftSession {
    /// A session with an empty cache. Materialises the decoding weights ([`FastDraft::new`]):
    /// a one-off copy of the draft's parameters and LM head rows (≈ `hidden × K` floats for the
    /// head), on the non-autodiff version of the model's device, so a model still on an autodiff
    /// device records no graph either.
    pub fn new(model: EdaDraft) -> Self {
        // The decoding path reads plain weights: fold in any LoRA adapters first.
        let model = model.merge_lora();
        let fast = FastDraft::new(&model);
        DraftSession { model, fast, cache: KvCache::new() }
    }

    /// The wrapped draft.
    pub fn model(&self) -> &EdaDraft {
        &self.model
    }

    /// The decoding path (for profiling its stages).
    pub fn fast(&self) -> &FastDraft {
        &self.fast
    }

    /// Gives the draft back (the cache is dropped).
    pub fn into_model(self) -> EdaDraft {
        self.model
    }

    fn check(&self, tokens: &[TokenId], features: &Option<Tensor<2>>, positions: &[usize], mask: &AttentionMask) -> Result<()> {
        let cfg = self.model.config();
        let n = tokens.len();
        if n == 0 {
            return Err(EdaError::InvalidArgument("draft forward needs at least one token".into()));
        }
        let Some(f) = features else {
            return Err(EdaError::InvalidArgument("the EDA draft needs target features ([n, hidden]) with its tokens".into()));
        };
        let [fr, fh] = f.dims();
        if fh != cfg.hidden_size {
            return Err(EdaError::mismatch("feature width (features vs draft hidden size)", cfg.hidden_size, fh));
        }
        if fr != n {
            return Err(EdaError::mismatch("feature rows (features vs tokens)", n, fr));
        }
        if positions.len() != n {
            return Err(EdaError::mismatch("positions (positions vs tokens)", n, positions.len()));
        }
        if let Some(&bad) = tokens.iter().find(|&&t| (t as usize) >= cfg.vocab_size) {
            return Err(EdaError::InvalidArgument(format!("token id {bad} is outside the draft vocabulary of {}", cfg.vocab_size)));
        }
        if let Some(&p) = positions.iter().max() {
            if p >= cfg.max_position_embeddings {
                return Err(EdaError::SequenceTooLong { len: p + 1, max: cfg.max_position_embeddings });
            }
        }
        if mask.past() != self.cache.len() {
            return Err(EdaError::mismatch("attention mask past length (cache vs mask)", self.cache.len(), mask.past()));
        }
        if mask.new_len() != n {
            return Err(EdaError::mismatch("attention mask rows (tokens vs mask)", n, mask.new_len()));
        }
        for i in 0..n {
            if !(0..mask.total()).any(|j| mask.allowed(i, j)) {
                return Err(EdaError::InvalidArgument(format!("attention mask row {i} allows no key")));
            }
        }
        Ok(())
    }
}

impl DraftModel for DraftSession {
    fn info(&self) -> DraftInfo {
        self.model.info()
    }

    fn cache_len(&self) -> usize {
        self.cache.len()
    }

    fn reset_cache(&mut self) {
        self.cache.reset();
    }

    fn truncate_cache(&mut self, len: usize) -> Result<()> {
        self.cache.truncate(len)
    }

    fn retain_cache(&mut self, keep: &[usize]) -> Result<()> {
        self.cache.retain(keep)
    }

    fn forward_masked(
        &mut self,
        tokens: &[TokenId],
        features: Option<Tensor<2>>,
        positions: &[usize],
        mask: &AttentionMask,
    ) -> Result<DraftOutput> {
        self.check(tokens, &features, positions, mask)?;
        let Some(features) = features else {
            return Err(EdaError::InvalidArgument("the EDA draft needs target features".into()));
        };
        let n = tokens.len();
        // A causal mask needs no bias tensor (none at all for one token).
        let bias =
            (!mask.is_causal()).then(|| Tensor::<2>::from_data(TensorData::new(mask.to_bias(), [n, mask.total()]), self.fast.device()));
        let (hidden, logits) = self.fast.forward(tokens, features, positions, &mut self.cache, bias)?;
        let out = DraftOutput::new(logits, hidden);
        Ok(match self.fast.token_ids() {
            Some(ids) => out.with_token_ids(ids.clone()),
            None => out,
        })
    }
}
