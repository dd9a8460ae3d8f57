//! Shared body of the half-precision tests (`backend_f16.rs`, `backend_bf16.rs`): one binary per
//! dtype because burn fixes a device's float dtype once per process.

use std::path::PathBuf;

use eda_core::backend::{check_precision, compiled_gpu_backends, device_from_name, precision_of, set_precision, to_vec_f32, Precision};
use eda_core::generate::generate_autoregressive;
use eda_core::{EdaError, GenerationConfig, TargetModel};
use eda_models::Target;

fn fixtures() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures"))
}

/// Half-precision tolerance on logits: a few units in the last place of bf16 (8-bit mantissa)
/// at the logits' scale, accumulated over two layers.
fn tolerance(p: Precision, scale: f32) -> f32 {
    match p {
        Precision::BF16 => 0.06 * scale.max(1.0),
        Precision::F16 => 0.01 * scale.max(1.0),
        Precision::F32 => 1e-3,
    }
}

/// Loads the f32 fixtures on the CPU and on every GPU device set to `p`; compares prefill logits
/// and a 32-token greedy continuation. A device that cannot compute `p` must say so with a typed
/// error (and then nothing else is checked on it).
pub fn check(p: Precision) {
    let cpu = device_from_name("cpu").unwrap();
    let e = check_precision(&cpu, p).unwrap_err();
    assert!(matches!(e, EdaError::Backend { .. }), "{e}");
    let mut computed = 0;
    for b in compiled_gpu_backends() {
        let mut gpu = device_from_name(b.name()).unwrap_or_else(|e| panic!("{b}: {e}"));
        if let Err(e) = check_precision(&gpu, p) {
            assert!(matches!(e, EdaError::Backend { .. }), "{e}");
            assert!(set_precision(&mut gpu, p).is_err());
            eprintln!("{b}: {p} not supported by this device ({e})");
            continue;
        }
        set_precision(&mut gpu, p).unwrap();
        assert_eq!(precision_of(&gpu), p);
        // The dtype is fixed for the process now: asking for another one is a typed error.
        let other = if p == Precision::F16 { Precision::BF16 } else { Precision::F16 };
        assert!(matches!(set_precision(&mut gpu.clone(), other), Err(EdaError::Backend { .. })));
        for name in ["qwen2-tiny", "llama-tiny", "qwen2-tiny-bf16"] {
            let dir = fixtures().join(name);
            let mut c = Target::from_pretrained(&dir, &cpu).unwrap();
            let mut g = Target::from_pretrained(&dir, &gpu).unwrap();
            assert_eq!(precision_of(&g.device()), p);
            let prompt: Vec<u32> = vec![1, 17, 42, 99, 5, 230, 64, 128, 7, 250, 33, 81];
            let cl = to_vec_f32(c.forward(&prompt).unwrap().logits).unwrap();
            let out = g.forward(&prompt).unwrap();
            assert_eq!(out.logits.dtype(), p.float_dtype().into(), "{name}: logits must be computed in {p}");
            let gl = to_vec_f32(out.logits).unwrap();
            let scale = cl.iter().map(|x| x.abs()).fold(0.0, f32::max);
            let err = cl.iter().zip(&gl).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
            assert!(err <= tolerance(p, scale), "{name} {p} on {b}: logits err {err} (scale {scale})");
            let cfg = GenerationConfig { max_new_tokens: 32, ..GenerationConfig::greedy() };
            c.reset_cache();
            g.reset_cache();
            let gc = generate_autoregressive(&mut c, &prompt, &cfg).unwrap();
            let gg = generate_autoregressive(&mut g, &prompt, &cfg).unwrap();
            assert_eq!(gg.tokens, gc.tokens, "{name} {p} on {b}: greedy differs from f32");
            eprintln!("{name} {p} on {b}: logits max abs err {err:.3e} (max |logit| {scale:.2}); 32 greedy tokens identical");
        }
        computed += 1;
    }
    eprintln!("{p}: computed on {computed} device(s)");
}

/// Draft training on a device set to `p` is refused with a typed error (pure half-precision
/// training diverges: measured NaN at step 2 of a tiny f16 draft before the trainer refused it).
pub fn check_training_is_refused(p: Precision) {
    use eda_draft::{EdaDraft, EdaDraftConfig};
    use eda_train::{DraftTrainer, TrainConfig};
    for b in compiled_gpu_backends() {
        let gpu = device_from_name(b.name()).unwrap();
        if precision_of(&gpu) != p {
            continue; // `check` did not set this device to `p` (unsupported there).
        }
        let t = Target::from_pretrained(&fixtures().join("qwen2-tiny"), &gpu).unwrap();
        let draft = EdaDraft::new(&EdaDraftConfig::tiny(256, 64), t.embedding_weight(), t.lm_head_weight(), &gpu).unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let e = DraftTrainer::new(TrainConfig::default(), draft, &gpu, tmp.path()).unwrap_err();
        assert!(matches!(e, EdaError::Backend { .. }) && e.to_string().contains("f32"), "{e}");
        eprintln!("{p} training on {b}: refused ({e})");
    }
}
