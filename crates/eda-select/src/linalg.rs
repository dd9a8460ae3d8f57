//! Dense f64 kernels built on nalgebra's `gemm` (matrixmultiply): a blocked, rayon-parallel
//! Cholesky factorisation and a blocked lower-triangular solve with many right-hand sides.
//!
//! nalgebra's own `Cholesky` and `solve_lower_triangular_mut` work one column at a time (axpy
//! loops), which is memory-bound at the hidden sizes of LLMs (d = 3584: `L` is 100 MB). The
//! blocked versions here push almost all flops through matrix–matrix products.

use nalgebra::{DMatrix, DMatrixView, DMatrixViewMut};
use rayon::prelude::*;

/// Block size of the blocked kernels.
pub(crate) const BLOCK: usize = 128;

/// Relative pivot tolerance: a pivot below `d · PIVOT_RTOL · max(diag)` counts as singular.
pub(crate) const PIVOT_RTOL: f64 = 1e-13;

/// Why a Cholesky factorisation stopped.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct PivotFailure {
    /// Column of the failing pivot.
    pub column: usize,
    /// The pivot value (before the square root).
    pub pivot: f64,
}

/// Unblocked in-place Cholesky of a small dense block (lower triangle read and written).
fn cholesky_unblocked(mut a: DMatrixViewMut<'_, f64>, offset: usize, tol: f64) -> Result<(), PivotFailure> {
    let n = a.nrows();
    for j in 0..n {
        let mut d = a[(j, j)];
        for k in 0..j {
            d -= a[(j, k)] * a[(j, k)];
        }
        if !(d.is_finite() && d > tol) {
            return Err(PivotFailure { column: offset + j, pivot: d });
        }
        let djj = d.sqrt();
        a[(j, j)] = djj;
        for i in j + 1..n {
            let mut s = a[(i, j)];
            for k in 0..j {
                s -= a[(i, k)] * a[(j, k)];
            }
            a[(i, j)] = s / djj;
        }
    }
    Ok(())
}

/// In-place blocked right-looking Cholesky `A = L·Lᵀ` of a symmetric matrix (only the lower
/// triangle is read). On success the lower triangle holds `L` and the strict upper triangle is
/// zeroed. Pivots at or below `d · PIVOT_RTOL · max(diag A)` are reported as failures, so an
/// exactly singular matrix is rejected even when rounding leaves a tiny positive pivot.
pub(crate) fn cholesky_in_place(a: &mut DMatrix<f64>) -> Result<(), PivotFailure> {
    let d = a.nrows();
    assert_eq!(d, a.ncols());
    let max_diag = (0..d).map(|i| a[(i, i)]).fold(0.0f64, f64::max);
    let tol = (d as f64) * PIVOT_RTOL * max_diag.max(f64::MIN_POSITIVE);
    let mut k = 0;
    while k < d {
        let kb = BLOCK.min(d - k);
        cholesky_unblocked(a.view_mut((k, k), (kb, kb)), k, tol)?;
        let rest = d - k - kb;
        if rest > 0 {
            // Panel: L21 = A21 · L11⁻ᵀ, i.e. L11 · L21ᵀ = A21ᵀ.
            let l11 = a.view((k, k), (kb, kb)).lower_triangle();
            let mut panel_t: DMatrix<f64> = a.view((k + kb, k), (rest, kb)).transpose();
            // L11 has a strictly positive diagonal (checked above), so this cannot fail.
            l11.solve_lower_triangular_mut(&mut panel_t);
            let panel: DMatrix<f64> = panel_t.transpose();
            a.view_mut((k + kb, k), (rest, kb)).copy_from(&panel);
            // Trailing update of the lower triangle, block column by block column, in parallel:
            // A22[j.., j..j+w] -= L21[j.., :] · L21[j..j+w, :]ᵀ.
            let start = (k + kb) * d;
            let data = &mut a.as_mut_slice()[start..];
            data.par_chunks_mut(d * BLOCK).enumerate().for_each(|(bi, cols)| {
                let w = cols.len() / d;
                let j = bi * BLOCK; // relative to k + kb
                let abs = k + kb + j;
                let mut block = DMatrixViewMut::from_slice(cols, d, w);
                let mut target = block.view_mut((abs, 0), (d - abs, w));
                let lhs = panel.view((j, 0), (rest - j, kb));
                let rhs = panel_t.view((0, j), (kb, w));
                target.gemm(-1.0, &lhs, &rhs, 1.0);
            });
        }
        k += kb;
    }
    a.fill_upper_triangle(0.0, 1);
    Ok(())
}

/// Solves `L · Y = B` in place for a lower-triangular `L` (`d × d`) and `B` (`d × m`, one
/// right-hand side per column), with the off-diagonal work done as matrix products.
pub(crate) fn solve_lower_in_place(l: DMatrixView<'_, f64>, b: &mut DMatrix<f64>) {
    let d = l.nrows();
    let m = b.ncols();
    let mut tmp = DMatrix::<f64>::zeros(BLOCK.min(d), m);
    let mut k = 0;
    while k < d {
        let kb = BLOCK.min(d - k);
        if k > 0 {
            let mut t = tmp.view_mut((0, 0), (kb, m));
            t.gemm(1.0, &l.view((k, 0), (kb, k)), &b.view((0, 0), (k, m)), 0.0);
            let mut bk = b.view_mut((k, 0), (kb, m));
            bk -= &t;
        }
        let lkk = l.view((k, k), (kb, kb));
        lkk.solve_lower_triangular_mut(&mut b.view_mut((k, 0), (kb, m)));
        k += kb;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spd(d: usize) -> DMatrix<f64> {
        let x = DMatrix::<f64>::from_fn(d, d + 5, |i, j| ((i * 31 + j * 17) % 23) as f64 / 7.0 - 1.3 + if i == j { 2.0 } else { 0.0 });
        &x * x.transpose() + DMatrix::identity(d, d) * 0.5
    }

    #[test]
    fn blocked_cholesky_matches_nalgebra() {
        for d in [1, 7, 128, 300] {
            let a = spd(d);
            let mut l = a.clone();
            cholesky_in_place(&mut l).unwrap();
            let reference = nalgebra::Cholesky::new(a.clone()).unwrap().l();
            let err = (&l - &reference).abs().max();
            assert!(err < 1e-9 * reference.abs().max(), "d={d} err={err}");
        }
    }

    #[test]
    fn blocked_solve_matches_unblocked() {
        let d = 300;
        let mut l = spd(d);
        cholesky_in_place(&mut l).unwrap();
        let b = DMatrix::<f64>::from_fn(d, 9, |i, j| ((i * 13 + j * 5) % 11) as f64 - 5.0);
        let mut y = b.clone();
        solve_lower_in_place(l.as_view(), &mut y);
        let back = &l * &y;
        assert!((back - b).abs().max() < 1e-8);
    }

    #[test]
    fn singular_matrix_is_rejected() {
        let x = DMatrix::<f64>::from_fn(6, 3, |i, j| (i + 2 * j) as f64 * 0.3 + (i * j) as f64);
        let mut a = &x * x.transpose();
        assert!(cholesky_in_place(&mut a).is_err());
    }
}
