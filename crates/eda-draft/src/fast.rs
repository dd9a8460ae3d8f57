//! [`FastDraft`]: the decoding path of an [`EdaDraft`], with its weights laid out for small
//! (one token, or one tree level) forward passes.
//!
//! Why a separate path: the module keeps every linear weight as burn's `[in, out]` *view* of the
//! HuggingFace `[out, in]` tensor and multiplies by a transposed view of the `[vocab, hidden]`
//! LM head. That is fine for training batches, where packing the weights is amortised over
//! thousands of rows, but a one-row product against a transposed view is very slow on the CPU
//! (SmolLM2 shapes: 300 ms for the full head, against 49 ms for a contiguous `[hidden, vocab]`
//! GEMM and 6 ms for a streaming matrix–vector product). [`FastDraft`] therefore builds, once
//! per session:
//!
//! - every weight as a contiguous `[in, out]` matrix, with `q/k/v` fused into one `[hidden,
//!   (H_q + 2 H_kv) d]` product and each expert's `gate/up` into one `[hidden, 2I]` product, and
//!   the LM head as a `[hidden, K]` matrix (`K` = the reduced draft vocabulary, or the full
//!   vocabulary);
//! - on the CPU (NdArray) backend, a host copy of every weight as `[out, in]` rows, multiplied
//!   by the streaming matrix–vector kernel of [`eda_models::gemv`] for blocks of up to
//!   [`HOST_ROWS`] rows (drafting steps, tree levels, catch-up after a verification): it reads
//!   each weight once at memory bandwidth, where burn's GEMM first packs the whole matrix. Larger
//!   blocks (the prompt catch-up) use the GEMM. For the LM head, the GEMM side reuses the module's
//!   `[K, hidden]` tensor as a transposed view instead of a second copy of the largest matrix;
//! - everything on the non-autodiff device, so no graph is recorded even when the draft came
//!   straight from a trainer.
//!
//! Experts are evaluated sparsely: with one expert per group it is applied directly (its routing
//! weight is exactly 1), otherwise the router logits (`[n, N]`, a few numbers) are read back,
//! routed on the host exactly like [`routing_weights`](crate::moe::routing_weights) and only the
//! chosen experts run, on the rows that chose them. The training forward evaluates every expert
//! densely instead, because that keeps the routing differentiable.

use std::sync::Arc;

use burn::tensor::activation::{silu, softmax};
use burn::tensor::{Device, IndexingUpdateOp, Int, Tensor, TensorData};

use eda_core::backend::to_vec_f32;
use eda_core::{Result, TokenId};
use eda_models::gemv::{is_host_device as is_host, matmul_rows_t};
use eda_models::layers::{causal_bias, KvCache, RmsNorm, RotaryEmbedding};

use crate::moe::ExpertGroup;
use crate::EdaDraft;

/// On the CPU backend, blocks of at most this many rows go through the host matrix–vector
/// kernel ([`eda_models::gemv`], shared with the target's decoding path); larger blocks use
/// burn's GEMM.
pub use eda_models::gemv::HOST_ROWS;

/// A bias-free linear map of the decoding path.
#[derive(Debug, Clone)]
struct FastLinear {
    /// `[in, out]` for the GEMM.
    gemm: Tensor<2>,
    /// CPU only: the `[out, in]` rows on the host for blocks of at most [`HOST_ROWS`] rows.
    rows: Option<Arc<[f32]>>,
    device: Device,
}

impl FastLinear {
    /// From a weight `w` in burn's `[in, out]` layout (any strides).
    fn new(w: Tensor<2>, device: &Device) -> Self {
        let w = w.without_autodiff();
        // A failed readback only loses the host fast path.
        let rows = if is_host(device) { to_vec_f32(w.clone().transpose()).ok().map(Arc::from) } else { None };
        FastLinear { gemm: contiguous(w, device), rows, device: device.clone() }
    }

    /// From the `[out, in]` rows of a large matrix (the LM head): on the CPU the GEMM multiplies
    /// by a transposed view of `rows` rather than keeping a second, transposed copy.
    fn from_rows(rows: Tensor<2>, device: &Device) -> Self {
        let rows = rows.without_autodiff();
        if is_host(device) {
            if let Ok(host) = to_vec_f32(rows.clone()) {
                return FastLinear { gemm: rows.transpose(), rows: Some(host.into()), device: device.clone() };
            }
        }
        FastLinear { gemm: contiguous(rows.transpose(), device), rows: None, device: device.clone() }
    }

    fn forward(&self, x: Tensor<2>) -> Result<Tensor<2>> {
        let [n, h] = x.dims();
        match &self.rows {
            Some(rows) if n <= HOST_ROWS => {
                let y = matmul_rows_t(&to_vec_f32(x)?, n, rows, h)?;
                let out = y.len() / n.max(1);
                Ok(Tensor::from_data(TensorData::new(y, [n, out]), &self.device))
            }
            _ => Ok(x.matmul(self.gemm.clone())),
        }
    }
}

/// A copy of `t` on `device` with a fresh row-major layout (a transposed view becomes a real
/// transpose).
fn contiguous<const D: usize>(t: Tensor<D>, device: &Device) -> Tensor<D> {
    Tensor::from_data(t.without_autodiff().into_data(), device)
}

/// One SwiGLU expert with `gate` and `up` fused.
#[derive(Debug, Clone)]
struct FastExpert {
    /// `hidden -> 2I`: gate outputs then up outputs.
    gate_up: FastLinear,
    /// `I -> hidden`.
    down: FastLinear,
    inter: usize,
}

impl FastExpert {
    fn forward(&self, x: Tensor<2>) -> Result<Tensor<2>> {
        let gu = self.gate_up.forward(x)?;
        let g = gu.clone().narrow(1, 0, self.inter);
        let u = gu.narrow(1, self.inter, self.inter);
        self.down.forward(silu(g) * u)
    }
}

/// One expert group (shared or private) for decoding.
#[derive(Debug, Clone)]
struct FastGroup {
    /// Router `[hidden, N]` (unused with one expert).
    router: Tensor<2>,
    experts: Vec<FastExpert>,
    top_k: usize,
}

impl FastGroup {
    fn new(g: &ExpertGroup, device: &Device) -> Self {
        let experts = g
            .experts
            .iter()
            .map(|e| {
                let [_, inter] = e.gate_proj.weight.val().dims();
                FastExpert {
                    gate_up: FastLinear::new(Tensor::cat(vec![e.gate_proj.weight.val(), e.up_proj.weight.val()], 1), device),
                    down: FastLinear::new(e.down_proj.weight.val(), device),
                    inter,
                }
            })
            .collect();
        FastGroup { router: contiguous(g.router.weight.val(), device), experts, top_k: g.top_k }
    }

    /// The group output for the rows of `x` (`[n, hidden]`).
    fn forward(&self, x: Tensor<2>) -> Result<Tensor<2>> {
        if self.experts.len() == 1 {
            // softmax over one logit is exactly 1: the training forward skips the multiply too.
            return self.experts[0].forward(x);
        }
        let [n, _] = x.dims();
        let e = self.experts.len();
        let logits = to_vec_f32(x.clone().matmul(self.router.clone()))?;
        // chosen[i] = (row, weight) pairs of expert i.
        let mut chosen: Vec<Vec<(usize, f32)>> = vec![Vec::new(); e];
        for r in 0..n {
            for (i, w) in route_row(&logits[r * e..(r + 1) * e], self.top_k) {
                chosen[i].push((r, w));
            }
        }
        let device = x.device();
        let mut acc: Option<Tensor<2>> = None;
        for (expert, rows) in self.experts.iter().zip(&chosen) {
            if rows.is_empty() {
                continue;
            }
            let w = Tensor::<2>::from_data(TensorData::new(rows.iter().map(|r| r.1).collect::<Vec<_>>(), [rows.len(), 1]), &device);
            if rows.len() == n {
                let y = expert.forward(x.clone())? * w;
                acc = Some(match acc {
                    Some(a) => a + y,
                    None => y,
                });
            } else {
                let idx = Tensor::<1, Int>::from_data(
                    TensorData::new(rows.iter().map(|r| r.0 as i64).collect::<Vec<_>>(), [rows.len()]),
                    &device,
                );
                let y = expert.forward(x.clone().select(0, idx.clone()))? * w;
                let base = acc.unwrap_or_else(|| Tensor::zeros(x.dims(), &device));
                acc = Some(base.select_assign(0, idx, y, IndexingUpdateOp::Add));
            }
        }
        Ok(acc.unwrap_or_else(|| Tensor::zeros(x.dims(), &device)))
    }
}

/// Routing of one token on the host, the same rule as
/// [`routing_weights`](crate::moe::routing_weights): softmax of the router logits, keep the
/// `k` most probable experts (lower index first on ties), renormalise their probabilities.
/// Returns `(expert, weight)` pairs.
///
/// ```
/// let w = eda_draft::fast::route_row(&[0.0, (2.0f32).ln(), (3.0f32).ln()], 2);
/// assert_eq!(w.iter().map(|p| p.0).collect::<Vec<_>>(), vec![2, 1]);
/// assert!((w[0].1 - 0.6).abs() < 1e-6 && (w[1].1 - 0.4).abs() < 1e-6);
/// ```
pub fn route_row(logits: &[f32], k: usize) -> Vec<(usize, f32)> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f64> = logits.iter().map(|&l| ((l - max) as f64).exp()).collect();
    let mut order: Vec<usize> = (0..logits.len()).collect();
    order.sort_by(|&a, &b| exps[b].total_cmp(&exps[a]).then(a.cmp(&b)));
    order.truncate(k.max(1).min(logits.len()));
    let kept: f64 = order.iter().map(|&i| exps[i]).sum();
    order.into_iter().map(|i| (i, (exps[i] / kept) as f32)).collect()
}

/// The decoding path of an [`EdaDraft`] (see the [module docs](self)): contiguous, fused
/// weights on the non-autodiff device and a materialised `[hidden, K]` LM head.
///
/// [`DraftSession`](crate::DraftSession) builds one and runs [`forward`](Self::forward); the
/// individual stages are public so that their cost can be measured (the `draft_cost` example).
///
/// ```
/// use burn::tensor::{Distribution, Tensor};
/// use eda_draft::{fast::FastDraft, EdaDraft, EdaDraftConfig};
/// use eda_models::layers::KvCache;
/// let d = eda_core::backend::device_from_name("cpu").unwrap();
/// let emb = Tensor::<2>::random([32, 16], Distribution::Normal(0.0, 1.0), &d);
/// let draft = EdaDraft::new(&EdaDraftConfig::tiny(32, 16), emb.clone(), emb, &d).unwrap();
/// let fast = FastDraft::new(&draft);
/// let mut cache = KvCache::new();
/// let (hidden, logits) = fast.forward(&[3, 4], Tensor::zeros([2, 16], &d), &[0, 1], &mut cache, None).unwrap();
/// assert_eq!((hidden.dims(), logits.dims()), ([2, 16], [2, 32]));
/// assert_eq!(cache.len(), 2);
/// ```
#[derive(Debug, Clone)]
pub struct FastDraft {
    device: Device,
    hidden: usize,
    embedding: Tensor<2>,
    /// `2 hidden -> hidden`.
    fc_w: FastLinear,
    fc_b: Option<Tensor<1>>,
    /// `hidden -> (H_q + 2 H_kv) d`: q, k, v outputs.
    qkv_w: FastLinear,
    /// `H_q d -> hidden`.
    o_w: FastLinear,
    num_heads: usize,
    num_kv_heads: usize,
    head_dim: usize,
    norm: RmsNorm,
    groups: Vec<FastGroup>,
    /// `hidden -> K`.
    head: FastLinear,
    rope: RotaryEmbedding,
    token_ids: Option<Arc<[TokenId]>>,
}

impl FastDraft {
    /// Materialises the decoding weights of `draft` (a one-off copy of its parameters and LM
    /// head rows; nothing is shared with the module's autodiff state).
    pub fn new(draft: &EdaDraft) -> Self {
        let device = draft.device().without_autodiff();
        let attn = draft.attention();
        let qkv = Tensor::cat(vec![attn.q_proj.weight.val(), attn.k_proj.weight.val(), attn.v_proj.weight.val()], 1);
        let norm = draft.post_attention_layernorm();
        let mut groups = vec![FastGroup::new(&draft.moe().shared, &device)];
        if let Some(p) = &draft.moe().private {
            groups.push(FastGroup::new(p, &device));
        }
        let head_rows = match &draft.draft_head {
            Some(h) => h.val(),
            None => draft.lm_head.val(),
        };
        let cfg = draft.config();
        FastDraft {
            hidden: cfg.hidden_size,
            embedding: draft.embedding().without_autodiff(),
            fc_w: FastLinear::new(draft.fc().weight.val(), &device),
            fc_b: draft.fc().bias.as_ref().map(|b| contiguous(b.val(), &device)),
            qkv_w: FastLinear::new(qkv, &device),
            o_w: FastLinear::new(attn.o_proj.weight.val(), &device),
            num_heads: attn.num_heads,
            num_kv_heads: attn.num_kv_heads,
            head_dim: attn.head_dim,
            norm: RmsNorm::from_weight(contiguous(norm.weight.val(), &device), norm.eps),
            groups,
            head: FastLinear::from_rows(head_rows, &device),
            rope: RotaryEmbedding {
                cos: draft.rope.cos.clone().without_autodiff(),
                sin: draft.rope.sin.clone().without_autodiff(),
                head_dim: draft.rope.head_dim,
                max_positions: draft.rope.max_positions,
            },
            token_ids: draft.draft_vocab_arc(),
            device,
        }
    }

    /// The (non-autodiff) device the decoding weights live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Target token id of each logit column (`None`: the full vocabulary).
    pub fn token_ids(&self) -> Option<&Arc<[TokenId]>> {
        self.token_ids.as_ref()
    }

    /// Stage 1: `u = fc(cat[embed(tokens), features])`, `[n, hidden]` (`features` `[n, hidden]`).
    pub fn embed_fc(&self, tokens: &[TokenId], features: Tensor<2>) -> Result<Tensor<2>> {
        let n = tokens.len();
        let ids = Tensor::<1, Int>::from_data(TensorData::new(tokens.iter().map(|&t| t as i64).collect::<Vec<_>>(), [n]), &self.device);
        let e = self.embedding.clone().select(0, ids);
        let u = self.fc_w.forward(Tensor::cat(vec![e, features.without_autodiff().to_device(&self.device)], 1))?;
        Ok(match &self.fc_b {
            Some(b) => u + b.clone().unsqueeze(),
            None => u,
        })
    }

    /// Stage 2: self-attention of `u` (`[n, hidden]`) at `positions`, appending to `cache`;
    /// `mask_bias` is an additive `[n, past + n]` bias, `None` for causal. Returns the attention
    /// output before the residual. Same computation as [`Attention::forward`](eda_models::layers::Attention::forward).
    pub fn attention(&self, u: Tensor<2>, positions: &[usize], cache: &mut KvCache, mask_bias: Option<Tensor<2>>) -> Result<Tensor<2>> {
        let [n, _] = u.dims();
        let (nh, nkv, hd) = (self.num_heads, self.num_kv_heads, self.head_dim);
        let rep = nh / nkv;
        let qkv = self.qkv_w.forward(u)?;
        let q = qkv.clone().narrow(1, 0, nh * hd).reshape([1, n, nh, hd]).swap_dims(1, 2);
        let k = qkv.clone().narrow(1, nh * hd, nkv * hd).reshape([1, n, nkv, hd]).swap_dims(1, 2);
        let v = qkv.narrow(1, (nh + nkv) * hd, nkv * hd).reshape([1, n, nkv, hd]).swap_dims(1, 2);
        let q = self.rope.apply(q, positions);
        let k = self.rope.apply(k, positions);
        let past = cache.len();
        let (k, v) = cache.append(k, v);
        let total = past + n;
        // Grouped-query attention: the `rep` query heads of a kv group become rows.
        let q = q.mul_scalar(1.0 / (hd as f64).sqrt()).reshape([1, nkv, rep * n, hd]);
        let scores = q.matmul(k.swap_dims(2, 3)).reshape([1, nh, n, total]);
        let bias = match mask_bias {
            Some(m) => Some(m),
            None if n > 1 => Some(causal_bias(past, n, &self.device)),
            None => None,
        };
        let scores = match bias {
            Some(m) => scores + m.unsqueeze::<4>(),
            None => scores,
        };
        let probs = softmax(scores, 3).reshape([1, nkv, rep * n, total]);
        let out = probs.matmul(v).reshape([1, nh, n, hd]).swap_dims(1, 2).reshape([n, nh * hd]);
        self.o_w.forward(out)
    }

    /// Stage 3: the post-attention RMSNorm of `a` (`[n, hidden]`).
    pub fn norm(&self, a: Tensor<2>) -> Tensor<2> {
        self.norm.forward(a)
    }

    /// Stage 4: the SP-MoE FFN of the normed rows `m` (`[n, hidden]`), chosen experts only.
    /// `group` 0 is the shared group, 1 the private group (if any).
    pub fn ffn_group(&self, group: usize, m: Tensor<2>) -> Result<Tensor<2>> {
        match self.groups.get(group) {
            Some(g) => g.forward(m),
            None => Ok(Tensor::zeros(m.dims(), &self.device)),
        }
    }

    /// Number of expert groups (1 without a private group, else 2).
    pub fn num_groups(&self) -> usize {
        self.groups.len()
    }

    /// Stage 5: logits over the draft vocabulary, `[n, hidden] -> [n, K]`.
    pub fn head(&self, hidden: Tensor<2>) -> Result<Tensor<2>> {
        self.head.forward(hidden)
    }

    /// The whole step: returns the output features `[n, hidden]` and the logits `[n, K]`. The
    /// caller validates shapes, positions and the mask (as [`DraftSession`](crate::DraftSession)
    /// does).
    pub fn forward(
        &self,
        tokens: &[TokenId],
        features: Tensor<2>,
        positions: &[usize],
        cache: &mut KvCache,
        mask_bias: Option<Tensor<2>>,
    ) -> Result<(Tensor<2>, Tensor<2>)> {
        let u = self.embed_fc(tokens, features)?;
        let a = u.clone() + self.attention(u, positions, cache, mask_bias)?;
        let m = self.norm(a.clone());
        let mut h = a;
        for g in &self.groups {
            h = h + g.forward(m.clone())?;
        }
        let logits = self.head(h.clone())?;
        debug_assert_eq!(h.dims()[1], self.hidden);
        Ok((h, logits))
    }
}
