//! Chi-square goodness-of-fit helpers for the sampling tests.
//!
//! ```
//! use eda_testkit::pearson;
//! // 100 fair coin flips with 50 / 50 outcomes fit perfectly; 90 / 10 does not.
//! assert_eq!(pearson([(50, 0.5), (50, 0.5)]).statistic, 0.0);
//! let skewed = pearson([(90, 0.5), (10, 0.5)]);
//! assert_eq!(skewed.df, 1);
//! assert!(skewed.rejects_at_001());
//! ```

use std::collections::HashMap;
use std::hash::Hash;
use std::ops::{Add, AddAssign};

use eda_core::backend::to_vec_f32;
use eda_core::sampling::probabilities;
use eda_core::{GenerationConfig, Result, TargetModel, TokenId};

/// Chi-square critical value at significance 0.001 for `df` degrees of freedom
/// (Wilson–Hilferty approximation; slightly conservative for very small `df`, e.g. 14.1 instead
/// of 13.8 at `df = 2`). `df = 0` is treated as 1.
///
/// ```
/// let c = eda_testkit::chi2_critical_001(100);
/// assert!((c - 149.45).abs() < 0.1);
/// ```
pub fn chi2_critical_001(df: usize) -> f64 {
    let k = df.max(1) as f64;
    let z = 3.090_232;
    k * (1.0 - 2.0 / (9.0 * k) + z * (2.0 / (9.0 * k)).sqrt()).powi(3)
}

/// A Pearson chi-square statistic with its degrees of freedom. Statistics of independent groups
/// (for example the transitions out of each context of a Markov chain, each group conditioned
/// on its own count) add up, statistics and degrees of freedom alike.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ChiSquare {
    /// Σ (observed − expected)² / expected over the (pooled) cells; infinite when a cell of
    /// probability 0 was observed.
    pub statistic: f64,
    /// Degrees of freedom: cells after pooling, minus one, per group.
    pub df: usize,
}

impl ChiSquare {
    /// The critical value at significance 0.001 for these degrees of freedom.
    pub fn critical_001(&self) -> f64 {
        chi2_critical_001(self.df)
    }

    /// Whether the fit is rejected at significance 0.001.
    pub fn rejects_at_001(&self) -> bool {
        self.statistic >= self.critical_001()
    }
}

impl Add for ChiSquare {
    type Output = ChiSquare;

    fn add(self, other: ChiSquare) -> ChiSquare {
        ChiSquare { statistic: self.statistic + other.statistic, df: self.df + other.df }
    }
}

impl AddAssign for ChiSquare {
    fn add_assign(&mut self, other: ChiSquare) {
        *self = *self + other;
    }
}

/// Pearson chi-square of cells `(observed count, probability)` (the sample size is the sum of
/// the counts), pooling the cells whose expected count is below 5 into one cell. No observation
/// gives a zero statistic with no degrees of freedom; a count in a cell of probability 0 gives an
/// infinite statistic.
pub fn pearson<I: IntoIterator<Item = (usize, f64)>>(cells: I) -> ChiSquare {
    let (observed, probs): (Vec<usize>, Vec<f64>) = cells.into_iter().unzip();
    let n: usize = observed.iter().sum();
    if n == 0 {
        return ChiSquare::default();
    }
    if observed.iter().zip(&probs).any(|(&o, &p)| o > 0 && p <= 0.0) {
        return ChiSquare { statistic: f64::INFINITY, df: 1 };
    }
    let (mut stat, mut cells, mut pool_o, mut pool_e) = (0.0, 0usize, 0.0, 0.0);
    for (&o, &p) in observed.iter().zip(&probs) {
        let (e, o) = (p * n as f64, o as f64);
        if e >= 5.0 {
            stat += (o - e).powi(2) / e;
            cells += 1;
        } else {
            pool_o += o;
            pool_e += e;
        }
    }
    if pool_e > 0.0 {
        stat += (pool_o - pool_e).powi(2) / pool_e;
        cells += 1;
    }
    ChiSquare { statistic: stat, df: cells.saturating_sub(1) }
}

/// [`pearson`] over keyed cells: every key of `expected` is a cell (absent from `observed`: a
/// count of 0); an observed key missing from `expected` has probability 0.
///
/// ```
/// use std::collections::HashMap;
/// let expected = HashMap::from([("a", 0.5), ("b", 0.5)]);
/// let observed = HashMap::from([("a", 60usize), ("b", 40)]);
/// let fit = eda_testkit::pearson_map(&observed, &expected);
/// assert!((fit.statistic - 4.0).abs() < 1e-12 && fit.df == 1);
/// ```
pub fn pearson_map<K: Eq + Hash>(observed: &HashMap<K, usize>, expected: &HashMap<K, f64>) -> ChiSquare {
    if observed.iter().any(|(k, &o)| o > 0 && expected.get(k).copied().unwrap_or(0.0) <= 0.0) {
        return ChiSquare { statistic: f64::INFINITY, df: 1 };
    }
    pearson(expected.iter().map(|(k, &p)| (observed.get(k).copied().unwrap_or(0), p)))
}

/// The exact joint distribution of the first `len` tokens sampled from `target` after `prompt`
/// under `cfg` (temperature and top-p applied), by enumerating every prefix of positive
/// probability. Use small vocabularies and lengths. The target's cache is left empty.
pub fn exact_joint(
    target: &mut dyn TargetModel,
    prompt: &[TokenId],
    cfg: &GenerationConfig,
    len: usize,
) -> Result<HashMap<Vec<TokenId>, f64>> {
    let mut dist: HashMap<Vec<TokenId>, f64> = HashMap::from([(vec![], 1.0)]);
    for _ in 0..len {
        let mut next = HashMap::new();
        for (prefix, pr) in dist {
            let ctx: Vec<TokenId> = prompt.iter().chain(&prefix).copied().collect();
            target.reset_cache();
            let out = target.forward(&ctx)?;
            let logits = to_vec_f32(out.logits.narrow(0, ctx.len() - 1, 1))?;
            for (t, &p) in probabilities(&logits, cfg)?.iter().enumerate() {
                if p > 0.0 {
                    let mut k = prefix.clone();
                    k.push(t as TokenId);
                    next.insert(k, pr * p as f64);
                }
            }
        }
        dist = next;
    }
    target.reset_cache();
    Ok(dist)
}
