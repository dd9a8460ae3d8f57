//! LoRA fine-tuning of a *target* model ([`LoraFinetuner`]): how this project makes its own
//! fine-tuned targets (math, code) from a base checkpoint, the situation EDA adapts drafts to.
//!
//! The base weights are frozen and only the adapters train ([`eda_models::lora`]), on next-token
//! cross-entropy over the loss-masked tokens of [`LmExample`]s (the answers of conversations).
//! Checkpoints hold the adapters and the AdamW moments only, plus `state.json`
//! ([`FinetuneState`]); the data order of every step is derived from `(seed, step)`, so a resumed
//! run continues bit-identically. The result is merged into the base weights
//! ([`LoraFinetuner::into_merged`]) and saved as an ordinary HF checkpoint.
//!
//! ```
//! use eda_models::{CausalLm, LoraSpec, ModelConfig};
//! use eda_train::finetune::{mean_nll, FinetuneConfig, LmExample, LoraFinetuner};
//!
//! let device = eda_core::backend::device_from_name("cpu").unwrap();
//! let base = CausalLm::new(&ModelConfig::qwen2(32, 16, 32, 1, 2, 1, 64), &device);
//! let data: Vec<LmExample> =
//!     (0..4).map(|i| LmExample::new(format!("e{i}"), vec![1, 2, 3, 4, 5], vec![0, 0, 1, 1, 1]).unwrap()).collect();
//! let before = mean_nll(&base, &data, 2).unwrap();
//! let cfg = FinetuneConfig { steps: 20, batch_size: 2, lr: 1e-2, checkpoint_every: 0, ..FinetuneConfig::default() };
//! let out = tempfile::tempdir().unwrap();
//! let mut tuner = LoraFinetuner::new(cfg, base, &device, out.path()).unwrap();
//! let report = tuner.train(&data).unwrap();
//! let tuned = tuner.into_merged();
//! assert_eq!(report.steps, 20);
//! assert!(mean_nll(&tuned, &data, 2).unwrap().nll < before.nll);
//! ```

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::module::Module;
use burn::tensor::activation::log_softmax;
use burn::tensor::{Device, Int, Tensor, TensorData};
use eda_core::{EdaError, Result, TokenId};
use eda_models::{CausalLm, LoraSpec};
use serde::{Deserialize, Serialize};

use crate::batch::BatchPlan;
use crate::checkpoint::{frozen_fingerprint, latest_checkpoint, load_checkpoint_with, save_checkpoint_with};
use crate::config::{AdamWParams, DecayShape, ScheduleConfig, WarmupShape};
use crate::optim::{AdamW, GradAccumulator};

/// One training sequence: tokens and which of them are predicted (`loss_mask[i] = 1`: token `i`
/// is a target of position `i − 1`; the answer of a conversation, not its prompt).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LmExample {
    /// Identifier (for error messages).
    pub id: String,
    /// Token ids.
    pub tokens: Vec<TokenId>,
    /// `1` where the token is trained on.
    pub loss_mask: Vec<u8>,
}

impl LmExample {
    /// Checks that tokens and mask have the same length and that at least one token after the
    /// first is trained on ([`EdaError::InvalidArgument`] / [`EdaError::EmptyDataset`] otherwise).
    pub fn new(id: impl Into<String>, tokens: Vec<TokenId>, loss_mask: Vec<u8>) -> Result<Self> {
        let id = id.into();
        if tokens.len() != loss_mask.len() {
            return Err(EdaError::InvalidArgument(format!("example {id}: {} tokens but {} mask entries", tokens.len(), loss_mask.len())));
        }
        if !loss_mask.iter().skip(1).any(|&m| m != 0) {
            return Err(EdaError::EmptyDataset(format!("example {id}: no trained token (empty answer?)")));
        }
        Ok(LmExample { id, tokens, loss_mask })
    }

    /// Tokens trained on.
    pub fn trained_tokens(&self) -> usize {
        self.loss_mask.iter().skip(1).filter(|&&m| m != 0).count()
    }
}

/// Settings of a LoRA fine-tuning run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FinetuneConfig {
    /// Adapter rank, scaling and target projections.
    pub lora: LoraSpec,
    /// Optimiser steps.
    pub steps: usize,
    /// Sequences per step (the last step of an epoch may have fewer).
    pub batch_size: usize,
    /// Sequences longer than this are truncated (their tail is dropped).
    pub max_len: usize,
    /// Peak learning rate (linear warmup, then cosine decay to 10 % of it).
    pub lr: f64,
    /// Warmup steps.
    pub warmup_steps: usize,
    /// AdamW weight decay on the adapters.
    pub weight_decay: f64,
    /// Global gradient-norm clip (0 disables).
    pub grad_clip: f64,
    /// Seed of the adapters' initialisation and of the data order.
    pub seed: u64,
    /// Steps between checkpoints (0: only at the end).
    pub checkpoint_every: usize,
    /// Checkpoints kept.
    pub keep_checkpoints: usize,
}

impl Default for FinetuneConfig {
    /// Rank 8 / alpha 16 on every projection, 300 steps of 4 sequences ≤ 512 tokens, lr 5e-4
    /// (20 warmup steps), no weight decay, clip 1.0, a checkpoint every 50 steps, 2 kept.
    fn default() -> Self {
        FinetuneConfig {
            lora: LoraSpec::default(),
            steps: 300,
            batch_size: 4,
            max_len: 512,
            lr: 5e-4,
            warmup_steps: 20,
            weight_decay: 0.0,
            grad_clip: 1.0,
            seed: 0,
            checkpoint_every: 50,
            keep_checkpoints: 2,
        }
    }
}

impl FinetuneConfig {
    /// Checks the values ([`EdaError::InvalidConfig`]).
    pub fn validate(&self) -> Result<()> {
        self.lora.validate()?;
        if self.steps == 0 || self.batch_size == 0 || self.max_len < 2 {
            return Err(EdaError::InvalidConfig("steps and batch_size must be >= 1 and max_len >= 2".into()));
        }
        // Written so that NaN fails every check.
        let positive = self.lr.is_finite() && self.lr > 0.0;
        let non_negative = |x: f64| x >= 0.0;
        if !positive || !non_negative(self.grad_clip) || !non_negative(self.weight_decay) {
            return Err(EdaError::InvalidConfig("lr must be positive; grad_clip and weight_decay non-negative".into()));
        }
        if self.keep_checkpoints == 0 {
            return Err(EdaError::InvalidConfig("keep_checkpoints must be >= 1".into()));
        }
        Ok(())
    }

    /// Learning rate of step `step` (0-based): the trainer's [`ScheduleConfig`] with linear
    /// warmup and cosine decay to 10 % of the peak at the last step.
    pub fn lr_at(&self, step: usize) -> f64 {
        let schedule = ScheduleConfig {
            lr: self.lr,
            min_lr: 0.1 * self.lr,
            warmup_steps: self.warmup_steps,
            warmup: WarmupShape::Linear,
            decay: DecayShape::Cosine,
            decay_total_steps: None,
        };
        schedule.lr_at(step, self.steps)
    }

    fn adamw(&self) -> AdamWParams {
        AdamWParams { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: self.weight_decay }
    }
}

/// Resume state of a fine-tuning run (`state.json` of a checkpoint).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FinetuneState {
    /// Steps completed.
    pub step: usize,
    /// Trained tokens seen.
    pub tokens: usize,
    /// Loss of every completed step.
    pub losses: Vec<f64>,
    /// Training seconds up to this checkpoint (earlier sessions included).
    pub seconds: f64,
    /// The run's settings.
    pub config: FinetuneConfig,
    /// SHA-256 of the training examples.
    pub data_sha256: String,
    /// SHA-256 of the frozen base weights (rebuilt from the base checkpoint on resume).
    pub base_sha256: String,
}

/// Summary of a finished run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FinetuneReport {
    /// Steps taken in total.
    pub steps: usize,
    /// Step the run resumed from (0 for a fresh run).
    pub resumed_from: usize,
    /// Mean loss of the first 10 % of the steps.
    pub initial_loss: f64,
    /// Mean loss of the last 10 % of the steps.
    pub final_loss: f64,
    /// Trained tokens seen.
    pub tokens: usize,
    /// Training seconds (all sessions).
    pub seconds: f64,
    /// Adapter scalars (the only trained ones).
    pub trainable_params: usize,
    /// Scalars of the base model.
    pub base_params: usize,
    /// Bytes of AdamW state (two f32 moments per trained scalar).
    pub optimizer_state_bytes: usize,
}

/// Mean negative log-likelihood of the loss-masked tokens.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Nll {
    /// Mean NLL per trained token (nats).
    pub nll: f64,
    /// Tokens scored.
    pub tokens: usize,
}

impl Nll {
    /// `exp(nll)`.
    pub fn perplexity(&self) -> f64 {
        self.nll.exp()
    }
}

/// A right-padded batch: inputs `[B, T]`, targets `[B·T, 1]`, weights `[B·T]`, trained tokens.
struct Batch {
    inputs: Tensor<2, Int>,
    targets: Tensor<2, Int>,
    weights: Tensor<1>,
    count: usize,
}

fn make_batch(examples: &[&LmExample], max_len: usize, device: &Device) -> Batch {
    let t = examples.iter().map(|e| e.tokens.len().min(max_len) - 1).max().unwrap_or(1).max(1);
    let b = examples.len();
    let (mut inp, mut tgt, mut w) = (vec![0i64; b * t], vec![0i64; b * t], vec![0f32; b * t]);
    let mut count = 0;
    for (r, e) in examples.iter().enumerate() {
        let n = e.tokens.len().min(max_len);
        for i in 0..n - 1 {
            inp[r * t + i] = e.tokens[i] as i64;
            tgt[r * t + i] = e.tokens[i + 1] as i64;
            if e.loss_mask[i + 1] != 0 {
                w[r * t + i] = 1.0;
                count += 1;
            }
        }
    }
    Batch {
        inputs: Tensor::from_data(TensorData::new(inp, [b, t]), device),
        targets: Tensor::from_data(TensorData::new(tgt, [b * t, 1]), device),
        weights: Tensor::from_data(TensorData::new(w, [b * t]), device),
        count,
    }
}

/// Summed NLL of the batch's trained tokens, shape `[1]`.
fn summed_nll(model: &CausalLm, batch: &Batch) -> Tensor<1> {
    let (logits, _) = model.forward_train(batch.inputs.clone());
    let [b, t, v] = logits.dims();
    let logp = log_softmax(logits.reshape([b * t, v]), 1).gather(1, batch.targets.clone()).reshape([b * t]);
    (logp * batch.weights.clone()).sum().neg()
}

/// Mean NLL of `model` over the trained tokens of `data` (no truncation below the model's
/// maximum position), in batches of `batch_size`; `exp` of it is the perplexity.
pub fn mean_nll(model: &CausalLm, data: &[LmExample], batch_size: usize) -> Result<Nll> {
    if data.is_empty() {
        return Err(EdaError::EmptyDataset("no examples to score".into()));
    }
    let device = model.embed_tokens.weight.val().device();
    let max_len = model.config().max_position_embeddings;
    let (mut sum, mut tokens) = (0.0f64, 0usize);
    let mut order: Vec<&LmExample> = data.iter().collect();
    // Similar lengths together: less padding.
    order.sort_by_key(|e| e.tokens.len());
    for chunk in order.chunks(batch_size.max(1)) {
        let batch = make_batch(chunk, max_len, &device);
        sum += eda_core::backend::to_vec_f32(summed_nll(model, &batch))?[0] as f64;
        tokens += batch.count;
    }
    let nll = sum / tokens.max(1) as f64;
    if !nll.is_finite() {
        return Err(EdaError::NonFinite("mean negative log-likelihood".into()));
    }
    Ok(Nll { nll, tokens })
}

/// SHA-256 over the examples (ids, tokens, masks): a resumed run must see the same data.
fn fingerprint(data: &[LmExample]) -> String {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    for e in data {
        h.update((e.id.len() as u64).to_le_bytes());
        h.update(e.id.as_bytes());
        h.update((e.tokens.len() as u64).to_le_bytes());
        e.tokens.iter().for_each(|t| h.update(t.to_le_bytes()));
        h.update(&e.loss_mask);
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// The LoRA fine-tuning loop (see the [module docs](self)).
pub struct LoraFinetuner {
    cfg: FinetuneConfig,
    model: CausalLm,
    optim: AdamW,
    state: Option<FinetuneState>,
    out_dir: PathBuf,
    device: Device,
    base_sha256: String,
    base_params: usize,
    stop_after: Option<usize>,
}

impl LoraFinetuner {
    /// Attaches fresh adapters to `base` (on the autodiff version of `device`) and resumes the
    /// newest checkpoint in `out_dir/checkpoints` if there is one. A checkpoint written with other
    /// settings or another base model is refused ([`EdaError::InvalidArgument`]).
    pub fn new(cfg: FinetuneConfig, base: CausalLm, device: &Device, out_dir: &Path) -> Result<Self> {
        cfg.validate()?;
        let base_params = base.num_params();
        let ad = device.clone().autodiff();
        // `train` activates gradient tracking on the autodiff device (frozen base weights stay frozen).
        let model = base.fork(&ad).add_lora(&cfg.lora, cfg.seed)?.train();
        let base_sha256 = frozen_fingerprint(&model)?;
        let mut tuner = LoraFinetuner {
            optim: AdamW::new(cfg.adamw()),
            cfg,
            model,
            state: None,
            out_dir: out_dir.to_path_buf(),
            device: ad,
            base_sha256,
            base_params,
            stop_after: None,
        };
        if let Some((step, dir)) = latest_checkpoint(out_dir)? {
            let model = tuner.model.clone();
            let (model, optim, state): (CausalLm, AdamW, FinetuneState) =
                load_checkpoint_with(&dir, model, tuner.cfg.adamw(), &tuner.device)?;
            if state.config != tuner.cfg {
                return Err(EdaError::InvalidArgument(format!(
                    "{} was written with other fine-tuning settings; use a new --out or the same settings",
                    dir.display()
                )));
            }
            if state.base_sha256 != tuner.base_sha256 {
                return Err(EdaError::InvalidArgument(format!("{} was written for another base model", dir.display())));
            }
            tracing::info!(step, dir = %dir.display(), "resuming LoRA fine-tuning");
            tuner.model = model;
            tuner.optim = optim;
            tuner.state = Some(state);
        }
        Ok(tuner)
    }

    /// Stops [`train`](Self::train) after step `step` without a final checkpoint, as if the
    /// process had been killed there (for testing resume).
    pub fn stop_after(mut self, step: usize) -> Self {
        self.stop_after = Some(step);
        self
    }

    /// Scalars in the adapters.
    pub fn trainable_params(&self) -> usize {
        self.model.lora_params()
    }

    /// Trains to `cfg.steps` (continuing a resumed run), checkpointing as configured; the data must
    /// be the same as in earlier sessions of the run.
    pub fn train(&mut self, data: &[LmExample]) -> Result<FinetuneReport> {
        if data.is_empty() {
            return Err(EdaError::EmptyDataset("no fine-tuning examples".into()));
        }
        let data_sha256 = fingerprint(data);
        let mut state = self.state.take().unwrap_or_else(|| FinetuneState {
            step: 0,
            tokens: 0,
            losses: Vec::new(),
            seconds: 0.0,
            config: self.cfg.clone(),
            data_sha256: data_sha256.clone(),
            base_sha256: self.base_sha256.clone(),
        });
        if state.data_sha256 != data_sha256 {
            return Err(EdaError::InvalidArgument(
                "the checkpoint in the output directory was trained on other examples; use a new --out".into(),
            ));
        }
        let resumed_from = state.step;
        let start = Instant::now();
        let seconds_before = state.seconds;
        let pb = progress_bar(self.cfg.steps as u64, state.step as u64);
        let mut grads = GradAccumulator::new();
        let mut plan = BatchPlan::new(data.len(), self.cfg.batch_size, self.cfg.seed, true);
        let end = self.stop_after.map_or(self.cfg.steps, |s| s.min(self.cfg.steps));
        while state.step < end {
            let step = state.step;
            let examples: Vec<&LmExample> = plan.micro_batch(step).into_iter().map(|i| &data[i]).collect();
            let batch = make_batch(&examples, self.cfg.max_len, &self.device);
            if batch.count == 0 {
                return Err(EdaError::EmptyDataset(format!(
                    "step {step}: no trained token within --max-len {} (answers start later)",
                    self.cfg.max_len
                )));
            }
            let loss = summed_nll(&self.model, &batch).div_scalar(batch.count as f64);
            let value = eda_core::backend::to_vec_f32(loss.clone().detach())?[0] as f64;
            if !value.is_finite() {
                return Err(EdaError::NonFinite(format!("fine-tuning loss at step {step}")));
            }
            grads.add(&self.model, loss.backward());
            if self.cfg.grad_clip > 0.0 {
                grads.clip(self.cfg.grad_clip)?;
            }
            self.model = self.optim.step(self.cfg.lr_at(step), self.model.clone(), &mut grads);
            state.step += 1;
            state.tokens += batch.count;
            state.losses.push(value);
            state.seconds = seconds_before + start.elapsed().as_secs_f64();
            pb.inc(1);
            pb.set_message(format!("loss {value:.3}"));
            if step % 25 == 0 || state.step == self.cfg.steps {
                tracing::info!(step = state.step, loss = value, seconds = state.seconds, "LoRA fine-tuning");
            }
            let due = self.cfg.checkpoint_every > 0 && state.step % self.cfg.checkpoint_every == 0;
            if due || state.step == self.cfg.steps {
                save_checkpoint_with(&self.out_dir, state.step, &self.model, &self.optim, &state, self.cfg.keep_checkpoints)?;
            }
        }
        pb.finish_and_clear();
        let k = (state.losses.len() / 10).max(1);
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
        let trainable = self.trainable_params();
        let report = FinetuneReport {
            steps: state.step,
            resumed_from,
            initial_loss: mean(&state.losses[..k.min(state.losses.len())]),
            final_loss: mean(&state.losses[state.losses.len().saturating_sub(k)..]),
            tokens: state.tokens,
            seconds: state.seconds,
            trainable_params: trainable,
            base_params: self.base_params,
            optimizer_state_bytes: 2 * 4 * trainable,
        };
        self.state = Some(state);
        Ok(report)
    }

    /// The model with its adapters, on the plain device (for evaluation before merging).
    pub fn adapted_model(&self) -> CausalLm {
        self.model.valid()
    }

    /// The fine-tuned model with the adapters merged into the base weights, on the plain device:
    /// an ordinary model, ready for [`CausalLm::save_pretrained`].
    pub fn into_merged(self) -> CausalLm {
        self.model.valid().merge_lora()
    }
}

/// A bar on a terminal, hidden otherwise (logs carry the progress then).
fn progress_bar(total: u64, position: u64) -> indicatif::ProgressBar {
    use std::io::IsTerminal;
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let b = indicatif::ProgressBar::new(total);
    b.set_style(
        indicatif::ProgressStyle::with_template("{spinner} finetune [{elapsed_precise}] {bar:30} {pos}/{len} {msg} ETA {eta}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    b.set_position(position);
    b
}
