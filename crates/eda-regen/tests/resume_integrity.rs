//! Resume checks what it resumes: changed prompts files, damaged shards, BOMs (issue 14).

mod common;

use std::path::Path;

use common::{tokenizer, toy_target};
use eda_core::data::read_shard;
use eda_core::{EdaError, GenerationConfig};
use eda_regen::*;

const PROMPTS: &str = r#"{"id": "a", "prompt": "what is two plus two", "response": "four"}
{"id": "b", "prompt": "hello", "response": "hello world"}
{"id": "c", "prompt": "is two four", "response": "yes"}
{"id": "d", "prompt": "hello world", "response": "world"}
"#;

fn records(text: &str) -> Vec<PromptRecord> {
    parse_prompts(text, Path::new("t.jsonl")).unwrap().0
}

fn cfg() -> RegenConfig {
    RegenConfig {
        mode: RegenMode::Regenerated,
        generation: GenerationConfig { max_new_tokens: 4, ..GenerationConfig::greedy() },
        shard_size: 2,
        batch_size: 2,
        ..RegenConfig::default()
    }
}

fn run(recs: &[PromptRecord], c: &RegenConfig, dir: &Path) -> eda_core::Result<RegenSummary> {
    regenerate_dataset(&mut toy_target(64), &tokenizer(), recs, c, &mut LocalRegenerator, dir)
}

fn samples_of(dir: &Path) -> Vec<eda_core::data::FeatureSample> {
    let m = Manifest::load(&dir.join(MANIFEST_FILE)).unwrap();
    m.shard_paths(dir).iter().flat_map(|p| read_shard(p).unwrap()).collect()
}

#[test]
fn a_changed_prompts_file_is_refused_unless_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let recs = records(PROMPTS);
    run(&recs[..2], &cfg(), dir.path()).unwrap();
    // Same ids, different content: the old answer to `a` would be kept for a new question.
    let changed = records(&PROMPTS.replace("what is two plus two", "hello hello"));
    match run(&changed, &cfg(), dir.path()) {
        Err(EdaError::ResumeMismatch { differences, .. }) => {
            assert!(differences.iter().any(|d| d.contains("`a` changed")), "{differences:?}")
        }
        other => panic!("expected ResumeMismatch, got {other:?}"),
    }
    // A different file whose ids do not include the done ones.
    let other = records(r#"{"id": "x", "prompt": "hello"}"#);
    assert!(matches!(run(&other, &cfg(), dir.path()), Err(EdaError::ResumeMismatch { .. })));
    // The unchanged file resumes.
    let s = run(&recs, &cfg(), dir.path()).unwrap();
    assert_eq!((s.already_done, s.new_samples), (2, 2));
    // With the explicit opt-in, the changed file is accepted.
    let allowed = RegenConfig { allow_changed_inputs: true, ..cfg() };
    assert!(run(&changed, &allowed, dir.path()).is_ok());
}

#[test]
fn a_truncated_shard_is_redone_not_counted_as_done() {
    let recs = records(PROMPTS);
    let full = tempfile::tempdir().unwrap();
    run(&recs, &cfg(), full.path()).unwrap();
    let reference = samples_of(full.path());

    let dir = tempfile::tempdir().unwrap();
    run(&recs, &cfg(), dir.path()).unwrap();
    let m = Manifest::load(&dir.path().join(MANIFEST_FILE)).unwrap();
    assert!(m.shards.iter().all(|s| s.content_sha256.is_some() && s.prompt_sha256.len() == s.ids.len()));
    let first = dir.path().join(&m.shards[0].file);
    let bytes = std::fs::read(&first).unwrap();
    std::fs::write(&first, &bytes[..bytes.len() / 2]).unwrap();
    let s = run(&recs, &cfg(), dir.path()).unwrap();
    assert_eq!((s.already_done, s.new_samples), (2, 2), "the damaged shard's prompts are redone");
    assert!(dir.path().join(format!("{}.corrupt", m.shards[0].file)).exists(), "the damaged file is set aside");
    let mut got = samples_of(dir.path());
    got.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(got, reference);

    // Same size, different bytes: caught by the content hash.
    let m = Manifest::load(&dir.path().join(MANIFEST_FILE)).unwrap();
    let last = dir.path().join(&m.shards.last().unwrap().file);
    let mut bytes = std::fs::read(&last).unwrap();
    let n = bytes.len();
    bytes[n - 1] ^= 0x55;
    std::fs::write(&last, &bytes).unwrap();
    let s = run(&recs, &cfg(), dir.path()).unwrap();
    assert_eq!(s.new_samples, 2);
}

#[test]
fn a_byte_order_mark_is_accepted() {
    let with_bom = format!("\u{feff}{PROMPTS}");
    assert_eq!(records(&with_bom), records(PROMPTS));
    let sharegpt = "\u{feff}[{\"id\": \"s\", \"conversations\": [{\"from\": \"human\", \"value\": \"hi\"}]}]";
    assert_eq!(parse_prompts(sharegpt, Path::new("s.json")).unwrap().0[0].id, "s");
}
