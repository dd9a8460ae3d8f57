//! Decode throughput of a random target (same configurations as the workspace bench
//! `benches/target_decode.rs`), without criterion:
//!
//! `cargo run -p eda-models --release --example decode_speed` (set `EDA_DEVICE` to choose the device).

use std::time::Instant;

use eda_core::backend::{default_device, to_vec_f32};
use eda_core::TargetModel;
use eda_models::{CausalLm, ModelConfig, Target};

fn main() -> eda_core::Result<()> {
    let device = default_device()?;
    let (prompt_len, decode, reps) = (64usize, 32usize, 5usize);
    for (name, cfg) in [
        ("qwen2_h256_l4", ModelConfig::qwen2(4096, 256, 688, 4, 8, 4, 1024)),
        ("llama_h512_l4", ModelConfig::llama(8192, 512, 1376, 4, 8, 2, 1024)),
    ] {
        let mut target = Target::new(CausalLm::new(&cfg, &device), name.into());
        let prompt: Vec<u32> = (0..prompt_len as u32).map(|i| (i * 37 + 11) % cfg.vocab_size as u32).collect();
        let (mut best_decode, mut best_prefill) = (f64::MAX, f64::MAX);
        for _ in 0..reps {
            target.reset_cache();
            let t0 = Instant::now();
            to_vec_f32(target.forward(&prompt)?.logits.narrow(0, prompt_len - 1, 1))?;
            best_prefill = best_prefill.min(t0.elapsed().as_secs_f64());
            let t0 = Instant::now();
            let mut tok = 1u32;
            for _ in 0..decode {
                let row = to_vec_f32(target.forward(&[tok])?.logits)?;
                tok = row.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map(|(i, _)| i as u32).unwrap_or(0);
            }
            best_decode = best_decode.min(t0.elapsed().as_secs_f64());
        }
        println!(
            "{name}: decode {:.1} tokens/s ({:.2} ms/token, {decode} tokens after a {prompt_len}-token prefill); prefill {:.0} tokens/s",
            decode as f64 / best_decode,
            1e3 * best_decode / decode as f64,
            prompt_len as f64 / best_prefill
        );
    }
    Ok(())
}
