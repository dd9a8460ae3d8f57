//! A host matrix–vector kernel for small forward passes on the CPU (one decoded token, a short
//! verification chain, a tree level).
//!
//! Why: on the NdArray backend a `[n, in] x [in, out]` product goes through a general GEMM that
//! packs the whole weight matrix before multiplying. For a few rows that packing is pure memory
//! traffic (≈ 2–4 GB/s on SmolLM2 shapes), whereas dot products over the rows of the HF-layout
//! `[out, in]` matrix stream it once at memory bandwidth and reuse each weight row for all `n`
//! input rows while it sits in L1. Up to [`HOST_ROWS`] rows the streaming kernel wins; above
//! that the GEMM is compute-efficient and the callers switch back to burn.
//!
//! Used by the target's CPU decoding path ([`Target`](crate::Target)) and the draft's
//! (`eda_draft::fast`).
//!
//! ```
//! use eda_models::gemv::matmul_rows_t;
//! // x: 1 row of width 2; w: 3 rows ([out = 3, in = 2]).
//! let y = matmul_rows_t(&[1.0, 2.0], 1, &[1.0, 0.0, 0.0, 1.0, 1.0, 1.0], 2).unwrap();
//! assert_eq!(y, vec![1.0, 2.0, 3.0]);
//! ```

use burn::tensor::Device;
use rayon::prelude::*;

use eda_core::{EdaError, Result};

/// On the CPU backend, blocks of at most this many rows use [`matmul_rows_t`]; larger blocks use
/// burn's GEMM, which wins once the rows amortise packing a weight (measured crossover on
/// SmolLM2 shapes: ≈ 10–16 rows).
pub const HOST_ROWS: usize = 16;

/// Whether `device` is the NdArray CPU device, whose tensors already live in host memory (where
/// the kernels of this module apply).
pub fn is_host_device(device: &Device) -> bool {
    eda_core::backend::is_cpu(device)
}

/// Below this many multiply-adds one core does the product: handing work to the rayon pool
/// costs a few microseconds, about what streaming 256 KB of weights costs.
const PAR_MIN_WORK: usize = 1 << 16;

/// `dot(a, b)` with 16 independent accumulators, so the compiler vectorises it without
/// `-ffast-math` reassociation.
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    let ca = a.chunks_exact(16);
    let cb = b.chunks_exact(16);
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..16 {
            acc[i] += x[i] * y[i];
        }
    }
    let mut s: f32 = acc.iter().sum();
    for (x, y) in ra.iter().zip(rb) {
        s += x * y;
    }
    s
}

/// `x · wᵀ`: `out[r, j] = dot(x[r, :], w[j, :])` for the `n` rows of `x` (`[n, h]`, row-major)
/// and the rows of `w` (`[k, h]`, row-major, i.e. a HF `[out, in]` weight), returned as a
/// row-major `[n, k]` vector. Large matrices are split by rows of `w` over the rayon pool.
///
/// Each weight row is read once and reused for all `n` input rows, so the cost is one pass over
/// `w` at memory bandwidth for `n` up to about [`HOST_ROWS`].
///
/// Errors: [`EdaError::InvalidArgument`] when `h` is zero, `x.len() != n * h` or `w.len()` is not
/// a multiple of `h`.
pub fn matmul_rows_t(x: &[f32], n: usize, w: &[f32], h: usize) -> Result<Vec<f32>> {
    if h == 0 || x.len() != n * h || w.len() % h != 0 {
        return Err(EdaError::InvalidArgument(format!(
            "gemv: inconsistent shapes (x has {} values for {n} rows of width {h}; w has {} values)",
            x.len(),
            w.len()
        )));
    }
    let k = w.len() / h;
    let avx = wide_simd();
    let block = |j0: usize, j1: usize| -> Vec<f32> {
        #[cfg(target_arch = "x86_64")]
        if avx {
            // SAFETY: `wide_simd` checked at run time that the CPU supports AVX2 and FMA.
            return unsafe { block_avx2(x, n, w, h, j0, j1) };
        }
        let _ = avx;
        block_generic(x, n, w, h, j0, j1)
    };
    let threads = rayon::current_num_threads().max(1);
    if threads == 1 || n == 0 || n * k * h < PAR_MIN_WORK {
        return Ok(block(0, k));
    }
    let chunk = k.div_ceil(threads);
    let parts: Vec<(usize, Vec<f32>)> = (0..threads)
        .into_par_iter()
        .map(|t| (t * chunk, ((t + 1) * chunk).min(k)))
        .filter(|(a, b)| a < b)
        .map(|(a, b)| (a, block(a, b)))
        .collect();
    if n == 1 {
        // The column blocks of a single row are already in order.
        return Ok(parts.into_iter().flat_map(|(_, p)| p).collect());
    }
    let mut out = vec![0f32; n * k];
    for (j0, part) in parts {
        let width = part.len() / n;
        for r in 0..n {
            out[r * k + j0..r * k + j0 + width].copy_from_slice(&part[r * width..(r + 1) * width]);
        }
    }
    Ok(out)
}

/// Rows `j0..j1` of `w` against all rows of `x`, as `[n, j1 - j0]`.
#[inline(always)]
fn block_generic(x: &[f32], n: usize, w: &[f32], h: usize, j0: usize, j1: usize) -> Vec<f32> {
    let width = j1 - j0;
    let mut out = vec![0f32; n * width];
    for j in j0..j1 {
        let wr = &w[j * h..(j + 1) * h];
        for r in 0..n {
            out[r * width + (j - j0)] = dot(&x[r * h..(r + 1) * h], wr);
        }
    }
    out
}

/// [`block_generic`] compiled for AVX2 + FMA (the workspace targets baseline x86-64, whose SSE2
/// code is compute-bound for blocks of ~10 rows).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn block_avx2(x: &[f32], n: usize, w: &[f32], h: usize, j0: usize, j1: usize) -> Vec<f32> {
    block_generic(x, n, w, h, j0, j1)
}

/// Whether the AVX2 + FMA kernel can run on this CPU.
fn wide_simd() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_naive_product() {
        // Single-threaded and split over the pool (n·k·h above the threshold), one and several rows.
        for (n, h, k) in [(3, 37, 20), (1, 64, 10_001), (2, 64, 10_001), (16, 48, 999)] {
            let x: Vec<f32> = (0..n * h).map(|i| ((i * 13) % 7) as f32 - 3.0).collect();
            let w: Vec<f32> = (0..k * h).map(|i| ((i * 31) % 11) as f32 * 0.25 - 1.0).collect();
            let y = matmul_rows_t(&x, n, &w, h).unwrap();
            assert_eq!(y.len(), n * k);
            for r in 0..n {
                for j in 0..k {
                    let e: f32 = (0..h).map(|i| x[r * h + i] * w[j * h + i]).sum();
                    assert!((y[r * k + j] - e).abs() < 1e-3, "({r}, {j}): {} vs {e}", y[r * k + j]);
                }
            }
        }
    }

    #[test]
    fn rejects_inconsistent_shapes() {
        assert!(matmul_rows_t(&[1.0; 3], 1, &[1.0; 4], 2).is_err());
        assert!(matmul_rows_t(&[1.0; 2], 1, &[1.0; 3], 2).is_err());
        assert!(matmul_rows_t(&[], 0, &[1.0; 4], 0).is_err());
        assert_eq!(matmul_rows_t(&[], 0, &[1.0; 4], 2).unwrap(), Vec::<f32>::new());
    }
}
