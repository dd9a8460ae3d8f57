//! The EAGLE training objective (docs/method.md §3.2): SmoothL1 feature regression, soft cross-entropy
//! against the target's distribution, router auxiliary losses, and top-1 agreement.
//!
//! With a reduced draft vocabulary (EAGLE-3) the soft label is the target's distribution
//! *restricted* to the draft's `K` tokens and renormalised, and positions whose target argmax
//! lies outside the draft vocabulary get no cross-entropy (the draft cannot propose that token
//! anyway); see [`soft_cross_entropy`]. The feature regression is unchanged.

use burn::tensor::activation::{log_softmax, softmax};
use burn::tensor::{Int, Tensor, TensorData};
use eda_core::TokenId;

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

/// Soft cross-entropy summed over positions, and the number of positions where the draft's
/// argmax is the target's, from [`soft_cross_entropy`].
#[derive(Debug, Clone)]
pub struct SoftCe {
    /// `Σ_t w_t · (−Σ_x p_t(x) log q_t(x))`, `[1]` (carries the draft's graph).
    pub sum: Tensor<1>,
    /// `Σ_t m_t · [target argmax = draft argmax]`, `[1]`, detached.
    pub correct: Tensor<1>,
}

/// Soft cross-entropy of `draft_logits` (`[B, T, K]`) against the distribution of
/// `target_logits` (`[B, T, V]`, treated as constants) over the positions of `mask` (`[B, T]`,
/// 0/1).
///
/// - Full vocabulary (`draft_vocab = None`, `K = V`): `p = softmax(target)`, weight `w_t = m_t`.
/// - Reduced vocabulary (`draft_vocab = Some(d2t)`, `K` ids): as EAGLE-3 does, `p` is the
///   softmax of the target logits at the `K` draft tokens only (the target's distribution
///   restricted to the draft vocabulary and renormalised), and `w_t = m_t · [argmax_x
///   target_t(x) ∈ d2t]`: a position whose target token the draft cannot propose teaches it
///   nothing about ranking its own tokens.
///
/// `correct` counts masked positions whose draft argmax (mapped through `d2t`) equals the
/// target's full-vocabulary argmax, so positions outside the draft vocabulary count as misses.
///
/// ```
/// use burn::tensor::Tensor;
/// let d = eda_core::backend::device_from_name("cpu").unwrap();
/// // target p = (1/6, 2/6, 3/6) over 3 tokens; the draft covers tokens 0 and 2: p' = (1/4, 3/4).
/// let target = Tensor::<3>::from_floats([[[0.0, (2.0f32).ln(), (3.0f32).ln()]]], &d);
/// let draft = Tensor::<3>::from_floats([[[0.0, (3.0f32).ln()]]], &d); // q = (1/4, 3/4)
/// let ce = eda_train::loss::soft_cross_entropy(target, draft, Some(&[0, 2]), Tensor::ones([1, 1], &d));
/// let h = -(0.25f64 * 0.25f64.ln() + 0.75 * 0.75f64.ln()); // = cross-entropy of p' with itself
/// assert!((eda_core::backend::to_vec_f32(ce.sum).unwrap()[0] as f64 - h).abs() < 1e-5);
/// assert_eq!(eda_core::backend::to_vec_f32(ce.correct).unwrap()[0], 1.0);
/// ```
pub fn soft_cross_entropy(target_logits: Tensor<3>, draft_logits: Tensor<3>, draft_vocab: Option<&[TokenId]>, mask: Tensor<2>) -> SoftCe {
    let [b, t, _] = draft_logits.dims();
    let target_logits = target_logits.detach();
    let target_arg = target_logits.clone().argmax(2).reshape([b * t]);
    let draft_arg = draft_logits.clone().detach().argmax(2).reshape([b * t]);
    let logq = log_softmax(draft_logits, 2);
    let (p, weight, draft_tokens) = match draft_vocab {
        None => (softmax(target_logits, 2), mask.clone(), draft_arg),
        Some(ids) => {
            let device = target_logits.device();
            let [_, _, v] = target_logits.dims();
            let d2t = Tensor::<1, Int>::from_data(TensorData::new(ids.iter().map(|&x| x as i64).collect::<Vec<_>>(), [ids.len()]), &device);
            let mut member = vec![0f32; v];
            for &x in ids {
                if let Some(m) = member.get_mut(x as usize) {
                    *m = 1.0;
                }
            }
            let t2d = Tensor::<1>::from_data(TensorData::new(member, [v]), &device);
            let in_vocab = t2d.select(0, target_arg.clone()).reshape([b, t]);
            let p = softmax(target_logits.select(2, d2t.clone()), 2);
            (p, mask.clone() * in_vocab, d2t.select(0, draft_arg))
        }
    };
    let ce_tok = (p.detach() * logq).sum_dim(2).reshape([b, t]).neg();
    let sum = (ce_tok * weight.detach()).sum();
    let agree = draft_tokens.equal(target_arg).float().reshape([b, t]);
    let correct = (agree * mask.detach()).sum();
    SoftCe { sum, correct }
}

/// Computes the loss of `model` on `batch`.
///
/// Soft targets come from `softmax(lm_head · h_{t+1})` through the model's frozen full LM head
/// ([`TrainableDraft::target_logits3`]), restricted to the draft vocabulary when the draft has a
/// reduced one, and are detached, so they carry no gradient ([`soft_cross_entropy`]).
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
    let target_logits = model.target_logits3(batch.target.clone()).detach();
    let draft_logits = model.logits3(out.hidden);
    let ce = soft_cross_entropy(target_logits, draft_logits, model.draft_vocab(), mask);
    let cls = ce.sum / norm;

    let aux = out.aux_loss_shared * cfg.aux_w_shared + out.aux_loss_private * cfg.aux_w_private;
    let total = reg.clone() * cfg.w_reg + cls.clone() * cfg.w_cls + aux.clone();
    LossParts { total, reg: reg.detach(), cls: cls.detach(), aux: aux.detach(), correct: ce.correct }
}
