//! Side-by-side decode latency: [`eda_models::Target`] against HuggingFace transformers (eager
//! attention, PyTorch), on the **same weights** and the **same machine**, in one invocation.
//!
//! ```text
//! # Qwen2.5-0.5B shape (hidden 896, 24 layers, vocab 151936, tied, f32 ≈ 2 GB written to a temp dir):
//! EDA_TORCH_PYTHON=/tmp/refenv/bin/python \
//!   cargo run --release -p eda-models --example compare_hf_decode
//! # quick run on a small Qwen2 shape (hidden 512, 4 layers, vocab 32000):
//! EDA_TORCH_PYTHON=/tmp/refenv/bin/python \
//!   cargo run --release -p eda-models --example compare_hf_decode -- --small
//! # on a GPU box (burn CUDA backend vs torch CUDA):
//! EDA_DEVICE=cuda EDA_TORCH_PYTHON=python3 \
//!   cargo run --release --features eda-core/cuda -p eda-models --example compare_hf_decode -- --device cuda
//! ```
//!
//! Arguments: `--model DIR` (an existing HF checkpoint, e.g. one written by `eda convert`,
//! instead of a random model), `--small` (small config), `--device DEV` (torch device passed to the python side as
//! `--device DEV`, default `cpu`), `--threads N` (torch threads, default 2), `--rounds N`
//! (alternating Rust/HF measurement rounds, default 2), `--prompt N` (64), `--decode N` (32),
//! `--json FILE` (also write the figures as JSON, for `scripts/gpu-check.sh`).
//! Environment: `EDA_DEVICE` (burn device, see `eda_core::backend::default_device`),
//! `EDA_TORCH_PYTHON` (a python with torch + transformers; without it the HF column is skipped
//! with a message), `EDA_NO_FAST_DECODE=1` (measure the plain burn path instead of the CPU host
//! decoding path).
//!
//! Method: a random model is built with [`CausalLm::new`] and written with `save_pretrained`;
//! the Rust side reloads it with [`Target::from_pretrained`], the python side
//! (`compare_hf_decode.py`) with `AutoModelForCausalLM.from_pretrained(dir,
//! attn_implementation="eager")`. Each side prefills the same prompt, then decodes greedily one
//! token at a time with its KV cache; every decode step (forward + logits to host + argmax) is
//! timed, and the median over the measured steps is reported, after a warm-up pass. Rounds
//! alternate Rust then HF so that a varying background load hits both columns alike; the ratio
//! is computed per round and the median of the per-round ratios is printed too. Finally the two
//! greedy token sequences are compared, and the last-position prefill logits of both sides.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use eda_core::backend::{default_device, to_vec_f32};
use eda_core::TargetModel;
use eda_models::{CausalLm, ModelConfig, Target};

fn argmax(row: &[f32]) -> u32 {
    row.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map(|(i, _)| i as u32).unwrap_or(0)
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    if s.is_empty() {
        return f64::NAN;
    }
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        0.5 * (s[n / 2 - 1] + s[n / 2])
    }
}

/// (prefill seconds, per-step decode seconds, generated tokens, last prefill logits).
type RunTimes = (f64, Vec<f64>, Vec<u32>, Vec<f32>);

/// One greedy run.
fn rust_run(target: &mut Target, prompt: &[u32], decode: usize) -> eda_core::Result<RunTimes> {
    target.reset_cache();
    let t0 = Instant::now();
    let last = to_vec_f32(target.forward(prompt)?.logits.narrow(0, prompt.len() - 1, 1))?;
    let prefill = t0.elapsed().as_secs_f64();
    let mut tok = argmax(&last);
    let mut tokens = vec![tok];
    let mut steps = Vec::with_capacity(decode);
    for _ in 1..decode {
        let t0 = Instant::now();
        let row = to_vec_f32(target.forward(&[tok])?.logits)?;
        tok = argmax(&row);
        steps.push(t0.elapsed().as_secs_f64());
        tokens.push(tok);
    }
    // One more step so that `decode` steps are timed (its token is not part of the sequence).
    let t0 = Instant::now();
    let row = to_vec_f32(target.forward(&[tok])?.logits)?;
    let _ = argmax(&row);
    steps.push(t0.elapsed().as_secs_f64());
    Ok((prefill, steps, tokens, last))
}

struct Hf {
    prefill_s: f64,
    step_ms: Vec<f64>,
    tokens: Vec<u32>,
    logits: Vec<f32>,
    version: String,
}

fn run_python(py: &str, dir: &Path, prompt: &[u32], decode: usize, device: &str, threads: usize) -> Result<Hf, String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/compare_hf_decode.py");
    let ids = prompt.iter().map(|t| t.to_string()).collect::<Vec<_>>().join(",");
    let out = Command::new(py)
        .arg(&script)
        .arg(dir)
        .args(["--prompt-ids", &ids, "--decode", &decode.to_string(), "--device", device, "--threads", &threads.to_string()])
        .output()
        .map_err(|e| format!("could not run `{py}`: {e}"))?;
    if !out.status.success() {
        return Err(format!("`{py}` failed (torch/transformers missing?):\n{}", String::from_utf8_lossy(&out.stderr)));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().last().ok_or("python printed nothing")?;
    let v: serde_json::Value = serde_json::from_str(line).map_err(|e| format!("bad JSON from python: {e}: {line}"))?;
    let f = |k: &str| v[k].as_f64().ok_or(format!("python JSON lacks `{k}`"));
    let arr = |k: &str| -> Result<Vec<f64>, String> {
        v[k].as_array().ok_or(format!("python JSON lacks `{k}`"))?.iter().map(|x| x.as_f64().ok_or(format!("bad `{k}`"))).collect()
    };
    let bytes = std::fs::read(dir.join("hf_prefill_logits.f32")).map_err(|e| format!("hf_prefill_logits.f32: {e}"))?;
    Ok(Hf {
        prefill_s: f("prefill_s")?,
        step_ms: arr("step_ms")?,
        tokens: arr("tokens")?.into_iter().map(|x| x as u32).collect(),
        logits: bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
        version: format!("torch {} / transformers {} on {} ({} threads)", v["torch"], v["transformers"], v["device"], v["threads"]),
    })
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let opt = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    let small = args.iter().any(|a| a == "--small");
    let torch_device = opt("--device").unwrap_or_else(|| "cpu".into());
    let threads: usize = opt("--threads").and_then(|v| v.parse().ok()).unwrap_or(2);
    let rounds: usize = opt("--rounds").and_then(|v| v.parse().ok()).unwrap_or(2).max(1);
    let prompt_len: usize = opt("--prompt").and_then(|v| v.parse().ok()).unwrap_or(64);
    let decode: usize = opt("--decode").and_then(|v| v.parse().ok()).unwrap_or(32).max(1);

    let model_dir = opt("--model").map(std::path::PathBuf::from);
    let (name, mut cfg) = if let Some(d) = &model_dir {
        ("given checkpoint", ModelConfig::from_file(&d.join("config.json"))?)
    } else if small {
        ("qwen2-small h512 l4 v32000", ModelConfig::qwen2(32000, 512, 1408, 4, 8, 2, 4096))
    } else {
        ("Qwen2.5-0.5B shape", ModelConfig::qwen2(151936, 896, 4864, 24, 14, 2, 32768))
    };
    if model_dir.is_none() {
        cfg.tie_word_embeddings = true;
        cfg.rope_theta = 1_000_000.0;
        cfg.eos_token_ids = vec![151643.min(cfg.vocab_size as u32 - 1)];
    }
    let device = default_device()?;
    println!("{name}: hidden {} inter {} layers {} heads {}/{} vocab {} tied; prompt {prompt_len}, decode {decode}; burn device {device:?}; rayon threads {}",
        cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers, cfg.num_attention_heads, cfg.num_key_value_heads, cfg.vocab_size, rayon_threads());

    let tmp = tempfile::tempdir()?;
    let dir: &Path = match &model_dir {
        Some(d) => d.as_path(),
        None => {
            let t0 = Instant::now();
            let lm = CausalLm::new(&cfg, &device);
            lm.save_pretrained(&cfg, tmp.path())?;
            let size = std::fs::metadata(tmp.path().join("model.safetensors"))?.len();
            println!(
                "built + saved random model to {} ({:.2} GB) in {:.1} s",
                tmp.path().display(),
                size as f64 / 1e9,
                t0.elapsed().as_secs_f64()
            );
            tmp.path()
        }
    };
    let t0 = Instant::now();
    let mut target = Target::from_pretrained(dir, &device)?;
    println!(
        "Target::from_pretrained: {:.1} s; host decoding path (≤ 16 rows): {}",
        t0.elapsed().as_secs_f64(),
        if target.fast_decode() { "on" } else { "off (EDA_NO_FAST_DECODE or not the CPU)" }
    );

    let prompt: Vec<u32> = (0..prompt_len as u32).map(|i| (i * 37 + 11) % cfg.vocab_size as u32).collect();
    // Warm-up (allocations, rayon pool, page cache).
    rust_run(&mut target, &prompt, decode.min(4))?;

    let py = std::env::var("EDA_TORCH_PYTHON").ok();
    if py.is_none() {
        println!("HF column skipped: set EDA_TORCH_PYTHON to a python with torch + transformers");
    }
    let mut rust_steps: Vec<Vec<f64>> = Vec::new();
    let mut rust_prefill = Vec::new();
    let mut rust_tokens = Vec::new();
    let mut rust_logits = Vec::new();
    let mut hf_rounds: Vec<Hf> = Vec::new();
    let mut hf_error = None;
    for r in 0..rounds {
        let (p, steps, toks, logits) = rust_run(&mut target, &prompt, decode)?;
        println!("round {r}: rust median {:.2} ms/token (prefill {:.2} s)", 1e3 * median(&steps), p);
        rust_prefill.push(p);
        rust_steps.push(steps);
        rust_tokens = toks;
        rust_logits = logits;
        if let (Some(py), None) = (&py, &hf_error) {
            match run_python(py, dir, &prompt, decode, &torch_device, threads) {
                Ok(h) => {
                    println!("round {r}: HF   median {:.2} ms/token (prefill {:.2} s)", median(&h.step_ms), h.prefill_s);
                    hf_rounds.push(h);
                }
                Err(e) => {
                    println!("HF column skipped: {e}");
                    hf_error = Some(e);
                }
            }
        }
    }

    let all_rust: Vec<f64> = rust_steps.iter().flatten().map(|s| 1e3 * s).collect();
    let rust_ms = median(&all_rust);
    // Memory-bandwidth bound: a decode step reads every weight once (f32), except that only one
    // embedding row is read when the head is a separate matrix.
    let weight_bytes = 4.0 * decode_weight_scalars(&cfg) as f64;
    let bw = measure_read_bandwidth();
    println!(
        "bandwidth bound: {:.0} MB of f32 weights per token / {:.1} GB/s measured read bandwidth = {:.2} ms/token ({:.1} tokens/s); eda reaches {:.0}% of it",
        weight_bytes / 1e6,
        bw / 1e9,
        1e3 * weight_bytes / bw,
        bw / weight_bytes,
        100.0 * (1e3 * weight_bytes / bw) / rust_ms
    );
    let rust_pf = median(&rust_prefill);
    println!();
    println!("load average (1/5/15 min): {}", std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim());
    println!();
    println!("| {name} | eda Target (burn) | HF transformers eager | HF/Rust time ratio |");
    println!("|---|---:|---:|---:|");
    let mut report = serde_json::json!({
        "shape": name, "burn_device": format!("{device:?}"), "prompt_tokens": prompt_len, "decode_tokens": decode,
        "eda": {"decode_ms_per_token": rust_ms, "decode_tokens_per_s": 1e3 / rust_ms, "prefill_s": rust_pf,
                "prefill_tokens_per_s": prompt_len as f64 / rust_pf},
        "hf": serde_json::Value::Null, "hf_skipped": hf_error.clone().or_else(|| py.is_none().then(|| "EDA_TORCH_PYTHON not set".to_string())),
    });
    let write_json = |report: &serde_json::Value| -> std::io::Result<()> {
        if let Some(path) = opt("--json") {
            std::fs::write(&path, serde_json::to_string_pretty(report)? + "\n")?;
            println!("wrote {path}");
        }
        Ok(())
    };
    if hf_rounds.is_empty() {
        println!("| decode ms/token (median) | {rust_ms:.2} | - | - |");
        println!("| decode tokens/s | {:.2} | - | - |", 1e3 / rust_ms);
        println!("| prefill {prompt_len} tokens, s | {rust_pf:.3} | - | - |");
        write_json(&report)?;
        return Ok(());
    }
    let all_hf: Vec<f64> = hf_rounds.iter().flat_map(|h| h.step_ms.clone()).collect();
    let hf_ms = median(&all_hf);
    let hf_pf = median(&hf_rounds.iter().map(|h| h.prefill_s).collect::<Vec<_>>());
    let per_round: Vec<f64> = rust_steps.iter().zip(&hf_rounds).map(|(r, h)| median(&h.step_ms) / (1e3 * median(r))).collect();
    println!("| decode ms/token (median of {} steps) | {rust_ms:.2} | {hf_ms:.2} | {:.2} |", all_rust.len(), hf_ms / rust_ms);
    println!("| decode tokens/s | {:.2} | {:.2} | {:.2} |", 1e3 / rust_ms, 1e3 / hf_ms, hf_ms / rust_ms);
    println!("| prefill {prompt_len} tokens, s (median of rounds) | {rust_pf:.3} | {hf_pf:.3} | {:.2} |", hf_pf / rust_pf);
    println!();
    println!(
        "per-round decode ratios HF/Rust: {:?} (median {:.2}); ratio > 1 means the Rust side is faster",
        per_round.iter().map(|x| (x * 100.0).round() / 100.0).collect::<Vec<_>>(),
        median(&per_round)
    );
    let h = hf_rounds.last().expect("non-empty");
    println!("HF side: {}", h.version);
    let same = rust_tokens.iter().zip(&h.tokens).take_while(|(a, b)| a == b).count();
    if rust_tokens == h.tokens {
        println!("greedy tokens: identical for all {decode} steps");
    } else {
        println!(
            "greedy tokens: first {same} of {decode} identical, then differ (rust {:?} vs hf {:?})",
            rust_tokens.get(same),
            h.tokens.get(same)
        );
    }
    println!("rust tokens: {rust_tokens:?}");
    println!("hf   tokens: {:?}", h.tokens);
    let mut logits_err = serde_json::Value::Null;
    if rust_logits.len() == h.logits.len() {
        let max_abs = rust_logits.iter().zip(&h.logits).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        let scale = h.logits.iter().map(|x| x.abs()).fold(0f32, f32::max);
        let mut sorted = h.logits.clone();
        sorted.sort_by(|a, b| b.total_cmp(a));
        println!(
            "last-position prefill logits: max |rust - hf| = {max_abs:.3e} (max |logit| {scale:.3e}; HF top-1 margin {:.3e})",
            sorted[0] - sorted[1]
        );
        logits_err = serde_json::json!(max_abs);
    }
    report["hf"] = serde_json::json!({
        "decode_ms_per_token": hf_ms, "decode_tokens_per_s": 1e3 / hf_ms, "prefill_s": hf_pf, "version": h.version,
    });
    report["decode_ratio_eda_over_hf_speed"] = serde_json::json!(hf_ms / rust_ms);
    report["per_round_ratios"] = serde_json::json!(per_round);
    report["greedy_identical_steps"] = serde_json::json!(same);
    report["prefill_logits_max_abs_diff"] = logits_err;
    write_json(&report)?;
    Ok(())
}

fn rayon_threads() -> String {
    std::env::var("RAYON_NUM_THREADS")
        .unwrap_or_else(|_| std::thread::available_parallelism().map(|n| n.to_string()).unwrap_or_else(|_| "?".into()))
}

/// Scalars read from memory by one decode step: all layer weights, the final norm and the LM
/// head (the embedding lookup reads one row, negligible).
fn decode_weight_scalars(cfg: &ModelConfig) -> usize {
    let (h, i) = (cfg.hidden_size, cfg.intermediate_size);
    let (q, kv) = (cfg.num_attention_heads * cfg.head_dim, cfg.num_key_value_heads * cfg.head_dim);
    let layer = h * q + 2 * h * kv + q * h + 3 * h * i + 2 * h;
    cfg.num_hidden_layers * layer + h + cfg.vocab_size * h
}

/// Read bandwidth of this machine in bytes/s: parallel sums over a 1 GiB buffer (every core, as
/// the decode does), best of three passes.
fn measure_read_bandwidth() -> f64 {
    use rayon::prelude::*;
    let buf = vec![1.0f32; 1 << 28];
    let mut best = 0.0f64;
    for _ in 0..3 {
        let t0 = Instant::now();
        // 16 independent accumulators let the compiler vectorise, so memory is the limit.
        let s: f32 = buf
            .par_chunks(1 << 16)
            .map(|c| {
                let mut acc = [0f32; 16];
                for v in c.chunks_exact(16) {
                    for (a, x) in acc.iter_mut().zip(v) {
                        *a += x;
                    }
                }
                acc.iter().sum::<f32>()
            })
            .sum();
        let secs = t0.elapsed().as_secs_f64();
        std::hint::black_box(s);
        best = best.max((buf.len() * 4) as f64 / secs);
    }
    best
}
