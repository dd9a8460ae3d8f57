//! # eda-train
//!
//! Two-stage training of EDA drafts (docs/method.md §3): EAGLE-shifted batches over precomputed target
//! features ([`batch`]), the SmoothL1 + soft cross-entropy objective ([`loss`]), AdamW with
//! warmup/decay, global-norm clipping and gradient accumulation ([`optim`], [`ScheduleConfig`]),
//! atomic checkpoints with exact resume ([`checkpoint`]), and the loop itself
//! ([`DraftTrainer`], generic over the [`TrainableDraft`] it trains). [`vocab`] picks a reduced draft vocabulary
//! (EAGLE-3 style) from the training data; the loss then restricts the target's distribution to
//! it. [`finetune`] fine-tunes a *target* with LoRA ([`LoraFinetuner`]): how the project makes
//! its own fine-tuned targets.
//!
//! Stage 1 trains every draft parameter except the frozen embedding and LM head; stage 2
//! ([`Stage::Stage2`]) starts from a stage-1 draft, freezes attention, norm and the shared
//! experts (and `fc` too with [`Stage2Freeze::SharedGroup`]; by default it trains, as in the
//! reference), optionally re-initialises the private group ([`PrivateInit`]) and swaps in the
//! fine-tuned target's LM head. What is trained is simply what requires a gradient in the module handed to the trainer:
//! build it with [`stage1_draft`] or [`stage2_draft`].
//!
//! ```
//! use burn::tensor::{Distribution, Tensor};
//! use eda_core::data::FeatureSample;
//! use eda_train::{stage1_draft, DraftTrainer, TrainConfig};
//!
//! let device = eda_core::backend::device_from_name("cpu").unwrap();
//! let (vocab, hidden) = (32, 16);
//! let head = Tensor::<2>::random([vocab, hidden], Distribution::Normal(0.0, 1.0), &device);
//! let cfg = TrainConfig { steps: Some(2), batch_size: 2, checkpoint_every: 0, ..TrainConfig::default() };
//! let draft = stage1_draft(&eda_draft::EdaDraftConfig::tiny(vocab, hidden), head.clone(), head, &cfg, &device).unwrap();
//! let data: Vec<FeatureSample> = (0..4)
//!     .map(|i| FeatureSample::new(format!("s{i}"), vec![1, 2, 3, 4], vec![0.1; 4 * hidden], hidden, vec![0, 1, 1, 1]).unwrap())
//!     .collect();
//! let out = tempfile::tempdir().unwrap();
//! let mut trainer = DraftTrainer::new(cfg, draft, &device, out.path()).unwrap();
//! let report = trainer.train(&data).unwrap();
//! assert_eq!(report.steps, 2);
//! assert!(out.path().join("draft").is_dir() && out.path().join("metrics.jsonl").is_file());
//! ```

#![warn(missing_docs)]
// `is_multiple_of` is newer than the workspace MSRV (1.85).
#![allow(unknown_lints, clippy::manual_is_multiple_of)]

pub mod batch;
pub mod bounds;
pub mod checkpoint;
pub mod config;
mod draft_impl;
pub mod finetune;
pub mod loss;
pub mod model;
pub mod optim;
pub mod trainer;
pub mod vocab;

pub use config::{
    AdamWParams, DecayShape, LossConfig, LossNorm, NoiseConfig, PrivateInit, ScheduleConfig, Stage, Stage2Freeze, TrainConfig, WarmupShape,
};
pub use draft_impl::{stage1_draft, stage2_draft};
pub use finetune::{FinetuneConfig, FinetuneReport, LmExample, LoraFinetuner};
pub use model::{tally_params, ParamTally, TrainForward, TrainableDraft};
pub use trainer::{DraftTrainer, StepMetrics, TrainReport};
