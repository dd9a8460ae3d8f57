//! Speculative decoding metrics: τ, acceptance, cost ratio and speedup.

use serde::{Deserialize, Serialize};

/// Counters and timings of one (speculative or plain) generation.
///
/// ```
/// use eda_core::DecodeMetrics;
/// let m = DecodeMetrics { new_tokens: 12, target_forwards: 4, ..Default::default() };
/// assert_eq!(m.tau(), 3.0);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DecodeMetrics {
    /// Tokens emitted after the prompt (bonus tokens included).
    pub new_tokens: usize,
    /// Target passes that emitted tokens (the prefill included; τ = new_tokens / target_forwards).
    pub target_forwards: usize,
    /// Draft forward passes.
    pub draft_forwards: usize,
    /// Drafted tokens proposed on the verified path, per depth (index 0 = first drafted token).
    pub proposed_per_depth: Vec<usize>,
    /// Drafted tokens accepted, per depth.
    pub accepted_per_depth: Vec<usize>,
    /// Seconds spent in the draft.
    pub draft_seconds: f64,
    /// Seconds spent in the target (prefill included).
    pub target_seconds: f64,
    /// Wall-clock seconds of the whole generation.
    pub wall_seconds: f64,
}

impl DecodeMetrics {
    /// τ: tokens emitted per target forward (the bonus token counts).
    pub fn tau(&self) -> f64 {
        if self.target_forwards == 0 {
            0.0
        } else {
            self.new_tokens as f64 / self.target_forwards as f64
        }
    }

    /// Acceptance rate at each depth: accepted / proposed.
    pub fn acceptance_per_depth(&self) -> Vec<f64> {
        self.accepted_per_depth
            .iter()
            .zip(&self.proposed_per_depth)
            .map(|(&a, &p)| if p == 0 { 0.0 } else { a as f64 / p as f64 })
            .collect()
    }

    /// α: overall acceptance rate of proposed drafted tokens on the verified path.
    pub fn alpha(&self) -> f64 {
        let p: usize = self.proposed_per_depth.iter().sum();
        let a: usize = self.accepted_per_depth.iter().sum();
        if p == 0 {
            0.0
        } else {
            a as f64 / p as f64
        }
    }

    /// c: time of one draft forward relative to one target forward.
    pub fn cost_ratio(&self) -> f64 {
        if self.draft_forwards == 0 || self.target_forwards == 0 || self.target_seconds == 0.0 {
            return 0.0;
        }
        (self.draft_seconds / self.draft_forwards as f64) / (self.target_seconds / self.target_forwards as f64)
    }

    /// Tokens per wall-clock second.
    pub fn tokens_per_second(&self) -> f64 {
        if self.wall_seconds > 0.0 {
            self.new_tokens as f64 / self.wall_seconds
        } else {
            0.0
        }
    }

    /// Adds another generation's counters to this one (for aggregate figures).
    pub fn merge(&mut self, other: &DecodeMetrics) {
        self.new_tokens += other.new_tokens;
        self.target_forwards += other.target_forwards;
        self.draft_forwards += other.draft_forwards;
        for (dst, src) in
            [(&mut self.proposed_per_depth, &other.proposed_per_depth), (&mut self.accepted_per_depth, &other.accepted_per_depth)]
        {
            if dst.len() < src.len() {
                dst.resize(src.len(), 0);
            }
            for (d, s) in dst.iter_mut().zip(src) {
                *d += s;
            }
        }
        self.draft_seconds += other.draft_seconds;
        self.target_seconds += other.target_seconds;
        self.wall_seconds += other.wall_seconds;
    }
}

/// Expected walltime improvement of speculative decoding (Leviathan et al. 2023, Thm. 3.8):
/// `(1 - α^(γ+1)) / ((1 - α)(γc + 1))` for acceptance rate `α`, `γ` drafted tokens per step and
/// draft/target cost ratio `c`.
///
/// ```
/// let s = eda_core::predicted_speedup(0.8, 4, 0.05);
/// assert!((s - (1.0 - 0.8f64.powi(5)) / (0.2 * 1.2)).abs() < 1e-12);
/// ```
pub fn predicted_speedup(alpha: f64, gamma: usize, c: f64) -> f64 {
    let g = gamma as f64;
    let expected_tokens = if (1.0 - alpha).abs() < 1e-12 { g + 1.0 } else { (1.0 - alpha.powi(gamma as i32 + 1)) / (1.0 - alpha) };
    expected_tokens / (g * c + 1.0)
}
