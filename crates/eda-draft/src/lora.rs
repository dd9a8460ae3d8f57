//! LoRA on the draft: the baseline that adapts a stage-1 draft to a fine-tuned target with
//! low-rank adapters instead of EDA's private experts.
//!
//! [`EdaDraft::add_lora`] freezes every weight of the draft and attaches adapters
//! ([`eda_models::lora`]) to the attention projections and to every expert's SwiGLU projections
//! (shared and private groups alike; `spec.modules` chooses which). Only the adapters then train.
//! [`EdaDraft::merge_lora`] folds them in, after which the draft is an ordinary EDA draft: saving
//! ([`EdaDraft::save`]) and decoding ([`DraftSession`](crate::DraftSession)) merge on their own, so
//! a saved or decoding draft never carries adapters.
//!
//! ```
//! use burn::tensor::Tensor;
//! use eda_draft::{EdaDraft, EdaDraftConfig};
//! use eda_models::{LoraModule, LoraSpec};
//! let device = eda_core::backend::device_from_name("cpu").unwrap();
//! let cfg = EdaDraftConfig::tiny(32, 16);
//! let emb = Tensor::<2>::ones([32, 16], &device);
//! let draft = EdaDraft::new(&cfg, emb.clone(), emb, &device).unwrap();
//! let spec = LoraSpec { rank: 2, alpha: 4.0, modules: LoraModule::ALL.to_vec() };
//! let adapted = draft.add_lora(&spec, 0).unwrap();
//! assert!(adapted.lora_params() > 0);
//! assert_eq!(adapted.param_counts().trainable, adapted.lora_params());
//! assert_eq!(adapted.merge_lora().lora_params(), 0);
//! ```

use burn::module::Module;
use eda_core::{EdaError, Result};
use eda_models::LoraSpec;

use crate::model::{EdaDraft, FreezePlan};
use crate::moe::ExpertGroup;

impl EdaDraft {
    /// Freezes every parameter and attaches fresh adapters (`spec`, initialised from `seed`) to
    /// the attention projections and every expert; `fc` and the routers have none. A fresh
    /// adapter's `B` is zero, so the adapted draft starts equal to this one. Call it on the
    /// device the draft trains on.
    ///
    /// Errors: [`EdaError::InvalidConfig`] for a bad spec or a draft that already has adapters.
    pub fn add_lora(self, spec: &LoraSpec, seed: u64) -> Result<Self> {
        spec.validate()?;
        if self.lora_params() > 0 {
            return Err(EdaError::InvalidConfig("the draft already has LoRA adapters; merge them first".into()));
        }
        let mut rng = eda_core::sampling::seeded_rng(seed ^ 0xd2_af_10_2a);
        let mut d = self.freeze(FreezePlan::SHARED);
        d.moe.private = d.moe.private.map(|g| g.no_grad());
        d.self_attn.attach_lora(spec, &mut rng);
        for group in std::iter::once(&mut d.moe.shared).chain(d.moe.private.as_mut()) {
            for expert in &mut group.experts {
                expert.attach_lora(spec, &mut rng);
            }
        }
        Ok(d)
    }

    /// Trainable scalars in the draft's adapters (0 without adapters).
    pub fn lora_params(&self) -> usize {
        let experts = |g: &ExpertGroup| g.experts.iter().map(|e| e.lora_params()).sum::<usize>();
        self.self_attn.lora_params() + experts(&self.moe.shared) + self.moe.private.as_ref().map_or(0, experts)
    }

    /// Folds every adapter into its projection (`W += (α / r) · B A`) and removes it: the same
    /// function with plain weights (up to float rounding). The merged weights are new leaves;
    /// everything else keeps its gradient requirement.
    pub fn merge_lora(mut self) -> Self {
        if self.lora_params() == 0 {
            return self;
        }
        self.self_attn = self.self_attn.merge_lora();
        self.moe.shared = merge_group(self.moe.shared);
        self.moe.private = self.moe.private.map(merge_group);
        self
    }
}

/// Every expert of `g` with its adapters merged.
fn merge_group(mut g: ExpertGroup) -> ExpertGroup {
    g.experts = g.experts.into_iter().map(|e| e.merge_lora()).collect();
    g
}
