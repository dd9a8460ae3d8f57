//! Draft cost `c` (one draft step / one target decode step) on SmolLM2-135M shapes, with random
//! weights, measured side by side in one process:
//!
//! ```sh
//! CARGO_TARGET_DIR=/work/target-rel cargo run --release -p eda-draft --example draft_cost
//! ```
//!
//! Target: Llama, 30 layers, hidden 576, intermediate 1536, 9 heads / 3 KV heads, vocab 49152,
//! tied embeddings (`Target::new` materialises its `[hidden, vocab]` head). Draft: the EDA layer
//! for it with the reference shape ratio (1 shared + 1 private SwiGLU expert of intermediate
//! 1536 each, top-1; 9 / 3 heads), full vocabulary and reduced vocabularies of 16384 and 8192
//! tokens.
//!
//! Every step is one token after a 64-token context (the cache is truncated back after each
//! step, so all steps see the same length) and includes reading the logits back to the host, as
//! the strategies in `eda-spec` do. Steps of the target and of every draft variant are
//! interleaved and the median of `REPS` steps is reported, so a busy machine slows all of them
//! alike. The "module path" rows replay the pre-`FastDraft` decoding step (the module's
//! transposed-view weights and the transposed `[vocab, hidden]` head) stage by stage.
//!
//! Options: `--reps N` (default 15), `--ctx N` (default 64).
//!
//! Measured on the 2-core AMD EPYC development machine (target step ≈ 126 ms): c = 2.7 for the
//! module path (the LM head alone 327 ms), 0.071 for the fast path with the full vocabulary,
//! 0.034 with K = 16384 and 0.027 with K = 8192; one tree level of 10 rows costs 0.22 / 0.10 /
//! 0.08 target steps. The target itself runs burn's GEMM at ≈ 4 GB/s; a mat-vec target would be
//! ≈ 3× faster and raise these ratios accordingly.

use std::time::Instant;

use burn::tensor::{Distribution, Int, Tensor, TensorData};
use eda_core::backend::{device_from_name, to_vec_f32};
use eda_core::{AttentionMask, DraftModel, TargetModel};
use eda_draft::{DraftSession, EdaDraft, EdaDraftConfig};
use eda_models::layers::{KvCache, RotaryEmbedding};
use eda_models::{CausalLm, ModelConfig, Target};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Wall time of `f` after forcing its result to the host (NdArray is eager; the readback makes
/// the measurement honest on asynchronous backends too).
fn timed<const D: usize>(times: &mut Vec<f64>, f: impl FnOnce() -> Tensor<D>) -> eda_core::Result<Tensor<D>> {
    let t0 = Instant::now();
    let out = f();
    let n = out.dims().iter().product::<usize>();
    to_vec_f32(out.clone().reshape([n]).narrow(0, 0, 1))?;
    times.push(t0.elapsed().as_secs_f64());
    Ok(out)
}

const STAGES: [&str; 7] = ["embed + fc", "attention", "norm", "shared expert", "private expert", "LM head", "readback"];

/// The decoding step as `DraftSession` ran it before `FastDraft`: the module's own layers.
fn module_step(
    d: &EdaDraft,
    rope: &RotaryEmbedding,
    cache: &KvCache,
    ctx: usize,
    f1: &Tensor<2>,
    t: &mut [Vec<f64>],
) -> eda_core::Result<()> {
    let device = d.device();
    let h = d.config().hidden_size;
    let u = timed(&mut t[0], || {
        let ids = Tensor::<2, Int>::from_data(TensorData::new(vec![7i64], [1, 1]), &device);
        let e = burn::tensor::module::embedding(d.embedding(), ids);
        d.fc().forward(Tensor::cat(vec![e, f1.clone().reshape([1, 1, h])], 2))
    })?;
    let mut c = cache.clone();
    let a = timed(&mut t[1], || u.clone() + d.attention().forward(u, rope, &[ctx], Some(&mut c), None))?.reshape([1, h]);
    let m = timed(&mut t[2], || d.post_attention_layernorm().forward(a.clone()))?;
    let s = timed(&mut t[3], || d.moe().shared.forward(m.clone()).output)?;
    let p = timed(&mut t[4], || {
        d.moe().private.as_ref().map(|p| p.forward(m.clone()).output).unwrap_or_else(|| Tensor::zeros([1, h], &device))
    })?;
    let logits = timed(&mut t[5], || d.logits(a + s + p))?;
    let t0 = Instant::now();
    to_vec_f32(logits)?;
    t[6].push(t0.elapsed().as_secs_f64());
    Ok(())
}

/// The `FastDraft` stages of one decoding step.
fn fast_step(s: &DraftSession, cache: &KvCache, ctx: usize, f1: &Tensor<2>, t: &mut [Vec<f64>]) -> eda_core::Result<()> {
    let f = s.fast();
    let t0 = Instant::now();
    let u = f.embed_fc(&[7], f1.clone())?;
    to_vec_f32(u.clone().narrow(1, 0, 1))?;
    t[0].push(t0.elapsed().as_secs_f64());
    let mut c = cache.clone();
    let t0 = Instant::now();
    let a = u.clone() + f.attention(u, &[ctx], &mut c, None)?;
    to_vec_f32(a.clone().narrow(1, 0, 1))?;
    t[1].push(t0.elapsed().as_secs_f64());
    let m = timed(&mut t[2], || f.norm(a.clone()))?;
    let t0 = Instant::now();
    let sh = f.ffn_group(0, m.clone())?;
    to_vec_f32(sh.clone().narrow(1, 0, 1))?;
    t[3].push(t0.elapsed().as_secs_f64());
    let t0 = Instant::now();
    let pr = f.ffn_group(1, m)?;
    to_vec_f32(pr.clone().narrow(1, 0, 1))?;
    t[4].push(t0.elapsed().as_secs_f64());
    let t0 = Instant::now();
    let logits = f.head(a + sh + pr)?;
    to_vec_f32(logits.clone().narrow(1, 0, 1))?;
    t[5].push(t0.elapsed().as_secs_f64());
    let t0 = Instant::now();
    to_vec_f32(logits)?;
    t[6].push(t0.elapsed().as_secs_f64());
    Ok(())
}

fn main() -> eda_core::Result<()> {
    let device = device_from_name("cpu")?;
    let reps = arg("--reps", 15).max(1);
    let ctx = arg("--ctx", 64).max(1);
    let (vocab, hidden, inter, layers, heads, kv) = (49152usize, 576usize, 1536usize, 30usize, 9usize, 3usize);
    let cfg = ModelConfig::llama(vocab, hidden, inter, layers, heads, kv, 2048);
    let mut target = Target::new(CausalLm::new(&cfg, &device), "smollm2-135m-shaped".into());
    let dcfg = EdaDraftConfig::for_target(target.info(), heads, kv, inter, inter);
    let draft = EdaDraft::new(&dcfg, target.embedding_weight(), target.lm_head_weight(), &device)?;
    let counts = draft.param_counts();
    println!(
        "target: {layers} layers, hidden {hidden}, intermediate {inter}, heads {heads}/{kv}, vocab {vocab}; draft: {} parameters without embedding/head, 1 shared + 1 private expert of {inter}",
        counts.draft()
    );
    println!("context {ctx} tokens, median of {reps} interleaved steps, logits read back every step\n");

    let prompt: Vec<u32> = (0..ctx as u32).map(|i| (i * 37 + 11) % vocab as u32).collect();
    target.forward(&prompt)?;
    let feats = Tensor::<2>::random([ctx, hidden], Distribution::Normal(0.0, 1.0), &device);
    let positions: Vec<usize> = (0..ctx).collect();
    let mut sessions: Vec<(String, DraftSession)> = Vec::new();
    for k in [None, Some(16384usize), Some(8192)] {
        let d = match k {
            Some(k) => draft.clone().with_draft_vocab((0..k).map(|i| (i * (vocab / k)) as u32).collect())?,
            None => draft.clone(),
        };
        let mut s = DraftSession::new(d);
        s.forward_masked(&prompt, Some(feats.clone()), &positions, &AttentionMask::causal(0, ctx))?;
        sessions.push((k.map(|k| format!("draft, K = {k}")).unwrap_or_else(|| "draft, full vocab".into()), s));
    }
    // Module-path replay (before): its own cache at the same length.
    let rope = RotaryEmbedding::new(dcfg.head_dim, dcfg.rope_theta, dcfg.max_position_embeddings, &device);
    let mut module_cache = KvCache::new();
    let u0 = Tensor::<3>::random([1, ctx, hidden], Distribution::Normal(0.0, 1.0), &device);
    draft.attention().forward(u0, &rope, &positions, Some(&mut module_cache), None);
    let mut fast_cache = KvCache::new();
    sessions[0].1.fast().attention(
        Tensor::<2>::random([ctx, hidden], Distribution::Normal(0.0, 1.0), &device),
        &positions,
        &mut fast_cache,
        None,
    )?;

    let f1 = Tensor::<2>::random([1, hidden], Distribution::Normal(0.0, 1.0), &device);
    let mut t_target = Vec::new();
    let mut t_module = Vec::new();
    let mut t_draft: Vec<Vec<f64>> = vec![Vec::new(); sessions.len()];
    let mut t_level: Vec<Vec<f64>> = vec![Vec::new(); sessions.len()];
    // One EAGLE-2 tree level: 10 frontier nodes at the same position, each seeing the context
    // and itself.
    let level = 10usize;
    let level_mask = AttentionMask::from_fn(ctx, level, |i, c| c < ctx || c == ctx + i);
    let level_feats = Tensor::<2>::random([level, hidden], Distribution::Normal(0.0, 1.0), &device);
    let level_tokens: Vec<u32> = (0..level as u32).map(|i| 100 + i).collect();
    let mut st_module: Vec<Vec<f64>> = vec![Vec::new(); STAGES.len()];
    let mut st_full: Vec<Vec<f64>> = vec![Vec::new(); STAGES.len()];
    let mut st_k8: Vec<Vec<f64>> = vec![Vec::new(); STAGES.len()];
    let warmup = 2;
    for rep in 0..warmup + reps {
        let t0 = Instant::now();
        let out = target.forward(&[5])?;
        to_vec_f32(out.logits)?;
        let tt = t0.elapsed().as_secs_f64();
        target.truncate_cache(ctx)?;
        let mut td = Vec::new();
        let mut tl = Vec::new();
        for (_, s) in sessions.iter_mut() {
            let t0 = Instant::now();
            let out = s.forward_masked(&[7], Some(f1.clone()), &[ctx], &AttentionMask::causal(ctx, 1))?;
            to_vec_f32(out.logits)?;
            td.push(t0.elapsed().as_secs_f64());
            s.truncate_cache(ctx)?;
            let t0 = Instant::now();
            let out = s.forward_masked(&level_tokens, Some(level_feats.clone()), &vec![ctx; level], &level_mask)?;
            to_vec_f32(out.logits)?;
            tl.push(t0.elapsed().as_secs_f64());
            s.truncate_cache(ctx)?;
        }
        let mut scratch: Vec<Vec<f64>> = vec![Vec::new(); STAGES.len()];
        let t0 = Instant::now();
        module_step(&draft, &rope, &module_cache, ctx, &f1, &mut scratch)?;
        let tm = t0.elapsed().as_secs_f64();
        if rep >= warmup {
            t_target.push(tt);
            t_module.push(tm);
            for (acc, v) in t_draft.iter_mut().zip(td) {
                acc.push(v);
            }
            for (acc, v) in t_level.iter_mut().zip(tl) {
                acc.push(v);
            }
            for (acc, v) in st_module.iter_mut().zip(scratch) {
                acc.extend(v);
            }
            fast_step(&sessions[0].1, &fast_cache, ctx, &f1, &mut st_full)?;
            fast_step(&sessions[2].1, &fast_cache, ctx, &f1, &mut st_k8)?;
        }
    }
    let t = median(t_target);
    println!("| step | ms | c = draft / target | tree level of {level} rows, ms | level / target |");
    println!("|---|---:|---:|---:|---:|");
    println!("| target decode step | {:.2} | | | |", t * 1e3);
    let tm = median(t_module);
    println!("| draft, full vocab, module path (before) | {:.2} | {:.3} | | |", tm * 1e3, tm / t);
    for (((name, _), v), l) in sessions.iter().zip(t_draft).zip(t_level) {
        let (d, l) = (median(v), median(l));
        println!("| {name} (FastDraft) | {:.2} | {:.3} | {:.2} | {:.3} |", d * 1e3, d / t, l * 1e3, l / t);
    }
    println!("\nwhere one draft step's time goes (ms, medians per stage; stage sums differ slightly from the step medians):\n");
    println!("| stage | module path, full vocab (before) | FastDraft, full vocab | FastDraft, K = 8192 |");
    println!("|---|---:|---:|---:|");
    for (i, name) in STAGES.iter().enumerate() {
        println!(
            "| {name} | {:.3} | {:.3} | {:.3} |",
            median(st_module[i].clone()) * 1e3,
            median(st_full[i].clone()) * 1e3,
            median(st_k8[i].clone()) * 1e3
        );
    }
    Ok(())
}
