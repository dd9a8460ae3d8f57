//! Sample selectors: Mahalanobis (the EDA selector) and the random / keep-all baselines.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use eda_core::data::FeatureSample;
use eda_core::{EdaError, Result, SampleSelector, Selection};
use serde::{Deserialize, Serialize};

use crate::model::{MahalanobisModel, DEFAULT_BATCH_TOKENS};
use crate::stats::{check_samples, mean_feature, PositionFilter};

/// How per-token distances become one score per sample.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
pub enum Pooling {
    /// Mean of the per-token distances (the default; docs/method.md §5.2 alternative C).
    #[default]
    Mean,
    /// Largest per-token distance.
    Max,
    /// The `q`-quantile of the per-token distances (`q ∈ [0, 1]`, linear interpolation as numpy's
    /// default).
    Quantile(f64),
    /// Pool first, then measure: the distance of the sample's mean feature (docs/method.md §5.2
    /// items 1–4; pair it with [`FitUnit::SampleMeans`](crate::FitUnit::SampleMeans)).
    PoolThenDistance,
}

impl Pooling {
    /// Checks the quantile range.
    pub fn validate(&self) -> Result<()> {
        match self {
            Pooling::Quantile(q) if !(0.0..=1.0).contains(q) => {
                Err(EdaError::InvalidArgument(format!("pooling quantile must be in [0, 1], got {q}")))
            }
            _ => Ok(()),
        }
    }

    /// Pools token distances (non-empty) into one score.
    pub fn pool(&self, distances: &[f64]) -> f64 {
        match self {
            Pooling::Mean | Pooling::PoolThenDistance => distances.iter().sum::<f64>() / distances.len().max(1) as f64,
            Pooling::Max => distances.iter().cloned().fold(f64::NEG_INFINITY, f64::max),
            Pooling::Quantile(q) => {
                let mut v = distances.to_vec();
                v.sort_by(f64::total_cmp);
                quantile_sorted(&v, *q)
            }
        }
    }
}

/// Linear-interpolation quantile of sorted values (numpy's default `linear` method); NaN if empty.
///
/// ```
/// assert_eq!(eda_select::quantile_sorted(&[1.0, 2.0, 3.0, 4.0], 0.5), 2.5);
/// ```
pub fn quantile_sorted(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let pos = q.clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

impl FromStr for Pooling {
    type Err = EdaError;
    /// Parses `mean`, `max`, `q<q>` / `quantile:<q>` and `pooled` (pool-then-distance).
    ///
    /// ```
    /// use eda_select::Pooling;
    /// assert_eq!("quantile:0.9".parse::<Pooling>().unwrap(), Pooling::Quantile(0.9));
    /// assert_eq!("pooled".parse::<Pooling>().unwrap(), Pooling::PoolThenDistance);
    /// ```
    fn from_str(s: &str) -> Result<Self> {
        let l = s.trim().to_ascii_lowercase();
        let p = match l.as_str() {
            "mean" => Pooling::Mean,
            "max" => Pooling::Max,
            "pooled" | "pool-then-distance" | "mean-feature" => Pooling::PoolThenDistance,
            other => {
                let q = other.strip_prefix("quantile:").or_else(|| other.strip_prefix("q:")).ok_or_else(|| {
                    EdaError::InvalidArgument(format!("unknown pooling `{s}` (expected mean, max, quantile:<q> or pooled)"))
                })?;
                Pooling::Quantile(q.parse().map_err(|e| EdaError::InvalidArgument(format!("bad quantile `{q}`: {e}")))?)
            }
        };
        p.validate()?;
        Ok(p)
    }
}

impl fmt::Display for Pooling {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pooling::Mean => f.write_str("mean"),
            Pooling::Max => f.write_str("max"),
            Pooling::Quantile(q) => write!(f, "quantile:{q}"),
            Pooling::PoolThenDistance => f.write_str("pooled"),
        }
    }
}

/// Scoring options of [`MahalanobisSelector`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ScoreConfig {
    /// Positions that are scored. A sample with no such position (e.g. no response tokens) is
    /// scored over all its positions instead.
    pub positions: PositionFilter,
    /// Pooling of token distances.
    pub pooling: Pooling,
    /// Tokens per batched triangular solve.
    pub batch_tokens: usize,
}

impl Default for ScoreConfig {
    fn default() -> Self {
        ScoreConfig { positions: PositionFilter::Response, pooling: Pooling::Mean, batch_tokens: DEFAULT_BATCH_TOKENS }
    }
}

/// Keeps the `keep` highest scores, ties by the lower index (scores must be finite).
pub fn rank_top(scores: &[f64], keep: usize) -> Result<Vec<usize>> {
    if let Some(i) = scores.iter().position(|s| !s.is_finite()) {
        return Err(EdaError::NonFinite(format!("score of sample {i}")));
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    order.truncate(keep.min(scores.len()));
    Ok(order)
}

/// Number of samples kept for `fraction` (at least one), validating the fraction.
pub(crate) fn keep_count(n: usize, fraction: f64) -> Result<usize> {
    if n == 0 {
        return Err(EdaError::EmptyDataset("no samples to select from".into()));
    }
    if !(fraction > 0.0 && fraction <= 1.0) {
        return Err(EdaError::InvalidArgument(format!("fraction must be in (0, 1], got {fraction}")));
    }
    Ok(((n as f64 * fraction).ceil() as usize).clamp(1, n))
}

/// The EDA selector: scores samples by the Mahalanobis distance of their hidden states from the
/// base target's feature distribution and keeps the most shifted ones.
///
/// ```
/// use eda_core::data::FeatureSample;
/// use eda_core::SampleSelector;
/// use eda_select::{FeatureStats, FitConfig, MahalanobisSelector, ScoreConfig};
/// let mk = |id: &str, shift: f32| {
///     let h: Vec<f32> = (0..16).map(|i| ((i * 5) % 7) as f32 * 0.3 + if i % 2 == 0 { shift } else { 0.0 }).collect();
///     FeatureSample::new(id, vec![0; 8], h, 2, vec![1; 8]).unwrap()
/// };
/// let base = vec![mk("b0", 0.0), mk("b1", 0.1)];
/// let stats = FeatureStats::fit(&base, &FitConfig::default()).unwrap();
/// let sel = MahalanobisSelector::from_stats(&stats, ScoreConfig::default()).unwrap();
/// let picked = sel.select(&[mk("near", 0.0), mk("far", 5.0)], 0.5).unwrap();
/// assert_eq!(picked.indices, vec![1]);
/// ```
#[derive(Debug, Clone)]
pub struct MahalanobisSelector {
    model: Arc<MahalanobisModel>,
    config: ScoreConfig,
}

impl MahalanobisSelector {
    /// A selector over an already factorised model.
    pub fn new(model: Arc<MahalanobisModel>, config: ScoreConfig) -> Result<Self> {
        config.pooling.validate()?;
        if config.batch_tokens == 0 {
            return Err(EdaError::InvalidArgument("batch_tokens must be at least 1".into()));
        }
        Ok(MahalanobisSelector { model, config })
    }

    /// Factorises `stats` (see [`MahalanobisModel::from_stats`]) and builds a selector.
    pub fn from_stats(stats: &crate::FeatureStats, config: ScoreConfig) -> Result<Self> {
        Self::new(Arc::new(MahalanobisModel::from_stats(stats)?), config)
    }

    /// The factorised reference model.
    pub fn model(&self) -> &MahalanobisModel {
        &self.model
    }

    /// Scoring options.
    pub fn config(&self) -> &ScoreConfig {
        &self.config
    }

    fn check(&self, samples: &[FeatureSample], what: &str) -> Result<()> {
        let d = check_samples(samples, what)?;
        if d != self.model.dim() {
            return Err(EdaError::mismatch(format!("hidden size of {what} samples vs statistics dimension"), self.model.dim(), d));
        }
        Ok(())
    }

    /// Positions of `s` that are scored. A sample without any (an all-zero loss mask under the
    /// `response` filter) is an error: scoring its prompt positions instead would rank it by a
    /// different quantity than every other sample.
    fn scored_positions(&self, s: &FeatureSample) -> Result<Vec<usize>> {
        let p = self.config.positions.positions(s);
        if p.is_empty() {
            return Err(EdaError::EmptyDataset(format!(
                "sample `{}` has no position selected by the `{}` filter (its loss mask is all zero); drop it or score with --positions all",
                s.id, self.config.positions
            )));
        }
        Ok(p)
    }

    /// Per-token distances of every sample at its scored positions (batched across samples).
    pub fn token_distances(&self, samples: &[FeatureSample]) -> Result<Vec<Vec<f64>>> {
        self.check(samples, "candidate")?;
        let positions: Vec<Vec<usize>> = samples.iter().map(|s| self.scored_positions(s)).collect::<Result<_>>()?;
        let rows: Vec<&[f32]> = samples.iter().zip(&positions).flat_map(|(s, p)| p.iter().map(move |&t| s.hidden_row(t))).collect();
        let flat = self.model.distances_batched(&rows, self.config.batch_tokens)?;
        let mut out = Vec::with_capacity(samples.len());
        let mut at = 0;
        for p in &positions {
            out.push(flat[at..at + p.len()].to_vec());
            at += p.len();
        }
        Ok(out)
    }

    /// One score per sample (batched, rayon-parallel).
    pub fn score_samples(&self, samples: &[FeatureSample]) -> Result<Vec<f64>> {
        match self.config.pooling {
            Pooling::PoolThenDistance => {
                self.check(samples, "candidate")?;
                let means: Vec<Vec<f64>> =
                    samples.iter().map(|s| Ok(mean_feature(s, &self.scored_positions(s)?))).collect::<Result<_>>()?;
                self.model.distances_f64(&means)
            }
            pooling => Ok(self.token_distances(samples)?.iter().map(|d| pooling.pool(d)).collect()),
        }
    }
}

impl SampleSelector for MahalanobisSelector {
    fn name(&self) -> &str {
        "mahalanobis"
    }

    fn score(&self, _index: usize, sample: &FeatureSample) -> Result<f64> {
        Ok(self.score_samples(std::slice::from_ref(sample))?[0])
    }

    /// Batched version of the trait's default (same result, same tie rule).
    fn select(&self, samples: &[FeatureSample], fraction: f64) -> Result<Selection> {
        let keep = keep_count(samples.len(), fraction)?;
        let scores = self.score_samples(samples)?;
        Ok(Selection { indices: rank_top(&scores, keep)?, scores })
    }
}

/// SplitMix64 finaliser (a bijective 64-bit mixer).
fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Baseline: a uniformly random subset, reproducible from `seed`. Each sample's score is a
/// uniform number in `[0, 1)` derived from `(seed, index)`, so scores do not depend on the order
/// in which samples are scored.
///
/// ```
/// use eda_core::SampleSelector;
/// use eda_core::data::FeatureSample;
/// let s: Vec<_> = (0..10).map(|i| FeatureSample::new(format!("{i}"), vec![0], vec![0.0], 1, vec![1]).unwrap()).collect();
/// let a = eda_select::RandomSelector { seed: 3 }.select(&s, 0.3).unwrap();
/// let b = eda_select::RandomSelector { seed: 3 }.select(&s, 0.3).unwrap();
/// assert_eq!(a, b);
/// assert_eq!(a.indices.len(), 3);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RandomSelector {
    /// Seed of the random scores.
    pub seed: u64,
}

impl SampleSelector for RandomSelector {
    fn name(&self) -> &str {
        "random"
    }

    fn score(&self, index: usize, _sample: &FeatureSample) -> Result<f64> {
        let bits = splitmix64(splitmix64(self.seed) ^ index as u64);
        Ok((bits >> 11) as f64 / (1u64 << 53) as f64)
    }
}

/// Baseline: no selection. Every sample scores 0 and [`select`](SampleSelector::select) keeps
/// all of them in input order whatever the fraction (the fraction is still validated).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct KeepAll;

impl SampleSelector for KeepAll {
    fn name(&self) -> &str {
        "all"
    }

    fn score(&self, _index: usize, _sample: &FeatureSample) -> Result<f64> {
        Ok(0.0)
    }

    fn select(&self, samples: &[FeatureSample], fraction: f64) -> Result<Selection> {
        keep_count(samples.len(), fraction)?;
        Ok(Selection { indices: (0..samples.len()).collect(), scores: vec![0.0; samples.len()] })
    }
}

/// Selection under a token budget, for every [`SampleSelector`].
pub trait SelectionExt: SampleSelector {
    /// Ranks all samples (via [`select`](SampleSelector::select) with fraction 1) and keeps the
    /// longest prefix of the ranking whose total length (`FeatureSample::len`, all positions,
    /// which is what training processes) fits in `budget_tokens`. The budget is never exceeded:
    /// when even the best-ranked sample is longer, the result is [`EdaError::InvalidArgument`].
    ///
    /// ```
    /// use eda_core::data::FeatureSample;
    /// use eda_select::{KeepAll, SelectionExt};
    /// let s: Vec<_> = (0..4).map(|i| FeatureSample::new(format!("{i}"), vec![0; 3], vec![0.0; 3], 1, vec![1; 3]).unwrap()).collect();
    /// assert_eq!(KeepAll.select_by_tokens(&s, 7).unwrap().indices, vec![0, 1]);
    /// ```
    fn select_by_tokens(&self, samples: &[FeatureSample], budget_tokens: usize) -> Result<Selection> {
        if budget_tokens == 0 {
            return Err(EdaError::InvalidArgument("token budget must be at least 1".into()));
        }
        let mut sel = self.select(samples, 1.0)?;
        let mut used = 0usize;
        let mut keep = 0usize;
        for &i in &sel.indices {
            let len = samples[i].len();
            // The budget is a hard bound: even the best-ranked sample is dropped if it exceeds it.
            if used + len > budget_tokens {
                break;
            }
            used += len;
            keep += 1;
        }
        if keep == 0 {
            let best = sel.indices.first().map_or(0, |&i| samples[i].len());
            return Err(EdaError::InvalidArgument(format!(
                "token budget {budget_tokens} is smaller than the best-ranked sample ({best} tokens): nothing fits; raise --token-budget"
            )));
        }
        sel.indices.truncate(keep);
        Ok(sel)
    }
}

impl<T: SampleSelector + ?Sized> SelectionExt for T {}
