//! A host matrix–vector product for the CPU decoding path of the draft's LM head.
//!
//! On the NdArray backend a `[1, hidden] x [hidden, K]` product goes through a general GEMM that
//! packs the whole `hidden x K` matrix before multiplying; for a single row that is pure memory
//! traffic and ran at ≈ 2.3 GB/s on SmolLM2 shapes (49 ms for the full 49152-token head). Dot
//! products over the rows of the `[K, hidden]` head stream the matrix once at memory bandwidth
//! instead (≈ 10 ms there on 2 cores). Used for a few rows at a time; larger blocks (prefill
//! catch-up) keep the GEMM, which is compute-efficient there.

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

/// `out[r, j] = dot(x[r, :], w[j, :])` for the `n` rows of `x` (`[n, h]`) and the rows of `w`
/// (`[k, h]`, row-major), i.e. `x · wᵀ` as `[n, k]`, using the available cores when the matrix
/// is large.
///
/// # Panics
/// If the slice lengths disagree with `h` and `n` (callers build them from the same shapes).
pub(crate) fn matmul_rows_t(x: &[f32], n: usize, w: &[f32], h: usize) -> Vec<f32> {
    assert!(h > 0 && x.len() == n * h && w.len() % h == 0, "gemv: inconsistent shapes");
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
    let threads = std::thread::available_parallelism().map(|t| t.get()).unwrap_or(1).min(8);
    // Below ≈ 1 M multiply-adds a thread costs more than it saves.
    if threads <= 1 || n * k * h < (1 << 20) {
        return block(0, k);
    }
    let chunk = k.div_ceil(threads);
    let parts: Vec<(usize, Vec<f32>)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| (t * chunk, ((t + 1) * chunk).min(k)))
            .filter(|(a, b)| a < b)
            .map(|(a, b)| (a, s.spawn(move || block(a, b))))
            .collect();
        handles.into_iter().map(|(a, h)| (a, h.join().expect("gemv worker panicked"))).collect()
    });
    let mut out = vec![0f32; n * k];
    for (j0, part) in parts {
        let width = part.len() / n.max(1);
        for r in 0..n {
            out[r * k + j0..r * k + j0 + width].copy_from_slice(&part[r * width..(r + 1) * width]);
        }
    }
    out
}

/// Rows `j0..j1` of `x · wᵀ`, as `[n, j1 - j0]`. Each weight row is read once and reused for
/// all `n` input rows while it sits in L1.
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
/// code is compute-bound for tree levels of ~10 rows).
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
        // Single-threaded and split over threads (n·k·h above the threshold).
        for (n, h, k) in [(3, 37, 2000), (2, 64, 10_001)] {
            let x: Vec<f32> = (0..n * h).map(|i| ((i * 13) % 7) as f32 - 3.0).collect();
            let w: Vec<f32> = (0..k * h).map(|i| ((i * 31) % 11) as f32 * 0.25 - 1.0).collect();
            let y = matmul_rows_t(&x, n, &w, h);
            assert_eq!(y.len(), n * k);
            for r in 0..n {
                for j in 0..k {
                    let e: f32 = (0..h).map(|i| x[r * h + i] * w[j * h + i]).sum();
                    assert!((y[r * k + j] - e).abs() < 1e-3, "({r}, {j}): {} vs {e}", y[r * k + j]);
                }
            }
        }
    }
}
