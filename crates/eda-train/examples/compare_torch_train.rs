//! Side-by-side training throughput of the EDA draft layer (1 shared + 1 private SwiGLU expert,
//! top-1): `eda_train::DraftTrainer` (burn) against the same layer written in PyTorch
//! (`compare_torch_train.py`), same shapes, batch, sequence length and step counts, in one
//! invocation on one machine.
//!
//! ```text
//! # default, CPU-sized: hidden 512, intermediate 1408 (shared and private), 8/2 heads, vocab 8192, B=4, T=128
//! EDA_TORCH_PYTHON=/tmp/refenv/bin/python \
//!   cargo run --release -p eda-train --example compare_torch_train
//! # Qwen2.5-7B shape (hidden 3584, intermediate 18944, 28/4 heads, vocab 152064) on a GPU box:
//! EDA_DEVICE=cuda EDA_TORCH_PYTHON=python3 \
//!   cargo run --release --features eda-core/cuda -p eda-train --example compare_torch_train -- --qwen7b --device cuda
//! ```
//!
//! Arguments: `--qwen7b` (7B shape), `--device DEV` (torch device handed to the python side,
//! default `cpu`), `--threads N` (torch threads, default 2), `--batch B` (4), `--seq T` (128),
//! `--warmup N` (2 untimed steps), `--steps N` (6 timed steps), `--json FILE` (also write the
//! figures as JSON, for `scripts/gpu-check.sh`).
//! Environment: `EDA_DEVICE` (burn device), `EDA_TORCH_PYTHON` (a python with torch; without it
//! the PyTorch column is skipped with a message).
//!
//! Both sides run the same step: features + U(−0.1, 0.1) noise; `fc([embed(tok); feature])` →
//! GQA causal attention with RoPE (residual) → RMSNorm → shared SwiGLU + private SwiGLU (summed,
//! residual); frozen embedding and LM head; loss = SmoothL1(hidden − next feature) averaged over
//! the hidden dim + 0.1 × soft CE against softmax(target logits), masked mean over tokens;
//! backward; global-norm clip 0.5; AdamW (β 0.9/0.95, ε 1e-8, no weight decay), cosine LR; the
//! loss is read back to the host every step. Throughput = tokens of the timed steps / their
//! summed wall time (the burn side's per-step times come from the trainer's `metrics.jsonl`, which
//! includes host-side batch building; the torch side times the same work). The single-expert
//! routers and the (zero-weighted) load-balancing terms are computed by burn only.

use std::path::Path;
use std::process::Command;

use burn::tensor::{Tensor, TensorData};
use eda_core::data::FeatureSample;
use eda_core::sampling::seeded_rng;
use eda_draft::EdaDraftConfig;
use eda_train::{stage1_draft, DraftTrainer, TrainConfig};
use rand::Rng;

struct Shape {
    name: &'static str,
    vocab: usize,
    hidden: usize,
    inter: usize,
    heads: usize,
    kv_heads: usize,
    theta: f64,
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    match s.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => s[n / 2],
        n => 0.5 * (s[n / 2 - 1] + s[n / 2]),
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let opt = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    let num = |name: &str, d: usize| opt(name).and_then(|v| v.parse().ok()).unwrap_or(d);
    let shape = if args.iter().any(|a| a == "--qwen7b") {
        Shape { name: "Qwen2.5-7B shape", vocab: 152064, hidden: 3584, inter: 18944, heads: 28, kv_heads: 4, theta: 1e6 }
    } else {
        Shape { name: "small (h512)", vocab: 8192, hidden: 512, inter: 1408, heads: 8, kv_heads: 2, theta: 1e4 }
    };
    let torch_device = opt("--device").unwrap_or_else(|| "cpu".into());
    let threads = num("--threads", 2);
    let (batch, len) = (num("--batch", 4), num("--seq", 128));
    let (warmup, steps) = (num("--warmup", 2), num("--steps", 6).max(1));
    let (v, h) = (shape.vocab, shape.hidden);

    let cfg = EdaDraftConfig {
        vocab_size: v,
        hidden_size: h,
        intermediate_size: shape.inter,
        private_intermediate_size: shape.inter,
        num_attention_heads: shape.heads,
        num_key_value_heads: shape.kv_heads,
        head_dim: h / shape.heads,
        rms_norm_eps: 1e-6,
        rope_theta: shape.theta,
        max_position_embeddings: len.max(256),
        num_shared_experts: 1,
        num_private_experts: 1,
        top_k_shared: 1,
        top_k_private: 1,
        draft_vocab_size: None,
    };
    println!(
        "{}: V={v} H={h} I={} (shared) + {} (private) heads {}/{} head_dim {}; B={batch} T={len}; {warmup} warm-up + {steps} timed steps",
        shape.name, cfg.intermediate_size, cfg.private_intermediate_size, cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
    );

    // ---- burn / eda_train ----
    let device = eda_core::backend::default_device()?;
    let mut rng = seeded_rng(5);
    let mut rand_vec = |n: usize, s: f32| -> Vec<f32> { (0..n).map(|_| rng.random_range(-s..s)).collect() };
    let n_samples = (2 * batch).max(8);
    let data: Vec<FeatureSample> = (0..n_samples)
        .map(|i| {
            let ids = (0..len).map(|t| ((t * 31 + i * 7) % v) as u32).collect();
            let mut mask = vec![1u8; len];
            mask[0] = 0;
            FeatureSample::new(format!("s{i}"), ids, rand_vec(len * h, 1.0), h, mask)
        })
        .collect::<eda_core::Result<_>>()?;
    let emb = Tensor::<2>::from_data(TensorData::new(rand_vec(v * h, 0.1), [v, h]), &device);
    let head = Tensor::<2>::from_data(TensorData::new(rand_vec(v * h, 0.1), [v, h]), &device);
    let tcfg = TrainConfig {
        steps: Some(warmup + steps),
        batch_size: batch,
        max_len: len,
        checkpoint_every: 0,
        log_every: 0,
        ..TrainConfig::default()
    };
    let draft = stage1_draft(&cfg, emb, head, &tcfg, &device)?;
    let dir = tempfile::tempdir()?;
    let mut trainer = DraftTrainer::new(tcfg, draft, &device, dir.path())?.progress(false);
    let report = trainer.train(&data)?;
    let metrics = std::fs::read_to_string(dir.path().join("metrics.jsonl"))?;
    let (mut tok, mut secs, mut step_s) = (0usize, 0f64, Vec::new());
    for (i, line) in metrics.lines().enumerate() {
        let m: serde_json::Value = serde_json::from_str(line)?;
        if i < warmup {
            continue;
        }
        let t = m["tokens"].as_u64().ok_or("metrics.jsonl: tokens")? as usize;
        let dt = t as f64 / m["tokens_per_s"].as_f64().ok_or("metrics.jsonl: tokens_per_s")?;
        tok += t;
        secs += dt;
        step_s.push(dt);
    }
    let rust_tps = tok as f64 / secs;
    println!(
        "burn: {} steps, final loss {:.4}, {} trainable / {} total params; timed: {tok} tokens in {secs:.2} s",
        report.steps, report.final_loss, report.trainable_params, report.total_params
    );

    // ---- PyTorch ----
    let mut torch: Option<serde_json::Value> = None;
    match std::env::var("EDA_TORCH_PYTHON") {
        Err(_) => println!("PyTorch column skipped: set EDA_TORCH_PYTHON to a python with torch"),
        Ok(py) => {
            let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/compare_torch_train.py");
            let s = |x: usize| x.to_string();
            let out = Command::new(&py)
                .arg(&script)
                .args(["--vocab", &s(v), "--hidden", &s(h), "--inter", &s(shape.inter), "--private-inter", &s(shape.inter)])
                .args(["--heads", &s(shape.heads), "--kv-heads", &s(shape.kv_heads), "--theta", &shape.theta.to_string()])
                .args(["--batch", &s(batch), "--seq", &s(len), "--warmup", &s(warmup), "--steps", &s(steps)])
                .args(["--device", &torch_device, "--threads", &s(threads)])
                .output();
            match out {
                Err(e) => println!("PyTorch column skipped: could not run `{py}`: {e}"),
                Ok(o) if !o.status.success() => {
                    println!("PyTorch column skipped: `{py}` failed (torch missing?):\n{}", String::from_utf8_lossy(&o.stderr))
                }
                Ok(o) => {
                    let text = String::from_utf8_lossy(&o.stdout);
                    let line = text.lines().last().unwrap_or("");
                    torch = Some(serde_json::from_str(line)?);
                }
            }
        }
    }

    println!();
    println!("load average (1/5/15 min): {}", std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim());
    println!();
    println!("| {} B={batch} T={len} | eda_train (burn) | PyTorch | burn/torch throughput |", shape.name);
    println!("|---|---:|---:|---:|");
    match &torch {
        None => {
            println!("| train tokens/s ({steps} timed steps) | {rust_tps:.0} | - | - |");
            println!("| median step, s | {:.3} | - | - |", median(&step_s));
        }
        Some(t) => {
            let tt = t["tokens_per_s"].as_f64().unwrap_or(f64::NAN);
            let ts = t["median_step_s"].as_f64().unwrap_or(f64::NAN);
            println!("| train tokens/s ({steps} timed steps) | {rust_tps:.0} | {tt:.0} | {:.2} |", rust_tps / tt);
            println!("| median step, s | {:.3} | {ts:.3} | {:.2} |", median(&step_s), ts / median(&step_s));
            println!();
            println!(
                "PyTorch side: torch {} on {} ({} threads), {} trainable params, final loss {:.4}",
                t["torch"],
                t["device"],
                t["threads"],
                t["trainable_params"],
                t["final_loss"].as_f64().unwrap_or(f64::NAN)
            );
        }
    }
    if let Some(path) = opt("--json") {
        let torch_tps = torch.as_ref().and_then(|t| t["tokens_per_s"].as_f64());
        let report = serde_json::json!({
            "shape": shape.name, "batch": batch, "seq": len, "timed_steps": steps,
            "eda": {"tokens_per_s": rust_tps, "median_step_s": median(&step_s), "final_loss": report.final_loss,
                    "trainable_params": report.trainable_params},
            "torch": torch,
            "throughput_ratio_eda_over_torch": torch_tps.map(|t| rust_tps / t),
        });
        std::fs::write(&path, serde_json::to_string_pretty(&report)? + "\n")?;
        println!("wrote {path}");
    }
    Ok(())
}
