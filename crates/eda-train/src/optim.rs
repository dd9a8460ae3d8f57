//! A small AdamW over a burn module's trainable parameters, with gradient accumulation, global
//! norm clipping and an explicit, exactly restorable state (moments keyed by parameter path).
//!
//! burn's own optimiser clips gradients per parameter, not by global norm, and keys its state by
//! [`ParamId`](burn::module::ParamId)s that change when a module is rebuilt; this implementation
//! keys everything by the parameter's path in the module tree (`layers.0.self_attn.q_proj.weight`)
//! so a checkpoint restores bit-identically into a freshly constructed module.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::{Device, Gradients, Tensor, TensorData};
use eda_core::safetensors::{Dtype, HostTensor, SafetensorsFile};
use eda_core::{EdaError, Result};

use crate::config::AdamWParams;

/// Gradients summed over micro-batches, keyed by parameter path, flattened, on the inner
/// (non-autodiff) device.
#[derive(Debug, Default, Clone)]
pub struct GradAccumulator {
    grads: HashMap<String, Tensor<1>>,
}

struct GradCollector<'a> {
    path: Vec<String>,
    grads: &'a mut Gradients,
    acc: &'a mut HashMap<String, Tensor<1>>,
}

impl ModuleVisitor for GradCollector<'_> {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }
    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if !param.val().is_require_grad() {
            return;
        }
        let Some(g) = param.val().grad_remove(self.grads) else { return };
        let n = g.shape().num_elements();
        let g = g.reshape([n]);
        let key = self.path.join(".");
        let sum = match self.acc.remove(&key) {
            Some(prev) => prev + g,
            None => g,
        };
        self.acc.insert(key, sum);
    }
}

impl GradAccumulator {
    /// An empty accumulator.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the gradients of `module`'s trainable parameters from a backward pass.
    pub fn add<M: Module>(&mut self, module: &M, mut grads: Gradients) {
        let mut v = GradCollector { path: Vec::new(), grads: &mut grads, acc: &mut self.grads };
        module.visit(&mut v);
    }

    /// Number of parameters with a gradient.
    pub fn len(&self) -> usize {
        self.grads.len()
    }

    /// Whether no gradient has been accumulated.
    pub fn is_empty(&self) -> bool {
        self.grads.is_empty()
    }

    /// The accumulated gradients copied to the host, flattened, keyed by parameter path (for
    /// inspection and for comparing backends).
    pub fn to_host(&self) -> Result<BTreeMap<String, Vec<f32>>> {
        self.grads.iter().map(|(k, g)| Ok((k.clone(), eda_core::backend::to_vec_f32(g.clone())?))).collect()
    }

    /// Global L2 norm of all accumulated gradients (one device read-back).
    pub fn global_norm(&self) -> Result<f64> {
        let mut keys: Vec<&String> = self.grads.keys().collect();
        keys.sort();
        if keys.is_empty() {
            return Ok(0.0);
        }
        let sums: Vec<Tensor<1>> = keys.iter().map(|k| self.grads[*k].clone().square().sum()).collect();
        let v = eda_core::backend::to_vec_f32(Tensor::cat(sums, 0))?;
        Ok(v.iter().map(|&x| x as f64).sum::<f64>().sqrt())
    }

    /// Multiplies every gradient by `factor`.
    pub fn scale(&mut self, factor: f64) {
        for g in self.grads.values_mut() {
            *g = g.clone() * factor;
        }
    }

    /// Clips to global norm `max_norm` (PyTorch's `clip_grad_norm_`: factor
    /// `max_norm / (norm + 1e-6)` when below 1) and returns the norm before clipping.
    pub fn clip(&mut self, max_norm: f64) -> Result<f64> {
        let norm = self.global_norm()?;
        let factor = max_norm / (norm + 1e-6);
        if norm.is_finite() && factor < 1.0 {
            self.scale(factor);
        }
        Ok(norm)
    }
}

/// AdamW with decoupled weight decay (PyTorch semantics) over a module's trainable parameters.
#[derive(Debug, Clone)]
pub struct AdamW {
    params: AdamWParams,
    /// Updates applied so far (the bias-correction step `t` of the next update is `step + 1`).
    step: u64,
    /// First and second moments by parameter path, flattened.
    moments: BTreeMap<String, (Tensor<1>, Tensor<1>)>,
}

struct AdamWMapper<'a> {
    path: Vec<String>,
    grads: &'a mut HashMap<String, Tensor<1>>,
    moments: &'a mut BTreeMap<String, (Tensor<1>, Tensor<1>)>,
    p: &'a AdamWParams,
    lr: f64,
    t: u64,
}

impl ModuleMapper for AdamWMapper<'_> {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }
    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let key = self.path.join(".");
        let Some(g) = self.grads.remove(&key) else { return param };
        let (id, tensor, mapper) = param.consume();
        let require_grad = tensor.is_require_grad();
        let shape = tensor.shape();
        let n = shape.num_elements();
        let w = tensor.inner().reshape([n]);
        let (m, v) = match self.moments.remove(&key) {
            Some(mv) => mv,
            None => (g.zeros_like(), g.zeros_like()),
        };
        let (b1, b2) = (self.p.beta1, self.p.beta2);
        let m = m * b1 + g.clone() * (1.0 - b1);
        let v = v * b2 + g.square() * (1.0 - b2);
        let bc1 = 1.0 - b1.powi(self.t as i32);
        let bc2 = 1.0 - b2.powi(self.t as i32);
        let w = if self.p.weight_decay > 0.0 { w * (1.0 - self.lr * self.p.weight_decay) } else { w };
        let denom = (v.clone() / bc2).sqrt() + self.p.eps;
        let w = w - (m.clone() / denom) * (self.lr / bc1);
        self.moments.insert(key, (m, v));
        let mut out = Tensor::from_inner(w.reshape(shape));
        if require_grad {
            out = out.require_grad();
        }
        Param::from_mapped_value(id, out, mapper)
    }
}

impl AdamW {
    /// A fresh optimiser.
    pub fn new(params: AdamWParams) -> Self {
        AdamW { params, step: 0, moments: BTreeMap::new() }
    }

    /// Updates applied so far.
    pub fn step_count(&self) -> u64 {
        self.step
    }

    /// Applies one update with learning rate `lr` using (and consuming) the accumulated
    /// gradients. Parameters without a gradient are left untouched.
    pub fn step<M: Module>(&mut self, lr: f64, module: M, grads: &mut GradAccumulator) -> M {
        self.step += 1;
        let mut mapper =
            AdamWMapper { path: Vec::new(), grads: &mut grads.grads, moments: &mut self.moments, p: &self.params, lr, t: self.step };
        let out = module.map(&mut mapper);
        grads.grads.clear();
        out
    }

    /// Serialises the moments (`{path}.exp_avg`, `{path}.exp_avg_sq`, f32) and the step count
    /// (metadata `step`) as safetensors bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let mut tensors = Vec::new();
        for (k, (m, v)) in &self.moments {
            for (suffix, t) in [("exp_avg", m), ("exp_avg_sq", v)] {
                let vals = eda_core::backend::to_vec_f32(t.clone())?;
                tensors.push(HostTensor::from_values(format!("{k}.{suffix}"), vec![vals.len()], &vals));
            }
        }
        let meta = BTreeMap::from([("format".to_string(), "eda-adamw-v1".to_string()), ("step".to_string(), self.step.to_string())]);
        serialize(&tensors, &meta)
    }

    /// Restores an optimiser from [`to_bytes`](Self::to_bytes) output; tensors go to `device`.
    pub fn from_bytes(params: AdamWParams, bytes: &[u8], device: &Device, path: &Path) -> Result<Self> {
        let (tensors, meta) = deserialize(bytes, path)?;
        let step: u64 = meta
            .get("step")
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| EdaError::Safetensors { path: path.into(), message: "missing `step` metadata".into() })?;
        let dev = device.clone().without_autodiff();
        let mut moments = BTreeMap::new();
        for (name, (shape, vals)) in &tensors {
            if let Some(base) = name.strip_suffix(".exp_avg") {
                let sq = tensors
                    .get(&format!("{base}.exp_avg_sq"))
                    .ok_or_else(|| EdaError::MissingTensor { name: format!("{base}.exp_avg_sq"), file: path.into() })?;
                if sq.0 != *shape {
                    return Err(EdaError::ShapeMismatch {
                        name: format!("{base}.exp_avg_sq"),
                        expected: shape.clone(),
                        actual: sq.0.clone(),
                    });
                }
                let m = Tensor::<1>::from_data(TensorData::new(vals.clone(), [vals.len()]), &dev);
                let v = Tensor::<1>::from_data(TensorData::new(sq.1.clone(), [sq.1.len()]), &dev);
                moments.insert(base.to_string(), (m, v));
            }
        }
        Ok(AdamW { params, step, moments })
    }
}

/// Safetensors bytes of a training checkpoint file.
pub(crate) fn serialize(tensors: &[HostTensor], meta: &BTreeMap<String, String>) -> Result<Vec<u8>> {
    eda_core::safetensors::serialize(tensors, meta, Path::new("<checkpoint>"))
}

/// Name → (shape, f32 values), and the metadata.
pub(crate) type F32Tensors = BTreeMap<String, (Vec<usize>, Vec<f32>)>;

pub(crate) fn deserialize(bytes: &[u8], path: &Path) -> Result<(F32Tensors, BTreeMap<String, String>)> {
    let file = SafetensorsFile::parse(bytes, path)?;
    let mut out = BTreeMap::new();
    for name in file.names() {
        let t = file.tensor(name)?;
        if t.dtype != Dtype::F32 {
            return Err(EdaError::UnsupportedDType { name: name.clone(), dtype: format!("{:?} (checkpoints are F32)", t.dtype) });
        }
        out.insert(name.clone(), (t.shape.to_vec(), t.to_vec()?));
    }
    Ok((out, file.metadata().clone()))
}
