//! Target decode throughput: tokens/s of one-token KV-cache decode after a prefill.
//!
//! `cargo bench --bench target_decode` runs on the CPU (NdArray). With a GPU build,
//! `EDA_DEVICE=cuda cargo bench --features cuda --bench target_decode` runs the same benchmark
//! on CUDA (the device comes from `eda_core::backend::default_device`).
//!
//! Sizes: a random Qwen2-style config (hidden 256, 4 layers, 8 heads, 4 KV heads, vocab 4096),
//! prompt of 64 tokens, 32 decoded tokens per iteration. Throughput is reported in elements =
//! decoded tokens, so criterion prints tokens/s.

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use eda_core::backend::{default_device, to_vec_f32};
use eda_core::TargetModel;
use eda_models::{CausalLm, ModelConfig, Target};

const PROMPT: usize = 64;
const DECODE: usize = 32;

fn bench_decode(c: &mut Criterion) {
    let device = default_device().expect("EDA_DEVICE names an enabled device");
    let mut group = c.benchmark_group("target_decode");
    group.sample_size(10).measurement_time(Duration::from_secs(8)).warm_up_time(Duration::from_secs(1));
    for (name, cfg) in [
        ("qwen2_h256_l4", ModelConfig::qwen2(4096, 256, 688, 4, 8, 4, 1024)),
        ("llama_h512_l4", ModelConfig::llama(8192, 512, 1376, 4, 8, 2, 1024)),
    ] {
        let mut target = Target::new(CausalLm::new(&cfg, &device), name.into());
        let prompt: Vec<u32> = (0..PROMPT as u32).map(|i| (i * 37 + 11) % cfg.vocab_size as u32).collect();
        group.throughput(Throughput::Elements(DECODE as u64));
        group.bench_with_input(BenchmarkId::new("decode_tokens", name), &prompt, |b, prompt| {
            // Only the decode loop is timed; the prefill before it is not.
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    target.reset_cache();
                    to_vec_f32(target.forward(prompt).unwrap().logits.narrow(0, PROMPT - 1, 1)).unwrap();
                    let start = Instant::now();
                    let mut tok = 1u32;
                    for _ in 0..DECODE {
                        let out = target.forward(&[tok]).unwrap();
                        // Greedy argmax on the host, as a real decode loop does (forces the sync).
                        let row = to_vec_f32(out.logits).unwrap();
                        tok = row.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map(|(i, _)| i as u32).unwrap();
                    }
                    total += start.elapsed();
                    std::hint::black_box(tok);
                }
                total
            })
        });
        group.throughput(Throughput::Elements(PROMPT as u64));
        group.bench_with_input(BenchmarkId::new("prefill_tokens", name), &prompt, |b, prompt| {
            b.iter(|| {
                target.reset_cache();
                to_vec_f32(target.forward(prompt).unwrap().logits.narrow(0, PROMPT - 1, 1)).unwrap()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_decode);
criterion_main!(benches);
