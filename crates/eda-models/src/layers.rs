//! Transformer building blocks shared by the target models and the draft models.
//!
//! Every layer follows HuggingFace semantics (Qwen2 / Llama), so that weights loaded from a HF
//! checkpoint produce the same numbers as `transformers`. Everything works on any burn device,
//! including autodiff devices (training uses these layers).
//!
//! burn's [`Linear`] stores its weight as `[in, out]` whereas HF stores `[out, in]`; use
//! [`linear_from_hf`] and [`linear_to_hf`] to convert.
//!
//! ```
//! use burn::tensor::Tensor;
//! use eda_models::layers::{Attention, AttentionConfig, KvCache, RotaryEmbedding};
//!
//! let device = eda_core::backend::device_from_name("cpu").unwrap();
//! let cfg = AttentionConfig { hidden_size: 16, num_heads: 4, num_kv_heads: 2, head_dim: 4, bias: true };
//! let attn = Attention::new(&cfg, &device);
//! let rope = RotaryEmbedding::new(4, 10000.0, 64, &device);
//! let mut cache = KvCache::new();
//! let x = Tensor::<3>::zeros([1, 3, 16], &device);
//! let y = attn.forward(x, &rope, &[0, 1, 2], Some(&mut cache), None);
//! assert_eq!(y.dims(), [1, 3, 16]);
//! assert_eq!(cache.len(), 3);
//! ```

use burn::module::{Module, Param};
use burn::nn::{Initializer, Linear, LinearConfig};
use burn::tensor::activation::{silu, softmax};
use burn::tensor::{Device, Int, Tensor, TensorData};

use eda_core::{EdaError, Result};

use crate::lora::{adapted, AttentionLora, MlpLora};

/// Standard deviation of the normal initialisation used for fresh weights (HF's
/// `initializer_range` default).
pub const INIT_STD: f64 = 0.02;

fn linear(d_in: usize, d_out: usize, bias: bool, device: &Device) -> Linear {
    let mut l =
        LinearConfig::new(d_in, d_out).with_bias(bias).with_initializer(Initializer::Normal { mean: 0.0, std: INIT_STD }).init(device);
    if let Some(b) = l.bias.take() {
        // HF initialises biases to zero.
        let [n] = b.val().dims();
        l.bias = Some(Param::from_tensor(Tensor::<1>::zeros([n], device)));
    }
    l
}

/// Builds a burn [`Linear`] from a HF-layout weight `[out, in]` and an optional bias `[out]`.
///
/// ```
/// use burn::tensor::Tensor;
/// let device = eda_core::backend::device_from_name("cpu").unwrap();
/// let w = Tensor::<2>::from_floats([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]], &device); // [out=3, in=2]
/// let l = eda_models::layers::linear_from_hf(w, None);
/// let y = l.forward(Tensor::<2>::from_floats([[1.0, 1.0]], &device));
/// assert_eq!(eda_core::backend::to_vec_f32(y).unwrap(), vec![3.0, 7.0, 11.0]);
/// ```
pub fn linear_from_hf(weight: Tensor<2>, bias: Option<Tensor<1>>) -> Linear {
    Linear { weight: Param::from_tensor(weight.transpose()), bias: bias.map(Param::from_tensor) }
}

/// The HF-layout weight `[out, in]` and bias `[out]` of a burn [`Linear`] (inverse of
/// [`linear_from_hf`]).
pub fn linear_to_hf(linear: &Linear) -> (Tensor<2>, Option<Tensor<1>>) {
    (linear.weight.val().transpose(), linear.bias.as_ref().map(|b| b.val()))
}

/// Root-mean-square layer norm, HF style: `weight * x / sqrt(mean(x^2) + eps)`.
///
/// The arithmetic is [`burn::nn::RmsNorm`]'s: on the committed HF fixtures it gives the same
/// logits as the hand-written version it replaced, bit for bit in f32 (the same operations in the
/// same order; it also takes the mean in f32 under a half compute dtype, as HF does). This wrapper
/// only keeps the HF parameter name `weight` (burn's is `gamma`), which names the tensor in
/// checkpoints and training state.
#[derive(Module, Debug)]
pub struct RmsNorm {
    /// Per-channel scale, `[dim]` (HF `*.weight`).
    pub weight: Param<Tensor<1>>,
    /// Numerical-stability epsilon (HF `rms_norm_eps`).
    pub eps: f64,
}

impl RmsNorm {
    /// A norm over `dim` channels with unit weight.
    pub fn new(dim: usize, eps: f64, device: &Device) -> Self {
        RmsNorm { weight: Param::from_tensor(Tensor::<1>::ones([dim], device)), eps }
    }

    /// Builds a norm from a HF weight vector.
    pub fn from_weight(weight: Tensor<1>, eps: f64) -> Self {
        RmsNorm { weight: Param::from_tensor(weight), eps }
    }

    /// Normalises `x` over its last dimension.
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        burn::nn::RmsNorm { gamma: self.weight.clone(), epsilon: self.eps }.forward(x)
    }
}

/// Rotary position embedding with precomputed `cos`/`sin` tables (HF "rotate half" convention).
///
/// The tables are constants, not parameters.
#[derive(Module, Debug)]
pub struct RotaryEmbedding {
    /// `cos(pos * inv_freq)` duplicated over both halves, `[max_positions, head_dim]`.
    pub cos: Tensor<2>,
    /// `sin(pos * inv_freq)` duplicated over both halves, `[max_positions, head_dim]`.
    pub sin: Tensor<2>,
    /// Rotary dimension (the head dimension).
    pub head_dim: usize,
    /// Number of precomputed positions.
    pub max_positions: usize,
}

impl RotaryEmbedding {
    /// Tables for `max_positions` positions with base `theta` (HF `rope_theta`).
    ///
    /// # Panics
    /// If `head_dim` is odd.
    pub fn new(head_dim: usize, theta: f64, max_positions: usize, device: &Device) -> Self {
        let inv_freq: Vec<f64> = (0..head_dim / 2).map(|i| 1.0 / theta.powf((2 * i) as f64 / head_dim as f64)).collect();
        Self::from_inv_freq(&inv_freq, head_dim, max_positions, device)
    }

    /// Tables from explicit inverse frequencies (`head_dim / 2` of them), e.g. after a
    /// rope-scaling rule such as Llama 3's.
    ///
    /// # Panics
    /// If `head_dim` is odd or `inv_freq.len() != head_dim / 2`.
    pub fn from_inv_freq(inv_freq: &[f64], head_dim: usize, max_positions: usize, device: &Device) -> Self {
        assert!(head_dim % 2 == 0, "rotary head_dim must be even, got {head_dim}");
        assert_eq!(inv_freq.len(), head_dim / 2, "need head_dim / 2 inverse frequencies");
        let half = head_dim / 2;
        let mut cos = Vec::with_capacity(max_positions * head_dim);
        let mut sin = Vec::with_capacity(max_positions * head_dim);
        for p in 0..max_positions {
            // HF computes the angles in f32; doing the same keeps long positions bit-close.
            let angles: Vec<f32> = inv_freq.iter().map(|&f| (p as f32) * (f as f32)).collect();
            for _ in 0..2 {
                for a in angles.iter().take(half) {
                    cos.push(a.cos());
                    sin.push(a.sin());
                }
            }
        }
        RotaryEmbedding {
            cos: Tensor::from_data(TensorData::new(cos, [max_positions, head_dim]), device),
            sin: Tensor::from_data(TensorData::new(sin, [max_positions, head_dim]), device),
            head_dim,
            max_positions,
        }
    }

    /// The `[T, head_dim]` cos and sin rows for `positions`.
    fn rows(&self, positions: &[usize], device: &Device) -> (Tensor<2>, Tensor<2>) {
        let t = positions.len();
        let contiguous = positions.windows(2).all(|w| w[1] == w[0] + 1);
        if contiguous && t > 0 {
            let s = positions[0];
            (self.cos.clone().narrow(0, s, t), self.sin.clone().narrow(0, s, t))
        } else {
            let idx: Vec<i64> = positions.iter().map(|&p| p as i64).collect();
            let idx = Tensor::<1, Int>::from_data(TensorData::new(idx, [t]), device);
            (self.cos.clone().select(0, idx.clone()), self.sin.clone().select(0, idx))
        }
    }

    /// Rotates `x` (`[B, heads, T, head_dim]`) at `positions` (length `T`, shared by the batch).
    ///
    /// # Panics
    /// If a position is `>= max_positions` or the shapes disagree (callers validate positions
    /// and return [`EdaError::SequenceTooLong`] first).
    pub fn apply(&self, x: Tensor<4>, positions: &[usize]) -> Tensor<4> {
        let [_, _, t, d] = x.dims();
        assert_eq!(t, positions.len(), "rotary: {} positions for {t} rows", positions.len());
        let (cos, sin) = self.tables(positions, d, &x.device());
        self.rotate(x, cos.unsqueeze(), sin.unsqueeze())
    }

    /// Rotates `x` in token-major layout (`[B, T, heads, head_dim]`) at `positions` (length `T`,
    /// shared by the batch; any order, so a packed batch of sequences can give every token its
    /// own position). Element for element the same arithmetic as [`apply`](Self::apply).
    ///
    /// # Panics
    /// As [`apply`](Self::apply).
    pub fn apply_token_major(&self, x: Tensor<4>, positions: &[usize]) -> Tensor<4> {
        let [_, t, _, d] = x.dims();
        assert_eq!(t, positions.len(), "rotary: {} positions for {t} rows", positions.len());
        let (cos, sin) = self.tables(positions, d, &x.device());
        self.rotate(x, cos.reshape([1, t, 1, d]), sin.reshape([1, t, 1, d]))
    }

    fn tables(&self, positions: &[usize], d: usize, device: &Device) -> (Tensor<2>, Tensor<2>) {
        assert_eq!(d, self.head_dim, "rotary: head_dim {d} != {}", self.head_dim);
        if let Some(&p) = positions.iter().max() {
            assert!(p < self.max_positions, "rotary: position {p} >= {}", self.max_positions);
        }
        self.rows(positions, device)
    }

    /// `x * cos + rotate_half(x) * sin` with `cos`/`sin` broadcast against `x`.
    fn rotate(&self, x: Tensor<4>, cos: Tensor<4>, sin: Tensor<4>) -> Tensor<4> {
        let d = self.head_dim;
        let half = d / 2;
        let x1 = x.clone().narrow(3, 0, half);
        let x2 = x.clone().narrow(3, half, half);
        let rotated = Tensor::cat(vec![x2.neg(), x1], 3);
        x * cos + rotated * sin
    }
}

/// Per-layer key/value cache, `[B, kv_heads, len, head_dim]` each, grown by concatenation.
#[derive(Debug, Clone, Default)]
pub struct KvCache {
    /// Cached keys (after rotary), `[B, kv_heads, len, head_dim]`.
    pub k: Option<Tensor<4>>,
    /// Cached values, `[B, kv_heads, len, head_dim]`.
    pub v: Option<Tensor<4>>,
}

impl KvCache {
    /// An empty cache.
    pub fn new() -> Self {
        KvCache { k: None, v: None }
    }

    /// Number of cached positions.
    pub fn len(&self) -> usize {
        self.k.as_ref().map(|k| k.dims()[2]).unwrap_or(0)
    }

    /// Whether the cache holds no position.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Empties the cache.
    pub fn reset(&mut self) {
        self.k = None;
        self.v = None;
    }

    /// Appends `k`/`v` (`[B, kv_heads, n, head_dim]`) and returns the full cached tensors.
    pub fn append(&mut self, k: Tensor<4>, v: Tensor<4>) -> (Tensor<4>, Tensor<4>) {
        let k = match self.k.take() {
            Some(old) => Tensor::cat(vec![old, k], 2),
            None => k,
        };
        let v = match self.v.take() {
            Some(old) => Tensor::cat(vec![old, v], 2),
            None => v,
        };
        self.k = Some(k.clone());
        self.v = Some(v.clone());
        (k, v)
    }

    /// Drops every position at index `len` and beyond.
    ///
    /// ```
    /// let mut c = eda_models::layers::KvCache::new();
    /// assert!(c.truncate(0).is_ok());
    /// assert!(c.truncate(1).is_err());
    /// ```
    pub fn truncate(&mut self, len: usize) -> Result<()> {
        let cur = self.len();
        if len > cur {
            return Err(EdaError::InvalidArgument(format!("cannot truncate a KV cache of {cur} positions to {len}")));
        }
        if len == cur {
            return Ok(());
        }
        if len == 0 {
            self.reset();
            return Ok(());
        }
        self.k = self.k.take().map(|k| k.narrow(2, 0, len));
        self.v = self.v.take().map(|v| v.narrow(2, 0, len));
        Ok(())
    }

    /// Keeps only positions `keep` (strictly increasing, each `< len()`), in that order.
    pub fn retain(&mut self, keep: &[usize]) -> Result<()> {
        let cur = self.len();
        validate_keep(keep, cur)?;
        if keep.len() == cur {
            return Ok(());
        }
        if keep.is_empty() {
            self.reset();
            return Ok(());
        }
        // A kept prefix is a plain truncation.
        if keep.iter().enumerate().all(|(i, &k)| i == k) {
            return self.truncate(keep.len());
        }
        let Some(k) = self.k.take() else { return Ok(()) };
        let v = self.v.take().expect("k and v are set together");
        let device = k.device();
        let idx: Vec<i64> = keep.iter().map(|&i| i as i64).collect();
        let idx = Tensor::<1, Int>::from_data(TensorData::new(idx, [keep.len()]), &device);
        self.k = Some(k.select(2, idx.clone()));
        self.v = Some(v.select(2, idx));
        Ok(())
    }
}

/// Checks that `keep` is strictly increasing and within `0..len`.
pub(crate) fn validate_keep(keep: &[usize], len: usize) -> Result<()> {
    if keep.windows(2).any(|w| w[1] <= w[0]) {
        return Err(EdaError::InvalidArgument(format!("retain indices must be strictly increasing, got {keep:?}")));
    }
    if let Some(&last) = keep.last() {
        if last >= len {
            return Err(EdaError::InvalidArgument(format!("retain index {last} out of range for a cache of {len} positions")));
        }
    }
    Ok(())
}

/// Shape of a grouped-query attention block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttentionConfig {
    /// Model width.
    pub hidden_size: usize,
    /// Query heads.
    pub num_heads: usize,
    /// Key/value heads (divides `num_heads`).
    pub num_kv_heads: usize,
    /// Width of one head.
    pub head_dim: usize,
    /// Whether q, k and v projections have a bias (Qwen2: true; Llama: `attention_bias`).
    pub bias: bool,
}

/// Grouped-query self-attention with rotary embeddings (HF Qwen2/Llama layout).
#[derive(Module, Debug)]
pub struct Attention {
    /// Query projection, `hidden -> heads * head_dim`.
    pub q_proj: Linear,
    /// Key projection, `hidden -> kv_heads * head_dim`.
    pub k_proj: Linear,
    /// Value projection, `hidden -> kv_heads * head_dim`.
    pub v_proj: Linear,
    /// Output projection, `heads * head_dim -> hidden`, no bias.
    pub o_proj: Linear,
    /// LoRA adapters on the projections (`None` for a plain model; see [`crate::lora`]).
    pub lora: Option<AttentionLora>,
    /// Query heads.
    pub num_heads: usize,
    /// Key/value heads.
    pub num_kv_heads: usize,
    /// Width of one head.
    pub head_dim: usize,
}

impl Attention {
    /// Randomly initialised attention (normal, std [`INIT_STD`], zero biases).
    ///
    /// # Panics
    /// If `num_kv_heads` does not divide `num_heads`.
    pub fn new(cfg: &AttentionConfig, device: &Device) -> Self {
        assert!(cfg.num_kv_heads > 0 && cfg.num_heads % cfg.num_kv_heads == 0, "num_kv_heads must divide num_heads");
        Attention {
            q_proj: linear(cfg.hidden_size, cfg.num_heads * cfg.head_dim, cfg.bias, device),
            k_proj: linear(cfg.hidden_size, cfg.num_kv_heads * cfg.head_dim, cfg.bias, device),
            v_proj: linear(cfg.hidden_size, cfg.num_kv_heads * cfg.head_dim, cfg.bias, device),
            o_proj: linear(cfg.num_heads * cfg.head_dim, cfg.hidden_size, false, device),
            lora: None,
            num_heads: cfg.num_heads,
            num_kv_heads: cfg.num_kv_heads,
            head_dim: cfg.head_dim,
        }
    }

    /// Self-attention over `x` (`[B, T, hidden]`) at rotary `positions` (length `T`).
    ///
    /// `mask_bias` is an additive `[T, past + T]` bias (`0` allowed, `-inf` masked) where `past`
    /// is the cache length; `None` means causal over `past + T`. When `cache` is given, the new
    /// keys/values are appended to it in place and attention covers the cached positions too.
    ///
    /// # Panics
    /// On inconsistent shapes (callers validate their inputs first).
    pub fn forward(
        &self,
        x: Tensor<3>,
        rope: &RotaryEmbedding,
        positions: &[usize],
        cache: Option<&mut KvCache>,
        mask_bias: Option<Tensor<2>>,
    ) -> Tensor<3> {
        let [b, t, _] = x.dims();
        let (nh, nkv, hd) = (self.num_heads, self.num_kv_heads, self.head_dim);
        let [q, k, v] = self.project_qkv(x);
        let q = q.reshape([b, t, nh, hd]).swap_dims(1, 2);
        let k = k.reshape([b, t, nkv, hd]).swap_dims(1, 2);
        let v = v.reshape([b, t, nkv, hd]).swap_dims(1, 2);
        let q = rope.apply(q, positions);
        let k = rope.apply(k, positions);
        let out = self.attend(q, k, v, cache, mask_bias);
        self.project_out(out)
    }

    /// The q, k and v projections of `x` (with their adapters, if any).
    fn project_qkv(&self, x: Tensor<3>) -> [Tensor<3>; 3] {
        let l = self.lora.as_ref();
        [
            adapted(&self.q_proj, l.and_then(|l| l.q.as_ref()), x.clone()),
            adapted(&self.k_proj, l.and_then(|l| l.k.as_ref()), x.clone()),
            adapted(&self.v_proj, l.and_then(|l| l.v.as_ref()), x),
        ]
    }

    /// The output projection (with its adapter, if any).
    fn project_out(&self, x: Tensor<3>) -> Tensor<3> {
        adapted(&self.o_proj, self.lora.as_ref().and_then(|l| l.o.as_ref()), x)
    }

    /// Attention of rotated `q` (`[B, heads, T, head_dim]`) over `k`/`v`
    /// (`[B, kv_heads, T, head_dim]`) appended to `cache`; returns the heads' outputs
    /// `[B, T, heads * head_dim]` before `o_proj`. Shared by [`forward`](Self::forward) and
    /// [`forward_varlen`](Self::forward_varlen) so both do the same arithmetic.
    fn attend(&self, q: Tensor<4>, k: Tensor<4>, v: Tensor<4>, cache: Option<&mut KvCache>, mask_bias: Option<Tensor<2>>) -> Tensor<3> {
        let [b, _, t, _] = q.dims();
        let (nh, nkv, hd) = (self.num_heads, self.num_kv_heads, self.head_dim);
        let rep = nh / nkv;
        let (k, v, past) = match cache {
            Some(c) => {
                let past = c.len();
                let (k, v) = c.append(k, v);
                (k, v, past)
            }
            None => (k, v, 0),
        };
        let total = past + t;
        // Grouped query attention without materialising repeated kv heads: query head
        // `g * rep + r` uses kv head `g`, so fold the `rep` query heads of a group into rows.
        let q = q.mul_scalar(1.0 / (hd as f64).sqrt()).reshape([b, nkv, rep * t, hd]);
        let scores = q.matmul(k.swap_dims(2, 3)).reshape([b, nh, t, total]);
        let device = scores.device();
        let bias = match mask_bias {
            Some(m) => Some(m),
            None if t > 1 => Some(causal_bias(past, t, &device)),
            None => None,
        };
        let scores = match bias {
            Some(m) => scores + m.unsqueeze::<4>(),
            None => scores,
        };
        let probs = softmax(scores, 3).reshape([b, nkv, rep * t, total]);
        probs.matmul(v).reshape([b, nh, t, hd]).swap_dims(1, 2).reshape([b, t, nh * hd])
    }

    /// Causal self-attention over a *packed* batch of independent sequences: `x` is
    /// `[1, N, hidden]` holding the new tokens of every sequence back to back (`lens[i]` tokens
    /// for sequence `i`, `N = sum(lens)`).
    ///
    /// Sequence `i` continues `caches[i]` (appended in place; without caches every sequence
    /// starts at position 0): its tokens sit at rotary positions `past_i..past_i + lens[i]` and
    /// attend causally to its own cache and tokens only. `biases[i]` is that sequence's additive
    /// `[lens[i], past_i + lens[i]]` mask, or `None` for plain causal (see [`varlen_biases`]).
    ///
    /// The projections and the MLP run once over all `N` tokens (the batching gain) while the
    /// attention itself runs per sequence at its exact length: no padding, and every sequence
    /// gets the same numbers as a batch-1 [`forward`](Self::forward) (bit for bit on the CPU
    /// backend, whose matmul rows do not depend on the other rows).
    ///
    /// # Panics
    /// On inconsistent shapes or lengths (callers validate their inputs first).
    pub fn forward_varlen(
        &self,
        x: Tensor<3>,
        rope: &RotaryEmbedding,
        lens: &[usize],
        mut caches: Option<&mut [KvCache]>,
        biases: &[Option<Tensor<2>>],
    ) -> Tensor<3> {
        let [b, n, _] = x.dims();
        assert_eq!(b, 1, "a packed batch has batch dimension 1");
        assert_eq!(n, lens.iter().sum::<usize>(), "packed tokens vs sequence lengths");
        assert_eq!(biases.len(), lens.len(), "one mask bias per sequence");
        if let Some(c) = caches.as_deref() {
            assert_eq!(c.len(), lens.len(), "one KV cache per sequence");
        }
        let (nh, nkv, hd) = (self.num_heads, self.num_kv_heads, self.head_dim);
        let pasts: Vec<usize> = match caches.as_deref() {
            Some(c) => c.iter().map(KvCache::len).collect(),
            None => vec![0; lens.len()],
        };
        let positions: Vec<usize> = pasts.iter().zip(lens).flat_map(|(&p, &l)| p..p + l).collect();
        // Rotary is elementwise, so rotating the packed tensor equals rotating each sequence.
        let [q, k, v] = self.project_qkv(x);
        let q = rope.apply_token_major(q.reshape([1, n, nh, hd]), &positions);
        let k = rope.apply_token_major(k.reshape([1, n, nkv, hd]), &positions);
        let v = v.reshape([1, n, nkv, hd]);
        let mut outs = Vec::with_capacity(lens.len());
        let mut offset = 0;
        for (i, &l) in lens.iter().enumerate() {
            let part = |t: &Tensor<4>| t.clone().narrow(1, offset, l).swap_dims(1, 2);
            let cache = caches.as_deref_mut().map(|c| &mut c[i]);
            outs.push(self.attend(part(&q), part(&k), part(&v), cache, biases[i].clone()));
            offset += l;
        }
        self.project_out(Tensor::cat(outs, 1))
    }
}

/// The per-sequence mask biases of a packed causal batch (for
/// [`Attention::forward_varlen`]): `None` (plain causal, built on the fly) for a single new
/// token, else the causal bias `[len, past + len]`, built once here for all layers.
pub fn varlen_biases(pasts: &[usize], lens: &[usize], device: &Device) -> Vec<Option<Tensor<2>>> {
    pasts.iter().zip(lens).map(|(&p, &l)| (l > 1).then(|| causal_bias(p, l, device))).collect()
}

/// Additive causal bias `[new, past + new]`: `0` where key `j <= past + i`, `-inf` elsewhere.
pub fn causal_bias(past: usize, new: usize, device: &Device) -> Tensor<2> {
    let total = past + new;
    let mut v = Vec::with_capacity(new * total);
    for i in 0..new {
        for j in 0..total {
            v.push(if j <= past + i { 0.0f32 } else { f32::NEG_INFINITY });
        }
    }
    Tensor::from_data(TensorData::new(v, [new, total]), device)
}

/// SwiGLU feed-forward block: `down(silu(gate(x)) * up(x))`, no biases.
#[derive(Module, Debug)]
pub struct Mlp {
    /// Gate projection, `hidden -> intermediate`.
    pub gate_proj: Linear,
    /// Up projection, `hidden -> intermediate`.
    pub up_proj: Linear,
    /// Down projection, `intermediate -> hidden`.
    pub down_proj: Linear,
    /// LoRA adapters on the projections (`None` for a plain model; see [`crate::lora`]).
    pub lora: Option<MlpLora>,
}

impl Mlp {
    /// Randomly initialised block (normal, std [`INIT_STD`]).
    pub fn new(hidden: usize, intermediate: usize, device: &Device) -> Self {
        Mlp {
            gate_proj: linear(hidden, intermediate, false, device),
            up_proj: linear(hidden, intermediate, false, device),
            down_proj: linear(intermediate, hidden, false, device),
            lora: None,
        }
    }

    /// Applies the block over the last dimension.
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let l = self.lora.as_ref();
        let gate = adapted(&self.gate_proj, l.and_then(|l| l.gate.as_ref()), x.clone());
        let up = adapted(&self.up_proj, l.and_then(|l| l.up.as_ref()), x);
        adapted(&self.down_proj, l.and_then(|l| l.down.as_ref()), silu(gate) * up)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use eda_core::backend::{device_from_name, to_vec_f32};

    fn dev() -> Device {
        device_from_name("cpu").unwrap()
    }

    fn max_diff(a: Tensor<3>, b: Tensor<3>) -> f32 {
        let a = to_vec_f32(a).unwrap();
        let b = to_vec_f32(b).unwrap();
        a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
    }

    #[test]
    fn linear_hf_roundtrip() {
        let d = dev();
        let w = Tensor::<2>::from_floats([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]], &d);
        let b = Tensor::<1>::from_floats([0.5, 0.0, -1.0], &d);
        let l = linear_from_hf(w.clone(), Some(b));
        let (w2, b2) = linear_to_hf(&l);
        assert_eq!(to_vec_f32(w2).unwrap(), to_vec_f32(w).unwrap());
        assert_eq!(to_vec_f32(b2.unwrap()).unwrap(), vec![0.5, 0.0, -1.0]);
        let y = l.forward(Tensor::<2>::from_floats([[1.0, -1.0]], &d));
        assert_eq!(to_vec_f32(y).unwrap(), vec![-0.5, -1.0, -2.0]);
    }

    #[test]
    fn rms_norm_matches_formula() {
        let d = dev();
        let n = RmsNorm::from_weight(Tensor::<1>::from_floats([1.0, 2.0], &d), 0.0);
        let y = n.forward(Tensor::<2>::from_floats([[3.0, 4.0]], &d));
        let r = ((9.0f32 + 16.0) / 2.0).sqrt();
        let y = to_vec_f32(y).unwrap();
        assert!((y[0] - 3.0 / r).abs() < 1e-6 && (y[1] - 8.0 / r).abs() < 1e-6);
    }

    #[test]
    fn rms_norm_is_bit_identical_to_the_hand_written_hf_norm() {
        // The hand-written norm burn's replaced; the HF fixture logits depend on it bit for bit.
        let d = dev();
        let x = Tensor::<3>::random([2, 5, 48], burn::tensor::Distribution::Normal(0.0, 3.0), &d);
        let w = Tensor::<1>::random([48], burn::tensor::Distribution::Normal(1.0, 0.2), &d);
        let n = RmsNorm::from_weight(w.clone(), 1e-6);
        let rms = (x.clone().square().mean_dim(2) + 1e-6).sqrt();
        let want = (x.clone() / rms) * w.unsqueeze::<3>();
        assert_eq!(to_vec_f32(n.forward(x)).unwrap(), to_vec_f32(want).unwrap());
    }

    #[test]
    fn rope_position_zero_is_identity_and_norm_preserving() {
        let d = dev();
        let rope = RotaryEmbedding::new(8, 10000.0, 16, &d);
        let x = Tensor::<4>::random([1, 2, 3, 8], burn::tensor::Distribution::Default, &d);
        let y = rope.apply(x.clone(), &[0, 5, 9]);
        let xv = to_vec_f32(x.clone()).unwrap();
        let yv = to_vec_f32(y).unwrap();
        // Row 0 (position 0) of each head is unchanged.
        for h in 0..2 {
            for i in 0..8 {
                let o = h * 24 + i;
                assert!((xv[o] - yv[o]).abs() < 1e-6);
            }
        }
        let n = |v: &[f32]| v.iter().map(|a| a * a).sum::<f32>();
        assert!((n(&xv) - n(&yv)).abs() < 1e-4);
        // Non-contiguous and contiguous lookups agree.
        let a = rope.apply(x.clone(), &[3, 4, 5]);
        let b = rope.apply(x, &[3, 4, 6]);
        let (a, b) = (to_vec_f32(a).unwrap(), to_vec_f32(b).unwrap());
        assert!(a[..16].iter().zip(&b[..16]).all(|(x, y)| (x - y).abs() < 1e-6));
        assert!(a[16..24].iter().zip(&b[16..24]).any(|(x, y)| (x - y).abs() > 1e-4));
    }

    #[test]
    fn attention_cache_matches_full_forward() {
        let d = dev();
        let cfg = AttentionConfig { hidden_size: 16, num_heads: 4, num_kv_heads: 2, head_dim: 8, bias: true };
        let attn = Attention::new(&cfg, &d);
        let rope = RotaryEmbedding::new(8, 10000.0, 32, &d);
        let x = Tensor::<3>::random([2, 5, 16], burn::tensor::Distribution::Normal(0.0, 1.0), &d);
        let full = attn.forward(x.clone(), &rope, &[0, 1, 2, 3, 4], None, None);
        let mut cache = KvCache::new();
        let a = attn.forward(x.clone().narrow(1, 0, 3), &rope, &[0, 1, 2], Some(&mut cache), None);
        let b = attn.forward(x.clone().narrow(1, 3, 1), &rope, &[3], Some(&mut cache), None);
        let c = attn.forward(x.narrow(1, 4, 1), &rope, &[4], Some(&mut cache), None);
        assert_eq!(cache.len(), 5);
        let inc = Tensor::cat(vec![a, b, c], 1);
        assert!(max_diff(full, inc) < 1e-5);
        cache.truncate(2).unwrap();
        assert_eq!(cache.len(), 2);
        cache.retain(&[0]).unwrap();
        assert_eq!(cache.len(), 1);
        assert!(cache.retain(&[1]).is_err());
        assert!(cache.truncate(3).is_err());
    }

    #[test]
    fn mlp_and_autodiff() {
        let d = dev().autodiff();
        let mlp = Mlp::new(8, 16, &d);
        let norm = RmsNorm::new(8, 1e-6, &d);
        let x = Tensor::<3>::random([1, 2, 8], burn::tensor::Distribution::Default, &d);
        let loss = mlp.forward(norm.forward(x)).sum();
        let grads = loss.backward();
        assert!(mlp.gate_proj.weight.val().grad(&grads).is_some());
        assert!(norm.weight.val().grad(&grads).is_some());
    }
}
