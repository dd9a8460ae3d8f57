//! # eda-train
//!
//! Two-stage training of EDA drafts (spec §3): EAGLE-shifted batches over precomputed target
//! features ([`batch`]), the SmoothL1 + soft cross-entropy objective ([`loss`]), AdamW with
//! warmup/decay, global-norm clipping and gradient accumulation ([`optim`], [`ScheduleConfig`]),
//! atomic checkpoints with exact resume ([`checkpoint`]), and the loop itself
//! ([`DraftTrainer`], an [`eda_core::Trainer`]).
//!
//! Stage 1 trains every draft parameter except the frozen embedding and LM head; stage 2
//! ([`Stage::Stage2`]) starts from a stage-1 draft, freezes the shared group, optionally
//! re-initialises the private group ([`PrivateInit`]) and swaps in the fine-tuned target's LM
//! head. What is trained is simply what requires a gradient in the module handed to the trainer.

#![warn(missing_docs)]

pub mod batch;
pub mod checkpoint;
pub mod config;
mod draft_impl;
pub mod loss;
pub mod model;
pub mod optim;
pub mod trainer;

pub use config::{AdamWParams, DecayShape, LossConfig, LossNorm, NoiseConfig, PrivateInit, ScheduleConfig, Stage, Stage2Freeze, TrainConfig, WarmupShape};
pub use model::{tally_params, ParamTally, TrainForward, TrainableDraft};
pub use trainer::{DraftTrainer, StepMetrics};
pub use draft_impl::{stage1_draft, stage2_draft};
