//! Batching with the EAGLE shift (docs/method.md §3.1), noise, padding and deterministic shuffling.

use burn::tensor::{Device, Int, Tensor, TensorData};
use eda_core::data::FeatureSample;
use eda_core::sampling::{seeded_rng, EdaRng};
use eda_core::{EdaError, Result};
use rand::seq::SliceRandom;
use rand::Rng;

use crate::config::NoiseConfig;

/// One right-padded micro-batch on the host, already shifted.
///
/// For a sample of (truncated) length `L` and position `t < L`:
/// `tokens[t] = x_{t+1}` (0 at `t = L-1`), `features[t] = h_t (+ noise)`,
/// `target[t] = h_{t+1}` (zero at `t = L-1`), `mask[t] = m_t` (0 at `t = L-1`).
/// Positions `t >= L` are padding: token 0, zero features, mask 0.
#[derive(Debug, Clone, PartialEq)]
pub struct HostBatch {
    /// Batch size `B`.
    pub batch: usize,
    /// Padded length `T`.
    pub len: usize,
    /// Feature width `H`.
    pub hidden: usize,
    /// Draft token input, `[B, T]` row-major.
    pub tokens: Vec<i64>,
    /// Draft feature input, `[B, T, H]`.
    pub features: Vec<f32>,
    /// Regression target, `[B, T, H]`.
    pub target: Vec<f32>,
    /// Loss mask, `[B, T]` (0.0 or 1.0).
    pub mask: Vec<f32>,
    /// Real (unpadded, truncated) tokens in the batch.
    pub real_tokens: usize,
}

impl HostBatch {
    /// Number of positions with mask 1.
    pub fn masked_tokens(&self) -> usize {
        self.mask.iter().filter(|&&m| m != 0.0).count()
    }
}

/// Builds a shifted, padded batch from `samples` (truncated to `max_len`), adding input noise
/// drawn from `rng`.
///
/// ```
/// use eda_core::data::FeatureSample;
/// use eda_train::{batch::build_batch, NoiseConfig};
/// let s = FeatureSample::new("a", vec![5, 6, 7], vec![1.0, 2.0, 3.0], 1, vec![1, 1, 1]).unwrap();
/// let b = build_batch(&[&s], 16, NoiseConfig::None, &mut eda_core::sampling::seeded_rng(0)).unwrap();
/// assert_eq!(b.tokens, vec![6, 7, 0]);
/// assert_eq!(b.features, vec![1.0, 2.0, 3.0]);
/// assert_eq!(b.target, vec![2.0, 3.0, 0.0]);
/// assert_eq!(b.mask, vec![1.0, 1.0, 0.0]);
/// ```
pub fn build_batch(samples: &[&FeatureSample], max_len: usize, noise: NoiseConfig, rng: &mut EdaRng) -> Result<HostBatch> {
    let first = samples.first().ok_or_else(|| EdaError::EmptyDataset("empty micro-batch".into()))?;
    let h = first.hidden_size;
    let lens: Vec<usize> = samples.iter().map(|s| s.len().min(max_len)).collect();
    let t_max = lens.iter().copied().max().unwrap_or(0);
    if t_max == 0 {
        return Err(EdaError::EmptyDataset("micro-batch has no tokens".into()));
    }
    let b = samples.len();
    let mut tokens = vec![0i64; b * t_max];
    let mut features = vec![0f32; b * t_max * h];
    let mut target = vec![0f32; b * t_max * h];
    let mut mask = vec![0f32; b * t_max];
    for (i, (s, &l)) in samples.iter().zip(&lens).enumerate() {
        if s.hidden_size != h {
            return Err(EdaError::mismatch(format!("hidden size of sample `{}`", s.id), h, s.hidden_size));
        }
        let amp = match noise {
            NoiseConfig::None => 0.0,
            NoiseConfig::Uniform { amplitude } => amplitude,
            // (U(0,1) - 0.5) * std * 512 / L  ==  U(-a, a) with a = 0.5 * std * 512 / L.
            NoiseConfig::ReferenceScaled { std } => 0.5 * std * 512.0 / l as f32,
        };
        for t in 0..l {
            let row = (i * t_max + t) * h;
            let src = s.hidden_row(t);
            if amp > 0.0 {
                for (k, v) in src.iter().enumerate() {
                    features[row + k] = v + rng.random_range(-amp..amp);
                }
            } else {
                features[row..row + h].copy_from_slice(src);
            }
            if t + 1 < l {
                tokens[i * t_max + t] = s.input_ids[t + 1] as i64;
                target[row..row + h].copy_from_slice(s.hidden_row(t + 1));
                mask[i * t_max + t] = if s.loss_mask[t] != 0 { 1.0 } else { 0.0 };
            }
        }
    }
    Ok(HostBatch { batch: b, len: t_max, hidden: h, tokens, features, target, mask, real_tokens: lens.iter().sum() })
}

/// A micro-batch on a device.
#[derive(Debug, Clone)]
pub struct DeviceBatch {
    /// `[B, T]` draft token input.
    pub tokens: Tensor<2, Int>,
    /// `[B, T, H]` draft feature input.
    pub features: Tensor<3>,
    /// `[B, T, H]` regression target.
    pub target: Tensor<3>,
    /// `[B, T]` loss mask.
    pub mask: Tensor<2>,
    /// Positions with mask 1.
    pub masked_tokens: usize,
    /// Real tokens.
    pub real_tokens: usize,
}

impl HostBatch {
    /// Uploads the batch to `device`.
    pub fn to_device(&self, device: &Device) -> DeviceBatch {
        let (b, t, h) = (self.batch, self.len, self.hidden);
        DeviceBatch {
            tokens: Tensor::<2, Int>::from_data(TensorData::new(self.tokens.clone(), [b, t]), device),
            features: Tensor::<3>::from_data(TensorData::new(self.features.clone(), [b, t, h]), device),
            target: Tensor::<3>::from_data(TensorData::new(self.target.clone(), [b, t, h]), device),
            mask: Tensor::<2>::from_data(TensorData::new(self.mask.clone(), [b, t]), device),
            masked_tokens: self.masked_tokens(),
            real_tokens: self.real_tokens,
        }
    }
}

/// Mixes a seed, a stream tag and an index into an independent seed (SplitMix64 finaliser).
pub fn derive_seed(seed: u64, stream: u64, index: u64) -> u64 {
    let mut z = seed ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ index.wrapping_mul(0xD1B5_4A32_D192_ED03);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

const STREAM_SHUFFLE: u64 = 1;
const STREAM_NOISE: u64 = 2;

/// Deterministic data order: micro-batch `k` of the whole run is a pure function of
/// `(seed, k)`, so a resumed run sees exactly the batches the uninterrupted run would have.
///
/// Epoch `e` visits the samples in a permutation drawn from `derive_seed(seed, shuffle, e)`;
/// the last micro-batch of an epoch may be smaller.
#[derive(Debug, Clone)]
pub struct BatchPlan {
    seed: u64,
    num_samples: usize,
    batch_size: usize,
    shuffle: bool,
    cached: Option<(usize, Vec<usize>)>,
}

impl BatchPlan {
    /// A plan over `num_samples` samples.
    pub fn new(num_samples: usize, batch_size: usize, seed: u64, shuffle: bool) -> Self {
        BatchPlan { seed, num_samples, batch_size: batch_size.max(1), shuffle, cached: None }
    }

    /// Micro-batches per epoch.
    pub fn per_epoch(&self) -> usize {
        self.num_samples.div_ceil(self.batch_size).max(1)
    }

    /// Sample order of epoch `epoch`.
    pub fn permutation(&self, epoch: usize) -> Vec<usize> {
        let mut p: Vec<usize> = (0..self.num_samples).collect();
        if self.shuffle {
            p.shuffle(&mut seeded_rng(derive_seed(self.seed, STREAM_SHUFFLE, epoch as u64)));
        }
        p
    }

    /// Sample indices of global micro-batch `k`.
    ///
    /// ```
    /// let mut plan = eda_train::batch::BatchPlan::new(5, 2, 7, true);
    /// let mut seen: Vec<usize> = (0..3).flat_map(|k| plan.micro_batch(k)).collect();
    /// seen.sort();
    /// assert_eq!(seen, vec![0, 1, 2, 3, 4]); // one epoch visits every sample once
    /// ```
    pub fn micro_batch(&mut self, k: usize) -> Vec<usize> {
        let per = self.per_epoch();
        let (epoch, pos) = (k / per, k % per);
        if self.cached.as_ref().map(|c| c.0) != Some(epoch) {
            self.cached = Some((epoch, self.permutation(epoch)));
        }
        let perm = &self.cached.as_ref().map(|c| &c.1).expect("cached above");
        let a = pos * self.batch_size;
        let b = (a + self.batch_size).min(self.num_samples);
        perm[a..b].to_vec()
    }

    /// The noise generator of global micro-batch `k`.
    pub fn noise_rng(&self, k: usize) -> EdaRng {
        seeded_rng(derive_seed(self.seed, STREAM_NOISE, k as u64))
    }
}
