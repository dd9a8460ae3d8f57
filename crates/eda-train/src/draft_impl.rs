//! [`TrainableDraft`] for [`eda_draft::EdaDraft`], and the stage-1 / stage-2 draft builders.

use std::path::Path;

use burn::tensor::{Device, Int, Tensor};
use eda_core::Result;
use eda_draft::{EdaDraft, EdaDraftConfig, FreezePlan};

use crate::batch::derive_seed;
use crate::config::{PrivateInit, Stage2Freeze, TrainConfig};
use crate::model::{TrainForward, TrainableDraft};

impl TrainableDraft for EdaDraft {
    fn hidden_size(&self) -> usize {
        self.config().hidden_size
    }

    fn vocab_size(&self) -> usize {
        self.config().vocab_size
    }

    fn forward_train(&self, tokens: Tensor<2, Int>, features: Tensor<3>) -> TrainForward {
        let out = EdaDraft::forward_train(self, tokens, features);
        TrainForward { hidden: out.hidden, aux_loss_shared: out.aux_loss_shared, aux_loss_private: out.aux_loss_private }
    }

    fn logits3(&self, hidden: Tensor<3>) -> Tensor<3> {
        self.logits(hidden)
    }

    fn target_logits3(&self, hidden: Tensor<3>) -> Tensor<3> {
        self.target_logits(hidden)
    }

    fn draft_vocab(&self) -> Option<&[eda_core::TokenId]> {
        EdaDraft::draft_vocab(self)
    }

    fn save_draft(&self, dir: &Path) -> Result<()> {
        self.save(dir)
    }
}

impl Stage2Freeze {
    /// The corresponding [`FreezePlan`].
    pub fn plan(self) -> FreezePlan {
        match self {
            Stage2Freeze::SharedGroup => FreezePlan::SHARED,
            Stage2Freeze::Reference => FreezePlan::REFERENCE_STAGE2,
            Stage2Freeze::None => FreezePlan::NONE,
        }
    }
}

/// A fresh stage-1 draft around the *base* target's `embedding` and `lm_head`, initialised
/// deterministically from `train.seed`; every parameter but embedding and LM head trains. For a
/// reduced draft vocabulary pass a config without `draft_vocab_size` and call
/// [`EdaDraft::with_draft_vocab`] with [`vocab::top_k_tokens`](crate::vocab::top_k_tokens) of the
/// training data.
pub fn stage1_draft(
    cfg: &EdaDraftConfig,
    embedding: Tensor<2>,
    lm_head: Tensor<2>,
    train: &TrainConfig,
    device: &Device,
) -> Result<EdaDraft> {
    EdaDraft::new_seeded(cfg, embedding, lm_head, device, train.seed)
}

/// The stage-2 draft (docs/method.md §3.6): the stage-1 draft saved in `stage1_dir`, with `embedding` and
/// the **fine-tuned** target's `lm_head` (`[vocab, hidden]`, frozen), the private group
/// re-initialised (seeded by `train.seed`) unless `train.private_init` is
/// [`PrivateInit::FromStage1`], and `train.stage2_freeze` applied. With `train.lora` the
/// stage-1 draft is kept whole and frozen, with fresh LoRA adapters as its only trainable
/// parameters ([`EdaDraft::add_lora`]).
///
/// A reduced draft vocabulary of the stage-1 draft is kept (its `d2t` is loaded with it); call
/// [`EdaDraft::with_draft_vocab`] on the result to choose another one from the stage-2 data.
///
/// Mismatched vocabulary or hidden size between the stage-1 draft and the matrices gives
/// [`eda_core::EdaError::Mismatch`].
pub fn stage2_draft(stage1_dir: &Path, embedding: Tensor<2>, lm_head: Tensor<2>, train: &TrainConfig, device: &Device) -> Result<EdaDraft> {
    let draft = EdaDraft::load(stage1_dir, embedding, lm_head, device)?;
    if let Some(spec) = &train.lora {
        return draft.add_lora(spec, derive_seed(train.seed, 4, 0));
    }
    let draft = match train.private_init {
        PrivateInit::Random => draft.reinit_private(derive_seed(train.seed, 3, 0)),
        PrivateInit::FromStage1 => draft,
    };
    Ok(draft.freeze(train.stage2_freeze.plan()))
}
