//! # eda-select
//!
//! Mahalanobis sample selection for EDA (docs/method.md §5): fit a Gaussian to the *base* target's
//! last-layer hidden states on general data, then rank regenerated (fine-tuned-target) samples by
//! how far their hidden states lie from it, and keep the most shifted ones.
//!
//! * [`CovAccumulator`] — streaming f64 mean/covariance (Welford, chunked matrix products, exact
//!   parallel merge by Chan et al.).
//! * [`FeatureStats`] — fitted μ, `S`, Ledoit–Wolf α; saved/loaded as safetensors.
//! * [`MahalanobisModel`] — shrinkage `Σ = (1−α)S + α·tr(S)/d·I`, blocked Cholesky, batched
//!   blocked triangular solves: `D(x) = ‖L⁻¹(x−μ)‖₂`.
//! * [`MahalanobisSelector`] (implements [`eda_core::SampleSelector`]), baselines
//!   [`RandomSelector`] and [`KeepAll`], token budgets via [`SelectionExt`].
//! * [`DriftSummary`] — distance distributions of base vs fine-tuned features, the base scored on
//!   samples held out of the fit ([`HoldoutSplit`]).
//!
//! ```
//! use eda_core::data::FeatureSample;
//! use eda_core::SampleSelector;
//! use eda_select::{FeatureStats, FitConfig, MahalanobisSelector, ScoreConfig, SelectionExt};
//!
//! // Base-target features on general data (d = 3, ten tokens).
//! let h: Vec<f32> = (0..30).map(|i| ((i * 7) % 5) as f32 * 0.5 + (i % 3) as f32).collect();
//! let base = vec![FeatureSample::new("g0", vec![0; 10], h.clone(), 3, vec![1; 10]).unwrap()];
//! let stats = FeatureStats::fit(&base, &FitConfig::default()).unwrap();
//! let selector = MahalanobisSelector::from_stats(&stats, ScoreConfig::default()).unwrap();
//!
//! // Candidates: one looks like the base data, one is shifted.
//! let shifted: Vec<f32> = h.iter().map(|v| v + 4.0).collect();
//! let cands = vec![
//!     FeatureSample::new("same", vec![0; 10], h, 3, vec![1; 10]).unwrap(),
//!     FeatureSample::new("shifted", vec![0; 10], shifted, 3, vec![1; 10]).unwrap(),
//! ];
//! assert_eq!(selector.select(&cands, 0.5).unwrap().indices, vec![1]);
//! assert_eq!(selector.select_by_tokens(&cands, 10).unwrap().indices, vec![1]);
//! ```
#![warn(missing_docs)]

pub mod drift;
pub mod holdout;
mod linalg;
pub mod model;
pub mod selector;
pub mod stats;

pub use drift::{DistanceStats, DriftBaseline, DriftSummary};
pub use holdout::{holdout_rank, HoldoutSplit, DEFAULT_DRIFT_HOLDOUT, MIN_BASE_SAMPLES_FOR_HOLDOUT};
pub use model::MahalanobisModel;
pub use selector::{quantile_sorted, rank_top, KeepAll, MahalanobisSelector, Pooling, RandomSelector, ScoreConfig, SelectionExt};
pub use stats::{ledoit_wolf_alpha, sum_fourth_power_norms, CovAccumulator, FeatureStats, FitConfig, FitUnit, PositionFilter, Shrinkage};
