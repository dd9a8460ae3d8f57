//! The journal of finished samples (issue 16): a run killed mid-shard loses only the batch in
//! flight, and a resumed run's output is byte-identical to an uninterrupted run's.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::{tokenizer, toy_target, Thirds};
use eda_core::data::FeatureDType;
use eda_core::{EdaError, GenerationConfig, Regenerator, TargetModel, TokenId};
use eda_regen::journal::{read_journal, JOURNAL_MAGIC};
use eda_regen::*;

/// Six prompts; `b` is too long for the maximum sequence length below and is skipped.
const PROMPTS: &str = r#"{"id": "a", "prompt": "hello"}
{"id": "b", "prompt": "what is two plus two plus two plus two"}
{"id": "c", "prompt": "is two four"}
{"id": "d", "prompt": "hello world"}
{"id": "e", "prompt": "be brief"}
{"id": "f", "prompt": "two plus four"}
"#;

fn records(text: &str) -> Vec<PromptRecord> {
    parse_prompts(text, Path::new("t.jsonl")).unwrap().0
}

fn cfg(shard_size: usize, batch_size: usize) -> RegenConfig {
    RegenConfig {
        generation: GenerationConfig { max_new_tokens: 4, ..GenerationConfig::sampling(1.0, 7) },
        max_seq_len: Some(16),
        shard_size,
        batch_size,
        ..RegenConfig::default()
    }
}

/// The local target's answers, failing (like a killed process) once `ok_batches` batches are
/// done; counts the prompts it answered.
struct Flaky {
    ok_batches: usize,
    answered: usize,
}

impl Flaky {
    fn crash_after(ok_batches: usize) -> Self {
        Flaky { ok_batches, answered: 0 }
    }

    fn reliable() -> Self {
        Flaky::crash_after(usize::MAX)
    }
}

impl Regenerator for Flaky {
    fn record(&self) -> GeneratorRecord {
        GeneratorRecord::Local
    }

    fn regenerate(&mut self, target: &mut dyn TargetModel, prompt: &[TokenId], cfg: &GenerationConfig) -> eda_core::Result<Vec<TokenId>> {
        let mut out = self.regenerate_batch(target, &[prompt.to_vec()], std::slice::from_ref(cfg))?;
        Ok(out.pop().unwrap_or_default())
    }

    fn regenerate_batch(
        &mut self,
        target: &mut dyn TargetModel,
        prompts: &[Vec<TokenId>],
        cfgs: &[GenerationConfig],
    ) -> eda_core::Result<Vec<Vec<TokenId>>> {
        if self.ok_batches == 0 {
            return Err(EdaError::Remote("simulated crash".into()));
        }
        self.ok_batches -= 1;
        self.answered += prompts.len();
        LocalRegenerator.regenerate_batch(target, prompts, cfgs)
    }
}

fn run_with(c: &RegenConfig, dir: &Path, regen: &mut Flaky, recs: &[PromptRecord], bf16_target: bool) -> eda_core::Result<RegenSummary> {
    if bf16_target {
        regenerate_dataset(&mut Thirds(toy_target(64)), &tokenizer(), recs, c, regen, dir)
    } else {
        regenerate_dataset(&mut toy_target(64), &tokenizer(), recs, c, regen, dir)
    }
}

fn run(c: &RegenConfig, dir: &Path, regen: &mut Flaky) -> eda_core::Result<RegenSummary> {
    run_with(c, dir, regen, &records(PROMPTS), false)
}

/// Every file of the output directory with its bytes.
fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (e.file_name().to_string_lossy().into_owned(), std::fs::read(e.path()).unwrap())
        })
        .collect()
}

fn reference(c: &RegenConfig) -> BTreeMap<String, Vec<u8>> {
    let dir = tempfile::tempdir().unwrap();
    let s = run(c, dir.path(), &mut Flaky::reliable()).unwrap();
    assert_eq!((s.new_samples, s.new_skipped, s.recovered), (5, 1, 0));
    let snap = snapshot(dir.path());
    assert!(!snap.contains_key(JOURNAL_FILE), "no journal is left after a complete run");
    snap
}

/// Ids done according to the manifest and the journal in `dir`.
fn persisted_ids(dir: &Path) -> (Vec<String>, Vec<String>) {
    let m = Manifest::load(&dir.join(MANIFEST_FILE)).unwrap();
    let in_manifest = m.sample_ids().map(str::to_owned).chain(m.skipped.iter().map(|s| s.id.clone())).collect();
    let journal = read_journal(&dir.join(JOURNAL_FILE)).unwrap();
    assert_eq!(journal.problem, None);
    (in_manifest, journal.entries.iter().map(|e| e.id().to_owned()).collect())
}

fn is_crash(r: eda_core::Result<RegenSummary>) -> bool {
    matches!(r, Err(EdaError::Remote(m)) if m == "simulated crash")
}

#[test]
fn a_crash_loses_only_the_batch_in_flight_and_the_resumed_output_is_identical() {
    let ids = ["a", "b", "c", "d", "e", "f"];
    // (shard size, batch size, regenerator calls that succeed, prompts finished before the crash;
    // `b` is skipped without a call)
    for (shard, batch, ok, finished_before) in
        [(100, 2, 2, 4), (2, 2, 2, 4), (3, 2, 1, 2), (2, 3, 1, 3), (1, 1, 3, 4), (4, 1, 4, 5), (100, 4, 1, 4)]
    {
        let c = cfg(shard, batch);
        let want = reference(&c);
        let dir = tempfile::tempdir().unwrap();
        assert!(is_crash(run(&c, dir.path(), &mut Flaky::crash_after(ok))));
        // Every prompt of a finished batch is in a shard, listed as skipped or in the journal.
        let (in_manifest, journaled) = persisted_ids(dir.path());
        let mut finished = in_manifest.clone();
        finished.extend(journaled.iter().cloned());
        finished.sort();
        assert_eq!(finished, ids[..finished_before], "shard {shard}, batch {batch}: {in_manifest:?} + {journaled:?}");

        let mut again = Flaky::reliable();
        let s = run(&c, dir.path(), &mut again).unwrap();
        assert_eq!(s.recovered, journaled.len());
        assert_eq!(s.already_done, finished_before);
        let redo: Vec<&&str> = ids[finished_before..].iter().filter(|&&i| i != "b").collect();
        assert_eq!(again.answered, redo.len(), "journaled prompts are not answered again (shard {shard}, batch {batch})");
        assert_eq!(s.new_samples, redo.len());
        assert_eq!(snapshot(dir.path()), want, "shard {shard}, batch {batch}, crash after {ok}");
    }
}

#[test]
fn bf16_features_resume_from_the_journal_and_shards_stay_valid() {
    // Hidden states that bfloat16 rounds: a shard's recorded content hash must be that of the
    // stored (rounded) values, or every resume would set all shards aside and redo them.
    let c = RegenConfig { dtype: FeatureDType::BF16, ..cfg(2, 2) };
    let recs = records(PROMPTS);
    let full = tempfile::tempdir().unwrap();
    run_with(&c, full.path(), &mut Flaky::reliable(), &recs, true).unwrap();
    let s = run_with(&c, full.path(), &mut Flaky::reliable(), &recs, true).unwrap();
    assert_eq!((s.already_done, s.new_samples, s.shards_written), (6, 0, 0), "complete shards are kept");

    let dir = tempfile::tempdir().unwrap();
    assert!(is_crash(run_with(&c, dir.path(), &mut Flaky::crash_after(2), &recs, true)));
    let mut again = Flaky::reliable();
    let s = run_with(&c, dir.path(), &mut again, &recs, true).unwrap();
    assert_eq!((s.recovered, again.answered), (1, 2));
    assert_eq!(snapshot(dir.path()), snapshot(full.path()));
}

/// Byte ranges of the journal's records.
fn record_spans(bytes: &[u8]) -> Vec<std::ops::Range<usize>> {
    assert_eq!(&bytes[..8], JOURNAL_MAGIC);
    let mut out = vec![];
    let mut pos = 8;
    while pos < bytes.len() {
        let len = u64::from_le_bytes(bytes[pos..pos + 8].try_into().unwrap()) as usize;
        out.push(pos..pos + 8 + len + 32);
        pos += 8 + len + 32;
    }
    out
}

#[test]
fn a_torn_or_damaged_journal_keeps_the_records_before_the_damage() {
    let c = cfg(100, 2);
    let want = reference(&c);
    type Damage = fn(&mut Vec<u8>);
    let cases: [(&str, Damage, usize, usize); 4] = [
        // (what, damage, entries recovered, prompts answered again)
        ("torn tail", |b| b.truncate(b.len() - 5), 3, 3),
        ("garbage after the last record", |b| b.extend_from_slice(&[0xAB; 100]), 4, 2),
        (
            "a huge length after the last record",
            |b| {
                b.extend_from_slice(&u64::MAX.to_le_bytes());
                b.extend_from_slice(&[0; 100]);
            },
            4,
            2,
        ),
        (
            "a flipped byte in the second record",
            |b| {
                let at = record_spans(b)[1].start + 20;
                b[at] ^= 0x10;
            },
            1,
            4,
        ),
    ];
    for (what, damage, recovered, answered) in cases {
        let dir = tempfile::tempdir().unwrap();
        assert!(is_crash(run(&c, dir.path(), &mut Flaky::crash_after(2))));
        let path = dir.path().join(JOURNAL_FILE);
        let mut bytes = std::fs::read(&path).unwrap();
        assert_eq!(record_spans(&bytes).len(), 4, "a, b (skipped), c, d");
        damage(&mut bytes);
        std::fs::write(&path, &bytes).unwrap();
        let mut again = Flaky::reliable();
        let s = run(&c, dir.path(), &mut again).unwrap();
        assert_eq!((s.recovered, again.answered), (recovered, answered), "{what}");
        assert_eq!(snapshot(dir.path()), want, "{what}");
    }

    // New records are never appended after a damaged tail (the reader would stop before them).
    let dir = tempfile::tempdir().unwrap();
    assert!(is_crash(run(&c, dir.path(), &mut Flaky::crash_after(1))));
    let path = dir.path().join(JOURNAL_FILE);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes.truncate(bytes.len() - 1);
    std::fs::write(&path, &bytes).unwrap();
    assert!(is_crash(run(&c, dir.path(), &mut Flaky::crash_after(1))));
    let j = read_journal(&path).unwrap();
    assert_eq!(j.problem, None);
    assert_eq!(j.entries.iter().map(|e| e.id()).collect::<Vec<_>>(), ["a", "b", "c"]);
}

#[test]
fn a_crash_between_the_manifest_and_the_journal_reset_duplicates_nothing() {
    let c = cfg(3, 2);
    let want = reference(&c);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(JOURNAL_FILE);
    // Batch [a, b] finishes and is journaled.
    assert!(is_crash(run(&c, dir.path(), &mut Flaky::crash_after(1))));
    let journal_after_first_batch = std::fs::read(&path).unwrap();
    // The resume finishes [c, d]: shard [a, c, d] (b skipped) is written and the journal reset.
    assert!(is_crash(run(&c, dir.path(), &mut Flaky::crash_after(1))));
    let m = Manifest::load(&dir.path().join(MANIFEST_FILE)).unwrap();
    assert_eq!(m.sample_ids().collect::<Vec<_>>(), ["a", "c", "d"]);
    assert!(!path.exists());
    // As if killed after the manifest was written but before the journal was reset.
    std::fs::write(&path, &journal_after_first_batch).unwrap();
    let mut again = Flaky::reliable();
    let s = run(&c, dir.path(), &mut again).unwrap();
    assert_eq!((s.recovered, s.already_done, again.answered), (0, 4, 2));
    assert_eq!(s.manifest.skipped.len(), 1);
    assert_eq!(snapshot(dir.path()), want);
}

#[test]
fn a_lowered_shard_size_splits_the_journal_into_full_shards() {
    let dir = tempfile::tempdir().unwrap();
    assert!(is_crash(run(&cfg(100, 2), dir.path(), &mut Flaky::crash_after(2))));
    let mut again = Flaky::reliable();
    let s = run(&cfg(2, 2), dir.path(), &mut again).unwrap();
    assert_eq!((s.recovered, again.answered, s.shards_written), (4, 2, 3));
    assert_eq!(snapshot(dir.path()), reference(&cfg(2, 2)));
}

#[test]
fn journaled_prompts_are_checked_against_the_prompts_file() {
    let c = cfg(100, 2);
    let dir = tempfile::tempdir().unwrap();
    assert!(is_crash(run(&c, dir.path(), &mut Flaky::crash_after(2))));
    assert_eq!(Manifest::load(&dir.path().join(MANIFEST_FILE)).unwrap().shards.len(), 0, "only the journal knows `c`");
    let changed = records(&PROMPTS.replace("is two four", "is four two"));
    match run_with(&c, dir.path(), &mut Flaky::reliable(), &changed, false) {
        Err(EdaError::ResumeMismatch { differences, .. }) => {
            assert!(differences.iter().any(|d| d.contains("`c` changed")), "{differences:?}")
        }
        other => panic!("expected ResumeMismatch, got {other:?}"),
    }
}

#[test]
fn a_journal_without_a_manifest_is_discarded() {
    let c = cfg(100, 2);
    let dir = tempfile::tempdir().unwrap();
    assert!(is_crash(run(&c, dir.path(), &mut Flaky::crash_after(2))));
    std::fs::remove_file(dir.path().join(MANIFEST_FILE)).unwrap();
    let mut again = Flaky::reliable();
    let s = run(&c, dir.path(), &mut again).unwrap();
    assert_eq!((s.recovered, again.answered), (0, 5));
    assert_eq!(snapshot(dir.path()), reference(&c));
}
