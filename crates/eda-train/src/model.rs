//! The interface the training loop needs from a draft ([`TrainableDraft`]) and parameter
//! bookkeeping helpers.

use std::path::Path;

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::{Int, Tensor};
use eda_core::{Result, TokenId};

/// Output of a training forward pass.
#[derive(Debug, Clone)]
pub struct TrainForward {
    /// Predicted features `ĥ_{t+1}`, `[B, T, hidden]`.
    pub hidden: Tensor<3>,
    /// Load-balancing loss of the shared router, shape `[1]`.
    pub aux_loss_shared: Tensor<1>,
    /// Load-balancing loss of the private router, shape `[1]`.
    pub aux_loss_private: Tensor<1>,
}

/// A draft that [`DraftTrainer`](crate::DraftTrainer) can train.
///
/// Which parameters are trained is decided by the module itself: every float parameter whose
/// tensor requires a gradient is trained, the others (frozen embedding, LM head, the shared
/// group in stage 2) are left bit-identical. `eda_draft::EdaDraft` implements this trait.
pub trait TrainableDraft: Module + Sized {
    /// Width of the features read and produced.
    fn hidden_size(&self) -> usize;

    /// Vocabulary size (rows of the LM head).
    fn vocab_size(&self) -> usize;

    /// Training forward: `tokens` `[B, T]` are `x_{t+1}`, `features` `[B, T, H]` are `h_t`.
    /// Padding is on the right, so causal attention needs no key-padding mask.
    fn forward_train(&self, tokens: Tensor<2, Int>, features: Tensor<3>) -> TrainForward;

    /// The draft's logits of features through its (frozen) LM head, `[B, T, H] → [B, T, K]`:
    /// `K = V` columns, or the `K` columns of a reduced draft vocabulary
    /// ([`draft_vocab`](Self::draft_vocab)).
    fn logits3(&self, hidden: Tensor<3>) -> Tensor<3>;

    /// Logits over the whole target vocabulary, `[B, T, H] → [B, T, V]`: the target's
    /// distribution used as the soft label. Defaults to [`logits3`](Self::logits3), which is
    /// right for full-vocabulary drafts.
    fn target_logits3(&self, hidden: Tensor<3>) -> Tensor<3> {
        self.logits3(hidden)
    }

    /// The target token of each column of [`logits3`](Self::logits3) for a draft with a reduced
    /// vocabulary (EAGLE-3's `d2t`); `None` (the default) for the full vocabulary. The soft
    /// cross-entropy then uses the target's distribution restricted to these tokens
    /// ([`soft_cross_entropy`](crate::loss::soft_cross_entropy)).
    fn draft_vocab(&self) -> Option<&[TokenId]> {
        None
    }

    /// Writes the draft in its own checkpoint format into `dir` (used for the final export).
    fn save_draft(&self, dir: &Path) -> Result<()>;
}

/// Counts of parameters (scalars) in a module.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ParamTally {
    /// Scalars in parameters that require a gradient.
    pub trainable: usize,
    /// All float scalars.
    pub total: usize,
}

struct Tally(ParamTally);

impl ModuleVisitor for Tally {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let n = param.lazy_shape().num_elements();
        self.0.total += n;
        if param.val().is_require_grad() {
            self.0.trainable += n;
        }
    }
}

/// Trainable and total float parameters of any module.
pub fn tally_params<M: Module>(module: &M) -> ParamTally {
    let mut t = Tally(ParamTally::default());
    module.visit(&mut t);
    t.0
}
