//! Streaming mean/covariance of hidden-state vectors and the fitted reference statistics.
//!
//! [`CovAccumulator`] keeps the count, mean and centred scatter matrix `M2 = Σ (x−μ)(x−μ)ᵀ` in
//! f64. Vectors are added one at a time (Welford's update), or a chunk at a time (the chunk is
//! centred on its own mean and its scatter computed as one matrix product), and accumulators
//! built on disjoint data combine exactly with the pairwise formula of Chan, Golub and LeVeque:
//!
//! `M2 = M2_a + M2_b + δδᵀ · n_a n_b / n`, `δ = μ_b − μ_a`.
//!
//! [`FeatureStats`] is the result of a fit: μ, the unbiased covariance `S = M2 / (n − 1)`, the
//! Ledoit–Wolf shrinkage intensity and the configuration that produced them. It is saved as a
//! safetensors file (see [`FeatureStats::save`]).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use eda_core::data::FeatureSample;
use eda_core::safetensors::{encode, Dtype, HostTensor, SafetensorsFile};
use eda_core::{EdaError, Result};
use nalgebra::{DMatrix, DVector};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// Format tag stored in the metadata of a statistics file.
pub const STATS_FORMAT: &str = "eda-mahalanobis-stats-v1";

/// Tokens per chunk when accumulating a scatter matrix with matrix products.
const FIT_CHUNK: usize = 256;

/// Which positions of a sample contribute hidden states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum PositionFilter {
    /// Response positions only (`loss_mask == 1`). The default.
    #[default]
    Response,
    /// Every position (prompt and response).
    All,
}

impl PositionFilter {
    /// Positions of `sample` selected by this filter.
    ///
    /// ```
    /// use eda_core::data::FeatureSample;
    /// use eda_select::PositionFilter;
    /// let s = FeatureSample::new("a", vec![1, 2, 3], vec![0.0; 6], 2, vec![0, 1, 1]).unwrap();
    /// assert_eq!(PositionFilter::Response.positions(&s), vec![1, 2]);
    /// assert_eq!(PositionFilter::All.positions(&s), vec![0, 1, 2]);
    /// ```
    pub fn positions(&self, sample: &FeatureSample) -> Vec<usize> {
        match self {
            PositionFilter::All => (0..sample.len()).collect(),
            PositionFilter::Response => (0..sample.len()).filter(|&t| sample.loss_mask.get(t).copied().unwrap_or(0) != 0).collect(),
        }
    }
}

impl FromStr for PositionFilter {
    type Err = EdaError;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "response" | "masked" => Ok(PositionFilter::Response),
            "all" => Ok(PositionFilter::All),
            other => Err(EdaError::InvalidArgument(format!("unknown position filter `{other}` (expected `response` or `all`)"))),
        }
    }
}

impl fmt::Display for PositionFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PositionFilter::Response => "response",
            PositionFilter::All => "all",
        })
    }
}

/// What one observation of the reference distribution is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum FitUnit {
    /// Every selected token's hidden state is one observation (token-level Gaussian). The default;
    /// matches per-token scoring.
    #[default]
    Tokens,
    /// The mean hidden state over a sample's selected positions is one observation (method
    /// docs/method.md §5.2 item 1); matches [`Pooling::PoolThenDistance`](crate::Pooling::PoolThenDistance).
    SampleMeans,
}

impl FromStr for FitUnit {
    type Err = EdaError;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "tokens" | "token" => Ok(FitUnit::Tokens),
            "sample-means" | "samples" | "sample_means" => Ok(FitUnit::SampleMeans),
            other => Err(EdaError::InvalidArgument(format!("unknown fit unit `{other}` (expected `tokens` or `sample-means`)"))),
        }
    }
}

impl fmt::Display for FitUnit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FitUnit::Tokens => "tokens",
            FitUnit::SampleMeans => "sample-means",
        })
    }
}

/// Covariance regularisation `Σ = (1 − α)·S + α·(tr S / d)·I`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
pub enum Shrinkage {
    /// α from the Ledoit–Wolf (2004) formula (as in scikit-learn's `ledoit_wolf_shrinkage`).
    #[default]
    LedoitWolf,
    /// A fixed α in `[0, 1]`. α = 0 means no regularisation at all (and no jitter): a singular
    /// `S` is then an error.
    Ridge(f64),
}

impl Shrinkage {
    /// Checks that a fixed α lies in `[0, 1]`.
    pub fn validate(&self) -> Result<()> {
        match self {
            Shrinkage::Ridge(a) if !(0.0..=1.0).contains(a) => {
                Err(EdaError::InvalidArgument(format!("shrinkage α must be in [0, 1], got {a}")))
            }
            _ => Ok(()),
        }
    }
}

impl FromStr for Shrinkage {
    type Err = EdaError;
    /// Parses `lw` (or `ledoit-wolf`) and `ridge:<α>`.
    ///
    /// ```
    /// use eda_select::Shrinkage;
    /// assert_eq!("lw".parse::<Shrinkage>().unwrap(), Shrinkage::LedoitWolf);
    /// assert_eq!("ridge:0.1".parse::<Shrinkage>().unwrap(), Shrinkage::Ridge(0.1));
    /// assert!("ridge:2".parse::<Shrinkage>().is_err());
    /// ```
    fn from_str(s: &str) -> Result<Self> {
        let lower = s.trim().to_ascii_lowercase();
        let parsed = match lower.as_str() {
            "lw" | "ledoit-wolf" | "ledoitwolf" => Shrinkage::LedoitWolf,
            other => match other.strip_prefix("ridge:") {
                Some(a) => Shrinkage::Ridge(a.parse::<f64>().map_err(|e| EdaError::InvalidArgument(format!("bad ridge α `{a}`: {e}")))?),
                None => return Err(EdaError::InvalidArgument(format!("unknown shrinkage `{s}` (expected `lw` or `ridge:<α>`)"))),
            },
        };
        parsed.validate()?;
        Ok(parsed)
    }
}

impl fmt::Display for Shrinkage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Shrinkage::LedoitWolf => f.write_str("lw"),
            Shrinkage::Ridge(a) => write!(f, "ridge:{a}"),
        }
    }
}

/// Streaming mean and centred scatter matrix of `d`-dimensional vectors, in f64.
///
/// ```
/// use eda_select::CovAccumulator;
/// let rows: Vec<Vec<f32>> = (0..10).map(|i| vec![i as f32, (i * i) as f32 % 7.0]).collect();
/// let mut a = CovAccumulator::new(2);
/// for r in &rows[..4] { a.push(r).unwrap(); }
/// let mut b = CovAccumulator::new(2);
/// let refs: Vec<&[f32]> = rows[4..].iter().map(|r| r.as_slice()).collect();
/// b.push_chunk(&refs).unwrap();
/// a.merge(&b).unwrap();
/// assert_eq!(a.count(), 10);
/// assert!((a.mean()[0] - 4.5).abs() < 1e-12);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct CovAccumulator {
    count: u64,
    mean: DVector<f64>,
    m2: DMatrix<f64>,
}

impl CovAccumulator {
    /// An empty accumulator for vectors of width `dim`.
    pub fn new(dim: usize) -> Self {
        CovAccumulator { count: 0, mean: DVector::zeros(dim), m2: DMatrix::zeros(dim, dim) }
    }

    /// Vector width.
    pub fn dim(&self) -> usize {
        self.mean.len()
    }

    /// Number of vectors seen.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Running mean.
    pub fn mean(&self) -> &DVector<f64> {
        &self.mean
    }

    /// Centred scatter matrix `Σ (x−μ)(x−μ)ᵀ`.
    pub fn scatter(&self) -> &DMatrix<f64> {
        &self.m2
    }

    fn check_row<T: Copy + Into<f64>>(&self, x: &[T]) -> Result<()> {
        if x.len() != self.dim() {
            return Err(EdaError::mismatch("width of a hidden-state vector", self.dim(), x.len()));
        }
        if x.iter().any(|v| !(*v).into().is_finite()) {
            return Err(EdaError::NonFinite("hidden-state vector added to the covariance".into()));
        }
        Ok(())
    }

    /// Adds one vector (Welford's rank-one update).
    pub fn push<T: Copy + Into<f64>>(&mut self, x: &[T]) -> Result<()> {
        self.check_row(x)?;
        self.count += 1;
        let n = self.count as f64;
        let delta = DVector::from_iterator(x.len(), x.iter().zip(self.mean.iter()).map(|(v, m)| (*v).into() - m));
        self.mean.axpy(1.0 / n, &delta, 1.0);
        let delta2 = DVector::from_iterator(x.len(), x.iter().zip(self.mean.iter()).map(|(v, m)| (*v).into() - m));
        self.m2.ger(1.0, &delta, &delta2, 1.0);
        Ok(())
    }

    /// Adds a chunk of vectors: centres them on their own mean, forms their scatter with one
    /// matrix product and merges the result.
    pub fn push_chunk<T: Copy + Into<f64> + Sync>(&mut self, rows: &[&[T]]) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let d = self.dim();
        for r in rows {
            self.check_row(r)?;
        }
        let m = rows.len();
        let mut c = DMatrix::<f64>::zeros(d, m);
        for (j, r) in rows.iter().enumerate() {
            for (dst, v) in c.column_mut(j).iter_mut().zip(r.iter()) {
                *dst = (*v).into();
            }
        }
        let mean = c.column_mean();
        for mut col in c.column_iter_mut() {
            col -= &mean;
        }
        let ct = c.transpose();
        let mut m2 = DMatrix::<f64>::zeros(d, d);
        m2.gemm(1.0, &c, &ct, 0.0);
        self.merge(&CovAccumulator { count: m as u64, mean, m2 })
    }

    /// Merges an accumulator built on other data (Chan et al. pairwise combination).
    pub fn merge(&mut self, other: &CovAccumulator) -> Result<()> {
        if other.dim() != self.dim() {
            return Err(EdaError::mismatch("width of merged covariance accumulators", self.dim(), other.dim()));
        }
        if other.count == 0 {
            return Ok(());
        }
        if self.count == 0 {
            *self = other.clone();
            return Ok(());
        }
        let (na, nb) = (self.count as f64, other.count as f64);
        let n = na + nb;
        let delta = &other.mean - &self.mean;
        self.m2 += &other.m2;
        self.m2.ger(na * nb / n, &delta, &delta, 1.0);
        self.mean.axpy(nb / n, &delta, 1.0);
        self.count += other.count;
        Ok(())
    }

    /// Accumulates `rows` in parallel: one contiguous group per rayon thread, each processed in
    /// chunks with [`push_chunk`](Self::push_chunk), then the groups are merged in order.
    pub fn from_rows_parallel<T: Copy + Into<f64> + Sync>(dim: usize, rows: &[&[T]]) -> Result<Self> {
        let groups = rayon::current_num_threads().max(1).min(rows.len().div_ceil(FIT_CHUNK).max(1));
        let per = rows.len().div_ceil(groups).max(1);
        let parts: Vec<Result<CovAccumulator>> = rows
            .par_chunks(per)
            .map(|g| {
                let mut acc = CovAccumulator::new(dim);
                for c in g.chunks(FIT_CHUNK) {
                    acc.push_chunk(c)?;
                }
                Ok(acc)
            })
            .collect();
        let mut acc = CovAccumulator::new(dim);
        for p in parts {
            acc.merge(&p?)?;
        }
        Ok(acc)
    }

    /// Unbiased covariance `M2 / (n − 1)`, symmetrised; `None` with fewer than 2 vectors.
    pub fn covariance(&self) -> Option<DMatrix<f64>> {
        if self.count < 2 {
            return None;
        }
        let mut s = &self.m2 / (self.count as f64 - 1.0);
        let t = s.transpose();
        s += t;
        s *= 0.5;
        Some(s)
    }
}

/// Σ‖x − μ‖⁴ over `rows` (the fourth-moment term of the Ledoit–Wolf formula), in parallel.
pub fn sum_fourth_power_norms<T: Copy + Into<f64> + Sync>(mean: &DVector<f64>, rows: &[&[T]]) -> f64 {
    rows.par_iter()
        .map(|r| {
            let s: f64 = r.iter().zip(mean.iter()).map(|(v, m)| ((*v).into() - m).powi(2)).sum();
            s * s
        })
        .sum()
}

/// The Ledoit–Wolf shrinkage intensity α ∈ [0, 1] towards `(tr S/d)·I`, computed exactly as
/// scikit-learn's `ledoit_wolf_shrinkage` (which uses the maximum-likelihood covariance
/// `S_n = M2 / n`):
///
/// `δ = ‖S_n − μI‖²_F / d`, `β = min(δ, (Σ_k‖x_k−x̄‖⁴ / n − ‖S_n‖²_F) / (d·n))`, `α = β / δ`,
/// with `μ = tr(S_n)/d`.
///
/// `scatter` is `M2 = Σ (x−x̄)(x−x̄)ᵀ`, `sum_r4` is `Σ ‖x−x̄‖⁴` and `n` the number of vectors.
pub fn ledoit_wolf_alpha(scatter: &DMatrix<f64>, sum_r4: f64, n: u64) -> f64 {
    let d = scatter.nrows() as f64;
    let n = n as f64;
    if n < 1.0 || d == 0.0 {
        return 0.0;
    }
    let s = scatter / n;
    let mu = s.trace() / d;
    let fro2 = s.iter().map(|v| v * v).sum::<f64>();
    let delta = (fro2 - d * mu * mu) / d;
    let beta = ((sum_r4 / n - fro2) / (d * n)).min(delta);
    if beta <= 0.0 || delta <= 0.0 {
        return 0.0;
    }
    (beta / delta).clamp(0.0, 1.0)
}

/// How to fit the reference statistics.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
pub struct FitConfig {
    /// Which positions contribute (response positions by default).
    pub positions: PositionFilter,
    /// Token-level or sample-mean observations.
    pub unit: FitUnit,
    /// Regularisation recorded with the statistics and used by
    /// [`MahalanobisModel::from_stats`](crate::MahalanobisModel::from_stats).
    pub shrinkage: Shrinkage,
}

/// Fitted reference statistics of base-target hidden states.
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureStats {
    /// Vector width `d`.
    pub dim: usize,
    /// Number of observations `n` the statistics were fitted on.
    pub count: u64,
    /// Mean μ (`d`).
    pub mean: DVector<f64>,
    /// Unbiased sample covariance `S` (`d × d`, symmetric, unregularised).
    pub covariance: DMatrix<f64>,
    /// The Ledoit–Wolf intensity computed from the fitting data.
    pub ledoit_wolf_alpha: f64,
    /// The configuration used to fit (its shrinkage is applied when scoring).
    pub config: FitConfig,
}

/// Hidden-state rows of `samples` selected by `cfg` (token rows or f64 sample means).
enum Observations<'a> {
    Tokens(Vec<&'a [f32]>),
    Means(Vec<Vec<f64>>),
}

/// Checks a batch of samples: non-empty, each valid (shapes, finiteness), one common width.
pub(crate) fn check_samples(samples: &[FeatureSample], what: &str) -> Result<usize> {
    let first = samples.first().ok_or_else(|| EdaError::EmptyDataset(format!("no {what} samples")))?;
    let d = first.hidden_size;
    for s in samples {
        s.validate()?;
        if s.hidden_size != d {
            return Err(EdaError::mismatch(format!("hidden size of {what} sample `{}`", s.id), d, s.hidden_size));
        }
    }
    Ok(d)
}

/// Mean of the hidden states of `sample` at `positions`, in f64.
pub(crate) fn mean_feature(sample: &FeatureSample, positions: &[usize]) -> Vec<f64> {
    let d = sample.hidden_size;
    let mut m = vec![0.0f64; d];
    for &t in positions {
        for (a, v) in m.iter_mut().zip(sample.hidden_row(t)) {
            *a += *v as f64;
        }
    }
    let k = positions.len().max(1) as f64;
    m.iter_mut().for_each(|a| *a /= k);
    m
}

fn observations<'a>(samples: &'a [FeatureSample], cfg: &FitConfig) -> Observations<'a> {
    match cfg.unit {
        FitUnit::Tokens => Observations::Tokens(
            samples.iter().flat_map(|s| cfg.positions.positions(s).into_iter().map(move |t| s.hidden_row(t))).collect(),
        ),
        FitUnit::SampleMeans => Observations::Means(
            samples
                .iter()
                .filter_map(|s| {
                    let p = cfg.positions.positions(s);
                    (!p.is_empty()).then(|| mean_feature(s, &p))
                })
                .collect(),
        ),
    }
}

impl FeatureStats {
    /// Fits μ, S and the Ledoit–Wolf α on base-target samples (two passes over the data, both
    /// rayon-parallel).
    ///
    /// Errors: [`EdaError::EmptyDataset`] for no samples, [`EdaError::Mismatch`] for ragged or
    /// differently sized samples, [`EdaError::NonFinite`] for NaN/∞ hidden states and
    /// [`EdaError::SingularCovariance`] for fewer than two observations.
    ///
    /// ```
    /// use eda_core::data::FeatureSample;
    /// use eda_select::{FeatureStats, FitConfig, PositionFilter};
    /// let s = FeatureSample::new("a", vec![1, 2, 3], vec![0.0, 1.0, 2.0, 0.5, 1.0, 3.0], 2, vec![1, 1, 1]).unwrap();
    /// let st = FeatureStats::fit(&[s], &FitConfig::default()).unwrap();
    /// assert_eq!((st.dim, st.count), (2, 3));
    /// assert!((st.mean[0] - 1.0).abs() < 1e-12);
    /// ```
    pub fn fit(samples: &[FeatureSample], cfg: &FitConfig) -> Result<Self> {
        cfg.shrinkage.validate()?;
        let d = check_samples(samples, "reference")?;
        let (acc, r4) = match observations(samples, cfg) {
            Observations::Tokens(rows) => {
                let acc = CovAccumulator::from_rows_parallel(d, &rows)?;
                let r4 = sum_fourth_power_norms(acc.mean(), &rows);
                (acc, r4)
            }
            Observations::Means(means) => {
                let rows: Vec<&[f64]> = means.iter().map(|m| m.as_slice()).collect();
                let acc = CovAccumulator::from_rows_parallel(d, &rows)?;
                let r4 = sum_fourth_power_norms(acc.mean(), &rows);
                (acc, r4)
            }
        };
        Self::from_accumulator(&acc, r4, *cfg)
    }

    /// Fits on shard files without holding them all in memory: each shard is read twice (one
    /// pass for the moments, one for the Ledoit–Wolf fourth moment).
    pub fn fit_shards(paths: &[PathBuf], cfg: &FitConfig) -> Result<Self> {
        Self::fit_shards_where(paths, cfg, |_| true)
    }

    /// [`fit_shards`](Self::fit_shards) on the samples for which `keep` is true only, for example
    /// all but those held out for the drift baseline ([`HoldoutSplit`](crate::HoldoutSplit)).
    pub fn fit_shards_where(paths: &[PathBuf], cfg: &FitConfig, keep: impl Fn(&FeatureSample) -> bool) -> Result<Self> {
        cfg.shrinkage.validate()?;
        if paths.is_empty() {
            return Err(EdaError::EmptyDataset("no reference shards given".into()));
        }
        let mut acc: Option<CovAccumulator> = None;
        for p in paths {
            let mut samples = eda_core::data::read_shard(p)?;
            samples.retain(&keep);
            if samples.is_empty() {
                continue;
            }
            let d = check_samples(&samples, "reference")?;
            let part = match observations(&samples, cfg) {
                Observations::Tokens(rows) => CovAccumulator::from_rows_parallel(d, &rows)?,
                Observations::Means(means) => {
                    let rows: Vec<&[f64]> = means.iter().map(|m| m.as_slice()).collect();
                    CovAccumulator::from_rows_parallel(d, &rows)?
                }
            };
            match acc.as_mut() {
                None => acc = Some(part),
                Some(a) => {
                    a.merge(&part).map_err(|_| EdaError::mismatch(format!("hidden size in shard {}", p.display()), a.dim(), part.dim()))?
                }
            }
            tracing::info!(shard = %p.display(), observations = acc.as_ref().map_or(0, |a| a.count()), "accumulated reference statistics");
        }
        let acc = acc.ok_or_else(|| EdaError::EmptyDataset("reference shards hold no samples".into()))?;
        let mut r4 = 0.0;
        for p in paths {
            let mut samples = eda_core::data::read_shard(p)?;
            samples.retain(&keep);
            r4 += match observations(&samples, cfg) {
                Observations::Tokens(rows) => sum_fourth_power_norms(acc.mean(), &rows),
                Observations::Means(means) => {
                    let rows: Vec<&[f64]> = means.iter().map(|m| m.as_slice()).collect();
                    sum_fourth_power_norms(acc.mean(), &rows)
                }
            };
        }
        Self::from_accumulator(&acc, r4, *cfg)
    }

    /// Builds statistics from a finished accumulator and `Σ‖x−x̄‖⁴` (see [`ledoit_wolf_alpha`]).
    pub fn from_accumulator(acc: &CovAccumulator, sum_r4: f64, config: FitConfig) -> Result<Self> {
        let covariance = acc.covariance().ok_or_else(|| {
            EdaError::SingularCovariance(format!("need at least 2 reference vectors to estimate a covariance, got {}", acc.count()))
        })?;
        let stats = FeatureStats {
            dim: acc.dim(),
            count: acc.count(),
            mean: acc.mean().clone(),
            covariance,
            ledoit_wolf_alpha: ledoit_wolf_alpha(acc.scatter(), sum_r4, acc.count()),
            config,
        };
        stats.validate()?;
        Ok(stats)
    }

    /// The α that [`MahalanobisModel::from_stats`](crate::MahalanobisModel::from_stats) applies.
    pub fn alpha(&self) -> f64 {
        match self.config.shrinkage {
            Shrinkage::LedoitWolf => self.ledoit_wolf_alpha,
            Shrinkage::Ridge(a) => a,
        }
    }

    /// Returns a copy that uses another shrinkage when scoring.
    pub fn with_shrinkage(mut self, shrinkage: Shrinkage) -> Self {
        self.config.shrinkage = shrinkage;
        self
    }

    /// The regularised covariance `Σ = (1 − α)·S + α·(tr S/d)·I`.
    pub fn shrunk_covariance(&self) -> DMatrix<f64> {
        let a = self.alpha();
        let mut sigma = &self.covariance * (1.0 - a);
        let target = a * self.covariance.trace() / self.dim as f64;
        for i in 0..self.dim {
            sigma[(i, i)] += target;
        }
        sigma
    }

    /// Checks internal consistency: shapes, count ≥ 2, finiteness, symmetry, α ranges.
    pub fn validate(&self) -> Result<()> {
        let d = self.dim;
        if d == 0 {
            return Err(EdaError::InvalidConfig("statistics have dimension 0".into()));
        }
        if self.mean.len() != d {
            return Err(EdaError::mismatch("length of the statistics mean", d, self.mean.len()));
        }
        if self.covariance.shape() != (d, d) {
            return Err(EdaError::ShapeMismatch {
                name: "covariance".into(),
                expected: vec![d, d],
                actual: vec![self.covariance.nrows(), self.covariance.ncols()],
            });
        }
        if self.count < 2 {
            return Err(EdaError::SingularCovariance(format!("statistics record {} observations; at least 2 are needed", self.count)));
        }
        if self.mean.iter().any(|v| !v.is_finite()) {
            return Err(EdaError::NonFinite("statistics mean".into()));
        }
        if self.covariance.iter().any(|v| !v.is_finite()) {
            return Err(EdaError::NonFinite("statistics covariance".into()));
        }
        let scale = self.covariance.abs().max().max(f64::MIN_POSITIVE);
        let asym = (&self.covariance - self.covariance.transpose()).abs().max();
        if asym > 1e-9 * scale {
            return Err(EdaError::InvalidConfig(format!("statistics covariance is not symmetric (max |S − Sᵀ| = {asym:e})")));
        }
        if !(0.0..=1.0).contains(&self.ledoit_wolf_alpha) {
            return Err(EdaError::InvalidConfig(format!("Ledoit–Wolf α {} is outside [0, 1]", self.ledoit_wolf_alpha)));
        }
        self.config.shrinkage.validate()
    }

    /// Serialises to safetensors bytes: F64 tensors `mean` `[d]` and `covariance` `[d, d]`,
    /// metadata `format`, `dim`, `count`, `shrinkage`, `alpha`, `ledoit_wolf_alpha`,
    /// `positions`, `unit`.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        self.validate()?;
        let mean = encode(self.mean.as_slice());
        // nalgebra is column-major; S is symmetric so row- and column-major agree, but write
        // row-major explicitly.
        let cov = encode(self.covariance.transpose().as_slice());
        let tensors = [
            HostTensor::new("mean", Dtype::F64, vec![self.dim], mean),
            HostTensor::new("covariance", Dtype::F64, vec![self.dim, self.dim], cov),
        ];
        let meta = BTreeMap::from([
            ("format".to_string(), STATS_FORMAT.to_string()),
            ("dim".to_string(), self.dim.to_string()),
            ("count".to_string(), self.count.to_string()),
            ("shrinkage".to_string(), self.config.shrinkage.to_string()),
            ("alpha".to_string(), format!("{:e}", self.alpha())),
            ("ledoit_wolf_alpha".to_string(), format!("{:e}", self.ledoit_wolf_alpha)),
            ("positions".to_string(), self.config.positions.to_string()),
            ("unit".to_string(), self.config.unit.to_string()),
        ]);
        eda_core::safetensors::serialize(&tensors, &meta, Path::new("<stats>"))
    }

    /// Atomically writes the statistics to `path` (safetensors, see [`to_bytes`](Self::to_bytes)).
    pub fn save(&self, path: &Path) -> Result<()> {
        let bytes = self.to_bytes().map_err(|e| match e {
            EdaError::Safetensors { message, .. } => EdaError::Safetensors { path: path.into(), message },
            other => other,
        })?;
        eda_core::io::atomic_write(path, &bytes)
    }

    /// Reads statistics written by [`save`](Self::save), checking the format tag, that `dim` and
    /// `count` in the metadata agree with the tensors, and [`validate`](Self::validate).
    pub fn load(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| EdaError::io(path, e))?;
        Self::from_bytes(&bytes, path)
    }

    /// Parses bytes produced by [`to_bytes`](Self::to_bytes); `path` names the source in errors.
    pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<Self> {
        let corrupt = |m: String| EdaError::Safetensors { path: path.into(), message: m };
        let file = SafetensorsFile::parse(bytes, path)?;
        let meta = file.metadata();
        if meta.get("format").map(String::as_str) != Some(STATS_FORMAT) {
            return Err(corrupt(format!("not an eda statistics file (metadata format must be `{STATS_FORMAT}`)")));
        }
        let field = |k: &str| meta.get(k).ok_or_else(|| corrupt(format!("metadata field `{k}` is missing")));
        let num = |k: &str| -> Result<f64> { field(k)?.parse::<f64>().map_err(|e| corrupt(format!("metadata field `{k}`: {e}"))) };
        let dim: usize = field("dim")?.parse().map_err(|e| corrupt(format!("metadata field `dim`: {e}")))?;
        let count: u64 = field("count")?.parse().map_err(|e| corrupt(format!("metadata field `count`: {e}")))?;
        let shrinkage: Shrinkage = field("shrinkage")?.parse()?;
        let positions: PositionFilter = field("positions")?.parse()?;
        let unit: FitUnit = field("unit")?.parse()?;
        let ledoit_wolf_alpha = num("ledoit_wolf_alpha")?;
        let get = |name: &str, shape: Vec<usize>| -> Result<Vec<f64>> {
            let t = file.tensor(name)?;
            if t.dtype != Dtype::F64 {
                return Err(EdaError::UnsupportedDType { name: name.into(), dtype: format!("{:?} (expected F64)", t.dtype) });
            }
            if t.shape != shape.as_slice() {
                return Err(EdaError::ShapeMismatch { name: name.into(), expected: shape, actual: t.shape.to_vec() });
            }
            t.to_vec()
        };
        let mean = DVector::from_vec(get("mean", vec![dim])?);
        let cov = DMatrix::from_row_slice(dim, dim, &get("covariance", vec![dim, dim])?);
        let stats = FeatureStats { dim, count, mean, covariance: cov, ledoit_wolf_alpha, config: FitConfig { positions, unit, shrinkage } };
        stats.validate().map_err(|e| corrupt(e.to_string()))?;
        Ok(stats)
    }
}
