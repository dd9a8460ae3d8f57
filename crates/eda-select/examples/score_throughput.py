#!/usr/bin/env python3
"""numpy/scipy counterpart of score_throughput.rs (spawned by it; not needed in CI).

usage: score_throughput.py DIR D N_FIT N_SCORE[,N_SCORE...] ALPHA

Reads DIR/fit.f32 ([N_FIT, D] float32) and DIR/query.f32 ([max N_SCORE, D] float32), fits the
mean and unbiased covariance, shrinks it (1-a)S + a tr(S)/d I, factorises it with Cholesky and
scores the first N_SCORE query rows with one batched scipy.linalg.solve_triangular (LAPACK
trtrs -> BLAS-3 trsm). Writes DIR/numpy_distances.f64 (for the largest N_SCORE) and prints one
JSON line with the timings.
"""
import json
import sys
import time

import numpy as np
from scipy.linalg import cholesky, solve_triangular


def main():
    folder, d, n_fit, sizes, alpha = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], float(sys.argv[5])
    sizes = [int(s) for s in sizes.split(",")]
    fit = np.fromfile(f"{folder}/fit.f32", dtype=np.float32).reshape(n_fit, d)
    query = np.fromfile(f"{folder}/query.f32", dtype=np.float32).reshape(-1, d)

    t0 = time.perf_counter()
    x = fit.astype(np.float64)
    mu = x.mean(axis=0)
    xc = x - mu
    s = xc.T @ xc / (n_fit - 1)
    t_fit = time.perf_counter() - t0

    t0 = time.perf_counter()
    sigma = (1 - alpha) * s + alpha * np.trace(s) / d * np.eye(d)
    lower = cholesky(sigma, lower=True)
    t_chol = time.perf_counter() - t0

    score = {}
    dist = None
    for n in sizes:
        best = float("inf")
        for _ in range(2 if n <= 4096 else 1):
            t0 = time.perf_counter()
            c = (query[:n].astype(np.float64) - mu).T
            y = solve_triangular(lower, c, lower=True, check_finite=False)
            dist = np.sqrt(np.einsum("ij,ij->j", y, y))
            best = min(best, time.perf_counter() - t0)
        score[str(n)] = best
    dist.astype(np.float64).tofile(f"{folder}/numpy_distances.f64")
    import numpy
    cfg = numpy.show_config(mode="dicts") if hasattr(numpy, "show_config") else {}
    blas = cfg.get("Build Dependencies", {}).get("blas", {}).get("name", "?") if isinstance(cfg, dict) else "?"
    print(json.dumps({"fit_s": t_fit, "cholesky_s": t_chol, "score_s": score, "numpy": np.__version__, "blas": blas}))


if __name__ == "__main__":
    main()
