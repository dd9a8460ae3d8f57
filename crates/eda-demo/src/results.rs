//! The data `eda demo` produces: one [`MethodResult`] per (target, method), gathered in
//! [`DemoResults`] with the [`StageLog`] of the run. [`pipeline`](crate::pipeline) fills them in,
//! [`report`](crate::report) renders them.

use serde::{Deserialize, Serialize};

/// Format tag of `results.json`.
pub const RESULTS_FORMAT: &str = "eda-demo-results-v1";

/// One (target, method) cell of the comparison.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MethodResult {
    /// Target name (`base`, `math`, `code`, or a checkpoint folder name).
    pub target: String,
    /// Method: `stage1` (on the base target), `no-adapt`, `full-ft`, `stage2-original`,
    /// `stage2-regen-all`, `random`, `eda`.
    pub method: String,
    /// τ: tokens per drafting-verification cycle (eda-spec's standard definition).
    pub tau: f64,
    /// τ as the reference code computes it (new tokens − 1) / (cycles − 1).
    pub tau_reference: Option<f64>,
    /// New tokens per target forward (prefill included).
    pub tokens_per_target_forward: f64,
    /// Acceptance rate of drafted tokens on the verified path.
    pub alpha: f64,
    /// Measured wall-clock speedup over autoregressive decoding in the same run.
    pub speedup: f64,
    /// Speculative decoding throughput.
    pub tokens_per_second: f64,
    /// Autoregressive throughput measured alongside.
    pub baseline_tokens_per_second: f64,
    /// Prompts whose greedy speculative output equals the autoregressive output.
    pub greedy_matches: Option<usize>,
    /// Evaluation prompts.
    pub prompts: usize,
    /// Trainable parameters of the draft training (0 when nothing was trained).
    pub trainable_params: usize,
    /// Training samples used.
    pub train_samples: usize,
    /// Optimiser steps.
    pub train_steps: usize,
    /// Training wall-clock seconds (plus selection time for selection methods).
    pub train_seconds: f64,
}

/// Everything `eda demo` reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DemoResults {
    /// [`RESULTS_FORMAT`].
    pub format: String,
    /// Seed of the run.
    pub seed: u64,
    /// Fraction kept by selection.
    pub select_fraction: f64,
    /// The speculative decoding strategy evaluated.
    pub tree: String,
    /// Device the run used.
    pub device: String,
    /// One row per (target, method).
    pub rows: Vec<MethodResult>,
    /// Stages run / skipped in this invocation.
    pub stages: StageLog,
    /// Wall-clock seconds of this invocation.
    pub wall_seconds: f64,
}

impl DemoResults {
    /// The row of `(target, method)`, if any.
    pub fn get(&self, target: &str, method: &str) -> Option<&MethodResult> {
        self.rows.iter().find(|r| r.target == target && r.method == method)
    }
}

/// Records which stages ran and which were skipped because their artefact existed.
#[derive(Debug, Default, Clone, Serialize, Deserialize, PartialEq)]
pub struct StageLog {
    /// Stages computed in this invocation.
    pub ran: Vec<String>,
    /// Stages skipped (artefact present).
    pub skipped: Vec<String>,
}

impl StageLog {
    pub(crate) fn record(&mut self, name: impl Into<String>, ran: bool) {
        let name = name.into();
        if ran {
            tracing::info!(stage = %name, "stage done");
            self.ran.push(name);
        } else {
            tracing::info!(stage = %name, "stage skipped (artefact exists)");
            self.skipped.push(name);
        }
    }
}
