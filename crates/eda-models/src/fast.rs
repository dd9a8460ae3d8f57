//! The CPU decoding path of [`Target`](crate::Target): forward passes of at most
//! [`HOST_ROWS`](crate::gemv::HOST_ROWS) new tokens (one decoded token, a verification chain, a small tree) with the
//! weights multiplied on the host by [`matmul_rows_t`].
//!
//! Why: burn's GEMM packs the whole weight matrix for every product, which for a handful of rows
//! costs several times the memory traffic of the product itself (SmolLM2-135M decoded at
//! ≈ 126 ms/token on 2 cores, mostly packing). This path keeps, once per target, a host copy of
//! every weight in the HF `[out, in]` layout the streaming kernel wants — `q/k/v` fused into one
//! matrix, `gate/up` into another, the LM head as `[vocab, hidden]` rows — and runs the norms,
//! rotary, SwiGLU and residuals on host vectors. Attention over the KV cache stays on burn
//! tensors (the cache is the same [`KvCache`] the burn path appends to, so prefill with burn,
//! decode here, `truncate`/`retain` in between all mix freely); its arithmetic mirrors
//! [`Attention::forward`](crate::layers::Attention::forward): rotated, pre-scaled queries
//! folded into grouped-query rows, additive mask bias, softmax, values.
//!
//! Results equal the burn path up to float summation order (tested to 1e-4 on the fixtures).
//! Set `EDA_NO_FAST_DECODE=1` to keep every pass on burn (and skip the host copy).

use burn::tensor::activation::softmax;
use burn::tensor::{Device, Int, Tensor, TensorData};

use eda_core::backend::to_vec_f32;
use eda_core::{EdaError, Result, TokenId};

use crate::gemv::matmul_rows_t;
use crate::layers::{causal_bias, linear_to_hf, KvCache, RmsNorm};
use crate::model::CausalLm;

/// Environment variable that disables the host decoding path when set (to any value).
pub const NO_FAST_DECODE_ENV: &str = "EDA_NO_FAST_DECODE";

/// One decoder block's weights on the host.
struct HostLayer {
    input_norm: Vec<f32>,
    post_norm: Vec<f32>,
    /// `[(H_q + 2 H_kv) d, hidden]`: q rows, then k rows, then v rows.
    qkv: Vec<f32>,
    /// Fused q/k/v bias (Qwen2), zeros for a missing part.
    qkv_bias: Option<Vec<f32>>,
    /// `[hidden, H_q d]`.
    o: Vec<f32>,
    /// `[2 I, hidden]`: gate rows, then up rows.
    gate_up: Vec<f32>,
    /// `[hidden, I]`.
    down: Vec<f32>,
}

/// The host weights of a [`CausalLm`] for small forward passes (see the [module docs](self)).
pub(crate) struct FastTarget {
    layers: Vec<HostLayer>,
    final_norm: Vec<f32>,
    /// LM head rows, `[vocab, hidden]`.
    head: Vec<f32>,
    /// Rotary tables, `[max_positions, head_dim]` each.
    cos: Vec<f32>,
    sin: Vec<f32>,
    hidden: usize,
    inter: usize,
    vocab: usize,
    num_heads: usize,
    num_kv_heads: usize,
    head_dim: usize,
    eps: f32,
}

impl std::fmt::Debug for FastTarget {
    // The weights are hundreds of megabytes: print the shape only.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FastTarget")
            .field("layers", &self.layers.len())
            .field("hidden", &self.hidden)
            .field("vocab", &self.vocab)
            .field("host_floats", &self.host_floats())
            .finish()
    }
}

/// The host copy of `t`, checked to hold `len` values (`what` names it in the error).
fn host(t: Tensor<2>, len: usize, what: &str) -> Result<Vec<f32>> {
    let v = to_vec_f32(t)?;
    if v.len() != len {
        return Err(EdaError::mismatch(format!("host decoding path: values of {what}"), len, v.len()));
    }
    Ok(v)
}

fn norm_weight(n: &RmsNorm, hidden: usize, what: &str) -> Result<Vec<f32>> {
    host(n.weight.val().unsqueeze(), hidden, what)
}

impl FastTarget {
    /// Copies the weights of `lm` to the host in the kernel's layout.
    pub(crate) fn new(lm: &CausalLm) -> Result<Self> {
        let cfg = lm.config();
        let (h, inter, vocab) = (cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size);
        let (nh, nkv, hd) = (cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim);
        let mut layers = Vec::with_capacity(lm.layers.len());
        for (i, l) in lm.layers.iter().enumerate() {
            let a = &l.self_attn;
            let rows = |lin: &burn::nn::Linear, out: usize, what: &str| host(linear_to_hf(lin).0, out * h, &format!("layer {i} {what}"));
            // Sized up front: growing a Vec doubles its capacity, and these are the big buffers.
            let mut qkv = Vec::with_capacity((nh + 2 * nkv) * hd * h);
            qkv.extend(rows(&a.q_proj, nh * hd, "q_proj")?);
            qkv.extend(rows(&a.k_proj, nkv * hd, "k_proj")?);
            qkv.extend(rows(&a.v_proj, nkv * hd, "v_proj")?);
            let qkv_bias = if a.q_proj.bias.is_none() && a.k_proj.bias.is_none() && a.v_proj.bias.is_none() {
                None
            } else {
                let mut b = Vec::with_capacity((nh + 2 * nkv) * hd);
                for (lin, out) in [(&a.q_proj, nh * hd), (&a.k_proj, nkv * hd), (&a.v_proj, nkv * hd)] {
                    match &lin.bias {
                        Some(p) => b.extend(host(p.val().unsqueeze(), out, &format!("layer {i} attention bias"))?),
                        None => b.resize(b.len() + out, 0.0),
                    }
                }
                Some(b)
            };
            let mut gate_up = Vec::with_capacity(2 * inter * h);
            gate_up.extend(rows(&l.mlp.gate_proj, inter, "gate_proj")?);
            gate_up.extend(rows(&l.mlp.up_proj, inter, "up_proj")?);
            layers.push(HostLayer {
                input_norm: norm_weight(&l.input_layernorm, h, &format!("layer {i} input_layernorm"))?,
                post_norm: norm_weight(&l.post_attention_layernorm, h, &format!("layer {i} post_attention_layernorm"))?,
                qkv,
                qkv_bias,
                o: host(linear_to_hf(&a.o_proj).0, h * nh * hd, &format!("layer {i} o_proj"))?,
                gate_up,
                down: host(linear_to_hf(&l.mlp.down_proj).0, h * inter, &format!("layer {i} down_proj"))?,
            });
        }
        let table = lm.rope.max_positions * hd;
        Ok(FastTarget {
            layers,
            final_norm: norm_weight(&lm.norm, h, "model.norm")?,
            head: host(lm.lm_head_weight(), vocab * h, "the LM head")?,
            cos: host(lm.rope.cos.clone(), table, "the rotary cos table")?,
            sin: host(lm.rope.sin.clone(), table, "the rotary sin table")?,
            hidden: h,
            inter,
            vocab,
            num_heads: nh,
            num_kv_heads: nkv,
            head_dim: hd,
            eps: lm.norm.eps as f32,
        })
    }

    /// Floats held on the host (the memory cost of this path is 4 bytes each).
    pub(crate) fn host_floats(&self) -> usize {
        let layer = |l: &HostLayer| {
            l.input_norm.len()
                + l.post_norm.len()
                + l.qkv.len()
                + l.qkv_bias.as_ref().map_or(0, Vec::len)
                + l.o.len()
                + l.gate_up.len()
                + l.down.len()
        };
        self.layers.iter().map(layer).sum::<usize>() + self.final_norm.len() + self.head.len() + self.cos.len() + self.sin.len()
    }

    /// Runs the new `tokens` (validated by the caller: in the vocabulary, positions in range, at
    /// most [`HOST_ROWS`](crate::gemv::HOST_ROWS) of them) at `positions`, appending to `caches`
    /// (one per layer). `bias` is the additive `[n, past + n]` mask, `None` for causal. Returns
    /// logits `[n, vocab]` and final-norm hidden states `[n, hidden]`.
    pub(crate) fn forward(
        &self,
        lm: &CausalLm,
        tokens: &[TokenId],
        positions: &[usize],
        caches: &mut [KvCache],
        bias: Option<Tensor<2>>,
        device: &Device,
    ) -> Result<(Tensor<2>, Tensor<2>)> {
        let n = tokens.len();
        let h = self.hidden;
        if caches.len() != self.layers.len() {
            return Err(EdaError::mismatch("KV caches (one per layer)", self.layers.len(), caches.len()));
        }
        let past = caches.first().map(KvCache::len).unwrap_or(0);
        let bias = match bias {
            None if n > 1 => Some(causal_bias(past, n, device)),
            b => b,
        };
        let ids = Tensor::<1, Int>::from_data(TensorData::new(tokens.iter().map(|&t| t as i64).collect::<Vec<_>>(), [n]), device);
        let mut x = to_vec_f32(lm.embed_tokens.weight.val().select(0, ids))?;
        let (nh, hd) = (self.num_heads, self.head_dim);
        for (layer, cache) in self.layers.iter().zip(caches.iter_mut()) {
            let a = rms_norm(&x, &layer.input_norm, self.eps);
            let heads = self.attention(layer, &a, n, positions, cache, bias.as_ref(), device)?;
            add_assign(&mut x, &matmul_rows_t(&heads, n, &layer.o, nh * hd)?);
            let m = rms_norm(&x, &layer.post_norm, self.eps);
            let gu = matmul_rows_t(&m, n, &layer.gate_up, h)?;
            let act = swiglu(&gu, self.inter);
            add_assign(&mut x, &matmul_rows_t(&act, n, &layer.down, self.inter)?);
        }
        let hidden = rms_norm(&x, &self.final_norm, self.eps);
        let logits = matmul_rows_t(&hidden, n, &self.head, h)?;
        Ok((
            Tensor::from_data(TensorData::new(logits, [n, self.vocab]), device),
            Tensor::from_data(TensorData::new(hidden, [n, h]), device),
        ))
    }

    /// Self-attention of the normed rows `a` (`[n, hidden]`): q/k/v on the host, attention over
    /// `cache` (appended) with burn. Returns the heads' outputs `[n, H_q d]` before `o_proj`.
    #[allow(clippy::too_many_arguments)]
    fn attention(
        &self,
        l: &HostLayer,
        a: &[f32],
        n: usize,
        positions: &[usize],
        cache: &mut KvCache,
        bias: Option<&Tensor<2>>,
        device: &Device,
    ) -> Result<Vec<f32>> {
        let (nh, nkv, hd) = (self.num_heads, self.num_kv_heads, self.head_dim);
        let rep = nh / nkv;
        let width = (nh + 2 * nkv) * hd;
        let mut qkv = matmul_rows_t(a, n, &l.qkv, self.hidden)?;
        if let Some(b) = &l.qkv_bias {
            for row in qkv.chunks_exact_mut(width) {
                add_assign(row, b);
            }
        }
        // Head-major layouts ([heads, n, d]): for q that is already burn's grouped-query fold
        // `[kv_heads, rep * n, d]` (query head `g * rep + r` uses kv head `g`).
        let scale = 1.0 / (hd as f64).sqrt() as f32;
        let (mut q, mut k, mut v) = (vec![0f32; nh * n * hd], vec![0f32; nkv * n * hd], vec![0f32; nkv * n * hd]);
        for (t, row) in qkv.chunks_exact(width).enumerate() {
            let p = positions[t];
            let (cos, sin) = (&self.cos[p * hd..(p + 1) * hd], &self.sin[p * hd..(p + 1) * hd]);
            for head in 0..nh {
                rope(&row[head * hd..(head + 1) * hd], cos, sin, scale, &mut q[(head * n + t) * hd..(head * n + t + 1) * hd]);
            }
            for g in 0..nkv {
                let at = (g * n + t) * hd;
                rope(&row[(nh + g) * hd..(nh + g + 1) * hd], cos, sin, 1.0, &mut k[at..at + hd]);
                v[at..at + hd].copy_from_slice(&row[(nh + nkv + g) * hd..(nh + nkv + g + 1) * hd]);
            }
        }
        let past = cache.len();
        let total = past + n;
        let k = Tensor::<4>::from_data(TensorData::new(k, [1, nkv, n, hd]), device);
        let v = Tensor::<4>::from_data(TensorData::new(v, [1, nkv, n, hd]), device);
        let (k, v) = cache.append(k, v);
        let q = Tensor::<4>::from_data(TensorData::new(q, [1, nkv, rep * n, hd]), device);
        let scores = q.matmul(k.swap_dims(2, 3));
        let scores = match bias {
            Some(b) => (scores.reshape([1, nh, n, total]) + b.clone().unsqueeze::<4>()).reshape([1, nkv, rep * n, total]),
            None => scores,
        };
        // `[kv_heads, rep * n, d]` = `[heads, n, d]`; token-major for `o_proj`.
        let out = to_vec_f32(softmax(scores, 3).matmul(v))?;
        let mut heads = vec![0f32; n * nh * hd];
        for head in 0..nh {
            for t in 0..n {
                let dst = t * nh * hd + head * hd;
                heads[dst..dst + hd].copy_from_slice(&out[(head * n + t) * hd..(head * n + t + 1) * hd]);
            }
        }
        Ok(heads)
    }
}

/// RMSNorm of each row of `x`, the same arithmetic as [`RmsNorm::forward`]:
/// `(x / sqrt(mean(x²) + eps)) * w`.
fn rms_norm(x: &[f32], w: &[f32], eps: f32) -> Vec<f32> {
    let mut out = Vec::with_capacity(x.len());
    for row in x.chunks_exact(w.len()) {
        let rms = (row.iter().map(|v| v * v).sum::<f32>() / w.len() as f32 + eps).sqrt();
        out.extend(row.iter().zip(w).map(|(v, g)| (v / rms) * g));
    }
    out
}

/// HF "rotate half" rotary of one head vector, times `scale`: `(x cos + rotate_half(x) sin) s`.
fn rope(x: &[f32], cos: &[f32], sin: &[f32], scale: f32, out: &mut [f32]) {
    let half = x.len() / 2;
    for i in 0..x.len() {
        let rot = if i < half { -x[i + half] } else { x[i - half] };
        out[i] = (x[i] * cos[i] + rot * sin[i]) * scale;
    }
}

/// `silu(gate) * up` for rows `[gate (inter) | up (inter)]`.
fn swiglu(gu: &[f32], inter: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(gu.len() / 2);
    for row in gu.chunks_exact(2 * inter) {
        let (g, u) = row.split_at(inter);
        out.extend(g.iter().zip(u).map(|(g, u)| g / (1.0 + (-g).exp()) * u));
    }
    out
}

fn add_assign(x: &mut [f32], y: &[f32]) {
    for (a, b) in x.iter_mut().zip(y) {
        *a += b;
    }
}
