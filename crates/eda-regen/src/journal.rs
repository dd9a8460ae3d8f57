//! The journal of finished prompts that are not in a shard yet (`pending.journal` in the output
//! directory), so that a killed regeneration loses only the samples in flight.
//!
//! [`regenerate_dataset`](crate::regenerate_dataset) appends every finished sample and skipped
//! prompt after each batch and fsyncs the file; writing a shard (and then the manifest that lists
//! it) resets the journal. A resumed run reads the journal back, puts its entries in front of the
//! new ones and does not redo their prompts.
//!
//! Format: an 8-byte magic [`JOURNAL_MAGIC`], then records
//!
//! | field | size |
//! |---|---|
//! | `len`: payload length, u64 little-endian | 8 |
//! | payload | `len` |
//! | SHA-256 of `len` (its 8 bytes) followed by the payload | 32 |
//!
//! and each payload is `meta_len` (u64 LE), a JSON object `meta` of that length, then for a sample
//! the sample as a one-sample feature shard ([`eda_core::data::shard_to_bytes`], in the run's
//! storage dtype):
//!
//! - `{"kind": "sample", "id", "prompt_sha256", "sharegpt"}` + shard bytes;
//! - `{"kind": "skipped", "id", "reason", "prompt_sha256"}` (a [`SkippedPrompt`]).
//!
//! A crash mid-append leaves a torn last record; [`read_journal`] stops at the first record that
//! is incomplete, fails its checksum or does not decode, returns the records before it and says
//! what it ignored (the framing after a damaged record cannot be trusted, so later records are
//! dropped as well and their prompts are redone). It never panics on any input.

use std::io::{BufReader, Read};
use std::path::Path;

use eda_core::data::{FeatureDType, FeatureSample};
use eda_core::{EdaError, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::pipeline::SkippedPrompt;

/// Name of the journal in the output directory.
pub const JOURNAL_FILE: &str = "pending.journal";
/// First bytes of every journal file (format and version).
pub const JOURNAL_MAGIC: &[u8; 8] = b"EDAJRN01";

/// Bytes of a record besides its payload: the length prefix and the checksum.
const FRAME_BYTES: u64 = 8 + 32;

/// One finished prompt that is not in a shard yet.
#[derive(Debug, Clone, PartialEq)]
pub enum JournalEntry {
    /// A sample (hidden states as stored, i.e. rounded to the run's dtype), its ShareGPT sidecar
    /// line and [`prompt_sha256`](crate::integrity::prompt_sha256) of its prompt.
    Sample {
        /// The sample.
        sample: FeatureSample,
        /// Its line in the shard's `.responses.jsonl` sidecar.
        sharegpt: String,
        /// Hash of the prompt it answers.
        prompt_sha256: String,
    },
    /// A prompt that produced no sample.
    Skipped(SkippedPrompt),
}

impl JournalEntry {
    /// The prompt id.
    pub fn id(&self) -> &str {
        match self {
            JournalEntry::Sample { sample, .. } => &sample.id,
            JournalEntry::Skipped(s) => &s.id,
        }
    }

    /// The recorded prompt hash (absent only for a skipped prompt recorded without one).
    pub fn prompt_sha256(&self) -> Option<&str> {
        match self {
            JournalEntry::Sample { prompt_sha256, .. } => Some(prompt_sha256),
            JournalEntry::Skipped(s) => s.prompt_sha256.as_deref(),
        }
    }
}

/// The JSON part of a payload.
#[derive(Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
enum Meta {
    Sample { id: String, prompt_sha256: String, sharegpt: String },
    Skipped(SkippedPrompt),
}

/// Encodes `entry` as one journal record (framing and checksum included), a sample's hidden
/// states in `dtype`.
pub fn encode_record(entry: &JournalEntry, dtype: FeatureDType) -> Result<Vec<u8>> {
    let (meta, shard) = match entry {
        JournalEntry::Sample { sample, sharegpt, prompt_sha256 } => (
            Meta::Sample { id: sample.id.clone(), prompt_sha256: prompt_sha256.clone(), sharegpt: sharegpt.clone() },
            eda_core::data::shard_to_bytes(std::slice::from_ref(sample), dtype)?,
        ),
        JournalEntry::Skipped(s) => (Meta::Skipped(s.clone()), Vec::new()),
    };
    let meta = serde_json::to_vec(&meta).map_err(|e| EdaError::json(JOURNAL_FILE, e))?;
    let len = (8 + meta.len() + shard.len()) as u64;
    let mut out = Vec::with_capacity(len as usize + FRAME_BYTES as usize);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&(meta.len() as u64).to_le_bytes());
    out.extend_from_slice(&meta);
    out.extend_from_slice(&shard);
    let sum = Sha256::digest(&out);
    out.extend_from_slice(&sum);
    Ok(out)
}

/// [`encode_record`], and the entry as a reader of the record gets it back: the sample's hidden
/// states rounded to `dtype`. The pipeline keeps the returned entry, so an uninterrupted run and
/// a resumed one hold exactly the same values (and shards record the same content hash).
pub fn round_trip(entry: JournalEntry, dtype: FeatureDType) -> Result<(Vec<u8>, JournalEntry)> {
    let record = encode_record(&entry, dtype)?;
    let stored = match entry {
        JournalEntry::Sample { .. } if dtype != FeatureDType::F32 => decode_payload(&record[8..record.len() - 32])?,
        // F32 storage is exact: skip decoding.
        other => other,
    };
    Ok((record, stored))
}

/// Decodes a payload whose checksum matched.
fn decode_payload(payload: &[u8]) -> Result<JournalEntry> {
    let bad = |m: String| EdaError::MalformedData { path: JOURNAL_FILE.into(), record: 0, message: m };
    let meta_len =
        payload.get(..8).map(|b| u64::from_le_bytes(b.try_into().unwrap_or_default())).ok_or_else(|| bad("payload too short".into()))?;
    let meta_end = usize::try_from(meta_len)
        .ok()
        .and_then(|m| m.checked_add(8))
        .filter(|&e| e <= payload.len())
        .ok_or_else(|| bad("metadata length out of range".into()))?;
    let meta: Meta = serde_json::from_slice(&payload[8..meta_end]).map_err(|e| bad(format!("metadata: {e}")))?;
    let rest = &payload[meta_end..];
    match meta {
        Meta::Skipped(s) if rest.is_empty() => Ok(JournalEntry::Skipped(s)),
        Meta::Skipped(_) => Err(bad("a skipped prompt carries sample data".into())),
        Meta::Sample { id, prompt_sha256, sharegpt } => {
            let mut samples = eda_core::data::shard_from_bytes(rest, Path::new(JOURNAL_FILE))?;
            match (samples.pop(), samples.is_empty()) {
                (Some(sample), true) if sample.id == id => Ok(JournalEntry::Sample { sample, sharegpt, prompt_sha256 }),
                _ => Err(bad(format!("the sample data of `{id}` does not hold exactly that sample"))),
            }
        }
    }
}

/// What [`read_journal`] found.
#[derive(Debug, Default)]
pub struct JournalContents {
    /// The complete, intact records before the first damaged one, in order.
    pub entries: Vec<JournalEntry>,
    /// Size of the file in bytes (0 when it does not exist).
    pub file_bytes: u64,
    /// Bytes from the start of the file through the last intact record.
    pub valid_bytes: u64,
    /// Why reading stopped before the end of the file (a torn or damaged record, a foreign
    /// file); `None` when every byte was used.
    pub problem: Option<String>,
}

/// Reads the journal at `path`: a missing file is an empty journal; damaged data ends the read
/// (see the [module docs](self)). Errors only when the file exists but cannot be read, or is not
/// a regular file ([`EdaError::UnsafeOutput`]).
pub fn read_journal(path: &Path) -> Result<JournalContents> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(JournalContents::default()),
        Err(e) => return Err(EdaError::io(path, e)),
    };
    eda_core::io::check_output_file(path)?;
    let total = meta.len();
    let file = std::fs::File::open(path).map_err(|e| EdaError::io(path, e))?;
    let mut r = BufReader::new(file);
    let mut out = JournalContents { file_bytes: total, ..Default::default() };
    let io = |e| EdaError::io(path, e);
    if total < JOURNAL_MAGIC.len() as u64 {
        if total > 0 {
            out.problem = Some("torn header".into());
        }
        return Ok(out);
    }
    let mut magic = [0u8; 8];
    r.read_exact(&mut magic).map_err(io)?;
    if &magic != JOURNAL_MAGIC {
        out.problem = Some("not an eda-regen journal (unknown header)".into());
        return Ok(out);
    }
    let mut pos = magic.len() as u64;
    out.valid_bytes = pos;
    let mut index = 0usize;
    while pos < total {
        index += 1;
        let left = total - pos;
        if left < FRAME_BYTES {
            out.problem = Some(format!("record {index} is torn (crash while writing)"));
            break;
        }
        let mut len_bytes = [0u8; 8];
        r.read_exact(&mut len_bytes).map_err(io)?;
        let len = u64::from_le_bytes(len_bytes);
        // Bounded by the file's size before anything is allocated.
        if len > left - FRAME_BYTES {
            out.problem = Some(format!("record {index} is torn (crash while writing) or its length is damaged"));
            break;
        }
        let mut payload = vec![0u8; len as usize];
        r.read_exact(&mut payload).map_err(io)?;
        let mut sum = [0u8; 32];
        r.read_exact(&mut sum).map_err(io)?;
        let mut h = Sha256::new();
        h.update(len_bytes);
        h.update(&payload);
        if h.finalize().as_slice() != sum {
            out.problem = Some(format!("record {index} fails its checksum"));
            break;
        }
        match decode_payload(&payload) {
            Ok(e) => out.entries.push(e),
            Err(e) => {
                out.problem = Some(format!("record {index} does not decode: {e}"));
                break;
            }
        }
        pos += len + FRAME_BYTES;
        out.valid_bytes = pos;
    }
    Ok(out)
}

/// Appends already encoded records (see [`encode_record`]) and fsyncs; the magic is written first
/// when the file is new or empty.
pub fn append_records(path: &Path, records: &[u8]) -> Result<()> {
    if records.is_empty() {
        return Ok(());
    }
    let fresh = std::fs::symlink_metadata(path).map_or(true, |m| m.len() == 0);
    if fresh {
        let mut bytes = Vec::with_capacity(JOURNAL_MAGIC.len() + records.len());
        bytes.extend_from_slice(JOURNAL_MAGIC);
        bytes.extend_from_slice(records);
        eda_core::io::append_durable(path, &bytes)
    } else {
        eda_core::io::append_durable(path, records)
    }
}

/// Replaces the journal with exactly `entries` (atomically), or removes it when there are none.
pub fn rewrite<'a>(path: &Path, entries: impl IntoIterator<Item = &'a JournalEntry>, dtype: FeatureDType) -> Result<()> {
    let mut entries = entries.into_iter().peekable();
    if entries.peek().is_none() {
        return eda_core::io::remove_durable(path);
    }
    let mut bytes = JOURNAL_MAGIC.to_vec();
    for e in entries {
        bytes.extend(encode_record(e, dtype)?);
    }
    eda_core::io::atomic_write(path, &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(id: &str, scale: f32) -> FeatureSample {
        FeatureSample::new(id, vec![1, 2, 3], (0..6).map(|i| i as f32 * scale).collect(), 2, vec![0, 1, 1]).unwrap()
    }

    fn entries() -> Vec<JournalEntry> {
        vec![
            JournalEntry::Sample { sample: sample("a", 0.5), sharegpt: "{\"id\":\"a\"}".into(), prompt_sha256: "h1".into() },
            JournalEntry::Skipped(SkippedPrompt { id: "b".into(), reason: "too long".into(), prompt_sha256: Some("h2".into()) }),
            JournalEntry::Sample { sample: sample("c", 0.25), sharegpt: "{\"id\":\"c\"}".into(), prompt_sha256: "h3".into() },
        ]
    }

    fn write(path: &Path, es: &[JournalEntry]) -> Vec<usize> {
        let mut ends = vec![];
        let mut n = JOURNAL_MAGIC.len();
        for e in es {
            let r = encode_record(e, FeatureDType::F32).unwrap();
            append_records(path, &r).unwrap();
            n += r.len();
            ends.push(n);
        }
        ends
    }

    #[test]
    fn records_round_trip_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(JOURNAL_FILE);
        assert!(read_journal(&p).unwrap().entries.is_empty());
        write(&p, &entries());
        let c = read_journal(&p).unwrap();
        assert_eq!(c.entries, entries());
        assert_eq!((c.problem, c.valid_bytes), (None, c.file_bytes));
        rewrite(&p, &c.entries[1..], FeatureDType::F32).unwrap();
        assert_eq!(read_journal(&p).unwrap().entries, entries()[1..]);
        rewrite(&p, &[], FeatureDType::F32).unwrap();
        assert!(!p.exists());
    }

    #[test]
    fn bf16_entries_come_back_rounded_like_a_reader_sees_them() {
        let e = JournalEntry::Sample { sample: sample("a", 1.0 / 3.0), sharegpt: "x".into(), prompt_sha256: "h".into() };
        let (record, stored) = round_trip(e.clone(), FeatureDType::BF16).unwrap();
        assert_ne!(stored, e, "1/3 is not a bfloat16 value");
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(JOURNAL_FILE);
        append_records(&p, &record).unwrap();
        assert_eq!(read_journal(&p).unwrap().entries, vec![stored.clone()]);
        // Rounding again changes nothing (so shards written from either are byte-identical).
        assert_eq!(round_trip(stored.clone(), FeatureDType::BF16).unwrap().1, stored);
    }

    #[test]
    fn every_torn_tail_keeps_exactly_the_complete_records() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(JOURNAL_FILE);
        let ends = write(&p, &entries());
        let full = std::fs::read(&p).unwrap();
        for cut in 0..full.len() {
            std::fs::write(&p, &full[..cut]).unwrap();
            let c = read_journal(&p).unwrap();
            let complete = ends.iter().filter(|&&e| e <= cut).count();
            assert_eq!(c.entries, entries()[..complete], "cut at {cut}");
            let at_boundary = cut == 0 || cut == JOURNAL_MAGIC.len() || ends.contains(&cut);
            assert_eq!(c.problem.is_none(), at_boundary, "cut at {cut}: {:?}", c.problem);
        }
    }

    #[test]
    fn damage_stops_the_read_at_the_damaged_record() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(JOURNAL_FILE);
        let ends = write(&p, &entries());
        let full = std::fs::read(&p).unwrap();
        // Garbage after the last record: the records are kept.
        let mut g = full.clone();
        g.extend_from_slice(b"\xff\xff\xff\xff\xff\xff\xff\xffgarbage and more garbage, quite a lot of it......");
        std::fs::write(&p, &g).unwrap();
        let c = read_journal(&p).unwrap();
        assert_eq!(c.entries, entries());
        assert!(c.problem.is_some());
        assert_eq!(c.valid_bytes as usize, full.len());
        // A flipped byte inside the second record: the first survives, the rest is dropped.
        for at in [ends[0], ends[0] + 3, ends[0] + 20, ends[1] - 1] {
            let mut b = full.clone();
            b[at] ^= 0x41;
            std::fs::write(&p, &b).unwrap();
            let c = read_journal(&p).unwrap();
            assert_eq!(c.entries, entries()[..1], "flip at {at}");
            assert!(c.problem.as_deref().is_some_and(|m| m.contains("record 2")), "{:?}", c.problem);
            assert_eq!(c.valid_bytes as usize, ends[0]);
        }
        // A foreign file is ignored as a whole.
        std::fs::write(&p, b"{\"not\": \"a journal\"}").unwrap();
        let c = read_journal(&p).unwrap();
        assert!(c.entries.is_empty() && c.problem.is_some());
        // A checksummed record whose payload is nonsense (a future format, a bug) is damage too.
        let mut bad = JOURNAL_MAGIC.to_vec();
        let payload = b"\x03\x00\x00\x00\x00\x00\x00\x00{}x";
        bad.extend_from_slice(&(payload.len() as u64).to_le_bytes());
        bad.extend_from_slice(payload);
        let mut h = Sha256::new();
        h.update((payload.len() as u64).to_le_bytes());
        h.update(payload);
        bad.extend_from_slice(&h.finalize());
        std::fs::write(&p, &bad).unwrap();
        let c = read_journal(&p).unwrap();
        assert!(c.entries.is_empty());
        assert!(c.problem.as_deref().is_some_and(|m| m.contains("does not decode")), "{:?}", c.problem);
    }
}
