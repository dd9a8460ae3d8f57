//! Throughput of batched target passes on a SmolLM2-135M-shaped random target (vocab 49152,
//! hidden 576, intermediate 1536, 30 layers, 9 heads, 3 kv heads, tied embeddings):
//! teacher-forced feature extraction ([`TargetModel::hidden_batch`]) and greedy generation
//! ([`TargetModel::generate_batch`]) at several batch sizes, side by side, plus the batch-1
//! paths used before batching (`forward` with logits, `generate_autoregressive`).
//!
//! `CARGO_TARGET_DIR=/work/target-rel cargo run --release -p eda-models --example batch_throughput`
//!
//! Arguments (all optional): `SEQUENCES BATCH_SIZES NEW_TOKENS`, e.g. `16 1,4,16 32`. Set
//! `EDA_DEVICE` to choose the device.

use std::time::Instant;

use eda_core::backend::{default_device, to_vec_f32};
use eda_core::generate::generate_autoregressive;
use eda_core::{GenerationConfig, TargetModel, TokenId};
use eda_models::{CausalLm, ModelConfig, Target};

/// Deterministic pseudo-random token sequences of the given lengths.
fn sequences(lens: &[usize], vocab: usize, salt: u64) -> Vec<Vec<TokenId>> {
    let mut state = 0x2545_f491_4f6c_dd1du64 ^ salt;
    lens.iter()
        .map(|&l| {
            (0..l)
                .map(|_| {
                    state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    ((state >> 33) % vocab as u64) as TokenId
                })
                .collect()
        })
        .collect()
}

fn main() -> eda_core::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let n_seqs: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(16);
    let sizes: Vec<usize> = args.get(1).map(|a| a.split(',').filter_map(|x| x.parse().ok()).collect()).unwrap_or_else(|| vec![1, 4, 16]);
    let new_tokens: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(32);

    let device = default_device()?;
    let cfg = ModelConfig::llama(49152, 576, 1536, 30, 9, 3, 2048);
    let mut target = Target::new(CausalLm::new(&cfg, &device), "smollm2-135m-shaped-random".into());
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    println!("SmolLM2-135M-shaped random target (30 layers, hidden 576, vocab 49152), {threads} CPU threads available");

    // Regeneration-like sequences: prompt plus answer, 96..=352 tokens (extraction) and
    // prompts of 24..=88 tokens (generation).
    let feat_lens: Vec<usize> = (0..n_seqs).map(|i| 96 + (i * 67) % 257).collect();
    let feats = sequences(&feat_lens, cfg.vocab_size, 1);
    let prompt_lens: Vec<usize> = (0..n_seqs).map(|i| 24 + (i * 29) % 65).collect();
    let prompts = sequences(&prompt_lens, cfg.vocab_size, 2);
    let gen = GenerationConfig { max_new_tokens: new_tokens, ..GenerationConfig::greedy() };
    let feat_tokens: usize = feat_lens.iter().sum();
    println!("extraction: {n_seqs} sequences, {feat_tokens} tokens; generation: {n_seqs} prompts ({} tokens), {new_tokens} new tokens each, greedy\n", prompt_lens.iter().sum::<usize>());

    // Warm-up (allocator, thread pool).
    target.hidden_batch(&feats[..1])?;

    // Batch-1 paths as used before batching.
    let t0 = Instant::now();
    let mut old_hidden = Vec::new();
    for s in &feats {
        target.reset_cache();
        let out = target.forward(s)?;
        old_hidden.push(to_vec_f32(out.hidden)?);
    }
    let old_extract = feat_tokens as f64 / t0.elapsed().as_secs_f64();
    let t0 = Instant::now();
    let mut old_gen = Vec::new();
    for p in &prompts {
        old_gen.push(generate_autoregressive(&mut target, p, &gen)?.tokens);
    }
    let gen_tokens: usize = old_gen.iter().map(Vec::len).sum();
    let old_generate = gen_tokens as f64 / t0.elapsed().as_secs_f64();

    println!("| path | extraction tok/s | generation new tok/s | same output as batch-1 path |");
    println!("|---|---:|---:|---|");
    println!("| before (forward / generate_autoregressive, batch 1) | {old_extract:.1} | {old_generate:.1} | - |");
    for &b in &sizes {
        let t0 = Instant::now();
        let mut hidden = Vec::new();
        for chunk in feats.chunks(b) {
            for h in target.hidden_batch(chunk)? {
                hidden.push(to_vec_f32(h)?);
            }
        }
        let extract = feat_tokens as f64 / t0.elapsed().as_secs_f64();
        let t0 = Instant::now();
        let mut tokens = Vec::new();
        for (chunk, _) in prompts.chunks(b).zip(0..) {
            for o in target.generate_batch(chunk, &vec![gen.clone(); chunk.len()])? {
                tokens.push(o.tokens);
            }
        }
        let generate = tokens.iter().map(Vec::len).sum::<usize>() as f64 / t0.elapsed().as_secs_f64();
        let same = hidden == old_hidden && tokens == old_gen;
        println!("| batched, batch {b} | {extract:.1} | {generate:.1} | {} |", if same { "yes (bit-identical)" } else { "NO" });
    }
    Ok(())
}
