//! Resume checks what it resumes; training refuses data that would train on nothing (issue 14).

mod common;

use common::{cpu, params, synthetic_data, Toy};
use eda_core::EdaError;
use eda_train::checkpoint::{checkpoint_dir, list_checkpoints, TrainState};
use eda_train::{DraftTrainer, NoiseConfig, TrainConfig};

const V: usize = 16;
const H: usize = 8;

fn cfg(steps: usize) -> TrainConfig {
    let mut c = TrainConfig {
        steps: Some(steps),
        batch_size: 2,
        max_len: 10,
        seed: 3,
        checkpoint_every: 2,
        keep_checkpoints: 3,
        log_every: 0,
        ..TrainConfig::default()
    };
    c.schedule.lr = 1e-2;
    c.noise = NoiseConfig::None;
    c
}

fn trainer(c: TrainConfig, dir: &std::path::Path) -> DraftTrainer<Toy> {
    DraftTrainer::new(c, Toy::new(V, H, 3, &cpu()), &cpu(), dir).unwrap().progress(false)
}

fn mismatch(r: eda_core::Result<eda_train::TrainReport>) -> Vec<String> {
    match r {
        Err(EdaError::ResumeMismatch { differences, .. }) => differences,
        other => panic!("expected ResumeMismatch, got {other:?}"),
    }
}

#[test]
fn changed_settings_data_or_frozen_weights_are_refused_on_resume() {
    let data = synthetic_data(6, 9, V, H, 1);
    let dir = tempfile::tempdir().unwrap();
    trainer(cfg(6), dir.path()).stop_after(2).train(&data).unwrap();

    let mut lr = cfg(6);
    lr.schedule.lr = 5e-2;
    assert!(mismatch(trainer(lr, dir.path()).train(&data)).iter().any(|d| d.starts_with("schedule.lr")));
    let seed = TrainConfig { seed: 4, ..cfg(6) };
    assert!(mismatch(trainer(seed, dir.path()).train(&data)).iter().any(|d| d.starts_with("seed")));
    let len = TrainConfig { max_len: 8, ..cfg(6) };
    assert!(mismatch(trainer(len, dir.path()).train(&data)).iter().any(|d| d.starts_with("max_len")));
    assert!(mismatch(trainer(cfg(9), dir.path()).train(&data)).iter().any(|d| d.starts_with("steps")));
    let other_data = synthetic_data(6, 9, V, H, 2);
    assert!(mismatch(trainer(cfg(6), dir.path()).train(&other_data)).iter().any(|d| d.contains("training data")));
    // Frozen weights are rebuilt from their sources on resume, so a changed source (here: the
    // shared group now frozen at its initial values) must be noticed.
    let mut other_frozen =
        DraftTrainer::new(cfg(6), Toy::new(V, H, 3, &cpu()).freeze_shared(), &cpu(), dir.path()).unwrap().progress(false);
    assert!(mismatch(other_frozen.train(&data)).iter().any(|d| d.contains("frozen parameters")));
    // The refused attempts changed nothing on disk: the recorded config is still the original.
    let recorded: TrainConfig = eda_core::io::read_json(&dir.path().join("train_config.json")).unwrap();
    assert_eq!(recorded, cfg(6));

    // Checkpoint cadence does not change the result and may differ.
    let cadence = TrainConfig { checkpoint_every: 1, log_every: 5, ..cfg(6) };
    assert_eq!(trainer(cadence, dir.path()).stop_after(3).train(&data).unwrap().steps, 3);

    // With the explicit opt-in, a changed learning rate is accepted and recorded.
    let mut lr = cfg(6);
    lr.schedule.lr = 5e-2;
    let r = trainer(lr, dir.path()).allow_changed_inputs(true).train(&data).unwrap();
    assert_eq!(r.steps, 6);
    let last = list_checkpoints(dir.path()).unwrap().pop().unwrap().1;
    let state: TrainState = eda_core::io::read_json(&last.join("state.json")).unwrap();
    assert!(state.accepted_changes.iter().any(|d| d.starts_with("schedule.lr")), "{:?}", state.accepted_changes);

    // A finished run asked for more steps is refused instead of returning the old draft.
    assert!(mismatch(trainer(cfg(8), dir.path()).train(&data)).iter().any(|d| d.starts_with("steps")));
}

#[test]
fn a_corrupt_latest_checkpoint_falls_back_to_the_previous_one() {
    let data = synthetic_data(6, 9, V, H, 5);
    let whole = tempfile::tempdir().unwrap();
    let mut a = trainer(cfg(6), whole.path());
    let ra = a.train(&data).unwrap();

    let dir = tempfile::tempdir().unwrap();
    trainer(cfg(6), dir.path()).stop_after(4).train(&data).unwrap();
    let newest = checkpoint_dir(dir.path(), 4);
    let w = newest.join("weights.safetensors");
    let bytes = std::fs::read(&w).unwrap();
    std::fs::write(&w, &bytes[..bytes.len() / 3]).unwrap();
    let mut b = trainer(cfg(6), dir.path());
    let rb = b.train(&data).unwrap();
    assert_eq!(rb.steps, 6);
    assert_eq!(rb.final_loss.to_bits(), ra.final_loss.to_bits(), "resumed from step 2: same result as uninterrupted");
    for ((n, x), (_, y)) in params(a.model()).iter().zip(&params(b.model())) {
        assert!(x.iter().zip(y).all(|(p, q)| p.to_bits() == q.to_bits()), "{n} differs");
    }
    assert!(dir.path().join("checkpoints/step-00000004.corrupt").is_dir(), "the corrupt checkpoint is set aside");

    // When every checkpoint is unreadable, the error is reported (the run is not silently restarted).
    let dir = tempfile::tempdir().unwrap();
    trainer(cfg(6), dir.path()).stop_after(2).train(&data).unwrap();
    std::fs::write(checkpoint_dir(dir.path(), 2).join("optimizer.safetensors"), b"junk").unwrap();
    assert!(matches!(trainer(cfg(6), dir.path()).train(&data), Err(EdaError::Safetensors { .. })));
}

#[test]
fn max_len_shorter_than_the_prompts_is_an_error_not_a_silent_no_op() {
    let mut data = synthetic_data(4, 12, V, H, 6);
    for s in &mut data {
        // a 7-token prompt, then the response
        s.loss_mask.iter_mut().enumerate().for_each(|(t, m)| *m = u8::from(t >= 7));
    }
    let dir = tempfile::tempdir().unwrap();
    let short = TrainConfig { max_len: 6, ..cfg(2) };
    match trainer(short, dir.path()).train(&data) {
        Err(EdaError::EmptyDataset(m)) => assert!(m.contains("max_len = 6") && m.contains("position 7"), "{m}"),
        other => panic!("expected EmptyDataset, got {other:?}"),
    }
    assert!(list_checkpoints(dir.path()).unwrap().is_empty());
    // Position 7 trains once the window reaches token 8 (it predicts token 8).
    let enough = TrainConfig { max_len: 9, ..cfg(2) };
    let r = trainer(enough, tempfile::tempdir().unwrap().path()).train(&data).unwrap();
    assert!(r.final_loss > 0.0);
}

#[test]
fn duplicate_sample_ids_are_refused() {
    let mut data = synthetic_data(4, 8, V, H, 7);
    data[3].id = data[1].id.clone();
    let dir = tempfile::tempdir().unwrap();
    assert!(matches!(trainer(cfg(2), dir.path()).train(&data), Err(EdaError::DuplicateId { .. })));
}

#[test]
fn unknown_config_keys_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("c.json");
    std::fs::write(&p, r#"{"steps": 3, "learning_rate": 0.1}"#).unwrap();
    assert!(matches!(TrainConfig::from_json_file(&p), Err(EdaError::Json { message, .. }) if message.contains("learning_rate")));
    std::fs::write(&p, r#"{"steps": 3, "schedule": {"lr": 0.1, "warmup": "Linear", "warmpu_steps": 3}}"#).unwrap();
    assert!(matches!(TrainConfig::from_json_file(&p), Err(EdaError::Json { .. })));
    std::fs::write(&p, r#"{"steps": 3, "schedule": {"lr": 0.1}}"#).unwrap();
    assert_eq!(TrainConfig::from_json_file(&p).unwrap().schedule.lr, 0.1);
}
