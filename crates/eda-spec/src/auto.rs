//! [`AutoStrategy`]: chooses chain or tree drafting, and its size, from the draft cost and
//! acceptance measured on the device in the first generation.
//!
//! Why measure instead of fixing a default: the best strategy depends on the hardware far more
//! than on the draft. On a CPU a target pass over `n` tokens costs roughly `n` times a decode
//! step once `n` is past a few tokens (compute bound), so short chains win; on a GPU verifying a
//! 60-node tree costs about as much as one token, so large trees win. The probe measures exactly
//! those two costs (a draft step and a verification of `γ + 1` tokens, both relative to one
//! autoregressive step) plus the acceptance per depth, predicts every chain's speedup from them,
//! then times the most promising chains and the tree candidates and keeps the fastest, which may
//! be plain decoding when no speculative candidate beats it.

use std::fmt;

use serde::{Deserialize, Serialize};

use eda_core::{DecodeMetrics, DecodingStrategy, DraftModel, EdaError, GenerationConfig, GenerationOutput, Result, TargetModel, TokenId};

use eda_core::generate::generate_autoregressive;

use crate::session::{require_draft, CommitCallback};
use crate::{ChainStrategy, SpeculativeStrategy, Strategy, TreeStrategy};

/// One candidate of the probe with its predicted and measured speedup over autoregressive
/// decoding.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CandidateEstimate {
    /// The candidate.
    pub strategy: Strategy,
    /// Predicted speedup from the measured acceptance per depth and costs (chains only).
    pub predicted_speedup: Option<f64>,
    /// Speedup measured in the probe (throughput ratio against the autoregressive probe), when
    /// the candidate was timed.
    pub measured_speedup: Option<f64>,
    /// Tokens per verification cycle in the probe, when timed.
    pub tau: Option<f64>,
}

/// What the probe measured and which strategy it chose.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AutoChoice {
    /// The strategy used from now on.
    pub chosen: Strategy,
    /// Conditional acceptance rate at each depth of the longest chain probe.
    pub acceptance_per_depth: Vec<f64>,
    /// c: one draft step over one autoregressive target step.
    pub draft_cost: f64,
    /// One verification pass of `max_gamma + 1` tokens over one autoregressive target step.
    pub verify_cost: f64,
    /// Every candidate, in probe order.
    pub candidates: Vec<CandidateEstimate>,
    /// Wall-clock seconds the probe took.
    pub probe_seconds: f64,
}

impl fmt::Display for AutoChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "auto strategy probe ({:.1} s): draft cost c = {:.3}, verify({} tokens) = {:.2} steps, acceptance per depth {:?}",
            self.probe_seconds,
            self.draft_cost,
            self.acceptance_per_depth.len() + 1,
            self.verify_cost,
            self.acceptance_per_depth.iter().map(|a| (a * 100.0).round() / 100.0).collect::<Vec<_>>()
        )?;
        writeln!(f, "{:<40} {:>10} {:>10} {:>7}", "candidate", "predicted", "measured", "tau")?;
        let opt = |x: Option<f64>, p: usize| x.map(|v| format!("{v:.*}", p)).unwrap_or_else(|| "-".into());
        for c in &self.candidates {
            let mark = if c.strategy == self.chosen { " <- chosen" } else { "" };
            writeln!(
                f,
                "{:<40} {:>10} {:>10} {:>7}{mark}",
                c.strategy.name(),
                opt(c.predicted_speedup, 2),
                opt(c.measured_speedup, 2),
                opt(c.tau, 2)
            )?;
        }
        Ok(())
    }
}

/// Picks chain or tree drafting and its size on the first call, from measurements on the device.
///
/// On the first [`generate`](DecodingStrategy::generate) call the strategy probes on that call's
/// prompt (the probe's outputs are discarded): an autoregressive run and a chain of
/// [`max_gamma`](Self::max_gamma) tokens give the acceptance per depth `a_d`, the draft step
/// cost `c` and the verification cost `v(n)` (linear between 1 and `max_gamma + 1` tokens), all
/// relative to one autoregressive step. The predicted speedup of chain `γ` is
/// `(1 + Σ_{i≤γ} Π_{d≤i} a_d) / (γ·c + v(γ+1))`. The two best predicted chains and every tree in
/// [`trees`](Self::trees) are then timed for [`probe_tokens`](Self::probe_tokens) tokens each, and
/// the fastest measured candidate (plain decoding included) is used for this and every later
/// call. [`choice`](Self::choice) reports the prediction beside the measurement.
///
/// Output is exactly that of the chosen strategy, so greedy output still equals autoregressive
/// decoding.
///
/// ```
/// use eda_core::{backend::device_from_name, generate::generate_autoregressive, DecodingStrategy, GenerationConfig};
/// use eda_spec::AutoStrategy;
/// use eda_testkit::{ToyEagleDraft, ToyLm};
/// let device = device_from_name("cpu").unwrap();
/// let mut target = ToyLm::random(32, 128, 3.0, 1, &device);
/// let mut draft = ToyEagleDraft::for_target(&target, 0.5, 2);
/// let cfg = GenerationConfig { max_new_tokens: 24, ..GenerationConfig::greedy() };
/// let mut auto = AutoStrategy::default();
/// let out = auto.generate(&mut target, Some(&mut draft), &[4, 5], &cfg).unwrap();
/// assert_eq!(out.tokens, generate_autoregressive(&mut target, &[4, 5], &cfg).unwrap().tokens);
/// assert!(auto.choice().is_some());
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AutoStrategy {
    /// Longest chain probed (at least 1).
    pub max_gamma: usize,
    /// Tree candidates timed in the probe.
    pub trees: Vec<TreeStrategy>,
    /// Tokens generated by each timed probe run (at least 4).
    pub probe_tokens: usize,
    choice: Option<AutoChoice>,
}

impl Default for AutoStrategy {
    /// Chains up to γ = 5 and three small trees, 32 tokens per probe run.
    fn default() -> Self {
        AutoStrategy::new(
            5,
            vec![
                TreeStrategy { depth: 3, top_k: 2, total_tokens: 8 },
                TreeStrategy { depth: 4, top_k: 4, total_tokens: 16 },
                TreeStrategy { depth: 5, top_k: 8, total_tokens: 48 },
            ],
            32,
        )
    }
}

/// Seconds per generated token of a probe run.
fn seconds_per_token(m: &DecodeMetrics) -> f64 {
    m.wall_seconds / m.new_tokens.max(1) as f64
}

impl AutoStrategy {
    /// A strategy probing chains up to `max_gamma`, the given trees, `probe_tokens` per run.
    pub fn new(max_gamma: usize, trees: Vec<TreeStrategy>, probe_tokens: usize) -> Self {
        AutoStrategy { max_gamma, trees, probe_tokens, choice: None }
    }

    /// The probe's result, once the first generation has run.
    pub fn choice(&self) -> Option<&AutoChoice> {
        self.choice.as_ref()
    }

    /// The strategy in use (`None` before the first generation).
    pub fn chosen(&self) -> Option<Strategy> {
        self.choice.as_ref().map(|c| c.chosen)
    }

    /// Forgets the choice: the next generation probes again (for example on another device).
    pub fn reset(&mut self) {
        self.choice = None;
    }

    /// Predicted speedup of chain `gamma` from conditional acceptance per depth `acc`, draft cost
    /// `c` and verification cost `v(n)` given at `n = 1` (1 by definition) and `n = n_max`.
    ///
    /// ```
    /// // A draft that is always right and free, on hardware where verification is free:
    /// let s = eda_spec::AutoStrategy::predict_chain(&[1.0, 1.0, 1.0], 3, 0.0, 1.0, 4);
    /// assert!((s - 4.0).abs() < 1e-12);
    /// ```
    pub fn predict_chain(acc: &[f64], gamma: usize, c: f64, v_max: f64, n_max: usize) -> f64 {
        let mut expected = 1.0;
        let mut reach = 1.0;
        for d in 0..gamma {
            reach *= acc.get(d).copied().unwrap_or(0.0);
            expected += reach;
        }
        let n = (gamma + 1) as f64;
        let v = if n_max > 1 { 1.0 + (v_max - 1.0) * (n - 1.0) / (n_max as f64 - 1.0) } else { 1.0 };
        expected / (gamma as f64 * c + v)
    }

    fn probe(
        &self,
        target: &mut dyn TargetModel,
        draft: &mut dyn DraftModel,
        prompt: &[TokenId],
        cfg: &GenerationConfig,
    ) -> Result<AutoChoice> {
        if self.max_gamma == 0 {
            return Err(EdaError::InvalidArgument("auto strategy: max_gamma must be at least 1".into()));
        }
        if self.probe_tokens < 4 {
            return Err(EdaError::InvalidArgument(format!("auto strategy: probe_tokens must be at least 4, got {}", self.probe_tokens)));
        }
        let start = std::time::Instant::now();
        // Probe runs ignore stop tokens so that every run times the same number of tokens.
        let pcfg = GenerationConfig { max_new_tokens: self.probe_tokens, stop_tokens: Vec::new(), ..cfg.clone() };
        // Untimed warm-up: first calls pay for allocation and thread-pool start-up.
        let warm = GenerationConfig { max_new_tokens: 4, ..pcfg.clone() };
        generate_autoregressive(target, prompt, &warm)?;
        ChainStrategy { gamma: 1 }.generate(target, Some(&mut *draft), prompt, &warm)?;

        let ar = generate_autoregressive(target, prompt, &pcfg)?.metrics;
        let step = seconds_per_token(&ar);
        let mut long = ChainStrategy { gamma: self.max_gamma };
        let lm = long.generate(target, Some(&mut *draft), prompt, &pcfg)?.metrics;
        let acc = lm.acceptance_per_depth();
        let c = if lm.draft_forwards == 0 { 0.0 } else { lm.draft_seconds / lm.draft_forwards as f64 / step };
        let v_max = if lm.target_forwards == 0 { 1.0 } else { lm.target_seconds / lm.target_forwards as f64 / step };
        let speedup_of = |m: &DecodeMetrics| seconds_per_token(&ar) / seconds_per_token(m).max(f64::MIN_POSITIVE);

        let mut candidates = vec![CandidateEstimate {
            strategy: Strategy::Autoregressive,
            predicted_speedup: Some(1.0),
            measured_speedup: Some(1.0),
            tau: Some(1.0),
        }];
        let mut chains: Vec<(usize, f64)> =
            (1..=self.max_gamma).map(|g| (g, Self::predict_chain(&acc, g, c, v_max, self.max_gamma + 1))).collect();
        for &(g, p) in &chains {
            let measured = (g == self.max_gamma).then(|| (speedup_of(&lm), crate::tau_per_cycle(&lm)));
            candidates.push(CandidateEstimate {
                strategy: Strategy::Chain(ChainStrategy { gamma: g }),
                predicted_speedup: Some(p),
                measured_speedup: measured.map(|m| m.0),
                tau: measured.map(|m| m.1),
            });
        }
        // Time the two best predicted chains that are not timed yet, then every tree.
        chains.sort_by(|a, b| b.1.total_cmp(&a.1));
        let to_time: Vec<usize> = chains.iter().map(|&(g, _)| g).filter(|&g| g != self.max_gamma).take(2).collect();
        for g in to_time {
            let m = ChainStrategy { gamma: g }.generate(target, Some(&mut *draft), prompt, &pcfg)?.metrics;
            if let Some(cand) = candidates.iter_mut().find(|x| x.strategy == Strategy::Chain(ChainStrategy { gamma: g })) {
                cand.measured_speedup = Some(speedup_of(&m));
                cand.tau = Some(crate::tau_per_cycle(&m));
            }
        }
        for t in &self.trees {
            let mut t = *t;
            let m = t.generate(target, Some(&mut *draft), prompt, &pcfg)?.metrics;
            candidates.push(CandidateEstimate {
                strategy: Strategy::Tree(t),
                predicted_speedup: None,
                measured_speedup: Some(speedup_of(&m)),
                tau: Some(crate::tau_per_cycle(&m)),
            });
        }
        let chosen = candidates
            .iter()
            .filter_map(|x| x.measured_speedup.map(|s| (x.strategy, s)))
            .fold((Strategy::Autoregressive, f64::NEG_INFINITY), |best, (s, v)| if v > best.1 { (s, v) } else { best })
            .0;
        let choice = AutoChoice {
            chosen,
            acceptance_per_depth: acc,
            draft_cost: c,
            verify_cost: v_max,
            candidates,
            probe_seconds: start.elapsed().as_secs_f64(),
        };
        tracing::info!(chosen = %chosen.name(), probe_seconds = choice.probe_seconds, "auto strategy chose");
        Ok(choice)
    }

    fn ensure_choice(
        &mut self,
        target: &mut dyn TargetModel,
        draft: &mut dyn DraftModel,
        prompt: &[TokenId],
        cfg: &GenerationConfig,
    ) -> Result<Strategy> {
        let choice = match self.choice.take() {
            Some(c) => c,
            None => self.probe(target, draft, prompt, cfg)?,
        };
        let chosen = choice.chosen;
        self.choice = Some(choice);
        Ok(chosen)
    }
}

impl DecodingStrategy for AutoStrategy {
    fn generate(
        &mut self,
        target: &mut dyn TargetModel,
        draft: Option<&mut dyn DraftModel>,
        prompt: &[TokenId],
        cfg: &GenerationConfig,
    ) -> Result<GenerationOutput> {
        let draft = require_draft(draft, "auto strategy")?;
        let mut s = self.ensure_choice(target, draft, prompt, cfg)?;
        s.generate(target, Some(draft), prompt, cfg)
    }
}

impl SpeculativeStrategy for AutoStrategy {
    fn name(&self) -> String {
        match self.chosen() {
            Some(s) => format!("auto({})", s.name()),
            None => "auto(undecided)".into(),
        }
    }

    fn choice_report(&self) -> Option<String> {
        self.choice.as_ref().map(|c| c.to_string())
    }

    fn drafted_per_cycle(&self) -> usize {
        self.chosen().map(|s| s.drafted_per_cycle()).unwrap_or(0)
    }

    fn generate_streaming(
        &mut self,
        target: &mut dyn TargetModel,
        draft: Option<&mut dyn DraftModel>,
        prompt: &[TokenId],
        cfg: &GenerationConfig,
        on_commit: CommitCallback<'_>,
    ) -> Result<GenerationOutput> {
        let draft = require_draft(draft, "auto strategy")?;
        let mut s = self.ensure_choice(target, draft, prompt, cfg)?;
        s.generate_streaming(target, Some(draft), prompt, cfg, on_commit)
    }
}
