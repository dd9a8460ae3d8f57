//! Reduced draft vocabulary (EAGLE-3 style): the restricted soft cross-entropy against
//! hand-computed values, and training the real `EdaDraft` with a `d2t` mapping in both stages.

mod common;

use burn::tensor::{Tensor, TensorData};
use common::{cpu, rand_vec, synthetic_data};
use eda_core::backend::to_vec_f32;
use eda_core::sampling::seeded_rng;
use eda_draft::{EdaDraft, EdaDraftConfig};
use eda_train::checkpoint::param_values;
use eda_train::loss::soft_cross_entropy;
use eda_train::vocab::{coverage, top_k_tokens};
use eda_train::{
    stage1_draft, stage2_draft, DraftTrainer, NoiseConfig, PrivateInit, Stage, Stage2Freeze, StepMetrics, TrainConfig, TrainableDraft,
};

const V: usize = 32;
const H: usize = 16;
const K: usize = 12;

fn matrix(seed: u64) -> Tensor<2> {
    Tensor::from_data(TensorData::new(rand_vec(V * H, 1.0, &mut seeded_rng(seed)), [V, H]), &cpu())
}

fn t3(rows: &[[f32; 3]]) -> Tensor<3> {
    Tensor::from_data(TensorData::new(rows.iter().flatten().copied().collect::<Vec<_>>(), [1, rows.len(), 3]), &cpu())
}

fn scalar(t: Tensor<1>) -> f64 {
    to_vec_f32(t).unwrap()[0] as f64
}

#[test]
fn restricted_soft_cross_entropy_matches_hand_computation() {
    let ln = |x: f32| x.ln();
    // Three positions over a 3-token target vocabulary; the third is masked out.
    let target = t3(&[[0.0, ln(2.0), ln(3.0)], [0.0, ln(4.0), 0.0], [ln(5.0), 0.0, 0.0]]);
    let mask = Tensor::<2>::from_data(TensorData::new(vec![1.0f32, 1.0, 0.0], [1, 3]), &cpu());

    // Draft vocabulary {0, 2}. Position 0: p restricted to {0, 2} is (1/6, 3/6) / (4/6) =
    // (1/4, 3/4); q = softmax(0, ln 3) = (1/4, 3/4); CE = entropy(1/4, 3/4); draft argmax is
    // column 1 = token 2 = the target's argmax. Position 1: the target's argmax (token 1) is
    // outside the draft vocabulary, so it contributes no CE and counts as a miss.
    let draft = Tensor::<3>::from_data(TensorData::new(vec![0.0f32, ln(3.0), ln(3.0), 0.0, 0.0, 0.0], [1, 3, 2]), &cpu());
    let ce = soft_cross_entropy(target.clone(), draft, Some(&[0, 2]), mask.clone());
    let expected = -(0.25f64 * 0.25f64.ln() + 0.75 * 0.75f64.ln());
    assert!((scalar(ce.sum) - expected).abs() < 1e-5, "reduced CE");
    assert_eq!(scalar(ce.correct), 1.0);

    // The same target with a full-vocabulary draft. Position 0: q = (1, 1, e) / (2 + e), CE =
    // ln(2 + e) − p(2)·1 = ln(2 + e) − 1/2. Position 1: q = p = (1, 4, 1) / 6, CE = entropy(p).
    let draft = t3(&[[0.0, 0.0, 1.0], [0.0, ln(4.0), 0.0], [0.0, 0.0, 0.0]]);
    let ce = soft_cross_entropy(target, draft, None, mask);
    let p1 = [1.0f64 / 6.0, 4.0 / 6.0, 1.0 / 6.0];
    let expected = ((2.0f64 + std::f64::consts::E).ln() - 0.5) - p1.iter().map(|p| p * p.ln()).sum::<f64>();
    assert!((scalar(ce.sum) - expected).abs() < 1e-5, "full CE");
    assert_eq!(scalar(ce.correct), 2.0);
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
fn reduced_vocabulary_trains_in_both_stages_and_is_saved() {
    let data = synthetic_data(8, 16, V, H, 21);
    let ids = top_k_tokens(&data, K, &[0], V).unwrap();
    assert_eq!(ids.len(), K);
    assert!(ids.contains(&0) && ids.windows(2).all(|w| w[0] < w[1]));
    assert!(coverage(&data, &ids) > K as f64 / V as f64, "the most frequent tokens cover more than a uniform share");

    // Stage 1: the loss decreases.
    let s1 = tempfile::tempdir().unwrap();
    let c1 = cfg(30);
    let draft =
        stage1_draft(&EdaDraftConfig::tiny(V, H), matrix(1), matrix(2), &c1, &cpu()).unwrap().with_draft_vocab(ids.clone()).unwrap();
    assert_eq!(TrainableDraft::draft_vocab(&draft), Some(ids.as_slice()));
    let hidden = Tensor::<3>::zeros([1, 2, H], &cpu());
    assert_eq!(draft.logits3(hidden.clone()).dims(), [1, 2, K]);
    assert_eq!(draft.target_logits3(hidden).dims(), [1, 2, V]);
    let mut t1 = DraftTrainer::new(c1, draft, &cpu(), s1.path()).unwrap().progress(false);
    let r1 = t1.train(&data).unwrap();
    let text = std::fs::read_to_string(s1.path().join("metrics.jsonl")).unwrap();
    let metrics: Vec<StepMetrics> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let losses: Vec<f64> = metrics.iter().map(|m| m.loss).collect();
    let (first, last) = (losses[..3].iter().sum::<f64>(), losses[losses.len() - 3..].iter().sum::<f64>());
    assert!(last < first, "stage-1 loss did not decrease: {losses:?}");
    assert!(metrics.iter().all(|m| m.cls.is_finite() && m.cls >= 0.0 && (0.0..=1.0).contains(&m.top1)));

    // The saved draft carries its mapping.
    let dir = s1.path().join("draft");
    let cfg_json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    assert_eq!(cfg_json["draft_vocab_size"], K);
    let loaded = EdaDraft::load(&dir, matrix(1), matrix(2), &cpu()).unwrap();
    assert_eq!(loaded.draft_vocab(), Some(ids.as_slice()));

    // Stage 2 with a different ("fine-tuned") LM head: the mapping is kept, its rows come from
    // the new head, and everything but the private group stays bit-identical.
    let mut c2 = cfg(5);
    c2.stage = Stage::Stage2;
    c2.private_init = PrivateInit::Random;
    c2.stage2_freeze = Stage2Freeze::SharedGroup;
    let d2 = stage2_draft(&dir, matrix(1), matrix(3), &c2, &cpu()).unwrap();
    assert_eq!(d2.draft_vocab(), Some(ids.as_slice()));
    let before = param_values(&d2, false).unwrap();
    let head3 = to_vec_f32(matrix(3)).unwrap();
    let rows3: Vec<f32> = ids.iter().flat_map(|&t| head3[t as usize * H..(t as usize + 1) * H].to_vec()).collect();
    assert_eq!(before["draft_head"].1, rows3, "the reduced head is the fine-tuned head's d2t rows");
    let out2 = tempfile::tempdir().unwrap();
    let mut t2 = DraftTrainer::new(c2, d2, &cpu(), out2.path()).unwrap().progress(false);
    let r2 = t2.train(&data[..6]).unwrap();
    assert!(r2.trainable_params < r1.trainable_params);
    let after = param_values(t2.model(), false).unwrap();
    let mut private_changed = 0;
    for (k, (_, b)) in &before {
        let same = after[k].1.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits());
        if k.contains("private") {
            private_changed += usize::from(!same);
        } else {
            assert!(same, "frozen parameter {k} changed in stage 2");
        }
    }
    assert!(private_changed >= 3, "private weights did not change ({private_changed})");
    let final_draft = EdaDraft::load(&out2.path().join("draft"), matrix(1), matrix(3), &cpu()).unwrap();
    assert_eq!(final_draft.draft_vocab(), Some(ids.as_slice()));
}
