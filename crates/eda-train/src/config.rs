//! Training configuration ([`TrainConfig`]) and its option enums, serialisable as JSON.

use std::path::Path;

use eda_core::{EdaError, Result};
use serde::{Deserialize, Serialize};

/// Which EDA training stage a run performs (docs/method.md §3.5 / §3.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum Stage {
    /// Stage 1: train every draft parameter except the frozen embedding and LM head, on features
    /// of the *base* target.
    #[default]
    Stage1,
    /// Stage 2 (adaptation): start from a stage-1 draft, freeze the shared group and train only
    /// the private group, with the *fine-tuned* target's LM head.
    Stage2,
}

/// How the private group starts in stage 2.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum PrivateInit {
    /// Re-initialise the private experts and router at random (what the reference code does:
    /// its stage-1 loader skips `private_*` keys).
    #[default]
    Random,
    /// Keep the private weights trained in stage 1 (one reading of the paper's text).
    FromStage1,
}

/// What stage 2 freezes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum Stage2Freeze {
    /// The whole shared group (fc, attention, norm, shared experts, shared router): only the
    /// private experts and router train (`EdaDraft::freeze_shared`).
    SharedGroup,
    /// What the reference stage-2 script does (the default): attention, norm and shared
    /// experts frozen, `fc` trainable (docs/method.md §2.5).
    #[default]
    Reference,
    /// Nothing frozen but the embedding and LM head: full fine-tuning of the stage-1 draft (the
    /// "full retraining" baseline started from the stage-1 weights; with
    /// [`PrivateInit::FromStage1`] every weight starts where stage 1 left it).
    None,
}

/// Noise added to the draft's *input* features during training (docs/method.md §3.3).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum NoiseConfig {
    /// No noise.
    None,
    /// `h̃ = h + ε`, `ε ~ U(-amplitude, amplitude)` elementwise (EAGLE-1's description, with
    /// amplitude 0.1).
    Uniform {
        /// Half-width of the uniform distribution.
        amplitude: f32,
    },
    /// The reference code's variant: `ε ~ (U(0,1) − 0.5) · std · 512 / L` with `L` the
    /// (truncated) sample length, so the range shrinks as `1/L` (`std` = 0.2 there).
    ReferenceScaled {
        /// The reference's `std` parameter (0.2).
        std: f32,
    },
}

impl Default for NoiseConfig {
    fn default() -> Self {
        NoiseConfig::Uniform { amplitude: 0.1 }
    }
}

/// How the summed per-token losses are normalised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum LossNorm {
    /// Divide by the number of tokens with loss mask 1 in the micro-batch (at least 1).
    #[default]
    MaskedTokens,
    /// Divide by `B · T` (batch size times padded length, masked and padded positions included),
    /// as the reference code does.
    BatchTokens,
}

/// Shape of the learning-rate warmup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum WarmupShape {
    /// `lr · (s + 1) / warmup_steps` for `s < warmup_steps`.
    #[default]
    Linear,
    /// DeepSpeed `WarmupDecayLR`'s default: `lr · ln(s + 1) / ln(warmup_steps)` (0 at step 0).
    Log,
}

/// Shape of the learning-rate decay after warmup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum DecayShape {
    /// Constant at the peak learning rate.
    Constant,
    /// Cosine from the peak down to `min_lr` at the last step.
    #[default]
    Cosine,
    /// Linear from the peak down to `min_lr` at `decay_total_steps` (or the last step).
    Linear,
}

/// Learning-rate schedule: warmup then decay, evaluated per optimiser step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
// Unknown keys are errors: a misspelt key in `--config` would otherwise be silently ignored.
#[serde(default, deny_unknown_fields)]
pub struct ScheduleConfig {
    /// Peak learning rate (reference: 2e-4).
    pub lr: f64,
    /// Floor reached at the end of the decay.
    pub min_lr: f64,
    /// Number of warmup steps (0 disables warmup).
    pub warmup_steps: usize,
    /// Warmup shape.
    pub warmup: WarmupShape,
    /// Decay shape.
    pub decay: DecayShape,
    /// Step at which linear/cosine decay reaches `min_lr`; `None` means the run's total steps.
    /// The reference decays linearly to 0 at 800,000 steps (practically constant).
    pub decay_total_steps: Option<usize>,
}

impl Default for ScheduleConfig {
    fn default() -> Self {
        ScheduleConfig {
            lr: 2e-4,
            min_lr: 0.0,
            warmup_steps: 0,
            warmup: WarmupShape::Linear,
            decay: DecayShape::Cosine,
            decay_total_steps: None,
        }
    }
}

impl ScheduleConfig {
    /// The reference schedule (DeepSpeed `WarmupDecayLR`): log warmup over 2000 steps to 2e-4,
    /// then linear decay to 0 at step 800,000.
    pub fn reference() -> Self {
        ScheduleConfig {
            lr: 2e-4,
            min_lr: 0.0,
            warmup_steps: 2000,
            warmup: WarmupShape::Log,
            decay: DecayShape::Linear,
            decay_total_steps: Some(800_000),
        }
    }

    /// Learning rate used by the optimiser step with 0-based index `step` in a run of
    /// `total_steps` steps.
    ///
    /// ```
    /// use eda_train::{ScheduleConfig, DecayShape, WarmupShape};
    /// let s = ScheduleConfig { lr: 1.0, min_lr: 0.0, warmup_steps: 10, warmup: WarmupShape::Linear,
    ///                          decay: DecayShape::Cosine, decay_total_steps: None };
    /// assert!((s.lr_at(0, 100) - 0.1).abs() < 1e-12);
    /// assert!((s.lr_at(10, 100) - 1.0).abs() < 1e-12);
    /// assert!(s.lr_at(99, 100) < 0.01);
    /// ```
    pub fn lr_at(&self, step: usize, total_steps: usize) -> f64 {
        let w = self.warmup_steps;
        if step < w {
            return match self.warmup {
                WarmupShape::Linear => self.lr * (step + 1) as f64 / w as f64,
                WarmupShape::Log => {
                    if w <= 1 {
                        self.lr
                    } else {
                        self.lr * ((step + 1) as f64).ln() / (w as f64).ln()
                    }
                }
            };
        }
        let end = self.decay_total_steps.unwrap_or(total_steps);
        // Progress through the decay phase, in [0, 1].
        let span = end.saturating_sub(w);
        let frac = if span == 0 { 1.0 } else { ((step - w) as f64 / span as f64).min(1.0) };
        match self.decay {
            DecayShape::Constant => self.lr,
            DecayShape::Linear => self.min_lr + (self.lr - self.min_lr) * (1.0 - frac),
            DecayShape::Cosine => self.min_lr + 0.5 * (self.lr - self.min_lr) * (1.0 + (std::f64::consts::PI * frac).cos()),
        }
    }
}

/// AdamW hyper-parameters (decoupled weight decay, PyTorch semantics).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
// Unknown keys are errors: a misspelt key in `--config` would otherwise be silently ignored.
#[serde(default, deny_unknown_fields)]
pub struct AdamWParams {
    /// First-moment decay (0.9).
    pub beta1: f64,
    /// Second-moment decay (0.95 in the reference).
    pub beta2: f64,
    /// Denominator epsilon (1e-8).
    pub eps: f64,
    /// Decoupled weight decay (0 in the reference).
    pub weight_decay: f64,
}

impl Default for AdamWParams {
    fn default() -> Self {
        AdamWParams { beta1: 0.9, beta2: 0.95, eps: 1e-8, weight_decay: 0.0 }
    }
}

/// Loss weights and normalisation (docs/method.md §3.2).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
// Unknown keys are errors: a misspelt key in `--config` would otherwise be silently ignored.
#[serde(default, deny_unknown_fields)]
pub struct LossConfig {
    /// Weight of the SmoothL1 feature regression (`v_w` = 1.0).
    pub w_reg: f64,
    /// Weight of the soft cross-entropy against the target's distribution (`p_w` = 0.1).
    pub w_cls: f64,
    /// Weight of the shared router's load-balancing loss (0).
    pub aux_w_shared: f64,
    /// Weight of the private router's load-balancing loss (0).
    pub aux_w_private: f64,
    /// Normalisation of the summed token losses.
    pub norm: LossNorm,
}

impl Default for LossConfig {
    fn default() -> Self {
        LossConfig { w_reg: 1.0, w_cls: 0.1, aux_w_shared: 0.0, aux_w_private: 0.0, norm: LossNorm::MaskedTokens }
    }
}

/// Everything that defines a training run; stored as `train_config.json` in the output
/// directory and inside every checkpoint.
///
/// ```
/// let cfg = eda_train::TrainConfig::default();
/// let json = serde_json::to_string(&cfg).unwrap();
/// let back: eda_train::TrainConfig = serde_json::from_str(&json).unwrap();
/// assert_eq!(cfg, back);
/// assert!(cfg.validate().is_ok());
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
// Unknown keys are errors: a misspelt key in `--config` would otherwise be silently ignored.
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    /// Training stage. The trainer itself trains whatever requires a gradient; the stage is
    /// applied when the draft is built ([`stage1_draft`](crate::stage1_draft) /
    /// [`stage2_draft`](crate::stage2_draft)) and recorded in checkpoints.
    pub stage: Stage,
    /// Stage 2 only: how the private group starts.
    pub private_init: PrivateInit,
    /// Stage 2 only: which groups are frozen.
    pub stage2_freeze: Stage2Freeze,
    /// Stage 2 only: adapt with LoRA adapters on the stage-1 draft instead (the LoRA-on-the-draft
    /// baseline, [`EdaDraft::add_lora`](eda_draft::EdaDraft::add_lora)): every weight frozen,
    /// only the adapters train; `private_init` and `stage2_freeze` do not apply.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lora: Option<eda_models::LoraSpec>,
    /// Total optimiser steps; takes precedence over `epochs`.
    pub steps: Option<usize>,
    /// Number of passes over the data (used when `steps` is `None`; may be fractional).
    pub epochs: f64,
    /// Sequences per micro-batch.
    pub batch_size: usize,
    /// Micro-batches per optimiser step (gradient accumulation).
    pub grad_accum: usize,
    /// Samples are truncated to this many tokens (2048 in the reference).
    pub max_len: usize,
    /// Learning-rate schedule.
    pub schedule: ScheduleConfig,
    /// AdamW hyper-parameters.
    pub adamw: AdamWParams,
    /// Clip gradients to this global L2 norm (0.5 in the reference); `None` disables clipping.
    pub grad_clip: Option<f64>,
    /// Loss weights and normalisation.
    pub loss: LossConfig,
    /// Input-feature noise.
    pub noise: NoiseConfig,
    /// Seed of every random choice (shuffling, noise, stage-2 re-initialisation).
    pub seed: u64,
    /// Write a checkpoint every this many optimiser steps (0: only at the end).
    pub checkpoint_every: usize,
    /// Number of checkpoints kept on disk (older ones are deleted; at least 1).
    pub keep_checkpoints: usize,
    /// Log to `tracing` every this many steps (metrics.jsonl gets every step).
    pub log_every: usize,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            stage: Stage::Stage1,
            private_init: PrivateInit::Random,
            stage2_freeze: Stage2Freeze::Reference,
            lora: None,
            steps: None,
            epochs: 1.0,
            batch_size: 4,
            grad_accum: 1,
            max_len: 2048,
            schedule: ScheduleConfig::default(),
            adamw: AdamWParams::default(),
            grad_clip: Some(0.5),
            loss: LossConfig::default(),
            noise: NoiseConfig::default(),
            seed: 0,
            checkpoint_every: 500,
            keep_checkpoints: 2,
            log_every: 10,
        }
    }
}

impl TrainConfig {
    /// Checks that every value is usable, naming the first bad field.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(EdaError::InvalidConfig(m));
        if self.batch_size == 0 {
            return bad("batch_size must be >= 1".into());
        }
        if self.grad_accum == 0 {
            return bad("grad_accum must be >= 1".into());
        }
        if self.max_len < 2 {
            return bad(format!("max_len must be >= 2, got {}", self.max_len));
        }
        if let Some(spec) = &self.lora {
            if self.stage != Stage::Stage2 {
                return bad("lora adapts a stage-1 draft: it needs stage Stage2".into());
            }
            spec.validate()?;
        }
        if self.steps == Some(0) {
            return bad("steps must be >= 1".into());
        }
        if self.steps.is_none() && !(self.epochs > 0.0 && self.epochs.is_finite()) {
            return bad(format!("epochs must be a positive number, got {}", self.epochs));
        }
        if !(self.schedule.lr.is_finite() && self.schedule.lr >= 0.0 && self.schedule.min_lr.is_finite() && self.schedule.min_lr >= 0.0) {
            return bad(format!(
                "schedule.lr / schedule.min_lr must be finite and >= 0 (got {} / {})",
                self.schedule.lr, self.schedule.min_lr
            ));
        }
        let a = &self.adamw;
        if !(0.0..1.0).contains(&a.beta1) || !(0.0..1.0).contains(&a.beta2) {
            return bad(format!("adamw betas must be in [0, 1), got ({}, {})", a.beta1, a.beta2));
        }
        // Written so that NaN fails.
        if !(a.eps > 0.0 && a.weight_decay >= 0.0) {
            return bad(format!("adamw.eps must be > 0 and adamw.weight_decay >= 0 (got {}, {})", a.eps, a.weight_decay));
        }
        if let Some(c) = self.grad_clip {
            if !(c > 0.0 && c.is_finite()) {
                return bad(format!("grad_clip must be a positive number, got {c}"));
            }
        }
        match self.noise {
            NoiseConfig::Uniform { amplitude } if !(amplitude >= 0.0 && amplitude.is_finite()) => {
                return bad(format!("noise amplitude must be finite and >= 0, got {amplitude}"));
            }
            NoiseConfig::ReferenceScaled { std } if !(std >= 0.0 && std.is_finite()) => {
                return bad(format!("noise std must be finite and >= 0, got {std}"));
            }
            _ => {}
        }
        if self.keep_checkpoints == 0 {
            return bad("keep_checkpoints must be >= 1".into());
        }
        Ok(())
    }

    /// Micro-batches in one pass over `num_samples` samples.
    pub fn micro_batches_per_epoch(&self, num_samples: usize) -> usize {
        num_samples.div_ceil(self.batch_size.max(1)).max(1)
    }

    /// Total optimiser steps of the run on `num_samples` samples.
    pub fn total_steps(&self, num_samples: usize) -> usize {
        match self.steps {
            Some(s) => s,
            None => {
                let micro = self.epochs * self.micro_batches_per_epoch(num_samples) as f64;
                ((micro / self.grad_accum as f64).ceil() as usize).max(1)
            }
        }
    }

    /// Reads and validates a JSON config file.
    pub fn from_json_file(path: &Path) -> Result<Self> {
        let cfg: TrainConfig = eda_core::io::read_json(path)?;
        cfg.validate()?;
        Ok(cfg)
    }
}
