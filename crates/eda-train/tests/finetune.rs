//! LoRA fine-tuning of a target: it learns, only adapters move, an interrupted run resumes
//! bit-identically, and mismatched resumes are refused.

use eda_core::backend::device_from_name;
use eda_models::{CausalLm, LoraModule, LoraSpec};
use eda_train::checkpoint::param_values;
use eda_train::finetune::{mean_nll, FinetuneConfig, LmExample, LoraFinetuner};

fn load(name: &str) -> CausalLm {
    let dir = std::path::PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures")).join(name);
    eda_models::load_pretrained(&dir, &device_from_name("cpu").unwrap()).unwrap().1
}

/// A real (tiny) checkpoint, the same on every call.
fn base() -> CausalLm {
    load("qwen2-tiny")
}

/// "Prompts" of random-ish tokens followed by a fixed answer pattern the base does not know.
fn data(n: usize) -> Vec<LmExample> {
    (0..n)
        .map(|i| {
            let prompt: Vec<u32> = (0..4).map(|k| ((i * 7 + k * 3) % 20) as u32 + 1).collect();
            let answer: Vec<u32> = (0..6).map(|k| 130 + ((prompt[0] as usize + k) % 10) as u32).collect();
            let mask = [vec![0u8; prompt.len()], vec![1u8; answer.len()]].concat();
            LmExample::new(format!("ex{i}"), [prompt, answer].concat(), mask).unwrap()
        })
        .collect()
}

fn cfg() -> FinetuneConfig {
    FinetuneConfig {
        lora: LoraSpec { rank: 4, alpha: 8.0, modules: vec![LoraModule::Q, LoraModule::V, LoraModule::Up, LoraModule::Down] },
        steps: 12,
        batch_size: 3,
        lr: 2e-2,
        warmup_steps: 2,
        checkpoint_every: 4,
        ..FinetuneConfig::default()
    }
}

#[test]
fn lora_finetuning_learns_and_moves_only_adapters() {
    let device = device_from_name("cpu").unwrap();
    let train = data(10);
    let before = mean_nll(&base(), &train, 4).unwrap();
    let out = tempfile::tempdir().unwrap();
    let mut tuner = LoraFinetuner::new(FinetuneConfig { steps: 40, ..cfg() }, base(), &device, out.path()).unwrap();
    let report = tuner.train(&train).unwrap();
    assert_eq!(report.steps, 40);
    assert!(report.final_loss < report.initial_loss, "{report:?}");
    assert_eq!(report.optimizer_state_bytes, 8 * report.trainable_params);
    assert!(report.trainable_params < report.base_params / 2);

    // The base weights inside the adapted model are bit-identical to the base.
    let adapted = param_values(&tuner.adapted_model(), false).unwrap();
    let original = param_values(&base(), false).unwrap();
    for (name, v) in &original {
        assert_eq!(adapted.get(name), Some(v), "{name} moved");
    }
    let merged = tuner.into_merged();
    let after = mean_nll(&merged, &train, 4).unwrap();
    assert_eq!(after.tokens, before.tokens);
    assert!(after.nll < 0.7 * before.nll, "nll {} -> {}", before.nll, after.nll);
}

#[test]
fn an_interrupted_run_resumes_bit_identically() {
    let device = device_from_name("cpu").unwrap();
    let train = data(7);
    let straight_dir = tempfile::tempdir().unwrap();
    let mut straight = LoraFinetuner::new(cfg(), base(), &device, straight_dir.path()).unwrap();
    let full = straight.train(&train).unwrap();
    let straight = param_values(&straight.into_merged(), false).unwrap();

    let dir = tempfile::tempdir().unwrap();
    // Killed after step 6: the newest checkpoint is step 4.
    LoraFinetuner::new(cfg(), base(), &device, dir.path()).unwrap().stop_after(6).train(&train).unwrap();
    let mut resumed = LoraFinetuner::new(cfg(), base(), &device, dir.path()).unwrap();
    let report = resumed.train(&train).unwrap();
    assert_eq!(report.resumed_from, 4);
    assert_eq!(report.steps, 12);
    assert_eq!(report.final_loss, full.final_loss);
    assert_eq!(param_values(&resumed.into_merged(), false).unwrap(), straight, "resumed run differs from the straight one");

    // Other settings, other data or another base are refused on resume.
    let other = FinetuneConfig { lr: 1e-3, ..cfg() };
    assert!(LoraFinetuner::new(other, base(), &device, dir.path()).is_err());
    let mut t = LoraFinetuner::new(cfg(), base(), &device, dir.path()).unwrap();
    assert!(t.train(&data(8)).is_err());
    assert!(LoraFinetuner::new(cfg(), load("llama-tiny"), &device, dir.path()).is_err());
}

#[test]
fn bad_inputs_are_typed_errors() {
    let device = device_from_name("cpu").unwrap();
    assert!(LmExample::new("a", vec![1, 2], vec![0]).is_err());
    assert!(LmExample::new("a", vec![1, 2, 3], vec![1, 0, 0]).is_err(), "only the first token is masked: nothing to learn");
    let dir = tempfile::tempdir().unwrap();
    let mut t = LoraFinetuner::new(cfg(), base(), &device, dir.path()).unwrap();
    assert!(matches!(t.train(&[]), Err(eda_core::EdaError::EmptyDataset(_))));
    assert!(LoraFinetuner::new(FinetuneConfig { steps: 0, ..cfg() }, base(), &device, dir.path()).is_err());
    assert!(mean_nll(&base(), &[], 2).is_err());
}
