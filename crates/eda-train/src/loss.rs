//! The EAGLE training objective (spec §3.2): SmoothL1 feature regression, soft cross-entropy
//! against the target's distribution, router auxiliary losses, and top-1 agreement.

use burn::tensor::activation::{log_softmax, softmax};
use burn::tensor::Tensor;

use crate::batch::DeviceBatch;
use crate::config::{LossConfig, LossNorm};
use crate::model::TrainableDraft;

/// Loss terms of one micro-batch. `total` carries the autodiff graph; the others are detached.
#[derive(Debug, Clone)]
pub struct LossParts {
    /// `w_reg·reg + w_cls·cls + aux_w_shared·aux_shared + aux_w_private·aux_private`, `[1]`.
    pub total: Tensor<1>,
    /// Normalised SmoothL1 regression loss, `[1]`.
    pub reg: Tensor<1>,
    /// Normalised soft cross-entropy, `[1]`.
    pub cls: Tensor<1>,
    /// Weighted sum of the two auxiliary losses, `[1]`.
    pub aux: Tensor<1>,
    /// Masked positions where the draft's argmax equals the target's, `[1]`.
    pub correct: Tensor<1>,
}

/// Element-wise SmoothL1 with β = 1: `0.5 z²` if `|z| < 1`, else `|z| − 0.5`.
pub fn smooth_l1<const D: usize>(z: Tensor<D>) -> Tensor<D> {
    let a = z.abs();
    let q = a.clone().clamp_max(1.0);
    // q = min(|z|, 1):  q·(|z| − q/2)  is 0.5 z² below 1 and |z| − 0.5 above.
    q.clone() * (a - q * 0.5)
}

/// Computes the loss of `model` on `batch`.
///
/// Soft targets `p = softmax(lm_head · h_{t+1})` are computed through the model's frozen LM head
/// and detached, so they carry no gradient.
pub fn compute_loss<M: TrainableDraft>(model: &M, batch: &DeviceBatch, cfg: &LossConfig) -> LossParts {
    let out = model.forward_train(batch.tokens.clone(), batch.features.clone());
    let [b, t, _h] = out.hidden.dims();
    let mask = batch.mask.clone(); // [B, T]
    let norm = match cfg.norm {
        LossNorm::MaskedTokens => batch.masked_tokens.max(1) as f64,
        LossNorm::BatchTokens => (b * t) as f64,
    };

    // Regression: mean over the hidden dim, masked sum over positions.
    let reg_tok = smooth_l1(out.hidden.clone() - batch.target.clone()).mean_dim(2).reshape([b, t]);
    let reg = (reg_tok * mask.clone()).sum() / norm;

    // Soft cross-entropy −Σ p log q.
    let target_logits = model.logits3(batch.target.clone()).detach();
    let p = softmax(target_logits.clone(), 2).detach();
    let draft_logits = model.logits3(out.hidden);
    let logq = log_softmax(draft_logits.clone(), 2);
    let ce_tok = (p * logq).sum_dim(2).reshape([b, t]).neg();
    let cls = (ce_tok * mask.clone()).sum() / norm;

    let aux = out.aux_loss_shared * cfg.aux_w_shared + out.aux_loss_private * cfg.aux_w_private;
    let total = reg.clone() * cfg.w_reg + cls.clone() * cfg.w_cls + aux.clone();

    let agree = draft_logits.detach().argmax(2).equal(target_logits.argmax(2)).float().reshape([b, t]);
    let correct = (agree * mask.detach()).sum();
    LossParts { total, reg: reg.detach(), cls: cls.detach(), aux: aux.detach(), correct }
}
