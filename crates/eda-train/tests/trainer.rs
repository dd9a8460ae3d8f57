mod common;

use common::{cpu, params, synthetic_data, Toy};
use eda_core::EdaError;
use eda_train::checkpoint::list_checkpoints;
use eda_train::{DecayShape, DraftTrainer, NoiseConfig, StepMetrics, TrainConfig, WarmupShape};

const V: usize = 16;
const H: usize = 8;

fn cfg(steps: usize) -> TrainConfig {
    let mut c = TrainConfig {
        steps: Some(steps),
        batch_size: 3,
        grad_accum: 2,
        max_len: 10,
        seed: 7,
        checkpoint_every: 2,
        keep_checkpoints: 2,
        log_every: 0,
        ..TrainConfig::default()
    };
    c.schedule.lr = 1e-2;
    c.schedule.warmup_steps = 2;
    c.schedule.warmup = WarmupShape::Log;
    c.schedule.decay = DecayShape::Cosine;
    c.adamw.weight_decay = 0.01;
    c.noise = NoiseConfig::ReferenceScaled { std: 0.2 };
    c
}

fn trainer(c: TrainConfig, dir: &std::path::Path) -> DraftTrainer<Toy> {
    DraftTrainer::new(c, Toy::new(V, H, 3, &cpu()), &cpu(), dir).unwrap().progress(false)
}

#[test]
fn stage1_loss_decreases_and_metrics_are_written() {
    let data = synthetic_data(12, 12, V, H, 1);
    let dir = tempfile::tempdir().unwrap();
    let mut c = cfg(40);
    c.grad_accum = 1;
    c.batch_size = 4;
    c.schedule.lr = 2e-2;
    c.checkpoint_every = 0;
    let mut t = trainer(c, dir.path());
    let start = std::time::Instant::now();
    let report = t.train(&data).unwrap();
    let secs = start.elapsed().as_secs_f64();
    eprintln!("toy stage-1: {} tokens in {secs:.3}s = {:.0} tokens/s", report.tokens, report.tokens as f64 / secs);
    assert_eq!(report.steps, 40);
    let text = std::fs::read_to_string(dir.path().join("metrics.jsonl")).unwrap();
    let lines: Vec<StepMetrics> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 40);
    let first: f64 = lines[..5].iter().map(|m| m.loss).sum::<f64>() / 5.0;
    let last: f64 = lines[35..].iter().map(|m| m.loss).sum::<f64>() / 5.0;
    assert!(last < 0.7 * first, "loss did not decrease: {first} -> {last}");
    assert!(lines.iter().all(|m| m.tokens_per_s > 0.0));
    assert_eq!(lines[0].lr, 0.0, "log warmup starts at 0");
    assert!(lines[1..].iter().all(|m| m.lr > 0.0));
    // frozen embedding / head excluded from trainable count
    assert_eq!(report.trainable_params, 2 * H * H + H + 2 * H * H);
    assert_eq!(report.total_params, report.trainable_params + 2 * V * H);
    assert!(dir.path().join("draft/toy.safetensors").is_file());
    assert!(dir.path().join("train_config.json").is_file());
    assert_eq!(list_checkpoints(dir.path()).unwrap().last().unwrap().0, 40);
}

#[test]
fn resume_is_bit_identical() {
    let data = synthetic_data(7, 11, V, H, 2);
    let k_total = 7;
    // Uninterrupted.
    let d1 = tempfile::tempdir().unwrap();
    let mut a = trainer(cfg(k_total), d1.path());
    let ra = a.train(&data).unwrap();
    let wa = params(a.model());
    // Interrupted after 3 steps (checkpoint at 2, then at the stop), everything dropped.
    let d2 = tempfile::tempdir().unwrap();
    {
        let mut b = trainer(cfg(k_total), d2.path()).stop_after(3);
        let rb = b.train(&data).unwrap();
        assert_eq!(rb.steps, 3);
        assert!(!d2.path().join("draft").exists(), "unfinished run must not export the draft");
    }
    // Remove the step-3 checkpoint too: resume from step 2.
    std::fs::remove_dir_all(d2.path().join("checkpoints/step-00000003")).unwrap();
    let mut c = trainer(cfg(k_total), d2.path());
    let rc = c.train(&data).unwrap();
    assert_eq!(rc.steps, k_total);
    assert_eq!(rc.final_loss.to_bits(), ra.final_loss.to_bits());
    let wc = params(c.model());
    for ((na, va), (_, vc)) in wa.iter().zip(&wc) {
        let same = va.iter().zip(vc).all(|(x, y)| x.to_bits() == y.to_bits());
        assert!(same, "parameter {na} differs after resume");
    }
    // metrics.jsonl has exactly one line per step after the resume.
    let text = std::fs::read_to_string(d2.path().join("metrics.jsonl")).unwrap();
    let steps: Vec<usize> = text.lines().map(|l| serde_json::from_str::<StepMetrics>(l).unwrap().step).collect();
    assert_eq!(steps, (1..=k_total).collect::<Vec<_>>());
    // Only `keep_checkpoints` are kept.
    assert!(list_checkpoints(d2.path()).unwrap().len() <= 2);
    // A finished run re-trained is a no-op that reports the same step count.
    let mut again = trainer(cfg(k_total), d2.path());
    assert_eq!(again.train(&data).unwrap().steps, k_total);
}

#[test]
fn frozen_group_is_bit_identical_and_trainable_group_changes() {
    let data = synthetic_data(5, 9, V, H, 3);
    let dir = tempfile::tempdir().unwrap();
    let model = Toy::new(V, H, 3, &cpu()).freeze_shared();
    let before = params(&model);
    let mut t = DraftTrainer::new(cfg(4), model, &cpu(), dir.path()).unwrap().progress(false);
    let r = t.train(&data).unwrap();
    assert_eq!(r.trainable_params, 2 * H * H + H + H * H);
    let after = params(t.model());
    for ((name, b), (_, a)) in before.iter().zip(&after) {
        let same = b.iter().zip(a).all(|(x, y)| x.to_bits() == y.to_bits());
        match name.as_str() {
            "shared_w" | "emb" | "lm_head" => assert!(same, "{name} must stay frozen"),
            _ => assert!(!same, "{name} must be trained"),
        }
    }
}

#[test]
fn non_finite_loss_stops_with_step_and_keeps_checkpoint() {
    let mut data = synthetic_data(4, 8, V, H, 4);
    let dir = tempfile::tempdir().unwrap();
    let mut c = cfg(6);
    c.grad_accum = 1;
    c.batch_size = 4;
    c.checkpoint_every = 1;
    c.grad_clip = None;
    c.schedule.lr = 1e30;
    c.schedule.warmup_steps = 0;
    c.schedule.decay = DecayShape::Constant;
    c.noise = NoiseConfig::None;
    let err = trainer(c.clone(), dir.path()).train(&data).unwrap_err();
    let EdaError::NonFinite(msg) = err else { panic!("expected NonFinite, got {err:?}") };
    assert!(msg.contains("step 2"), "{msg}");
    let cks = list_checkpoints(dir.path()).unwrap();
    assert_eq!(cks.last().unwrap().0, 1, "the last good checkpoint (step 1) is kept");

    // Huge feature values overflow in the first step.
    for v in data[0].hidden.iter_mut() {
        *v = 3.0e38;
    }
    let dir2 = tempfile::tempdir().unwrap();
    c.schedule.lr = 1e-3;
    let err = trainer(c, dir2.path()).train(&data).unwrap_err();
    assert!(matches!(&err, EdaError::NonFinite(m) if m.contains("step 1")), "{err:?}");
    assert!(list_checkpoints(dir2.path()).unwrap().is_empty());
}

#[test]
fn input_errors() {
    let dir = tempfile::tempdir().unwrap();
    let mut t = trainer(cfg(2), dir.path());
    assert!(matches!(t.train(&[]), Err(EdaError::EmptyDataset(_))));
    let wrong_h = synthetic_data(2, 6, V, H + 1, 5);
    assert!(matches!(t.train(&wrong_h), Err(EdaError::Mismatch { expected: 8, found: 9, .. })));
    let wrong_v = synthetic_data(2, 6, V + 20, H, 5);
    let e = t.train(&wrong_v).unwrap_err();
    assert!(matches!(e, EdaError::Mismatch { expected: 16, .. }), "{e:?}");
    let mut c = cfg(2);
    c.batch_size = 0;
    assert!(matches!(DraftTrainer::new(c, Toy::new(V, H, 3, &cpu()), &cpu(), dir.path()), Err(EdaError::InvalidConfig(_))));
}
