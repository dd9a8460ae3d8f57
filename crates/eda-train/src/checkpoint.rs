//! Training checkpoints: `OUT/checkpoints/step-XXXXXXXX/` holding
//!
//! | file | content |
//! |---|---|
//! | `weights.safetensors` | every *trainable* parameter (f32), named by its module path |
//! | `optimizer.safetensors` | AdamW moments per parameter + step count |
//! | `state.json` | [`TrainState`]: step, RNG derivation, tokens seen, config |
//!
//! Frozen parameters (embedding, LM head, stage-2 shared group) are not stored: they are rebuilt
//! from their sources when the run is resumed. Every file is written atomically and `state.json`
//! is written last, so a directory without it is an incomplete checkpoint and is ignored.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::{Device, Tensor, TensorData};
use eda_core::safetensors::{encode, HostTensor};
use eda_core::{EdaError, Result};
use serde::{Deserialize, Serialize};

use crate::config::{AdamWParams, TrainConfig};
use crate::optim::{deserialize, serialize, AdamW, F32Tensors};

/// Resume information stored in `state.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    /// Optimiser steps completed.
    pub step: usize,
    /// Micro-batches consumed (the data order and the noise generator of micro-batch `k` are
    /// derived from `(seed, k)`, so this and the seed are the complete RNG state).
    pub micro_batches: usize,
    /// Seed every random stream is derived from.
    pub seed: u64,
    /// Tokens processed up to this step (all processes).
    pub tokens: usize,
    /// Loss of the last step.
    pub last_loss: f64,
    /// Top-1 agreement of the last step.
    pub last_top1: f64,
    /// The configuration of the run that wrote the checkpoint.
    pub config: TrainConfig,
    /// SHA-256 of the training samples ([`eda_core::data::fingerprint_samples`]); `None` in
    /// checkpoints written before it was recorded.
    #[serde(default)]
    pub data_sha256: Option<String>,
    /// SHA-256 of the frozen parameters (embedding, LM head, stage-2 shared group): they are not
    /// stored in checkpoints but rebuilt from `--target` / `--stage1`, so a changed source would
    /// otherwise be mixed into the resumed run.
    #[serde(default)]
    pub frozen_sha256: Option<String>,
    /// Differences accepted when the run was resumed with changed settings or inputs
    /// (`allow_changed_inputs`), oldest first.
    #[serde(default)]
    pub accepted_changes: Vec<String>,
}

/// Directory of the checkpoint at `step`.
pub fn checkpoint_dir(out_dir: &Path, step: usize) -> PathBuf {
    out_dir.join("checkpoints").join(format!("step-{step:08}"))
}

/// Complete checkpoints in `out_dir`, as (step, directory), oldest first.
pub fn list_checkpoints(out_dir: &Path) -> Result<Vec<(usize, PathBuf)>> {
    let root = out_dir.join("checkpoints");
    if !root.exists() {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&root).map_err(|e| EdaError::io(&root, e))? {
        let entry = entry.map_err(|e| EdaError::io(&root, e))?;
        let name = entry.file_name().to_string_lossy().to_string();
        if let Some(step) = name.strip_prefix("step-").and_then(|s| s.parse::<usize>().ok()) {
            if entry.path().join("state.json").is_file() {
                out.push((step, entry.path()));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// The newest complete checkpoint, if any.
pub fn latest_checkpoint(out_dir: &Path) -> Result<Option<(usize, PathBuf)>> {
    Ok(list_checkpoints(out_dir)?.pop())
}

struct Collect {
    path: Vec<String>,
    trainable_only: bool,
    /// Collect only parameters that do *not* require a gradient (takes precedence).
    frozen_only: bool,
    out: Vec<(String, Tensor<1>, Vec<usize>)>,
}

impl ModuleVisitor for Collect {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }
    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let t = param.val();
        if self.trainable_only && !t.is_require_grad() || self.frozen_only && t.is_require_grad() {
            return;
        }
        let dims = t.dims().to_vec();
        let n: usize = dims.iter().product();
        self.out.push((self.path.join("."), t.inner().reshape([n]), dims));
    }
}

/// Parameter values by path: `(shape, values)` on the host.
pub type ParamValues = std::collections::BTreeMap<String, (Vec<usize>, Vec<f32>)>;

/// Float parameters of `module` by path (only trainable ones if `trainable_only`), as f32
/// safetensors bytes.
pub fn params_to_bytes<M: Module>(module: &M, trainable_only: bool) -> Result<Vec<u8>> {
    let mut c = Collect { path: Vec::new(), trainable_only, frozen_only: false, out: Vec::new() };
    module.visit(&mut c);
    let mut tensors = Vec::with_capacity(c.out.len());
    for (name, t, dims) in c.out {
        tensors.push(HostTensor::from_values(name, dims, &eda_core::backend::to_vec_f32(t)?));
    }
    serialize(&tensors, &BTreeMap::from([("format".to_string(), "eda-train-weights-v1".to_string())]))
}

/// SHA-256 over the names, shapes and values of the *frozen* float parameters of `module` (those
/// not requiring a gradient), which checkpoints do not store.
pub fn frozen_fingerprint<M: Module>(module: &M) -> Result<String> {
    use sha2::Digest;
    let mut c = Collect { path: Vec::new(), trainable_only: false, frozen_only: true, out: Vec::new() };
    module.visit(&mut c);
    let mut h = sha2::Sha256::new();
    for (name, t, dims) in c.out {
        h.update((name.len() as u64).to_le_bytes());
        h.update(name.as_bytes());
        dims.iter().for_each(|d| h.update((*d as u64).to_le_bytes()));
        h.update(encode(&eda_core::backend::to_vec_f32(t)?));
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// Moves an unreadable checkpoint aside (`step-XXXXXXXX.corrupt`) so that it is neither resumed
/// nor counted when old checkpoints are pruned; returns the new path.
pub fn quarantine_checkpoint(dir: &Path) -> Result<PathBuf> {
    let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let mut k = 0usize;
    let target = loop {
        let t = dir.with_file_name(if k == 0 { format!("{name}.corrupt") } else { format!("{name}.corrupt{k}") });
        if !t.exists() {
            break t;
        }
        k += 1;
    };
    std::fs::rename(dir, &target).map_err(|e| EdaError::io(dir, e))?;
    Ok(target)
}

/// Float parameters of `module` by path (only trainable ones if `trainable_only`), copied to the
/// host as `(shape, values)`.
///
/// ```
/// use burn::module::{Module, Param};
/// use burn::tensor::Tensor;
/// #[derive(Module, Debug)]
/// struct M { w: Param<Tensor<1>> }
/// let d = eda_core::backend::device_from_name("cpu").unwrap();
/// let m = M { w: Param::from_tensor(Tensor::<1>::from_floats([1.0, 2.0], &d)) };
/// let v = eda_train::checkpoint::param_values(&m, false).unwrap();
/// assert_eq!(v["w"], (vec![2], vec![1.0, 2.0]));
/// ```
pub fn param_values<M: Module>(module: &M, trainable_only: bool) -> Result<ParamValues> {
    let mut c = Collect { path: Vec::new(), trainable_only, frozen_only: false, out: Vec::new() };
    module.visit(&mut c);
    let mut out = std::collections::BTreeMap::new();
    for (name, t, dims) in c.out {
        out.insert(name, (dims, eda_core::backend::to_vec_f32(t)?));
    }
    Ok(out)
}

struct Load<'a> {
    path: Vec<String>,
    tensors: &'a F32Tensors,
    device: Device,
    file: &'a Path,
    loaded: usize,
    error: Option<EdaError>,
}

impl ModuleMapper for Load<'_> {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }
    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let key = self.path.join(".");
        let Some((shape, vals)) = self.tensors.get(&key) else { return param };
        let (id, tensor, mapper) = param.consume();
        let dims = tensor.dims().to_vec();
        if *shape != dims {
            if self.error.is_none() {
                self.error = Some(EdaError::ShapeMismatch {
                    name: format!("{key} in {}", self.file.display()),
                    expected: dims,
                    actual: shape.clone(),
                });
            }
            return Param::from_mapped_value(id, tensor, mapper);
        }
        let require_grad = tensor.is_require_grad();
        let device = tensor.device();
        let inner = Tensor::<1>::from_data(TensorData::new(vals.clone(), [vals.len()]), &self.device).reshape(tensor.shape());
        let mut out: Tensor<D> = if device.is_autodiff() { Tensor::from_inner(inner) } else { inner };
        if require_grad {
            out = out.require_grad();
        }
        self.loaded += 1;
        Param::from_mapped_value(id, out, mapper)
    }
}

/// Overwrites the parameters of `module` named in a [`params_to_bytes`] file. Every *trainable*
/// parameter of the module must be present; returns the module and the number of tensors loaded.
pub fn load_params<M: Module>(module: M, bytes: &[u8], file: &Path, device: &Device) -> Result<(M, usize)> {
    let (tensors, _) = deserialize(bytes, file)?;
    let mut c = Collect { path: Vec::new(), trainable_only: true, frozen_only: false, out: Vec::new() };
    module.visit(&mut c);
    for (name, _, _) in &c.out {
        if !tensors.contains_key(name) {
            return Err(EdaError::MissingTensor { name: name.clone(), file: file.into() });
        }
    }
    let mut l = Load { path: Vec::new(), tensors: &tensors, device: device.clone().without_autodiff(), file, loaded: 0, error: None };
    let module = module.map(&mut l);
    if let Some(e) = l.error {
        return Err(e);
    }
    let loaded = l.loaded;
    Ok((module, loaded))
}

/// Writes a complete checkpoint for `step` and prunes old ones beyond `keep`.
pub fn save_checkpoint<M: Module>(out_dir: &Path, module: &M, optim: &AdamW, state: &TrainState, keep: usize) -> Result<PathBuf> {
    save_checkpoint_with(out_dir, state.step, module, optim, state, keep)
}

/// [`save_checkpoint`] with any serialisable resume state (other training loops, such as the
/// target fine-tuner, keep their own `state.json`).
pub fn save_checkpoint_with<M: Module, S: Serialize>(
    out_dir: &Path,
    step: usize,
    module: &M,
    optim: &AdamW,
    state: &S,
    keep: usize,
) -> Result<PathBuf> {
    let dir = checkpoint_dir(out_dir, step);
    eda_core::io::atomic_write(&dir.join("weights.safetensors"), &params_to_bytes(module, true)?)?;
    eda_core::io::atomic_write(&dir.join("optimizer.safetensors"), &optim.to_bytes()?)?;
    eda_core::io::write_json(&dir.join("state.json"), state)?;
    let all = list_checkpoints(out_dir)?;
    if all.len() > keep {
        for (_, old) in &all[..all.len() - keep] {
            // Only real directories are pruned: a symlink named like a checkpoint is not ours.
            if !std::fs::symlink_metadata(old).is_ok_and(|m| m.file_type().is_dir()) {
                continue;
            }
            std::fs::remove_dir_all(old).map_err(|e| EdaError::io(old, e))?;
        }
    }
    Ok(dir)
}

/// Loads a checkpoint directory into `module` and returns the module, optimiser (with
/// hyper-parameters `params`) and state.
pub fn load_checkpoint<M: Module>(dir: &Path, module: M, params: AdamWParams, device: &Device) -> Result<(M, AdamW, TrainState)> {
    load_checkpoint_with(dir, module, params, device)
}

/// [`load_checkpoint`] with any deserialisable resume state (see [`save_checkpoint_with`]).
pub fn load_checkpoint_with<M: Module, S: serde::de::DeserializeOwned>(
    dir: &Path,
    module: M,
    params: AdamWParams,
    device: &Device,
) -> Result<(M, AdamW, S)> {
    let state: S = eda_core::io::read_json(&dir.join("state.json"))?;
    let wpath = dir.join("weights.safetensors");
    let wbytes = std::fs::read(&wpath).map_err(|e| EdaError::io(&wpath, e))?;
    let (module, _) = load_params(module, &wbytes, &wpath, device)?;
    let opath = dir.join("optimizer.safetensors");
    let obytes = std::fs::read(&opath).map_err(|e| EdaError::io(&opath, e))?;
    let optim = AdamW::from_bytes(params, &obytes, device, &opath)?;
    Ok((module, optim, state))
}
