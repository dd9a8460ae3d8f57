//! [`DraftTrainer`]: the training loop.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::tensor::{Device, Tensor};
use eda_core::data::FeatureSample;
use eda_core::{EdaError, Result};
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};

use crate::batch::{build_batch, BatchPlan};
use crate::checkpoint::{
    frozen_fingerprint, latest_checkpoint, list_checkpoints, load_checkpoint, quarantine_checkpoint, save_checkpoint, TrainState,
};
use crate::config::TrainConfig;
use crate::loss::compute_loss;
use crate::model::{tally_params, TrainableDraft};
use crate::optim::{AdamW, GradAccumulator};

/// One line of `metrics.jsonl` (one per optimiser step).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepMetrics {
    /// 1-based optimiser step.
    pub step: usize,
    /// Learning rate used by this step.
    pub lr: f64,
    /// Total loss (mean over the step's micro-batches).
    pub loss: f64,
    /// Regression loss.
    pub reg: f64,
    /// Soft cross-entropy.
    pub cls: f64,
    /// Weighted auxiliary loss.
    pub aux: f64,
    /// Top-1 agreement of draft and target argmax on masked positions.
    pub top1: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// Real tokens processed by this step.
    pub tokens: usize,
    /// Throughput of this step (real tokens per second).
    pub tokens_per_s: f64,
}

/// Summary of a training run ([`DraftTrainer::train`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainReport {
    /// Optimiser steps taken in total (including steps before a resume).
    pub steps: usize,
    /// Loss of the last step.
    pub final_loss: f64,
    /// Top-1 agreement of draft and target on the last step's masked tokens.
    pub final_top1: f64,
    /// Tokens processed in this process.
    pub tokens: usize,
    /// Wall-clock seconds spent in this process.
    pub seconds: f64,
    /// Trainable parameters.
    pub trainable_params: usize,
    /// All parameters of the model being trained.
    pub total_params: usize,
}

/// Trains a [`TrainableDraft`] on precomputed feature samples, with checkpoints and resume.
///
/// The trainer owns the draft on the autodiff version of the device it is given, so any burn
/// device works (CPU/NdArray in tests, `cuda`/`wgpu` through `eda_core::backend` features).
/// Which parameters are updated is decided by the draft (its parameters that require a
/// gradient): build a stage-2 draft with [`stage2_draft`](crate::stage2_draft) to train the
/// private group only.
///
/// Output directory layout:
///
/// | path | content |
/// |---|---|
/// | `train_config.json` | the configuration of the latest (re)start |
/// | `metrics.jsonl` | one [`StepMetrics`] per step |
/// | `checkpoints/step-XXXXXXXX/` | see [`checkpoint`](crate::checkpoint) |
/// | `draft/` | the finished draft in its own format ([`TrainableDraft::save_draft`]) |
///
/// On [`train`](DraftTrainer::train), the newest complete checkpoint in the output directory is
/// loaded and training continues from it; the result is bit-identical (on CPU) to an
/// uninterrupted run because the data order and noise of every micro-batch derive from
/// `(seed, micro-batch index)`. A checkpoint that cannot be read is moved aside
/// (`step-XXXXXXXX.corrupt`) and the next older one is used. A checkpoint written with other
/// settings (any [`TrainConfig`] field except logging and checkpoint cadence), other training
/// samples or other frozen weights is refused with [`EdaError::ResumeMismatch`] unless
/// [`allow_changed_inputs`](DraftTrainer::allow_changed_inputs) is set.
///
/// # Multi-GPU data parallelism
///
/// burn 0.22 has the pieces for synchronous data parallelism (in `burn::optim`, behind burn's
/// `optim` feature, which this workspace does not enable) but this trainer does not use them
/// (it runs on one device): fork the module to each device (`module.fork(&device_i)`), run the
/// forward/backward of one micro-batch per device, turn each `Gradients` into a
/// `burn::optim::GradientsParams` and collect them in a `burn::optim::MultiGradientsParams`
/// (`grads: Vec<(GradientsParams, Device)>`), whose `remove` sums every parameter's gradients
/// onto one device; an optimiser step (`ModuleOptimizer::step_multi`) then updates the master
/// copy, which is forked back to the workers. Here the same structure would sum the per-device
/// gradients into a [`GradAccumulator`] before [`AdamW::step`].
pub struct DraftTrainer<M: TrainableDraft> {
    config: TrainConfig,
    out_dir: PathBuf,
    device: Device,
    model: Option<M>,
    stop_after: Option<usize>,
    show_progress: bool,
    allow_changed_inputs: bool,
}

impl<M: TrainableDraft> std::fmt::Debug for DraftTrainer<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DraftTrainer")
            .field("config", &self.config)
            .field("out_dir", &self.out_dir)
            .field("stop_after", &self.stop_after)
            .finish()
    }
}

impl<M: TrainableDraft> DraftTrainer<M> {
    /// A trainer for `model` writing into `out_dir`. The model is moved to
    /// `device.autodiff()`; which of its parameters are trained is given by their
    /// `require_grad` flags.
    ///
    /// The device must compute in f32 ([`EdaError::Backend`] otherwise): training entirely in
    /// f16/bf16 diverges within a few steps (AdamW's second moments and ε underflow; measured:
    /// NaN loss at step 2 on a tiny draft), and burn 0.22 keeps one float dtype per device, so
    /// there is no f32 master copy beside half-precision activations.
    pub fn new(config: TrainConfig, model: M, device: &Device, out_dir: impl Into<PathBuf>) -> Result<Self> {
        config.validate()?;
        let precision = eda_core::backend::precision_of(device);
        if precision != eda_core::backend::Precision::F32 {
            return Err(EdaError::Backend {
                requested: format!("draft training in {precision}"),
                reason: "the trainer needs an f32 device (half-precision training diverges without f32 master weights, which burn 0.22 cannot keep beside half activations on one device); train with `--compute-dtype f32`".into(),
            });
        }
        let device = device.clone().autodiff();
        // `fork` moves the tensors; `train` re-applies every parameter's configured
        // `require_grad` (a module built on a plain device records it without activating it).
        let model = model.fork(&device).train();
        Ok(DraftTrainer {
            config,
            out_dir: out_dir.into(),
            device,
            model: Some(model),
            stop_after: None,
            show_progress: true,
            allow_changed_inputs: false,
        })
    }

    /// Stops (after writing a checkpoint) once `step` optimiser steps are done, as if the run
    /// had been interrupted there; the learning-rate schedule still spans the full run.
    pub fn stop_after(mut self, step: usize) -> Self {
        self.stop_after = Some(step);
        self
    }

    /// Lets [`train`](DraftTrainer::train) resume a checkpoint whose configuration, training data or
    /// frozen parameters differ from this run's (the differences are logged and recorded in
    /// `state.json`). Off by default: such a resume is refused with
    /// [`EdaError::ResumeMismatch`], because it silently mixes two runs.
    pub fn allow_changed_inputs(mut self, allow: bool) -> Self {
        self.allow_changed_inputs = allow;
        self
    }

    /// Enables or disables the progress bar (it is always hidden when stderr is not a TTY).
    pub fn progress(mut self, show: bool) -> Self {
        self.show_progress = show;
        self
    }

    /// The configuration.
    pub fn config(&self) -> &TrainConfig {
        &self.config
    }

    /// The output directory.
    pub fn out_dir(&self) -> &Path {
        &self.out_dir
    }

    /// The draft being trained (on the autodiff device).
    pub fn model(&self) -> &M {
        self.model.as_ref().expect("the model is only taken out during a step")
    }

    /// Consumes the trainer and returns the draft (call `.valid()` on it for inference without
    /// autodiff).
    pub fn into_model(mut self) -> M {
        self.model.take().expect("the model is only taken out during a step")
    }

    fn check_data(&self, data: &[FeatureSample]) -> Result<()> {
        if data.is_empty() {
            return Err(EdaError::EmptyDataset("no feature samples to train on".into()));
        }
        let model = self.model();
        let (h, v) = (model.hidden_size(), model.vocab_size());
        for s in data {
            if s.hidden_size != h {
                return Err(EdaError::mismatch(format!("hidden size (draft vs feature sample `{}`)", s.id), h, s.hidden_size));
            }
            if let Some(&bad) = s.input_ids.iter().find(|&&t| t as usize >= v) {
                return Err(EdaError::mismatch(
                    format!("vocabulary size (draft) vs token id {bad} + 1 in sample `{}`", s.id),
                    v,
                    bad as usize + 1,
                ));
            }
            if s.input_ids.len() != s.loss_mask.len() || s.hidden.len() != s.len() * s.hidden_size {
                s.validate()?;
            }
        }
        eda_core::data::ensure_unique_ids(data, |i| format!("sample {i}"))?;
        // Host memory is only known for the CPU backend; GPU memory is checked by the backend.
        #[allow(deprecated)] // NdArray is the workspace's CPU backend (see eda_core::backend)
        let on_cpu = self.device.clone().without_autodiff() == Device::ndarray();
        if on_cpu {
            let longest = data.iter().map(FeatureSample::len).max().unwrap_or(0).min(self.config.max_len);
            crate::bounds::check_micro_batch(self.config.batch_size.min(data.len()), longest, h, v, crate::bounds::host_available_bytes())?;
        }
        // A position t trains only when t + 1 < min(len, max_len) and its loss mask is 1 (see
        // `build_batch`), so truncation can leave a sample with nothing to learn.
        let max_len = self.config.max_len;
        let usable = |s: &FeatureSample| s.loss_mask[..s.len().min(max_len).saturating_sub(1)].iter().filter(|&&m| m != 0).count();
        let empty = data.iter().filter(|s| usable(s) == 0).count();
        if empty == data.len() {
            let first_masked = data.iter().filter_map(|s| s.loss_mask.iter().position(|&m| m != 0)).min();
            return Err(EdaError::EmptyDataset(match first_masked {
                Some(p) => format!(
                    "no sample has a loss-masked token within max_len = {max_len} (the earliest response token is at position {p}; raise --max-len above {})",
                    p + 1
                ),
                None => "no sample has a masked token to predict (every loss mask is 0)".into(),
            }));
        }
        if empty > 0 {
            tracing::warn!(
                samples = empty,
                of = data.len(),
                max_len,
                "samples without a loss-masked token within max_len contribute nothing to the loss"
            );
        }
        Ok(())
    }

    /// Differences between the run recorded in `state` and this one (configuration fields that
    /// change the result, data and frozen-parameter hashes).
    fn resume_differences(&self, state: &TrainState, data_sha: &str, frozen_sha: &str) -> Vec<String> {
        let mut diff = config_differences(&state.config, &self.config);
        if let Some(old) = &state.data_sha256 {
            if old != data_sha {
                diff.push(format!("training data: sha256 {} (checkpoint) vs {} (now)", &old[..old.len().min(16)], &data_sha[..16]));
            }
        }
        if let Some(old) = &state.frozen_sha256 {
            if old != frozen_sha {
                diff.push(format!(
                    "frozen parameters (embedding / LM head / stage-1 shared group): sha256 {} (checkpoint) vs {} (now)",
                    &old[..old.len().min(16)],
                    &frozen_sha[..16]
                ));
            }
        }
        diff
    }

    fn prepare_metrics(&self, resume_step: usize) -> Result<std::fs::File> {
        let path = self.out_dir.join("metrics.jsonl");
        let mut kept = Vec::new();
        if resume_step > 0 && path.exists() {
            let text = std::fs::read_to_string(&path).map_err(|e| EdaError::io(&path, e))?;
            for line in text.lines() {
                if let Ok(m) = serde_json::from_str::<StepMetrics>(line) {
                    if m.step <= resume_step {
                        kept.push(line.to_string());
                    }
                }
            }
        }
        let mut body = kept.join("\n");
        if !body.is_empty() {
            body.push('\n');
        }
        eda_core::io::atomic_write(&path, body.as_bytes())?;
        std::fs::OpenOptions::new().append(true).open(&path).map_err(|e| EdaError::io(&path, e))
    }
}

impl<M: TrainableDraft> DraftTrainer<M> {
    /// Trains on `data` until the configured number of steps (or [`stop_after`](Self::stop_after));
    /// resumes from the newest checkpoint in the output directory if there is one.
    ///
    /// There is no `Trainer` trait: this is the one training loop, generic over what it trains
    /// ([`TrainableDraft`]); see the `eda-core` crate documentation.
    pub fn train(&mut self, data: &[FeatureSample]) -> Result<TrainReport> {
        self.check_data(data)?;
        let cfg = self.config.clone();
        let total = cfg.total_steps(data.len());
        let inner_device = self.device.clone().without_autodiff();
        let model = self.model.take().expect("model present between steps");

        // Resume.
        let fingerprints = eda_core::io::check_output_dir(&self.out_dir)
            .and_then(|_| Ok((eda_core::data::fingerprint_samples(data), frozen_fingerprint(&model)?)));
        let (data_sha, frozen_sha) = match fingerprints {
            Ok(f) => f,
            Err(e) => {
                self.model = Some(model);
                return Err(e);
            }
        };
        let fresh = TrainState {
            step: 0,
            micro_batches: 0,
            seed: cfg.seed,
            tokens: 0,
            last_loss: f64::NAN,
            last_top1: 0.0,
            config: cfg.clone(),
            data_sha256: Some(data_sha.clone()),
            frozen_sha256: Some(frozen_sha.clone()),
            accepted_changes: vec![],
        };
        let (model, optim, state) = match self.resume(model, &inner_device, fresh, &data_sha, &frozen_sha) {
            Ok(r) => r,
            Err((model, e)) => {
                self.model = Some(model);
                return Err(e);
            }
        };
        let result = self.run_loop(data, &cfg, total, model, optim, state);
        match result {
            Ok((model, report)) => {
                self.model = Some(model);
                Ok(report)
            }
            Err((model, e)) => {
                self.model = Some(model);
                Err(e)
            }
        }
    }
}

type LoopResult<M> = std::result::Result<(M, TrainReport), (M, EdaError)>;

/// Configuration fields that do not change the trained weights (how often to log or checkpoint,
/// how many checkpoints to keep) and may differ on resume.
const RESUME_NEUTRAL: [&str; 3] = ["log_every", "checkpoint_every", "keep_checkpoints"];

/// `field: old vs new` for every configuration field (nested ones dotted) that differs, except
/// the ones that do not change the trained weights (`log_every`, `checkpoint_every`,
/// `keep_checkpoints`).
pub fn config_differences(old: &TrainConfig, new: &TrainConfig) -> Vec<String> {
    fn walk(prefix: &str, a: &serde_json::Value, b: &serde_json::Value, out: &mut Vec<String>) {
        match (a.as_object(), b.as_object()) {
            (Some(x), Some(y)) => {
                let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
                keys.sort();
                keys.dedup();
                for k in keys {
                    let name = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                    if prefix.is_empty() && RESUME_NEUTRAL.contains(&k.as_str()) {
                        continue;
                    }
                    let null = serde_json::Value::Null;
                    walk(&name, x.get(k).unwrap_or(&null), y.get(k).unwrap_or(&null), out);
                }
            }
            _ if a != b => out.push(format!("{prefix}: {a} (checkpoint) vs {b} (now)")),
            _ => {}
        }
    }
    let (a, b) = (serde_json::to_value(old).unwrap_or_default(), serde_json::to_value(new).unwrap_or_default());
    let mut out = Vec::new();
    walk("", &a, &b, &mut out);
    out
}

impl<M: TrainableDraft> DraftTrainer<M> {
    /// Loads the newest readable checkpoint (moving unreadable newer ones aside) and checks that
    /// it was written by the same run; returns `fresh` state when there is none.
    fn resume(
        &self,
        model: M,
        inner_device: &Device,
        fresh: TrainState,
        data_sha: &str,
        frozen_sha: &str,
    ) -> std::result::Result<(M, AdamW, TrainState), (M, EdaError)> {
        let cfg = &self.config;
        let checkpoints = match list_checkpoints(&self.out_dir) {
            Ok(c) => c,
            Err(e) => return Err((model, e)),
        };
        let mut corrupt: Vec<(std::path::PathBuf, EdaError)> = Vec::new();
        for (step, dir) in checkpoints.iter().rev() {
            match load_checkpoint(dir, model.clone(), cfg.adamw.clone(), inner_device) {
                Ok((m, o, s)) => {
                    let diff = self.resume_differences(&s, data_sha, frozen_sha);
                    if !diff.is_empty() {
                        if !self.allow_changed_inputs {
                            return Err((model, EdaError::ResumeMismatch { path: dir.clone(), differences: diff }));
                        }
                        tracing::warn!(checkpoint = %dir.display(), differences = %diff.join("; "), "resuming with changed settings or inputs (allowed explicitly); the result will not match an uninterrupted run");
                    }
                    for (bad, e) in &corrupt {
                        match quarantine_checkpoint(bad) {
                            Ok(to) => {
                                tracing::warn!(checkpoint = %bad.display(), moved_to = %to.display(), error = %e, "unreadable checkpoint set aside")
                            }
                            Err(e2) => return Err((m, e2)),
                        }
                    }
                    tracing::info!("resuming from {} (step {step})", dir.display());
                    let mut accepted = s.accepted_changes.clone();
                    accepted.extend(diff);
                    let state = TrainState {
                        config: cfg.clone(),
                        data_sha256: fresh.data_sha256,
                        frozen_sha256: fresh.frozen_sha256,
                        accepted_changes: accepted,
                        ..s
                    };
                    return Ok((m, o, state));
                }
                Err(e) => {
                    tracing::warn!(checkpoint = %dir.display(), error = %e, "checkpoint is unreadable; trying an older one");
                    corrupt.push((dir.clone(), e));
                }
            }
        }
        match corrupt.into_iter().next() {
            // Every checkpoint is unreadable: starting over would silently discard the run.
            Some((_, e)) => Err((model, e)),
            None => Ok((model, AdamW::new(cfg.adamw.clone()), fresh)),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn run_loop(
        &self,
        data: &[FeatureSample],
        cfg: &TrainConfig,
        total: usize,
        mut model: M,
        mut optim: AdamW,
        mut state: TrainState,
    ) -> LoopResult<M> {
        macro_rules! tri {
            ($e:expr) => {
                match $e {
                    Ok(v) => v,
                    Err(e) => return Err((model, e)),
                }
            };
        }
        tri!(eda_core::io::write_json(&self.out_dir.join("train_config.json"), cfg));
        let mut metrics_file = tri!(self.prepare_metrics(state.step));
        let tally = tally_params(&model);
        let mut plan = BatchPlan::new(data.len(), cfg.batch_size, cfg.seed, true);
        let end = self.stop_after.map_or(total, |s| s.min(total));
        let start = Instant::now();
        let mut tokens_here = 0usize;
        let mut last_saved = state.step;
        let (mut last_loss, mut last_top1) = (state.last_loss, state.last_top1);

        let bar = if self.show_progress && std::io::stderr().is_terminal() && state.step < end {
            let b = ProgressBar::new(total as u64);
            b.set_style(
                ProgressStyle::with_template("{spinner} train [{elapsed_precise}] {bar:30} {pos}/{len} {msg} ETA {eta}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            b.set_position(state.step as u64);
            b
        } else {
            ProgressBar::hidden()
        };

        while state.step < end {
            let step_start = Instant::now();
            let lr = cfg.schedule.lr_at(state.step, total);
            let mut acc = GradAccumulator::new();
            let (mut sum_loss, mut sum_reg, mut sum_cls, mut sum_aux, mut correct, mut masked, mut step_tokens) =
                (0.0, 0.0, 0.0, 0.0, 0.0, 0usize, 0usize);
            for _ in 0..cfg.grad_accum {
                let k = state.micro_batches;
                let idx = plan.micro_batch(k);
                let samples: Vec<&FeatureSample> = idx.iter().map(|&i| &data[i]).collect();
                let host = tri!(build_batch(&samples, cfg.max_len, cfg.noise, &mut plan.noise_rng(k)));
                let batch = host.to_device(&self.device);
                let parts = compute_loss(&model, &batch, &cfg.loss);
                let scaled = parts.total.clone() / cfg.grad_accum as f64;
                let grads = scaled.backward();
                acc.add(&model, grads);
                let vals = tri!(eda_core::backend::to_vec_f32(Tensor::cat(
                    vec![parts.total.detach(), parts.reg, parts.cls, parts.aux, parts.correct],
                    0
                )));
                if vals.iter().any(|v| !v.is_finite()) {
                    return Err((
                        model,
                        EdaError::NonFinite(format!(
                            "training loss at step {} (micro-batch {k}): loss={}, reg={}, cls={}, aux={}; the last good checkpoint is kept",
                            state.step + 1,
                            vals[0],
                            vals[1],
                            vals[2],
                            vals[3]
                        )),
                    ));
                }
                sum_loss += vals[0] as f64;
                sum_reg += vals[1] as f64;
                sum_cls += vals[2] as f64;
                sum_aux += vals[3] as f64;
                correct += vals[4] as f64;
                masked += batch.masked_tokens;
                step_tokens += batch.real_tokens;
                state.micro_batches += 1;
            }
            let grad_norm = match cfg.grad_clip {
                Some(c) => tri!(acc.clip(c)),
                None => tri!(acc.global_norm()),
            };
            if !grad_norm.is_finite() {
                return Err((
                    model,
                    EdaError::NonFinite(format!("gradient norm at step {}; the last good checkpoint is kept", state.step + 1)),
                ));
            }
            model = optim.step(lr, model, &mut acc);
            state.step += 1;
            state.tokens += step_tokens;
            tokens_here += step_tokens;
            let n = cfg.grad_accum as f64;
            last_loss = sum_loss / n;
            last_top1 = if masked > 0 { correct / masked as f64 } else { 0.0 };
            state.last_loss = last_loss;
            state.last_top1 = last_top1;
            let dt = step_start.elapsed().as_secs_f64().max(1e-9);
            let m = StepMetrics {
                step: state.step,
                lr,
                loss: last_loss,
                reg: sum_reg / n,
                cls: sum_cls / n,
                aux: sum_aux / n,
                top1: last_top1,
                grad_norm,
                tokens: step_tokens,
                tokens_per_s: step_tokens as f64 / dt,
            };
            let line = tri!(serde_json::to_string(&m).map_err(|e| EdaError::json(self.out_dir.join("metrics.jsonl"), e)));
            tri!(writeln!(metrics_file, "{line}").map_err(|e| EdaError::io(self.out_dir.join("metrics.jsonl"), e)));
            let rate = tokens_here as f64 / start.elapsed().as_secs_f64().max(1e-9);
            bar.set_position(state.step as u64);
            bar.set_message(format!("loss {last_loss:.4} top1 {last_top1:.3} {rate:.0} tok/s"));
            if cfg.log_every > 0 && (state.step.is_multiple_of(cfg.log_every) || state.step == 1) {
                tracing::info!(
                    step = state.step,
                    lr,
                    loss = last_loss,
                    reg = m.reg,
                    cls = m.cls,
                    top1 = last_top1,
                    grad_norm,
                    tokens_per_s = rate,
                    "train step"
                );
            }
            if cfg.checkpoint_every > 0 && state.step.is_multiple_of(cfg.checkpoint_every) {
                tri!(save_checkpoint(&self.out_dir, &model, &optim, &state, cfg.keep_checkpoints));
                last_saved = state.step;
            }
        }
        bar.finish_and_clear();
        if state.step != last_saved || (state.step > 0 && latest_checkpoint(&self.out_dir).ok().flatten().is_none()) {
            tri!(save_checkpoint(&self.out_dir, &model, &optim, &state, cfg.keep_checkpoints));
        }
        if state.step >= total {
            tri!(model.save_draft(&self.out_dir.join("draft")));
        }
        let seconds = start.elapsed().as_secs_f64();
        tracing::info!(
            steps = state.step,
            tokens = tokens_here,
            seconds,
            tokens_per_s = tokens_here as f64 / seconds.max(1e-9),
            "training finished"
        );
        let report = TrainReport {
            steps: state.step,
            final_loss: last_loss,
            final_top1: last_top1,
            tokens: tokens_here,
            seconds,
            trainable_params: tally.trainable,
            total_params: tally.total,
        };
        Ok((model, report))
    }
}
