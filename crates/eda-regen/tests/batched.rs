//! Batched regeneration with a real (tiny, random) `eda_models::Target`: shards, manifests and
//! sidecars are identical for every batch size, greedy or sampled, and across resumes.

mod common;

use std::path::Path;

use common::tokenizer;
use eda_core::data::read_shard;
use eda_core::{EdaError, GenerationConfig};
use eda_models::Target;
use eda_regen::*;

/// The qwen2-tiny fixture (fixed weights, so the test is deterministic; its vocabulary covers the
/// test tokenizer's ids).
fn target() -> Target {
    let dir = std::path::PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/qwen2-tiny"));
    Target::from_pretrained(&dir, &eda_core::backend::device_from_name("cpu").unwrap()).unwrap()
}

fn records() -> Vec<PromptRecord> {
    let text = r#"{"id": "a", "prompt": "what is two plus two", "response": "four"}
{"id": "b", "prompt": "hello", "response": "hello world"}
{"id": "c", "prompt": "is two four", "response": "yes"}
{"id": "d", "prompt": "hello world what is hello world", "response": "world"}
{"id": "e", "prompt": "be brief", "response": "yes yes"}
{"id": "f", "prompt": "two plus two plus two", "response": "no"}
{"id": "g", "prompt": "world", "response": "hello"}
"#;
    parse_prompts(text, Path::new("t.jsonl")).unwrap().0
}

fn cfg(batch_size: usize, generation: GenerationConfig) -> RegenConfig {
    RegenConfig {
        system_prompt: Some("be brief".into()),
        generation,
        start_one_early: false,
        shard_size: 3,
        batch_size,
        ..RegenConfig::default()
    }
}

/// What an output directory holds: every file by name, shards as their decoded samples (so a
/// difference names the sample), the manifest and the sidecars as bytes.
#[derive(Debug, PartialEq)]
enum Content {
    Shard(Vec<eda_core::data::FeatureSample>),
    Bytes(Vec<u8>),
}

fn files(dir: &Path) -> Vec<(String, Content)> {
    let mut out: Vec<(String, Content)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            let content = if name.ends_with(".safetensors") {
                Content::Shard(read_shard(&p).unwrap())
            } else {
                Content::Bytes(std::fs::read(&p).unwrap())
            };
            (name, content)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn run(t: &mut Target, recs: &[PromptRecord], c: &RegenConfig, dir: &Path) -> RegenSummary {
    regenerate_dataset(t, &tokenizer(), recs, c, &mut LocalRegenerator, dir).unwrap()
}

/// A stop token that ends some answers of a free run early but not all of them at once.
fn early_stop(t: &mut Target, recs: &[PromptRecord], generation: &GenerationConfig) -> Vec<u32> {
    let dir = tempfile::tempdir().unwrap();
    let s = run(t, recs, &cfg(1, generation.clone()), dir.path());
    let responses: Vec<Vec<u32>> = s
        .manifest
        .shard_paths(dir.path())
        .iter()
        .flat_map(|p| read_shard(p).unwrap())
        .map(|x| x.input_ids.iter().zip(&x.loss_mask).filter(|(_, &m)| m == 1).map(|(&i, _)| i).collect())
        .collect();
    let max = generation.max_new_tokens;
    (0..256u32)
        .find(|&stop| {
            let lens: Vec<usize> = responses.iter().map(|r| r.iter().position(|&x| x == stop).map_or(r.len(), |p| p + 1)).collect();
            lens.iter().any(|&l| l < max) && lens.iter().any(|&l| l > 1)
        })
        .into_iter()
        .collect()
}

fn response_lengths(dir: &Path) -> Vec<usize> {
    let m = Manifest::load(&dir.join(MANIFEST_FILE)).unwrap();
    m.shard_paths(dir).iter().flat_map(|p| read_shard(p).unwrap()).map(|s| s.masked_tokens()).collect()
}

#[test]
fn greedy_shards_are_identical_for_batch_one_and_four() {
    let mut t = target();
    let recs = records();
    let free = GenerationConfig { max_new_tokens: 10, ..GenerationConfig::greedy() };
    let generation = GenerationConfig { stop_tokens: early_stop(&mut t, &recs, &free), ..free };
    let one = tempfile::tempdir().unwrap();
    let s1 = run(&mut t, &recs, &cfg(1, generation.clone()), one.path());
    let four = tempfile::tempdir().unwrap();
    let s4 = run(&mut t, &recs, &cfg(4, generation.clone()), four.path());
    assert_eq!(s1.new_samples, 7);
    assert_eq!((s1.manifest.clone(), s1.response_tokens), (s4.manifest.clone(), s4.response_tokens));
    let lens = response_lengths(one.path());
    assert!(lens.iter().any(|&l| l < 10) && lens.iter().any(|&l| l > 1), "some answers stop early, some do not: {lens:?}");
    assert_eq!(files(one.path()), files(four.path()), "every file has identical content (hidden states bit for bit)");
    // A batch larger than the dataset is one batch.
    let all = tempfile::tempdir().unwrap();
    run(&mut t, &recs, &cfg(16, generation), all.path());
    assert_eq!(files(one.path()), files(all.path()));
}

#[test]
fn sampled_and_original_shards_do_not_depend_on_batch_size() {
    let mut t = target();
    let recs = records();
    let sampled = GenerationConfig { max_new_tokens: 8, ..GenerationConfig::sampling(1.0, 42) };
    let one = tempfile::tempdir().unwrap();
    run(&mut t, &recs, &cfg(1, sampled.clone()), one.path());
    let three = tempfile::tempdir().unwrap();
    run(&mut t, &recs, &cfg(3, sampled.clone()), three.path());
    assert_eq!(files(one.path()), files(three.path()));

    let original = |b| RegenConfig { mode: RegenMode::Original, ..cfg(b, GenerationConfig::greedy()) };
    let one = tempfile::tempdir().unwrap();
    run(&mut t, &recs, &original(1), one.path());
    let four = tempfile::tempdir().unwrap();
    run(&mut t, &recs, &original(4), four.path());
    assert_eq!(files(one.path()), files(four.path()));
}

#[test]
fn resume_with_another_batch_size_equals_one_run() {
    let mut t = target();
    let recs = records();
    let sampled = GenerationConfig { max_new_tokens: 6, ..GenerationConfig::sampling(0.8, 7) };
    let full = tempfile::tempdir().unwrap();
    run(&mut t, &recs, &cfg(1, sampled.clone()), full.path());
    let reference: Vec<_> = Manifest::load(&full.path().join(MANIFEST_FILE))
        .unwrap()
        .shard_paths(full.path())
        .iter()
        .flat_map(|p| read_shard(p).unwrap())
        .collect();

    let resumed = tempfile::tempdir().unwrap();
    let first = RegenConfig { limit: Some(4), ..cfg(2, sampled.clone()) };
    assert_eq!(run(&mut t, &recs, &first, resumed.path()).new_samples, 4);
    let s = run(&mut t, &recs, &cfg(5, sampled), resumed.path());
    assert_eq!((s.already_done, s.new_samples), (4, 3));
    let again: Vec<_> = s.manifest.shard_paths(resumed.path()).iter().flat_map(|p| read_shard(p).unwrap()).collect();
    assert_eq!(again, reference);
}

#[test]
fn zero_batch_size_is_a_config_error() {
    let mut t = target();
    let dir = tempfile::tempdir().unwrap();
    let e = regenerate_dataset(&mut t, &tokenizer(), &records(), &cfg(0, GenerationConfig::greedy()), &mut LocalRegenerator, dir.path())
        .unwrap_err();
    assert!(matches!(&e, EdaError::InvalidConfig(m) if m.contains("batch_size")), "{e}");
}

#[test]
fn batched_extraction_equals_one_by_one() {
    let mut t = target();
    let items: Vec<(String, Vec<u32>, Vec<u8>)> = [vec![1u32, 4, 6, 7], vec![9], vec![3, 3, 5, 8, 10, 12, 2]]
        .into_iter()
        .enumerate()
        .map(|(i, ids)| (i.to_string(), ids.clone(), vec![1; ids.len()]))
        .collect();
    let batch = extract_features_batch(&mut t, items.clone()).unwrap();
    for ((id, ids, mask), b) in items.into_iter().zip(&batch) {
        assert_eq!(&extract_features(&mut t, &id, ids, mask).unwrap(), b);
    }
    let e = extract_features_batch(&mut t, vec![("x".into(), vec![1; 257], vec![0; 257])]).unwrap_err();
    assert!(matches!(e, EdaError::SequenceTooLong { len: 257, max: 256 }), "{e}");
    assert!(matches!(extract_features_batch(&mut t, vec![]).unwrap_err(), EdaError::InvalidArgument(_)));
}
