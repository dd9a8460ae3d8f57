//! Device memory of a Qwen2.5-7B-shaped target plus its EDA draft, from shapes alone, at f32 /
//! f16 / bf16; optionally measured on a GPU device.
//!
//! ```text
//! cargo run --release --example memory_estimate
//! # measure on a GPU: builds the bf16 target on the device and reads the allocator's usage
//! EDA_DEVICE=cuda cargo run --release --features cuda --example memory_estimate -- --measure --json mem.json
//! ```
//!
//! Arguments: `--tokens N` (KV-cache positions, default 4096), `--measure` (allocate the target
//! and draft weights on `EDA_DEVICE` in `EDA_DTYPE`, default bf16, and report the device
//! allocator's bytes in use), `--json FILE`.
//!
//! The draft is the reference 7B EDA draft (spec sizes: 1 shared + 1 private expert, each of the
//! target's intermediate size; embedding and LM head shared with the target, so not counted
//! twice). Training adds, per trainable parameter, its gradient and two AdamW moments in f32.

use eda_core::backend::Precision;
use eda_draft::{EdaDraftConfig, FreezePlan, ParamCounts};
use eda_models::memory::{gib, target_memory};
use eda_models::ModelConfig;

fn qwen25_7b() -> ModelConfig {
    let mut cfg = ModelConfig::qwen2(152_064, 3584, 18_944, 28, 28, 4, 32_768);
    cfg.head_dim = 128;
    cfg
}

fn draft_7b() -> EdaDraftConfig {
    let mut d = EdaDraftConfig::tiny(152_064, 3584);
    d.intermediate_size = 18_944;
    d.private_intermediate_size = 18_944;
    d.num_attention_heads = 28;
    d.num_key_value_heads = 4;
    d.head_dim = 128;
    d
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let opt = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    let tokens: usize = opt("--tokens").and_then(|v| v.parse().ok()).unwrap_or(4096);
    let cfg = qwen25_7b();
    let dcfg = draft_7b();
    let counts = ParamCounts::for_config(&dcfg, FreezePlan::REFERENCE_STAGE2);
    println!("Qwen2.5-7B shape (hidden 3584, 28 layers, 28/4 heads, vocab 152064, untied) + EDA draft ({} draft params, {} trainable in stage 2); KV cache {tokens} positions, batch 1, prefill chunk 512", counts.draft(), counts.trainable);
    println!();
    println!("| dtype | target weights | KV cache | activations | draft weights | inference total (+10 %) | stage-2 training extra (f32 grads + AdamW) |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    let mut rows = Vec::new();
    for p in [Precision::F32, Precision::F16, Precision::BF16] {
        let m = target_memory(&cfg, p, 1, tokens, 512);
        let draft = counts.draft() as u64 * p.bytes() as u64;
        let train = counts.trainable as u64 * 12;
        let total = m.total_with_slack() + draft + draft / 10;
        println!(
            "| {p} | {} | {} | {} | {} | {} | {} |",
            gib(m.weights),
            gib(m.kv_cache),
            gib(m.activations),
            gib(draft),
            gib(total),
            gib(train)
        );
        rows.push(serde_json::json!({"dtype": p.name(), "target_weights": m.weights, "kv_cache": m.kv_cache, "activations": m.activations,
            "draft_weights": draft, "inference_total_with_slack": total, "stage2_training_extra": train}));
    }
    let mut report = serde_json::json!({"shape": "Qwen2.5-7B", "tokens": tokens, "estimates": rows, "measured": null});
    if args.iter().any(|a| a == "--measure") {
        report["measured"] = measure(&cfg, &dcfg)?;
    }
    if let Some(path) = opt("--json") {
        std::fs::write(&path, serde_json::to_string_pretty(&report)? + "\n")?;
        println!("wrote {path}");
    }
    Ok(())
}

/// Allocates the target (random weights, built on the device) and the draft on `EDA_DEVICE` in
/// `EDA_DTYPE` (default bf16) and reads the allocator.
fn measure(cfg: &ModelConfig, dcfg: &EdaDraftConfig) -> Result<serde_json::Value, Box<dyn std::error::Error>> {
    let name = std::env::var("EDA_DEVICE").unwrap_or_else(|_| "cuda".into());
    let precision = match std::env::var("EDA_DTYPE") {
        Ok(v) => v.parse()?,
        Err(_) => Precision::BF16,
    };
    let device = eda_core::backend::device_with_precision(&name, precision)?;
    let before = device.memory_pool_usage().map(|u| u.bytes_in_use).unwrap_or(0);
    let lm = eda_models::CausalLm::new(cfg, &device);
    device.sync()?;
    let after_target = device.memory_pool_usage().map(|u| u.bytes_in_use);
    let draft = eda_draft::EdaDraft::new(dcfg, lm.embed_tokens.weight.val(), lm.lm_head_weight(), &device)?;
    device.sync()?;
    let after_draft = device.memory_pool_usage().map(|u| u.bytes_in_use);
    let reserved = device.memory_pool_usage().map(|u| u.bytes_reserved);
    let est = target_memory(cfg, precision, 1, 0, 1).weights;
    println!(
        "measured on {name} in {precision}: target {} (estimate {}), target + draft {}, reserved {}",
        after_target.map(|b| gib(b - before)).unwrap_or("n/a".into()),
        gib(est),
        after_draft.map(|b| gib(b - before)).unwrap_or("n/a".into()),
        reserved.map(gib).unwrap_or("n/a".into())
    );
    drop((lm, draft));
    Ok(serde_json::json!({"device": name, "dtype": precision.name(), "target_bytes": after_target.map(|b| b - before),
        "target_estimate_bytes": est, "target_plus_draft_bytes": after_draft.map(|b| b - before), "reserved_bytes": reserved}))
}
