//! The shared/private mixture-of-experts FFN (SP-MoE, docs/method.md §2.2) and its routing.
//!
//! Each group has a bias-free linear router `W_r ∈ R^{N×d}`. Per token, `softmax(W_r m)` is
//! computed in f32, the top-k experts are kept and their probabilities renormalised to sum to 1;
//! the group output is the weighted sum of the chosen SwiGLU experts. The shared and the private
//! group outputs are added. Experts are evaluated densely (every expert on every token) and the
//! unchosen ones get weight 0, so the routing is an ordinary differentiable tensor expression
//! (gradient flows to the router through the chosen probabilities). With `N = 1` the weight is
//! exactly 1.

use burn::module::Module;
use burn::nn::Linear;
use burn::tensor::activation::softmax;
use burn::tensor::{Device, Tensor};
use rand_chacha::ChaCha8Rng;

use eda_models::layers::Mlp;

use crate::init;

/// Top-k mask `[n, E]` (1 for chosen experts, 0 otherwise) of `scores` `[n, E]`.
fn topk_mask(scores: Tensor<2>, k: usize) -> Tensor<2> {
    let [n, e] = scores.dims();
    if k >= e {
        return Tensor::ones([n, e], &scores.device());
    }
    let (_, idx) = scores.detach().topk_with_indices(k, 1);
    let hot: Tensor<3, burn::tensor::Int> = idx.one_hot(e); // [n, k, E]
    hot.sum_dim(1).reshape([n, e]).float()
}

/// Routing weights `[n, E]` from router logits `[n, E]`: softmax, keep the top `k`, renormalise
/// the kept probabilities to sum to 1; unchosen experts get exactly 0.
///
/// ```
/// use burn::tensor::Tensor;
/// let d = eda_core::backend::device_from_name("cpu").unwrap();
/// let logits = Tensor::<2>::from_floats([[0.0, (2.0f32).ln(), (3.0f32).ln()]], &d); // probs 1/6, 2/6, 3/6
/// let w = eda_core::backend::to_vec_f32(eda_draft::moe::routing_weights(logits, 2)).unwrap();
/// assert!((w[0] - 0.0).abs() < 1e-6 && (w[1] - 0.4).abs() < 1e-6 && (w[2] - 0.6).abs() < 1e-6);
/// ```
pub fn routing_weights(logits: Tensor<2>, k: usize) -> Tensor<2> {
    let probs = softmax(logits, 1);
    let mask = topk_mask(probs.clone(), k);
    let kept = probs * mask;
    let sum = kept.clone().sum_dim(1);
    kept / sum
}

/// Switch-style load-balancing loss `N · Σ_i f_i · P_i` over all `n` tokens, where `f_i` is the
/// fraction of tokens whose top-k set contains expert `i` and `P_i` the mean router probability
/// of expert `i`. Shape `[1]`. With `N = 1` it is exactly 1.
///
/// ```
/// use burn::tensor::Tensor;
/// let d = eda_core::backend::device_from_name("cpu").unwrap();
/// let logits = Tensor::<2>::zeros([3, 1], &d);
/// let l = eda_core::backend::to_vec_f32(eda_draft::moe::load_balancing_loss(logits, 1)).unwrap();
/// assert_eq!(l, vec![1.0]);
/// ```
pub fn load_balancing_loss(logits: Tensor<2>, k: usize) -> Tensor<1> {
    let [_, e] = logits.dims();
    let probs = softmax(logits, 1);
    let mask = topk_mask(probs.clone(), k);
    let f = mask.mean_dim(0);
    let p = probs.mean_dim(0);
    (f * p).sum().mul_scalar(e as f64)
}

/// One group of experts (shared or private) with its router.
#[derive(Module, Debug)]
pub struct ExpertGroup {
    /// Router `hidden -> N`, no bias (HF key `*_gate.weight`, `[N, hidden]`).
    pub router: Linear,
    /// The SwiGLU experts (HF keys `*_experts.{i}.{gate,up,down}_proj.weight`).
    pub experts: Vec<Mlp>,
    /// Experts chosen per token.
    pub top_k: usize,
}

/// Output of an [`ExpertGroup`] or [`SpMoe`] forward pass.
#[derive(Debug, Clone)]
pub struct GroupOutput {
    /// Group output, same shape as the input.
    pub output: Tensor<2>,
    /// Router logits `[n, N]` (for the auxiliary loss).
    pub router_logits: Tensor<2>,
}

impl ExpertGroup {
    /// A randomly initialised group (PyTorch default init) of `num_experts` experts of width
    /// `intermediate`.
    pub(crate) fn init(
        hidden: usize,
        intermediate: usize,
        num_experts: usize,
        top_k: usize,
        rng: &mut ChaCha8Rng,
        device: &Device,
    ) -> Self {
        let router = init::linear(hidden, num_experts, false, rng, device);
        let experts = (0..num_experts)
            .map(|_| Mlp {
                gate_proj: init::linear(hidden, intermediate, false, rng, device),
                up_proj: init::linear(hidden, intermediate, false, rng, device),
                down_proj: init::linear(intermediate, hidden, false, rng, device),
                lora: None,
            })
            .collect();
        ExpertGroup { router, experts, top_k }
    }

    /// Number of experts.
    pub fn num_experts(&self) -> usize {
        self.experts.len()
    }

    /// Routes the rows of `x` (`[n, hidden]`) and mixes the chosen experts.
    pub fn forward(&self, x: Tensor<2>) -> GroupOutput {
        let logits = self.router.forward(x.clone());
        let output = if self.experts.len() == 1 {
            // softmax over one logit is exactly 1 and renormalising keeps it 1: skip the multiply
            // (the router receives no gradient either way).
            self.experts[0].forward(x)
        } else {
            let weights = routing_weights(logits.clone(), self.top_k);
            let mut acc: Option<Tensor<2>> = None;
            for (i, expert) in self.experts.iter().enumerate() {
                let y = expert.forward(x.clone()) * weights.clone().narrow(1, i, 1);
                acc = Some(match acc {
                    Some(a) => a + y,
                    None => y,
                });
            }
            acc.expect("at least one expert")
        };
        GroupOutput { output, router_logits: logits }
    }
}

/// The SP-MoE FFN: shared group + private group, outputs summed (no extra gate).
#[derive(Module, Debug)]
pub struct SpMoe {
    /// Shared experts and router (`shared_experts.*`, `shared_gate`).
    pub shared: ExpertGroup,
    /// Private experts and router (`private_experts.*`, `private_gate`); `None` for a plain
    /// EAGLE draft.
    pub private: Option<ExpertGroup>,
}

/// Output of [`SpMoe::forward`].
#[derive(Debug, Clone)]
pub struct MoeOutput {
    /// FFN output `[n, hidden]`.
    pub output: Tensor<2>,
    /// Shared router logits `[n, N_s]`.
    pub shared_logits: Tensor<2>,
    /// Private router logits `[n, N_p]` (`None` without a private group).
    pub private_logits: Option<Tensor<2>>,
}

impl SpMoe {
    /// Applies the FFN to the rows of `x` (`[n, hidden]`).
    pub fn forward(&self, x: Tensor<2>) -> MoeOutput {
        let s = self.shared.forward(x.clone());
        match &self.private {
            Some(p) => {
                let p = p.forward(x);
                MoeOutput { output: s.output + p.output, shared_logits: s.router_logits, private_logits: Some(p.router_logits) }
            }
            None => MoeOutput { output: s.output, shared_logits: s.router_logits, private_logits: None },
        }
    }
}
