//! The factorised reference Gaussian and batched Mahalanobis distances.

use eda_core::{EdaError, Result};
use nalgebra::{DMatrix, DVector};
use rayon::prelude::*;

use crate::linalg::{cholesky_in_place, solve_lower_in_place};
use crate::stats::FeatureStats;

/// Relative jitter added to the diagonal when the Cholesky factorisation of the shrunk
/// covariance fails: `JITTER_REL · tr(S)/d`, multiplied by 10 on each retry.
pub const JITTER_REL: f64 = 1e-6;

/// Number of jitter retries before giving up with [`EdaError::SingularCovariance`].
pub const JITTER_RETRIES: usize = 4;

/// Default number of tokens solved together in one batched triangular solve.
pub const DEFAULT_BATCH_TOKENS: usize = 512;

/// Mean μ and Cholesky factor `L` (`Σ = L·Lᵀ`) of the regularised reference Gaussian.
///
/// Distances are `D(x) = sqrt((x−μ)ᵀ Σ⁻¹ (x−μ)) = ‖L⁻¹(x−μ)‖₂`, computed by triangular solves
/// (never by forming Σ⁻¹).
///
/// ```
/// use eda_core::data::FeatureSample;
/// use eda_select::{FeatureStats, FitConfig, MahalanobisModel, Shrinkage};
/// let hidden: Vec<f32> = (0..40).map(|i| ((i * 7) % 11) as f32).collect();
/// let s = FeatureSample::new("a", vec![0; 20], hidden, 2, vec![1; 20]).unwrap();
/// let cfg = FitConfig { shrinkage: Shrinkage::Ridge(0.0), ..Default::default() };
/// let model = MahalanobisModel::from_stats(&FeatureStats::fit(&[s], &cfg).unwrap()).unwrap();
/// let mu: Vec<f32> = model.mean().iter().map(|v| *v as f32).collect();
/// assert!(model.distance(&mu).unwrap() < 1e-6);
/// ```
#[derive(Debug, Clone)]
pub struct MahalanobisModel {
    mean: DVector<f64>,
    chol: DMatrix<f64>,
    alpha: f64,
    jitter: f64,
}

impl MahalanobisModel {
    /// Regularises `stats.covariance` with the statistics' shrinkage (see
    /// [`FeatureStats::shrunk_covariance`]) and factorises it.
    ///
    /// If the factorisation fails and α > 0, a jitter of `1e-6·tr(S)/d` (growing ×10, up to
    /// [`JITTER_RETRIES`] times) is added to the diagonal. With α = 0 there is no jitter: the
    /// caller asked for the exact covariance. Failure gives [`EdaError::SingularCovariance`].
    pub fn from_stats(stats: &FeatureStats) -> Result<Self> {
        stats.validate()?;
        let alpha = stats.alpha();
        let sigma = stats.shrunk_covariance();
        let d = stats.dim;
        let scale = stats.covariance.trace() / d as f64;
        let magnitude = stats.mean.amax();
        if scale.is_nan() || scale <= (1e-10 * magnitude).powi(2) {
            return Err(EdaError::SingularCovariance(format!(
                "the reference data have (numerically) zero variance: tr(S)/d = {scale:e} for |μ|∞ = {magnitude:e}"
            )));
        }
        let started = std::time::Instant::now();
        let mut last = None;
        let tries = if alpha > 0.0 { JITTER_RETRIES + 1 } else { 1 };
        for attempt in 0..tries {
            let jitter = if attempt == 0 { 0.0 } else { JITTER_REL * scale * 10f64.powi(attempt as i32 - 1) };
            let mut l = sigma.clone();
            for i in 0..d {
                l[(i, i)] += jitter;
            }
            match cholesky_in_place(&mut l) {
                Ok(()) => {
                    if attempt > 0 {
                        tracing::warn!(jitter, attempt, "covariance needed diagonal jitter to factorise");
                    }
                    tracing::debug!(dim = d, alpha, seconds = started.elapsed().as_secs_f64(), "factorised reference covariance");
                    return Ok(MahalanobisModel { mean: stats.mean.clone(), chol: l, alpha, jitter });
                }
                Err(f) => last = Some(f),
            }
        }
        let f = last.expect("at least one attempt");
        Err(EdaError::SingularCovariance(format!(
            "Cholesky of the {d}×{d} reference covariance (α = {alpha}, {} observations) failed at column {} (pivot {:e}){}",
            stats.count,
            f.column,
            f.pivot,
            if alpha > 0.0 {
                format!(" even with jitter up to {:e}", JITTER_REL * scale * 10f64.powi(JITTER_RETRIES as i32 - 1))
            } else {
                "; use shrinkage (α > 0) for a singular covariance".into()
            }
        )))
    }

    /// Vector width `d`.
    pub fn dim(&self) -> usize {
        self.mean.len()
    }

    /// Mean μ.
    pub fn mean(&self) -> &DVector<f64> {
        &self.mean
    }

    /// Lower Cholesky factor `L` of the regularised covariance.
    pub fn cholesky_factor(&self) -> &DMatrix<f64> {
        &self.chol
    }

    /// Shrinkage α that was applied.
    pub fn alpha(&self) -> f64 {
        self.alpha
    }

    /// Diagonal jitter that was needed (0 when none).
    pub fn jitter(&self) -> f64 {
        self.jitter
    }

    fn check_row(&self, x: &[f32], what: &str) -> Result<()> {
        if x.len() != self.dim() {
            return Err(EdaError::mismatch(format!("width of {what} (statistics dimension)"), self.dim(), x.len()));
        }
        if x.iter().any(|v| !v.is_finite()) {
            return Err(EdaError::NonFinite(what.to_string()));
        }
        Ok(())
    }

    /// Distance of one vector.
    pub fn distance(&self, x: &[f32]) -> Result<f64> {
        Ok(self.distances(&[x])?[0])
    }

    /// Distances of f64 vectors (one batched solve; used for pooled sample features).
    pub fn distances_f64(&self, rows: &[Vec<f64>]) -> Result<Vec<f64>> {
        let d = self.dim();
        for r in rows {
            if r.len() != d {
                return Err(EdaError::mismatch("width of a pooled feature (statistics dimension)", d, r.len()));
            }
            if r.iter().any(|v| !v.is_finite()) {
                return Err(EdaError::NonFinite("pooled feature".into()));
            }
        }
        let out: Vec<Vec<f64>> = rows
            .par_chunks(DEFAULT_BATCH_TOKENS)
            .map(|chunk| {
                let c = DMatrix::from_fn(d, chunk.len(), |i, j| chunk[j][i] - self.mean[i]);
                self.solve_norms(c)
            })
            .collect();
        Ok(out.concat())
    }

    /// Distances of many vectors: rows are grouped in batches of [`DEFAULT_BATCH_TOKENS`], each
    /// batch is one blocked triangular solve, and batches run in parallel with rayon.
    pub fn distances(&self, rows: &[&[f32]]) -> Result<Vec<f64>> {
        self.distances_batched(rows, DEFAULT_BATCH_TOKENS)
    }

    /// [`distances`](Self::distances) with an explicit batch size (`batch ≥ 1`).
    pub fn distances_batched(&self, rows: &[&[f32]], batch: usize) -> Result<Vec<f64>> {
        if batch == 0 {
            return Err(EdaError::InvalidArgument("batch size must be at least 1".into()));
        }
        for r in rows {
            self.check_row(r, "hidden state being scored")?;
        }
        let d = self.dim();
        let out: Vec<Vec<f64>> = rows
            .par_chunks(batch)
            .map(|chunk| {
                let mut c = DMatrix::<f64>::zeros(d, chunk.len());
                for (j, r) in chunk.iter().enumerate() {
                    for ((dst, v), m) in c.column_mut(j).iter_mut().zip(r.iter()).zip(self.mean.iter()) {
                        *dst = *v as f64 - m;
                    }
                }
                self.solve_norms(c)
            })
            .collect();
        Ok(out.concat())
    }

    /// Column norms of `L⁻¹ C` for centred columns `C`.
    fn solve_norms(&self, mut c: DMatrix<f64>) -> Vec<f64> {
        solve_lower_in_place(self.chol.as_view(), &mut c);
        c.column_iter().map(|col| col.norm_squared().sqrt()).collect()
    }
}
