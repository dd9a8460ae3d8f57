//! Training the real `EdaDraft` (tiny config): stage 1 learns, stage 2 touches only the private group.

mod common;

use burn::tensor::{Tensor, TensorData};
use common::{cpu, rand_vec, synthetic_data};
use eda_core::sampling::seeded_rng;
use eda_draft::{EdaDraft, EdaDraftConfig};
use eda_train::checkpoint::param_values;
use eda_train::{stage1_draft, stage2_draft, DraftTrainer, NoiseConfig, PrivateInit, Stage, Stage2Freeze, TrainConfig};

const V: usize = 32;
const H: usize = 16;

fn matrix(seed: u64) -> Tensor<2> {
    Tensor::from_data(TensorData::new(rand_vec(V * H, 1.0, &mut seeded_rng(seed)), [V, H]), &cpu())
}

fn cfg(steps: usize) -> TrainConfig {
    let mut c = TrainConfig {
        steps: Some(steps),
        batch_size: 4,
        grad_accum: 1,
        max_len: 16,
        seed: 11,
        checkpoint_every: 0,
        log_every: 0,
        ..TrainConfig::default()
    };
    c.schedule.lr = 3e-3;
    c.noise = NoiseConfig::Uniform { amplitude: 0.1 };
    c
}

#[test]
fn stage1_then_stage2_trains_only_the_private_group() {
    let data = synthetic_data(8, 16, V, H, 21);
    let dcfg = EdaDraftConfig::tiny(V, H);
    let s1 = tempfile::tempdir().unwrap();
    let c1 = cfg(30);
    let draft = stage1_draft(&dcfg, matrix(1), matrix(2), &c1, &cpu()).unwrap();
    let mut t1 = DraftTrainer::new(c1, draft, &cpu(), s1.path()).unwrap().progress(false);
    let start = std::time::Instant::now();
    let r1 = t1.train(&data).unwrap();
    let secs = start.elapsed().as_secs_f64();
    eprintln!("EdaDraft tiny (V={V}, H={H}) stage 1: {} tokens in {secs:.3}s = {:.0} tokens/s", r1.tokens, r1.tokens as f64 / secs);
    let text = std::fs::read_to_string(s1.path().join("metrics.jsonl")).unwrap();
    let losses: Vec<f64> = text.lines().map(|l| serde_json::from_str::<eda_train::StepMetrics>(l).unwrap().loss).collect();
    let (first, last) = (losses[..3].iter().sum::<f64>(), losses[losses.len() - 3..].iter().sum::<f64>());
    assert!(last < first, "stage-1 loss did not decrease: {losses:?}");
    assert!(s1.path().join("draft").is_dir());

    // Stage 2 with a different ("fine-tuned") LM head.
    let mut c2 = cfg(5);
    c2.stage = Stage::Stage2;
    c2.private_init = PrivateInit::Random;
    c2.stage2_freeze = Stage2Freeze::SharedGroup;
    let stage1 = EdaDraft::load(&s1.path().join("draft"), matrix(1), matrix(2), &cpu()).unwrap();
    let d2 = stage2_draft(&s1.path().join("draft"), matrix(1), matrix(3), &c2, &cpu()).unwrap();
    let before = param_values(&d2, false).unwrap();
    let s1_vals = param_values(&stage1, false).unwrap();
    assert_eq!(before.keys().collect::<Vec<_>>(), s1_vals.keys().collect::<Vec<_>>());
    let private_reinit = before.iter().filter(|(k, _)| k.contains("private")).any(|(k, v)| v != &s1_vals[k.as_str()]);
    assert!(private_reinit, "private group must be re-initialised");

    let out2 = tempfile::tempdir().unwrap();
    let mut t2 = DraftTrainer::new(c2, d2, &cpu(), out2.path()).unwrap().progress(false);
    let r2 = t2.train(&data.iter().take(6).cloned().collect::<Vec<_>>()).unwrap();
    assert!(r2.trainable_params < r1.trainable_params);
    let after = param_values(t2.model(), false).unwrap();
    let mut private_changed = 0;
    for (k, (_, b)) in &before {
        let a = &after[k].1;
        let same = a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits());
        if k.contains("private") {
            private_changed += usize::from(!same);
        } else {
            assert!(same, "shared/frozen parameter {k} changed in stage 2");
            if k.contains("lm_head") {
                let head3 = eda_core::backend::to_vec_f32(matrix(3)).unwrap();
                assert_eq!(a, &head3, "stage 2 uses the fine-tuned LM head");
            }
        }
    }
    // The experts' gate/up/down change; a 1-expert router gets no gradient.
    assert!(private_changed >= 3, "private weights did not change ({private_changed})");
}

#[test]
fn stage2_reference_plan_freezes_attention_and_shared_experts_bit_for_bit() {
    let data = synthetic_data(8, 16, V, H, 22);
    let dcfg = EdaDraftConfig::tiny(V, H);
    // A stage-1 draft on disk (its training is tested above; bit-identity does not need it).
    let s1 = tempfile::tempdir().unwrap();
    stage1_draft(&dcfg, matrix(1), matrix(2), &cfg(1), &cpu()).unwrap().save(s1.path()).unwrap();

    let mut c2 = cfg(6);
    c2.stage = Stage::Stage2;
    c2.private_init = PrivateInit::FromStage1;
    c2.stage2_freeze = Stage2Freeze::Reference;
    let d2 = stage2_draft(s1.path(), matrix(1), matrix(3), &c2, &cpu()).unwrap();
    let before = param_values(&d2, false).unwrap();
    let out = tempfile::tempdir().unwrap();
    let mut t2 = DraftTrainer::new(c2, d2, &cpu(), out.path()).unwrap().progress(false);
    let r2 = t2.train(&data).unwrap();
    assert_eq!(r2.steps, 6);
    let after = param_values(t2.model(), false).unwrap();
    assert_eq!(before.keys().collect::<Vec<_>>(), after.keys().collect::<Vec<_>>());

    // The reference plan (docs/method.md §2.5): `fc` and the private group train; attention, its
    // norm, the shared experts and router, the embedding and the LM head stay bit-identical.
    let (mut frozen, mut fc_changed, mut private_changed) = (Vec::new(), 0, 0);
    for (k, (_, b)) in &before {
        let a = &after[k].1;
        let same = a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits());
        if k.starts_with("fc.") {
            fc_changed += usize::from(!same);
        } else if k.contains("private") {
            private_changed += usize::from(!same);
        } else {
            assert!(same, "frozen parameter {k} changed in stage 2 (reference plan)");
            frozen.push(k.clone());
        }
    }
    // Every frozen group is present, so the bit-identity above covers it.
    for group in ["self_attn", "post_attention_layernorm", "shared", "embedding", "lm_head"] {
        assert!(frozen.iter().any(|k| k.contains(group)), "no frozen parameter of {group} in {frozen:?}");
    }
    assert_eq!(fc_changed, 2, "fc weight and bias train under the reference plan");
    assert!(private_changed >= 3, "private weights did not change ({private_changed})");
    // Trainable: fc plus the private group, more than the shared-group plan's private group only.
    let shared_plan = eda_draft::ParamCounts::for_config(&dcfg, eda_draft::FreezePlan::SHARED).trainable;
    assert_eq!(r2.trainable_params, shared_plan + 2 * H * H + H);
}

#[test]
fn lora_on_the_draft_trains_only_adapters_and_saves_the_merged_draft() {
    use eda_core::DraftModel;
    use eda_models::{LoraModule, LoraSpec};
    let data = synthetic_data(8, 16, V, H, 23);
    let dcfg = EdaDraftConfig::tiny(V, H);
    let s1 = tempfile::tempdir().unwrap();
    stage1_draft(&dcfg, matrix(1), matrix(2), &cfg(1), &cpu()).unwrap().save(s1.path()).unwrap();
    let stage1 = EdaDraft::load(s1.path(), matrix(1), matrix(3), &cpu()).unwrap();

    let mut c = cfg(12);
    c.stage = Stage::Stage2;
    c.lora = Some(LoraSpec { rank: 2, alpha: 4.0, modules: LoraModule::ALL.to_vec() });
    let d = stage2_draft(s1.path(), matrix(1), matrix(3), &c, &cpu()).unwrap();
    let lora = d.lora_params();
    // q, k, v, o of the attention plus gate/up/down of the shared and the private expert.
    assert!(lora > 0);
    assert_eq!(d.param_counts().trainable, lora);
    // B = 0: the adapted draft starts as the stage-1 draft (its private group is kept, not re-drawn).
    let feats = Tensor::<2>::from_data(TensorData::new(rand_vec(3 * H, 1.0, &mut seeded_rng(5)), [3, H]), &cpu());
    let run = |m: EdaDraft| {
        let mut s = eda_draft::DraftSession::new(m);
        eda_core::backend::to_vec_f32(
            s.forward_masked(&[1, 2, 3], Some(feats.clone()), &[0, 1, 2], &eda_core::AttentionMask::causal(0, 3)).unwrap().logits,
        )
        .unwrap()
    };
    assert_eq!(run(d.clone()), run(stage1.clone()));

    let out = tempfile::tempdir().unwrap();
    let mut t = DraftTrainer::new(c, d, &cpu(), out.path()).unwrap().progress(false);
    let r = t.train(&data).unwrap();
    assert_eq!(r.trainable_params, lora, "only the adapters are trainable");
    // What trained lives in the adapters; every stage-1 weight is bit-identical until the merge.
    let before = param_values(&stage1, false).unwrap();
    let after = param_values(t.model(), false).unwrap();
    for (k, (_, b)) in &before {
        let a = &after[k].1;
        assert!(a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits()), "base weight {k} changed under LoRA");
    }
    let adapters = after.keys().filter(|k| !before.contains_key(*k)).count();
    assert!(adapters >= 14, "adapter tensors: {adapters}");
    // The saved draft is plain (no adapters), differs from stage 1 where adapters were, and
    // computes what the trained adapted draft computes.
    let saved = EdaDraft::load(&out.path().join("draft"), matrix(1), matrix(3), &cpu()).unwrap();
    assert_eq!(saved.lora_params(), 0);
    let merged = param_values(&saved, false).unwrap();
    for (k, (_, b)) in &before {
        let same = merged[k].1.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits());
        let adapted = k.contains("self_attn") && !k.contains("norm") || k.contains("experts");
        assert_eq!(same, !adapted, "{k}: adapted projections change when merged, nothing else does");
    }
    let (trained, reloaded) = (run(t.model().clone()), run(saved));
    let worst = trained.iter().zip(&reloaded).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    assert!(worst < 1e-4, "merged draft differs from the adapted one by {worst}");
}

#[test]
fn stage2_without_freezing_is_full_fine_tuning_of_the_stage1_draft() {
    let dcfg = EdaDraftConfig::tiny(V, H);
    let s1 = tempfile::tempdir().unwrap();
    let c1 = cfg(1);
    let fresh = stage1_draft(&dcfg, matrix(1), matrix(2), &c1, &cpu()).unwrap();
    let stage1_trainable = fresh.param_counts().trainable;
    fresh.save(s1.path()).unwrap();
    let mut c = cfg(4);
    c.stage = Stage::Stage2;
    c.stage2_freeze = Stage2Freeze::None;
    c.private_init = PrivateInit::FromStage1;
    let d = stage2_draft(s1.path(), matrix(1), matrix(3), &c, &cpu()).unwrap();
    assert_eq!(d.param_counts().trainable, stage1_trainable, "every draft weight trains");
    let stage1 = param_values(&EdaDraft::load(s1.path(), matrix(1), matrix(3), &cpu()).unwrap(), false).unwrap();
    assert_eq!(param_values(&d, false).unwrap(), stage1, "and starts where stage 1 ended");
    let out = tempfile::tempdir().unwrap();
    let mut t = DraftTrainer::new(c, d, &cpu(), out.path()).unwrap().progress(false);
    assert_eq!(t.train(&synthetic_data(8, 16, V, H, 24)).unwrap().trainable_params, stage1_trainable);
    let after = param_values(t.model(), false).unwrap();
    for group in ["fc.", "self_attn", "shared", "private"] {
        assert!(stage1.iter().any(|(k, v)| k.contains(group) && after[k] != *v), "{group} did not train");
    }
}
