//! What a resumed regeneration checks before trusting its manifest: that every listed shard is the
//! file that was written (its size, and the ids and content hash of the samples it holds), and that
//! every prompt already answered (in a shard, recorded as skipped, or in the
//! [journal](crate::journal) of finished samples not yet in a shard) is still in the prompts file
//! with the same content. Journaled samples need no file check of their own: each journal record
//! carries a checksum, and a damaged record is dropped when the journal is read.
//!
//! Without these checks a shard truncated by a full disk counted as done (its prompts were never
//! redone and training later failed on it), and a different prompts file whose ids happened to
//! match was silently mixed into the old one.

use std::collections::HashMap;
use std::path::Path;

use eda_core::data::sha256_hex;
use eda_core::{EdaError, Result};

use crate::pipeline::{Manifest, ShardRecord};
use crate::prompts::PromptRecord;

/// SHA-256 of what a prompt asks (its messages and reference answer, not its id), recorded for
/// every sample and skipped prompt.
///
/// ```
/// use eda_regen::{integrity::prompt_sha256, Message, PromptRecord, Role};
/// let a = PromptRecord { id: "1".into(), messages: vec![Message::new(Role::User, "hi")], reference_response: None };
/// let b = PromptRecord { messages: vec![Message::new(Role::User, "hello")], ..a.clone() };
/// assert_ne!(prompt_sha256(&a), prompt_sha256(&b));
/// assert_eq!(prompt_sha256(&a), prompt_sha256(&PromptRecord { id: "2".into(), ..a.clone() }));
/// ```
pub fn prompt_sha256(r: &PromptRecord) -> String {
    let content = serde_json::json!({ "messages": r.messages, "reference_response": r.reference_response });
    sha256_hex(content.to_string().as_bytes())
}

/// Whether the shard file of `record` under `dir` is present, parses, holds the recorded ids and,
/// when the manifest recorded them, has the recorded size and content hash. Returns why not.
pub fn check_shard(dir: &Path, record: &ShardRecord) -> std::result::Result<(), String> {
    let path = dir.join(&record.file);
    let meta = std::fs::symlink_metadata(&path).map_err(|e| format!("cannot be read: {e}"))?;
    if !meta.file_type().is_file() {
        return Err("is not a regular file".into());
    }
    if let Some(bytes) = record.bytes {
        if meta.len() != bytes {
            return Err(format!("has {} bytes, the manifest recorded {bytes} (truncated or rewritten)", meta.len()));
        }
    }
    let samples = eda_core::data::read_shard(&path).map_err(|e| format!("is unreadable: {e}"))?;
    if samples.iter().map(|s| &s.id).ne(record.ids.iter()) {
        return Err("holds other sample ids than the manifest lists".into());
    }
    if let Some(want) = &record.content_sha256 {
        let got = eda_core::data::fingerprint_samples(&samples);
        if &got != want {
            return Err(format!("has content hash {got}, the manifest recorded {want}"));
        }
    }
    Ok(())
}

/// Drops from `m` every shard that fails [`check_shard`] (its prompts are then redone) and moves
/// a damaged file aside as `NAME.corrupt` so that no later reader picks it up. Returns how many
/// shards were dropped.
pub fn drop_bad_shards(m: &mut Manifest, dir: &Path) -> Result<usize> {
    let before = m.shards.len();
    let mut kept = Vec::with_capacity(before);
    for s in std::mem::take(&mut m.shards) {
        match check_shard(dir, &s) {
            Ok(()) => kept.push(s),
            Err(why) => {
                let path = dir.join(&s.file);
                tracing::warn!(file = %s.file, %why, "shard listed in the manifest is missing or damaged; its prompts will be redone");
                if std::fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_file()) {
                    let aside = dir.join(format!("{}.corrupt", s.file));
                    std::fs::rename(&path, &aside).map_err(|e| EdaError::io(&path, e))?;
                }
            }
        }
    }
    m.shards = kept;
    Ok(before - m.shards.len())
}

/// Prompts already done according to `m` that are missing from `prompts` or whose content
/// changed, one line each (at most 10 listed, then a count). Records written before hashes were
/// recorded are not compared.
pub fn prompt_differences(m: &Manifest, prompts: &[PromptRecord]) -> Vec<String> {
    prompt_differences_with(m, std::iter::empty(), prompts)
}

/// [`prompt_differences`] over the manifest and also over `pending`: `(id, prompt hash)` of
/// prompts finished but not yet in a shard (the [journal](crate::journal) of an interrupted run).
pub fn prompt_differences_with<'a>(
    m: &'a Manifest,
    pending: impl IntoIterator<Item = (&'a str, Option<&'a str>)>,
    prompts: &[PromptRecord],
) -> Vec<String> {
    let now: HashMap<&str, &PromptRecord> = prompts.iter().map(|r| (r.id.as_str(), r)).collect();
    let done = m
        .shards
        .iter()
        .flat_map(|s| s.ids.iter().map(String::as_str).zip(s.prompt_sha256.iter().map(|h| Some(h.as_str())).chain(std::iter::repeat(None))))
        .chain(m.skipped.iter().map(|k| (k.id.as_str(), k.prompt_sha256.as_deref())))
        .chain(pending);
    let mut out = Vec::new();
    let mut total = 0usize;
    for (id, recorded) in done {
        let Some(recorded) = recorded else { continue };
        let line = match now.get(id) {
            None => format!("prompt `{id}` is already done (manifest or journal) but absent from the prompts file"),
            Some(r) if prompt_sha256(r) != recorded => format!("prompt `{id}` changed since it was answered"),
            Some(_) => continue,
        };
        total += 1;
        if out.len() < 10 {
            out.push(line);
        }
    }
    if total > out.len() {
        out.push(format!("... {} more changed or missing prompts", total - out.len()));
    }
    out
}
