//! [`LmDraft`]: any small [`TargetModel`] (sharing the target's tokenizer) used as a draft.

use burn::tensor::Tensor;

use eda_core::{AttentionMask, DraftInfo, DraftModel, DraftOutput, EdaError, Result, TargetModel, TokenId};

/// Adapts a plain language model to [`DraftModel`]: it reads tokens only
/// (`uses_target_features == false`), so it also consumes `x_0`, and its outputs are its own
/// logits and last-layer hidden states.
///
/// ```
/// use eda_core::{backend::device_from_name, DraftModel};
/// use eda_spec::LmDraft;
/// use eda_testkit::ToyLm;
/// let device = device_from_name("cpu").unwrap();
/// let draft = LmDraft::new(Box::new(ToyLm::random(8, 32, 2.0, 7, &device)));
/// assert!(!draft.info().uses_target_features);
/// assert_eq!(draft.info().vocab_size, 8);
/// ```
pub struct LmDraft {
    model: Box<dyn TargetModel>,
}

impl LmDraft {
    /// Wraps `model`.
    pub fn new(model: Box<dyn TargetModel>) -> Self {
        LmDraft { model }
    }

    /// The wrapped model.
    pub fn model(&self) -> &dyn TargetModel {
        self.model.as_ref()
    }

    /// Unwraps the model.
    pub fn into_inner(self) -> Box<dyn TargetModel> {
        self.model
    }
}

impl std::fmt::Debug for LmDraft {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LmDraft").field("model", &self.model.info().identity).finish()
    }
}

impl DraftModel for LmDraft {
    fn info(&self) -> DraftInfo {
        let i = self.model.info();
        DraftInfo { vocab_size: i.vocab_size, hidden_size: i.hidden_size, uses_target_features: false }
    }

    fn cache_len(&self) -> usize {
        self.model.cache_len()
    }

    fn reset_cache(&mut self) {
        self.model.reset_cache()
    }

    fn truncate_cache(&mut self, len: usize) -> Result<()> {
        self.model.truncate_cache(len)
    }

    fn retain_cache(&mut self, keep: &[usize]) -> Result<()> {
        self.model.retain_cache(keep)
    }

    fn forward_masked(
        &mut self,
        tokens: &[TokenId],
        features: Option<Tensor<2>>,
        positions: &[usize],
        mask: &AttentionMask,
    ) -> Result<DraftOutput> {
        if features.is_some() {
            return Err(EdaError::InvalidArgument("LmDraft reads tokens only; it was given target features".into()));
        }
        let out = self.model.forward_masked(tokens, positions, mask)?;
        Ok(DraftOutput::new(out.logits, out.hidden))
    }
}
