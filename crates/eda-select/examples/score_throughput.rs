//! Scoring throughput of [`MahalanobisModel`] at an LLM hidden size, against numpy/scipy.
//!
//! ```text
//! EDA_NUMPY_PYTHON=/tmp/refenv/bin/python \
//!   cargo run --release -p eda-select --example score_throughput
//! ```
//!
//! Environment: `EDA_BENCH_DIM` (default 3584), `EDA_BENCH_FIT` (4096 fitting vectors),
//! `EDA_BENCH_SCORE` (comma-separated token counts, default `4096,16384`), `EDA_NUMPY_PYTHON`
//! (a python with numpy + scipy; without it the numpy column is skipped with a message).
//!
//! Both sides fit μ and S on the same f32 vectors, shrink with a fixed ridge α = 0.1, factorise
//! with Cholesky, and score with batched triangular solves; the table reports seconds, tokens/s
//! and the Rust/numpy throughput ratio, plus the largest relative difference between the two
//! sets of distances.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use eda_select::{CovAccumulator, FeatureStats, FitConfig, MahalanobisModel, Shrinkage};
use rand::Rng;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Correlated, non-zero-mean random vectors (a few heavy channels, like LLM hidden states).
fn random_rows(seed: u64, n: usize, d: usize) -> Vec<f32> {
    let mut rng = eda_core::sampling::seeded_rng(seed);
    let mut out = Vec::with_capacity(n * d);
    for _ in 0..n {
        let common: f32 = rng.random::<f32>() - 0.5;
        for j in 0..d {
            let heavy = if j % 512 == 7 { 20.0 } else { 1.0 };
            out.push((rng.random::<f32>() - 0.5) * heavy + common * ((j % 5) as f32) + (j % 11) as f32 * 0.1);
        }
    }
    out
}

fn write_f32(path: &Path, v: &[f32]) -> std::io::Result<()> {
    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    std::fs::write(path, bytes)
}

fn json_f64(v: &serde_json::Value, path: &[&str]) -> Option<f64> {
    let mut cur = v;
    for p in path {
        cur = cur.get(*p)?;
    }
    cur.as_f64()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let d = env_usize("EDA_BENCH_DIM", 3584);
    let n_fit = env_usize("EDA_BENCH_FIT", 4096);
    let sizes: Vec<usize> =
        std::env::var("EDA_BENCH_SCORE").unwrap_or_else(|_| "4096,16384".into()).split(',').filter_map(|s| s.trim().parse().ok()).collect();
    let n_max = *sizes.iter().max().ok_or("EDA_BENCH_SCORE lists no sizes")?;
    let alpha = 0.1;
    println!("d = {d}, fit vectors = {n_fit}, score sizes = {sizes:?}, rayon threads = {}", rayon::current_num_threads());

    let fit = random_rows(1, n_fit, d);
    let query = random_rows(2, n_max, d);
    let fit_rows: Vec<&[f32]> = fit.chunks_exact(d).collect();
    let query_rows: Vec<&[f32]> = query.chunks_exact(d).collect();

    // Rust: fit (moments + Ledoit–Wolf fourth moment), factorise, score.
    let t = Instant::now();
    let acc = CovAccumulator::from_rows_parallel(d, &fit_rows)?;
    let r4 = eda_select::sum_fourth_power_norms(acc.mean(), &fit_rows);
    let stats = FeatureStats::from_accumulator(&acc, r4, FitConfig { shrinkage: Shrinkage::Ridge(alpha), ..Default::default() })?;
    let rust_fit = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let model = MahalanobisModel::from_stats(&stats)?;
    let rust_chol = t.elapsed().as_secs_f64();
    let mut rust_score = Vec::new();
    let mut rust_dist = Vec::new();
    for &n in &sizes {
        let reps = if n <= 4096 { 2 } else { 1 };
        let mut best = f64::INFINITY;
        for _ in 0..reps {
            let t = Instant::now();
            rust_dist = model.distances(&query_rows[..n])?;
            best = best.min(t.elapsed().as_secs_f64());
        }
        rust_score.push(best);
    }

    // numpy, same data, same machine, same run.
    let mut numpy: Option<serde_json::Value> = None;
    let mut max_rel = None;
    match std::env::var("EDA_NUMPY_PYTHON") {
        Err(_) => println!("numpy column skipped: set EDA_NUMPY_PYTHON to a python with numpy and scipy"),
        Ok(py) => {
            let dir = tempfile::tempdir()?;
            write_f32(&dir.path().join("fit.f32"), &fit)?;
            write_f32(&dir.path().join("query.f32"), &query)?;
            let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/score_throughput.py");
            let sizes_arg = sizes.iter().map(|s| s.to_string()).collect::<Vec<_>>().join(",");
            let out = Command::new(&py)
                .arg(&script)
                .arg(dir.path())
                .args([d.to_string(), n_fit.to_string(), sizes_arg, alpha.to_string()])
                .output();
            match out {
                Err(e) => println!("numpy column skipped: could not run `{py}`: {e}"),
                Ok(o) if !o.status.success() => {
                    println!("numpy column skipped: `{py}` failed (numpy/scipy missing?):\n{}", String::from_utf8_lossy(&o.stderr))
                }
                Ok(o) => {
                    let line = String::from_utf8_lossy(&o.stdout);
                    numpy = Some(serde_json::from_str(line.trim())?);
                    let bytes = std::fs::read(dir.path().join("numpy_distances.f64"))?;
                    let np: Vec<f64> = bytes.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap())).collect();
                    max_rel = Some(rust_dist.iter().zip(&np).map(|(a, b)| (a - b).abs() / b.abs()).fold(0.0f64, f64::max));
                }
            }
        }
    }

    println!();
    println!("| stage | tokens | rust s | numpy s | rust tok/s | numpy tok/s | rust/numpy throughput |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    let row = |name: &str, n: usize, r: f64, p: Option<f64>| {
        let (ps, pt, ratio) = match p {
            Some(p) => (format!("{p:.3}"), format!("{:.0}", n as f64 / p), format!("{:.2}", p / r)),
            None => ("-".into(), "-".into(), "-".into()),
        };
        println!("| {name} | {n} | {r:.3} | {ps} | {:.0} | {pt} | {ratio} |", n as f64 / r);
    };
    row("fit μ,S", n_fit, rust_fit, numpy.as_ref().and_then(|v| json_f64(v, &["fit_s"])));
    row("shrink+cholesky", d, rust_chol, numpy.as_ref().and_then(|v| json_f64(v, &["cholesky_s"])));
    for (n, r) in sizes.iter().zip(&rust_score) {
        row("score", *n, *r, numpy.as_ref().and_then(|v| json_f64(v, &["score_s", &n.to_string()])));
    }
    if let Some(v) = &numpy {
        println!("\nnumpy {} (BLAS: {})", v["numpy"], v["blas"]);
    }
    if let Some(m) = max_rel {
        println!("max relative difference of the {n_max} distances, rust vs numpy: {m:.2e}");
    }
    Ok(())
}
