//! Unit tests of the shared types: masks, trees, sampling, metrics, shards, atomic writes.

use eda_core::data::{read_shard, shard_from_bytes, write_shard, FeatureDType, FeatureSample};
use eda_core::sampling::{probabilities, sample, seeded_rng, top_p_filter};
use eda_core::{AttentionMask, DecodeMetrics, EdaError, GenerationConfig, SampleSelector, Selection, TokenTree};

#[test]
fn tree_mask_sees_only_ancestors_and_cache() {
    // 0 -> {1, 2}, 2 -> 3, 1 -> 4
    let t = TokenTree::new(vec![5, 6, 7, 8, 9], vec![None, Some(0), Some(0), Some(2), Some(1)]).unwrap();
    let m = AttentionMask::tree(3, &t);
    assert_eq!(m.total(), 8);
    for i in 0..5 {
        for j in 0..3 {
            assert!(m.allowed(i, j), "node {i} must see cached position {j}");
        }
    }
    let path = t.path_to(3);
    assert_eq!(path, vec![0, 2, 3]);
    for j in 0..5 {
        assert_eq!(m.allowed(3, 3 + j), path.contains(&j), "node 3 vs node {j}");
    }
    assert_eq!(t.depths(), vec![0, 1, 1, 2, 2]);
    assert_eq!(t.leaves(), vec![3, 4]);
    assert!(!AttentionMask::tree(3, &t).is_causal());
    assert!(AttentionMask::tree(3, &TokenTree::chain(vec![1, 2, 3]).unwrap()).is_causal());
}

#[test]
fn tree_rejects_bad_parents() {
    assert!(matches!(TokenTree::new(vec![1, 2], vec![None, Some(1)]), Err(EdaError::InvalidArgument(_))));
    assert!(matches!(TokenTree::new(vec![1, 2], vec![None]), Err(EdaError::Mismatch { .. })));
    assert!(TokenTree::new(vec![], vec![]).is_err());
    assert!(AttentionMask::from_table(1, 2, vec![true; 5]).is_err());
}

#[test]
fn top_p_keeps_smallest_nucleus() {
    let mut p = vec![0.5, 0.3, 0.15, 0.05];
    top_p_filter(&mut p, 0.8);
    assert!((p[0] - 0.625).abs() < 1e-6 && (p[1] - 0.375).abs() < 1e-6);
    assert_eq!(&p[2..], &[0.0, 0.0]);
}

#[test]
fn sampling_frequencies_follow_probabilities() {
    let cfg = GenerationConfig::sampling(1.0, 0);
    let logits = [0.0f32, (2.0f32).ln(), (5.0f32).ln()];
    let p = probabilities(&logits, &cfg).unwrap();
    let mut rng = seeded_rng(7);
    let mut counts = [0usize; 3];
    let n = 40_000;
    for _ in 0..n {
        counts[sample(&p, &mut rng)] += 1;
    }
    // chi-square with 2 degrees of freedom; 13.8 is the 0.001 critical value.
    let chi2: f64 = (0..3)
        .map(|i| {
            let e = p[i] as f64 * n as f64;
            (counts[i] as f64 - e).powi(2) / e
        })
        .sum();
    assert!(chi2 < 13.8, "chi2 = {chi2}, counts = {counts:?}");
    assert!(probabilities(&[f32::NAN, 0.0], &cfg).is_err());
}

#[test]
fn metrics_and_predicted_speedup() {
    let mut a = DecodeMetrics {
        new_tokens: 10,
        target_forwards: 4,
        proposed_per_depth: vec![4, 3],
        accepted_per_depth: vec![3, 2],
        ..Default::default()
    };
    let b = DecodeMetrics {
        new_tokens: 2,
        target_forwards: 2,
        proposed_per_depth: vec![2, 1, 1],
        accepted_per_depth: vec![0, 0, 0],
        ..Default::default()
    };
    a.merge(&b);
    assert_eq!(a.tau(), 2.0);
    assert_eq!(a.proposed_per_depth, vec![6, 4, 1]);
    assert!((a.alpha() - 5.0 / 11.0).abs() < 1e-12);
    assert!((eda_core::predicted_speedup(1.0, 4, 0.0) - 5.0).abs() < 1e-12);
    assert!((eda_core::predicted_speedup(0.0, 4, 0.1) - 1.0 / 1.4).abs() < 1e-12);
}

fn feature_sample(id: &str, len: usize, h: usize, offset: f32) -> FeatureSample {
    let hidden = (0..len * h).map(|i| i as f32 * 0.25 + offset).collect();
    let mask = (0..len).map(|i| (i % 2) as u8).collect();
    FeatureSample::new(id, (0..len as u32).collect(), hidden, h, mask).unwrap()
}

#[test]
fn shards_round_trip_f32_and_bf16() {
    let dir = tempfile::tempdir().unwrap();
    let samples = vec![feature_sample("a", 3, 4, 0.0), feature_sample("b", 5, 4, 1.0)];
    let p = dir.path().join("s.safetensors");
    write_shard(&p, &samples, FeatureDType::F32).unwrap();
    assert_eq!(read_shard(&p).unwrap(), samples);
    write_shard(&p, &samples, FeatureDType::BF16).unwrap();
    let back = read_shard(&p).unwrap();
    assert_eq!(back[1].id, "b");
    for (x, y) in back[1].hidden.iter().zip(&samples[1].hidden) {
        assert!((x - y).abs() <= y.abs() * 0.01 + 1e-6);
    }
    // No temporary files are left behind by the atomic write.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[test]
fn shard_errors_are_typed() {
    let dir = tempfile::tempdir().unwrap();
    assert!(matches!(read_shard(&dir.path().join("missing")), Err(EdaError::Io { .. })));
    assert!(matches!(shard_from_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json", "x".as_ref()), Err(EdaError::Safetensors { .. })));
    assert!(matches!(write_shard(&dir.path().join("e"), &[], FeatureDType::F32), Err(EdaError::EmptyDataset(_))));
    let bad = FeatureSample { id: "n".into(), input_ids: vec![1], hidden: vec![f32::NAN], hidden_size: 1, loss_mask: vec![1] };
    assert!(matches!(bad.validate(), Err(EdaError::NonFinite(_))));
    let mixed = vec![feature_sample("a", 2, 4, 0.0), feature_sample("b", 2, 3, 0.0)];
    assert!(matches!(write_shard(&dir.path().join("m"), &mixed, FeatureDType::F32), Err(EdaError::Mismatch { .. })));
}

struct ByLength;
impl SampleSelector for ByLength {
    fn name(&self) -> &str {
        "length"
    }
    fn score(&self, _i: usize, s: &FeatureSample) -> eda_core::Result<f64> {
        Ok(s.len() as f64)
    }
}

#[test]
fn default_selection_is_ranked_and_deterministic() {
    let samples = vec![
        feature_sample("a", 2, 1, 0.0),
        feature_sample("b", 4, 1, 0.0),
        feature_sample("c", 4, 1, 0.0),
        feature_sample("d", 1, 1, 0.0),
    ];
    let Selection { indices, scores } = ByLength.select(&samples, 0.5).unwrap();
    assert_eq!(indices, vec![1, 2]);
    assert_eq!(scores, vec![2.0, 4.0, 4.0, 1.0]);
    assert_eq!(ByLength.select(&samples, 0.01).unwrap().indices, vec![1]);
    assert!(ByLength.select(&samples, 0.0).is_err());
    assert!(ByLength.select(&[], 0.5).is_err());
}

#[test]
fn atomic_write_replaces_whole_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("x.json");
    eda_core::io::write_json(&p, &vec![1, 2, 3]).unwrap();
    eda_core::io::write_json(&p, &vec![4]).unwrap();
    let v: Vec<i32> = eda_core::io::read_json(&p).unwrap();
    assert_eq!(v, vec![4]);
    assert!(matches!(eda_core::io::read_json::<Vec<i32>>(&dir.path().join("nope")), Err(EdaError::Io { .. })));
}
