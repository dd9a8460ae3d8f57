//! Summaries of distance distributions: how far base and fine-tuned features sit from the
//! base-target reference Gaussian.

use std::fmt;

use eda_core::data::FeatureSample;
use eda_core::{EdaError, Result};
use serde::{Deserialize, Serialize};

use crate::selector::{quantile_sorted, MahalanobisSelector};

/// Mean, standard deviation and quantiles of a set of distances.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DistanceStats {
    /// Number of distances.
    pub count: usize,
    /// Mean.
    pub mean: f64,
    /// Population standard deviation (divides by `count`).
    pub std: f64,
    /// 5th percentile.
    pub p5: f64,
    /// 25th percentile.
    pub p25: f64,
    /// Median.
    pub p50: f64,
    /// 75th percentile.
    pub p75: f64,
    /// 95th percentile.
    pub p95: f64,
}

impl DistanceStats {
    /// Summarises `values` (quantiles by linear interpolation, as numpy's default).
    ///
    /// ```
    /// let s = eda_select::DistanceStats::from_values(&[1.0, 2.0, 3.0, 4.0, 5.0]).unwrap();
    /// assert_eq!((s.mean, s.p50, s.p25), (3.0, 3.0, 2.0));
    /// ```
    pub fn from_values(values: &[f64]) -> Result<Self> {
        if values.is_empty() {
            return Err(EdaError::EmptyDataset("no distances to summarise".into()));
        }
        if values.iter().any(|v| !v.is_finite()) {
            return Err(EdaError::NonFinite("distances being summarised".into()));
        }
        let n = values.len() as f64;
        let mean = values.iter().sum::<f64>() / n;
        let std = (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n).sqrt();
        let mut s = values.to_vec();
        s.sort_by(f64::total_cmp);
        let q = |p: f64| quantile_sorted(&s, p);
        Ok(DistanceStats { count: values.len(), mean, std, p5: q(0.05), p25: q(0.25), p50: q(0.5), p75: q(0.75), p95: q(0.95) })
    }
}

/// Which base samples the base distances of a [`DriftSummary`] were scored on, relative to the
/// statistics fit (see [`HoldoutSplit`](crate::HoldoutSplit)).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DriftBaseline {
    /// `true`: the scored samples were left out of the fit (an unbiased in-distribution
    /// reference). `false`: they are the fitted samples themselves (in-sample: distances biased
    /// low, the drift ratio biased high).
    pub held_out: bool,
    /// Base samples the statistics were fitted on.
    pub fitted_samples: usize,
    /// Base samples scored for the base distances.
    pub scored_samples: usize,
    /// The requested hold-out fraction.
    pub holdout_fraction: f64,
    /// Why the baseline is in-sample, when it is.
    pub note: Option<String>,
}

/// Per-token distance distributions of base-target and fine-tuned-target features under the
/// same reference Gaussian. A fine-tuned target that drifted shows larger distances.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DriftSummary {
    /// Distances of base-target features (in-distribution reference), when available.
    pub base: Option<DistanceStats>,
    /// Distances of the fine-tuned (regenerated candidate) features.
    pub tuned: DistanceStats,
    /// `tuned.mean / base.mean`, when the base summary is available.
    pub mean_ratio: Option<f64>,
    /// Which base samples `base` was scored on (held out of the fit or in-sample), when known.
    #[serde(default)]
    pub base_samples: Option<DriftBaseline>,
}

impl DriftSummary {
    /// Scores every token of `base` (if given) and `tuned` with `selector`'s model and positions.
    ///
    /// `base` should be base samples the statistics were *not* fitted on (see
    /// [`HoldoutSplit`](crate::HoldoutSplit)); record which they are with
    /// [`with_base_samples`](Self::with_base_samples).
    pub fn compute(selector: &MahalanobisSelector, base: Option<&[FeatureSample]>, tuned: &[FeatureSample]) -> Result<Self> {
        let flat = |s: &[FeatureSample]| -> Result<DistanceStats> { DistanceStats::from_values(&selector.token_distances(s)?.concat()) };
        let tuned = flat(tuned)?;
        let base = base.map(flat).transpose()?;
        Ok(Self::from_parts(base, tuned))
    }

    /// Builds a summary from already computed parts.
    pub fn from_parts(base: Option<DistanceStats>, tuned: DistanceStats) -> Self {
        let mean_ratio = base.as_ref().filter(|b| b.mean > 0.0).map(|b| tuned.mean / b.mean);
        DriftSummary { base, tuned, mean_ratio, base_samples: None }
    }

    /// Records which base samples the base distances were scored on.
    pub fn with_base_samples(mut self, baseline: DriftBaseline) -> Self {
        self.base_samples = Some(baseline);
        self
    }
}

impl fmt::Display for DriftSummary {
    /// A small aligned table.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{:<8} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
            "set", "tokens", "mean", "std", "p5", "p25", "p50", "p75", "p95"
        )?;
        let row = |f: &mut fmt::Formatter<'_>, name: &str, s: &DistanceStats| {
            writeln!(
                f,
                "{:<8} {:>9} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3}",
                name, s.count, s.mean, s.std, s.p5, s.p25, s.p50, s.p75, s.p95
            )
        };
        if let Some(b) = &self.base {
            row(f, "base", b)?;
        }
        row(f, "tuned", &self.tuned)?;
        if let Some(r) = self.mean_ratio {
            writeln!(f, "mean distance ratio tuned/base: {r:.3}")?;
        }
        match (&self.base, &self.base_samples) {
            (Some(_), Some(b)) if b.held_out => writeln!(
                f,
                "base = {} held-out samples the statistics were not fitted on ({} fitted, hold-out fraction {})",
                b.scored_samples, b.fitted_samples, b.holdout_fraction
            )?,
            (Some(_), Some(b)) => writeln!(
                f,
                "base = the {} samples the statistics were fitted on: in-sample, so base distances are biased low and the ratio high{}",
                b.fitted_samples,
                b.note.as_deref().map(|n| format!(" ({n})")).unwrap_or_default()
            )?,
            _ => {}
        }
        Ok(())
    }
}
