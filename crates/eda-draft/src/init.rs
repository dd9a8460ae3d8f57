//! Deterministic, backend-independent parameter initialisation (PyTorch defaults).

use burn::nn::Linear;
use burn::tensor::{Device, Tensor, TensorData};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use eda_models::layers::linear_from_hf;

/// Seed streams for the parts of the draft, so that re-initialising one part with a seed
/// reproduces exactly what [`EdaDraft::new_seeded`](crate::EdaDraft::new_seeded) gives it.
pub(crate) const STREAM_FC: u64 = 0x0fc0;
pub(crate) const STREAM_ATTN: u64 = 0xa77e;
pub(crate) const STREAM_SHARED: u64 = 0x5a4e;
pub(crate) const STREAM_PRIVATE: u64 = 0x9817;

/// A random generator for `stream` under `seed`.
pub(crate) fn rng(seed: u64, stream: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ stream)
}

/// `nn.Linear` default init: weight and bias uniform in `±1/sqrt(d_in)` (HF layout `[out, in]`).
pub(crate) fn linear(d_in: usize, d_out: usize, bias: bool, rng: &mut ChaCha8Rng, device: &Device) -> Linear {
    let bound = 1.0 / (d_in as f32).sqrt();
    let w: Vec<f32> = (0..d_in * d_out).map(|_| rng.random_range(-bound..bound)).collect();
    let w = Tensor::<2>::from_data(TensorData::new(w, [d_out, d_in]), device);
    let b = bias.then(|| {
        let b: Vec<f32> = (0..d_out).map(|_| rng.random_range(-bound..bound)).collect();
        Tensor::<1>::from_data(TensorData::new(b, [d_out]), device)
    });
    linear_from_hf(w, b)
}
