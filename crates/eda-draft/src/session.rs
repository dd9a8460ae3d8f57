//! [`DraftSession`]: an [`EdaDraft`] with its own KV cache, implementing [`DraftModel`].

use burn::tensor::{Int, Tensor, TensorData};

use eda_core::{AttentionMask, DraftInfo, DraftModel, DraftOutput, EdaError, Result, TokenId};
use eda_models::layers::KvCache;

use crate::EdaDraft;

/// An [`EdaDraft`] plus a KV cache, for speculative decoding (spec §6.2).
///
/// Cache position `t` holds the pair (target feature `h_t`, token `x_{t+1}`); the output at that
/// position predicts `h_{t+1}` and hence `x_{t+2}`.
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
    cache: KvCache,
}

impl DraftSession {
    /// A session with an empty cache.
    ///
    /// For decoding, pass a model on a plain (non-autodiff) device, e.g. `model.valid()` of a
    /// model trained on an autodiff device; otherwise every call records a graph.
    pub fn new(model: EdaDraft) -> Self {
        DraftSession { model, cache: KvCache::new() }
    }

    /// The wrapped draft.
    pub fn model(&self) -> &EdaDraft {
        &self.model
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
        let features = features.expect("checked above");
        let n = tokens.len();
        let h = self.model.config().hidden_size;
        let device = self.model.device();
        let ids: Vec<i64> = tokens.iter().map(|&t| t as i64).collect();
        let ids = Tensor::<2, Int>::from_data(TensorData::new(ids, [1, n]), &device);
        let bias = Tensor::<2>::from_data(TensorData::new(mask.to_bias(), [n, mask.total()]), &device);
        let features = features.to_device(&device).reshape([1, n, h]);
        let hidden = self.model.layer_forward(ids, features, positions, Some(&mut self.cache), Some(bias)).reshape([n, h]);
        let logits = self.model.logits(hidden.clone());
        Ok(DraftOutput { logits, hidden })
    }
}
