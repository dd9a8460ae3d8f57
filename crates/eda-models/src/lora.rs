//! LoRA adapters (Hu et al., 2021) on the target's linear projections, for fine-tuning a target
//! cheaply: `y = W x + (α / r) · B A x` with the base `W` frozen and only `A` (`r × in`) and
//! `B` (`out × r`) trained. `B` starts at zero, so an adapted model starts equal to its base.
//!
//! Adapters live inside the layers ([`AttentionLora`] in [`Attention`],
//! [`MlpLora`] in [`Mlp`]) so every forward path (training, cached decoding,
//! packed batches) applies them. [`CausalLm::add_lora`] attaches them and freezes everything
//! else; [`CausalLm::merge_lora`] folds them into the base weights (`W += (α / r) · B A`), after
//! which the model is an ordinary checkpoint ([`CausalLm::save_pretrained`]).
//!
//! ```
//! use eda_models::{CausalLm, LoraModule, LoraSpec, ModelConfig};
//! let device = eda_core::backend::device_from_name("cpu").unwrap();
//! let lm = CausalLm::new(&ModelConfig::qwen2(32, 16, 32, 1, 2, 1, 64), &device);
//! let spec = LoraSpec { rank: 4, alpha: 8.0, modules: vec![LoraModule::Q, LoraModule::V] };
//! let lm = lm.add_lora(&spec, 0).unwrap();
//! // q: 16 → 16 (2 heads of 8), v: 16 → 8 (1 kv head): A is in × r, B is r × out.
//! assert_eq!(lm.lora_params(), (16 * 4 + 4 * 16) + (16 * 4 + 4 * 8));
//! let merged = lm.merge_lora();
//! assert_eq!(merged.lora_params(), 0);
//! ```

use std::fmt;
use std::str::FromStr;

use burn::module::{Module, Param};
use burn::nn::Linear;
use burn::tensor::{Device, Tensor, TensorData};

use crate::layers::{Attention, Mlp};
use eda_core::{EdaError, Result};
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::model::CausalLm;

/// A projection LoRA can adapt (HF PEFT's `target_modules` names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LoraModule {
    /// `self_attn.q_proj`.
    Q,
    /// `self_attn.k_proj`.
    K,
    /// `self_attn.v_proj`.
    V,
    /// `self_attn.o_proj`.
    O,
    /// `mlp.gate_proj`.
    Gate,
    /// `mlp.up_proj`.
    Up,
    /// `mlp.down_proj`.
    Down,
}

impl LoraModule {
    /// Every projection, in layer order.
    pub const ALL: [LoraModule; 7] =
        [LoraModule::Q, LoraModule::K, LoraModule::V, LoraModule::O, LoraModule::Gate, LoraModule::Up, LoraModule::Down];

    /// The HF / PEFT name (`q_proj`, ..., `down_proj`).
    pub fn hf_name(self) -> &'static str {
        match self {
            LoraModule::Q => "q_proj",
            LoraModule::K => "k_proj",
            LoraModule::V => "v_proj",
            LoraModule::O => "o_proj",
            LoraModule::Gate => "gate_proj",
            LoraModule::Up => "up_proj",
            LoraModule::Down => "down_proj",
        }
    }
}

impl fmt::Display for LoraModule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.hf_name())
    }
}

impl FromStr for LoraModule {
    type Err = EdaError;

    /// Parses `q`/`q_proj`, `k`, `v`, `o`, `gate`, `up`, `down` (with or without `_proj`).
    ///
    /// ```
    /// use eda_models::LoraModule;
    /// assert_eq!("q_proj".parse::<LoraModule>().unwrap(), LoraModule::Q);
    /// assert_eq!("down".parse::<LoraModule>().unwrap(), LoraModule::Down);
    /// assert!("lm_head".parse::<LoraModule>().is_err());
    /// ```
    fn from_str(s: &str) -> Result<Self> {
        let short = s.trim().strip_suffix("_proj").unwrap_or(s.trim());
        LoraModule::ALL
            .into_iter()
            .find(|m| m.hf_name().strip_suffix("_proj") == Some(short))
            .ok_or_else(|| EdaError::InvalidArgument(format!("unknown LoRA module {s:?}; expected one of q, k, v, o, gate, up, down")))
    }
}

/// Which projections get adapters, and their rank and scaling.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoraSpec {
    /// Rank `r` of every adapter.
    pub rank: usize,
    /// Scaling numerator: the update is multiplied by `alpha / rank`.
    pub alpha: f64,
    /// The projections adapted in every layer.
    pub modules: Vec<LoraModule>,
}

impl Default for LoraSpec {
    /// Rank 8, alpha 16, every projection (PEFT's common "all-linear" setting).
    fn default() -> Self {
        LoraSpec { rank: 8, alpha: 16.0, modules: LoraModule::ALL.to_vec() }
    }
}

impl LoraSpec {
    /// Checks rank, alpha and modules ([`EdaError::InvalidConfig`]).
    pub fn validate(&self) -> Result<()> {
        if self.rank == 0 {
            return Err(EdaError::InvalidConfig("LoRA rank must be at least 1".into()));
        }
        if !(self.alpha.is_finite() && self.alpha > 0.0) {
            return Err(EdaError::InvalidConfig(format!("LoRA alpha must be positive and finite, got {}", self.alpha)));
        }
        if self.modules.is_empty() {
            return Err(EdaError::InvalidConfig("LoRA needs at least one target module".into()));
        }
        Ok(())
    }

    /// `alpha / rank`.
    pub fn scale(&self) -> f64 {
        self.alpha / self.rank as f64
    }
}

/// One adapter: `delta(x) = scale · (x A) B` in burn's row-vector layout.
#[derive(Module, Debug)]
pub struct LoraAdapter {
    /// Down projection, `[in, rank]` (the transpose of PEFT's `lora_A.weight`).
    pub a: Param<Tensor<2>>,
    /// Up projection, `[rank, out]` (the transpose of PEFT's `lora_B.weight`); zero at init.
    pub b: Param<Tensor<2>>,
    /// `alpha / rank`.
    #[module(skip)]
    pub scale: f64,
}

impl LoraAdapter {
    /// A fresh adapter for a `d_in → d_out` projection: `A ~ U(−1/√in, 1/√in)` (PEFT's
    /// Kaiming-uniform bound), `B = 0`.
    pub fn new(d_in: usize, d_out: usize, rank: usize, scale: f64, rng: &mut impl Rng, device: &Device) -> Self {
        let bound = 1.0 / (d_in as f32).sqrt();
        let a: Vec<f32> = (0..d_in * rank).map(|_| rng.random_range(-bound..bound)).collect();
        LoraAdapter {
            a: Param::from_tensor(Tensor::from_data(TensorData::new(a, [d_in, rank]), device)),
            b: Param::from_tensor(Tensor::zeros([rank, d_out], device)),
            scale,
        }
    }

    /// The adapter's output for inputs `x` (`[..., in] → [..., out]`).
    pub fn delta<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        x.matmul(self.a.val().unsqueeze()).matmul(self.b.val().unsqueeze()).mul_scalar(self.scale)
    }

    /// The dense update `scale · A B` in burn's `[in, out]` weight layout.
    pub fn dense(&self) -> Tensor<2> {
        self.a.val().matmul(self.b.val()).mul_scalar(self.scale)
    }

    /// Trainable scalars (`A` and `B`).
    pub fn num_params(&self) -> usize {
        self.a.val().shape().num_elements() + self.b.val().shape().num_elements()
    }
}

/// `linear(x)`, plus the adapter's output when there is one.
pub fn adapted<const D: usize>(linear: &Linear, lora: Option<&LoraAdapter>, x: Tensor<D>) -> Tensor<D> {
    match lora {
        Some(l) => linear.forward(x.clone()) + l.delta(x),
        None => linear.forward(x),
    }
}

/// Folds `lora` into `linear`'s weight (bias unchanged).
fn merge_into(linear: Linear, lora: Option<LoraAdapter>) -> Linear {
    match lora {
        Some(l) => {
            let w = linear.weight.val() + l.dense();
            Linear { weight: Param::from_tensor(w.detach()), bias: linear.bias.map(|b| Param::from_tensor(b.val().detach())) }
        }
        None => linear,
    }
}

/// The adapters of one attention block (any may be absent).
#[derive(Module, Debug)]
pub struct AttentionLora {
    /// On `q_proj`.
    pub q: Option<LoraAdapter>,
    /// On `k_proj`.
    pub k: Option<LoraAdapter>,
    /// On `v_proj`.
    pub v: Option<LoraAdapter>,
    /// On `o_proj`.
    pub o: Option<LoraAdapter>,
}

/// The adapters of one MLP block (any may be absent).
#[derive(Module, Debug)]
pub struct MlpLora {
    /// On `gate_proj`.
    pub gate: Option<LoraAdapter>,
    /// On `up_proj`.
    pub up: Option<LoraAdapter>,
    /// On `down_proj`.
    pub down: Option<LoraAdapter>,
}

fn count(adapters: &[&Option<LoraAdapter>]) -> usize {
    adapters.iter().filter_map(|a| a.as_ref()).map(LoraAdapter::num_params).sum()
}

impl Attention {
    /// Attaches fresh adapters (`spec`'s attention projections) drawn from `rng`, on the device
    /// of the projections' weights. Adapters already present are replaced.
    pub fn attach_lora(&mut self, spec: &LoraSpec, rng: &mut impl Rng) {
        let mut make = |m: LoraModule, l: &Linear| spec.modules.contains(&m).then(|| adapter_for(l, spec, &mut *rng));
        self.lora = Some(AttentionLora {
            q: make(LoraModule::Q, &self.q_proj),
            k: make(LoraModule::K, &self.k_proj),
            v: make(LoraModule::V, &self.v_proj),
            o: make(LoraModule::O, &self.o_proj),
        });
    }

    /// Folds the adapters into the projections and removes them.
    pub fn merge_lora(mut self) -> Self {
        if let Some(a) = self.lora.take() {
            self.q_proj = merge_into(self.q_proj, a.q);
            self.k_proj = merge_into(self.k_proj, a.k);
            self.v_proj = merge_into(self.v_proj, a.v);
            self.o_proj = merge_into(self.o_proj, a.o);
        }
        self
    }

    /// Scalars in the adapters.
    pub fn lora_params(&self) -> usize {
        self.lora.as_ref().map_or(0, |a| count(&[&a.q, &a.k, &a.v, &a.o]))
    }
}

impl Mlp {
    /// Attaches fresh adapters (`spec`'s MLP projections) drawn from `rng`, on the device of the
    /// projections' weights. Adapters already present are replaced.
    pub fn attach_lora(&mut self, spec: &LoraSpec, rng: &mut impl Rng) {
        let mut make = |m: LoraModule, l: &Linear| spec.modules.contains(&m).then(|| adapter_for(l, spec, &mut *rng));
        self.lora = Some(MlpLora {
            gate: make(LoraModule::Gate, &self.gate_proj),
            up: make(LoraModule::Up, &self.up_proj),
            down: make(LoraModule::Down, &self.down_proj),
        });
    }

    /// Folds the adapters into the projections and removes them.
    pub fn merge_lora(mut self) -> Self {
        if let Some(m) = self.lora.take() {
            self.gate_proj = merge_into(self.gate_proj, m.gate);
            self.up_proj = merge_into(self.up_proj, m.up);
            self.down_proj = merge_into(self.down_proj, m.down);
        }
        self
    }

    /// Scalars in the adapters.
    pub fn lora_params(&self) -> usize {
        self.lora.as_ref().map_or(0, |m| count(&[&m.gate, &m.up, &m.down]))
    }
}

/// A fresh adapter shaped for `linear` (burn's `[in, out]` weight).
fn adapter_for(linear: &Linear, spec: &LoraSpec, rng: &mut impl Rng) -> LoraAdapter {
    let w = linear.weight.val();
    let [d_in, d_out] = w.dims();
    LoraAdapter::new(d_in, d_out, spec.rank, spec.scale(), rng, &w.device())
}

impl CausalLm {
    /// Freezes every parameter of the model and attaches fresh adapters (`spec`) to the chosen
    /// projections of every layer, initialised from `seed`; only the adapters then require a
    /// gradient. Call it on the device the model trains on (the autodiff one).
    ///
    /// Errors: [`EdaError::InvalidConfig`] for a bad spec or a model that already has adapters.
    pub fn add_lora(self, spec: &LoraSpec, seed: u64) -> Result<Self> {
        spec.validate()?;
        if self.lora_params() > 0 {
            return Err(EdaError::InvalidConfig("the model already has LoRA adapters; merge them first".into()));
        }
        let mut rng = eda_core::sampling::seeded_rng(seed ^ 0x10_4a_1a);
        let mut lm = self.no_grad();
        for layer in &mut lm.layers {
            layer.self_attn.attach_lora(spec, &mut rng);
            layer.mlp.attach_lora(spec, &mut rng);
        }
        Ok(lm)
    }

    /// Trainable scalars in the model's adapters (0 without adapters).
    pub fn lora_params(&self) -> usize {
        self.layers.iter().map(|l| l.self_attn.lora_params() + l.mlp.lora_params()).sum()
    }

    /// Folds every adapter into its projection (`W += (α / r) · B A`) and removes it. The result
    /// computes the same function (up to float rounding) with plain weights. Parameters keep
    /// their gradient requirement except the merged weights, which are new leaves.
    pub fn merge_lora(mut self) -> Self {
        self.layers = self
            .layers
            .into_iter()
            .map(|mut l| {
                l.self_attn = l.self_attn.merge_lora();
                l.mlp = l.mlp.merge_lora();
                l
            })
            .collect();
        self
    }
}
