//! Held-out base samples for the drift baseline.
//!
//! The drift summary compares the distances of fine-tuned features with those of base features
//! under the base Gaussian. Scored on the samples the mean and covariance were fitted on, the
//! base distances are in-sample and biased low (the fit adapted to exactly those points, more so
//! with few samples in a high dimension), which inflates the apparent drift. [`HoldoutSplit`]
//! leaves a fraction of the base samples out of the fit so that the baseline is scored on data
//! the statistics never saw.
//!
//! Which samples are held out depends on each sample's id alone (a hash), so the split is the
//! same in every run, whatever the order or sharding of the base files.

use std::collections::BTreeSet;

use eda_core::data::sha256_hex;
use eda_core::{EdaError, Result};
use serde::{Deserialize, Serialize};

use crate::drift::DriftBaseline;

/// Default fraction of base samples held out of the fit for the drift baseline.
pub const DEFAULT_DRIFT_HOLDOUT: f64 = 0.1;

/// Below this many base samples none is held out (each one matters more to the fit than to the
/// baseline), and the baseline is in-sample with a note saying so.
pub const MIN_BASE_SAMPLES_FOR_HOLDOUT: usize = 10;

/// A number in `[0, 1)` derived from a sample id (SHA-256): sample `id` is held out at fraction
/// `f` when `holdout_rank(id) < f`.
///
/// ```
/// let r = eda_select::holdout_rank("sample-17");
/// assert!((0.0..1.0).contains(&r));
/// assert_eq!(r, eda_select::holdout_rank("sample-17"));
/// ```
pub fn holdout_rank(id: &str) -> f64 {
    // A domain prefix keeps this split independent of any other hash of the same ids.
    let h = sha256_hex(format!("eda-drift-holdout\0{id}").as_bytes());
    let top = u64::from_str_radix(&h[..16], 16).unwrap_or(0);
    (top >> 11) as f64 / (1u64 << 53) as f64
}

/// Which base samples are left out of the statistics fit and scored for the drift baseline.
///
/// A sample is held out when [`holdout_rank`] of its id is below the fraction; when that picks
/// none, the one with the lowest rank is held out (at least one). With fewer than
/// [`MIN_BASE_SAMPLES_FOR_HOLDOUT`] samples, or fraction 0, none is held out and the baseline is
/// in-sample ([`note`](Self::note) says why).
///
/// ```
/// use eda_select::HoldoutSplit;
/// let ids: Vec<String> = (0..100).map(|i| format!("s{i}")).collect();
/// let split = HoldoutSplit::new(&ids, 0.1).unwrap();
/// assert!(split.held_out() >= 1 && split.held_out() < 30);
/// assert_eq!(split.fitted() + split.held_out(), 100);
/// let few = HoldoutSplit::new(&ids[..5], 0.1).unwrap();
/// assert_eq!(few.held_out(), 0);
/// assert!(few.note().unwrap().contains("in-sample"));
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HoldoutSplit {
    fraction: f64,
    total: usize,
    held_out: BTreeSet<String>,
    note: Option<String>,
}

impl HoldoutSplit {
    /// The split of the base samples named by `ids` (unique) at `fraction` ∈ `[0, 1)`.
    ///
    /// Errors: [`EdaError::InvalidArgument`] for a fraction outside `[0, 1)` or one that would
    /// leave nothing to fit.
    pub fn new<S: AsRef<str>>(ids: &[S], fraction: f64) -> Result<Self> {
        if !(fraction.is_finite() && (0.0..1.0).contains(&fraction)) {
            return Err(EdaError::InvalidArgument(format!("the drift hold-out fraction must be in [0, 1), got {fraction}")));
        }
        let total = ids.len();
        let mut split = HoldoutSplit { fraction, total, held_out: BTreeSet::new(), note: None };
        if fraction == 0.0 {
            split.note = Some("hold-out fraction 0: the base distances are in-sample (biased low)".into());
            return Ok(split);
        }
        if total < MIN_BASE_SAMPLES_FOR_HOLDOUT {
            split.note = Some(format!(
                "only {total} base samples (fewer than {MIN_BASE_SAMPLES_FOR_HOLDOUT}): none held out, the base distances are in-sample (biased low)"
            ));
            return Ok(split);
        }
        let ranked: Vec<(f64, &str)> = ids.iter().map(|i| (holdout_rank(i.as_ref()), i.as_ref())).collect();
        split.held_out = ranked.iter().filter(|(r, _)| *r < fraction).map(|(_, i)| i.to_string()).collect();
        if split.held_out.is_empty() {
            // Ties broken by id, so that the choice never depends on the input order.
            let lowest = ranked.iter().min_by(|a, b| a.0.total_cmp(&b.0).then_with(|| a.1.cmp(b.1))).map(|(_, i)| i.to_string());
            split.held_out.extend(lowest);
        }
        if split.fitted() == 0 {
            return Err(EdaError::InvalidArgument(format!(
                "a drift hold-out fraction of {fraction} leaves none of the {total} base samples to fit the statistics on"
            )));
        }
        Ok(split)
    }

    /// Whether sample `id` is held out of the fit.
    pub fn is_held_out(&self, id: &str) -> bool {
        self.held_out.contains(id)
    }

    /// Whether the drift baseline is scored on the fitted samples (nothing held out).
    pub fn is_in_sample(&self) -> bool {
        self.held_out.is_empty()
    }

    /// Whether sample `id` is scored for the drift baseline: the held-out ones, or every one
    /// when nothing is held out.
    pub fn is_scored(&self, id: &str) -> bool {
        self.is_in_sample() || self.is_held_out(id)
    }

    /// The requested fraction.
    pub fn fraction(&self) -> f64 {
        self.fraction
    }

    /// Number of base samples.
    pub fn total(&self) -> usize {
        self.total
    }

    /// Number of samples held out of the fit.
    pub fn held_out(&self) -> usize {
        self.held_out.len()
    }

    /// Number of samples the statistics are fitted on.
    pub fn fitted(&self) -> usize {
        self.total - self.held_out.len()
    }

    /// Why nothing is held out, when nothing is.
    pub fn note(&self) -> Option<&str> {
        self.note.as_deref()
    }

    /// The description recorded in a [`DriftSummary`](crate::DriftSummary).
    pub fn baseline(&self) -> DriftBaseline {
        DriftBaseline {
            held_out: !self.is_in_sample(),
            fitted_samples: self.fitted(),
            scored_samples: if self.is_in_sample() { self.total } else { self.held_out() },
            holdout_fraction: self.fraction,
            note: self.note.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("prompt-{i}")).collect()
    }

    #[test]
    fn the_split_is_deterministic_disjoint_and_order_free() {
        let all = ids(500);
        let a = HoldoutSplit::new(&all, 0.1).unwrap();
        let mut shuffled = all.clone();
        shuffled.reverse();
        shuffled.rotate_left(123);
        let b = HoldoutSplit::new(&shuffled, 0.1).unwrap();
        assert_eq!(a, b);
        let held: Vec<&String> = all.iter().filter(|i| a.is_held_out(i)).collect();
        let fitted: Vec<&String> = all.iter().filter(|i| !a.is_held_out(i)).collect();
        assert_eq!(held.len() + fitted.len(), all.len());
        assert_eq!((held.len(), fitted.len()), (a.held_out(), a.fitted()));
        assert!(held.iter().all(|i| !fitted.contains(i)));
        // About the requested fraction (binomial(500, 0.1): mean 50, sd ≈ 6.7).
        assert!((25..=75).contains(&a.held_out()), "{}", a.held_out());
        // Growing the set keeps every earlier decision (per-id rule).
        let more = HoldoutSplit::new(&ids(1000), 0.1).unwrap();
        assert!(all.iter().all(|i| a.is_held_out(i) == more.is_held_out(i)));
        // The scored set is exactly the held-out one.
        assert!(all.iter().all(|i| a.is_scored(i) == a.is_held_out(i)));
    }

    #[test]
    fn at_least_one_is_held_out_and_small_or_zero_means_in_sample() {
        // A fraction so small that no id ranks below it still holds out one sample.
        let all = ids(10);
        let s = HoldoutSplit::new(&all, 1e-12).unwrap();
        assert_eq!(s.held_out(), 1);
        assert_eq!(s.baseline().scored_samples, 1);
        let lowest = all.iter().min_by(|a, b| holdout_rank(a).total_cmp(&holdout_rank(b))).unwrap();
        assert!(s.is_held_out(lowest));

        let few = HoldoutSplit::new(&all[..9], 0.5).unwrap();
        assert!(few.is_in_sample() && few.note().unwrap().contains("only 9 base samples"));
        assert!(all[..9].iter().all(|i| few.is_scored(i)));
        let b = few.baseline();
        assert!(!b.held_out && b.fitted_samples == 9 && b.scored_samples == 9);

        let zero = HoldoutSplit::new(&all, 0.0).unwrap();
        assert!(zero.is_in_sample() && zero.note().unwrap().contains("in-sample"));

        for bad in [-0.1, 1.0, f64::NAN] {
            assert!(matches!(HoldoutSplit::new(&all, bad), Err(EdaError::InvalidArgument(_))), "{bad}");
        }
        assert!(matches!(HoldoutSplit::new(&all, 0.999_999_999), Err(EdaError::InvalidArgument(m)) if m.contains("leaves none")));
    }
}
