//! The regeneration pipeline: prompts → responses → teacher-forced features → shards + manifest.
//!
//! Output directory layout:
//!
//! | file | content |
//! |---|---|
//! | `shard-NNNNN.safetensors` | [`eda_core::data::write_shard`] shard of up to `shard_size` samples |
//! | `shard-NNNNN.responses.jsonl` | the same samples as ShareGPT records (`id`, `conversations`), for inspection and export |
//! | `manifest.json` | [`Manifest`]: settings, target identity, completed shards and their ids, counts |
//! | `pending.journal` | [`journal`]: finished samples and skipped prompts not yet in a shard (append-only, fsynced after every batch; absent between shards) |
//!
//! **Resume.** Shards and the manifest are written atomically, the shard first, then the manifest
//! that lists it, then the journal is reset. Samples of the unfinished shard are appended to the
//! journal after every batch, so a run killed at any point loses only the samples in flight (the
//! batch being generated). A rerun with the same [`RegenSettings`] skips every prompt listed in a
//! completed shard, recorded as skipped, or intact in the journal (whose entries go back in front
//! of the new ones: the output equals an uninterrupted run's, byte for byte), and appends new
//! shards. A torn or damaged journal tail is ignored with a warning and its prompts are redone;
//! journal entries that a shard already holds (killed between writing the manifest and resetting
//! the journal) are dropped. Different settings are rejected with [`EdaError::InvalidConfig`]
//! naming the differing fields. Each shard's size and content hash and each prompt's content hash
//! are recorded: a missing, truncated or altered shard is moved aside and its prompts are redone,
//! and a prompt that changed or disappeared from the prompts file is an
//! [`EdaError::ResumeMismatch`] unless [`RegenConfig::allow_changed_inputs`] is set (see
//! [`integrity`](crate::integrity)). `limit`, `shard_size` and `batch_size` are not settings: a
//! run with `limit = k` followed by a full run yields the same samples, in dataset order, as one
//! full run (with sampling, each prompt's seed is derived from the configured seed and the
//! prompt's id, so it does not depend on which run handles it).
//!
//! **Progress.** On a terminal an indicatif bar shows prompts done, rate and ETA; otherwise (the
//! bar hides itself) a `progress` log line gives prompts done of total, tokens/s (all and
//! generated) and the ETA in seconds, at most every 10 s and after the last batch.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Instant;

use eda_core::backend::to_vec_f32;
use eda_core::data::{FeatureDType, FeatureSample};
use eda_core::{EdaError, GenerationConfig, ModelInfo, Regenerator, Result, TargetModel, TokenId};

pub use eda_core::GeneratorRecord;
use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokenizers::Tokenizer;

use crate::journal::{self, JournalEntry, JOURNAL_FILE};
use crate::progress::{eta_seconds, Throttle, LOG_INTERVAL};
use crate::prompts::{PromptRecord, Role};
use crate::template::{encode, encode_document, join_with_mask, ChatTemplate};

/// Name of the manifest file in the output directory.
pub const MANIFEST_FILE: &str = "manifest.json";
/// Format tag of the manifest.
pub const MANIFEST_FORMAT: &str = "eda-regen-v1";

/// Where responses come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RegenMode {
    /// The target answers every prompt (EDA's regenerated data).
    Regenerated,
    /// The dataset's own `reference_response` is used as is (the "original data" baseline);
    /// prompts without one are skipped.
    Original,
    /// Plain-text documents ([`load_texts`](crate::load_texts)): no chat rendering, the whole
    /// text (after its first token) is in the loss, closed by the model's EOS.
    Text,
}

/// What to do with a sequence longer than the maximum length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OverflowPolicy {
    /// Skip the prompt (logged and recorded in the manifest).
    Skip,
    /// Keep the *last* `max_len - 1` prompt tokens (the assistant header survives) and cut the
    /// response's tail so the whole sequence fits.
    Truncate,
}

/// Settings of a regeneration run.
#[derive(Debug, Clone, PartialEq)]
pub struct RegenConfig {
    /// Regenerate responses or reuse the dataset's.
    pub mode: RegenMode,
    /// Chat template.
    pub template: ChatTemplate,
    /// System prompt for conversations without one (must match at generation and training).
    pub system_prompt: Option<String>,
    /// Decoding settings. The model's EOS ids and the template's end-of-turn token are added to
    /// `stop_tokens`; `max_new_tokens` is further capped so that the sequence fits `max_seq_len`.
    pub generation: GenerationConfig,
    /// Start the loss mask on the last header token (the reference's convention; see
    /// [`template`](crate::template)).
    pub start_one_early: bool,
    /// Maximum sequence length (prompt + response); `None` uses the model's maximum positions.
    /// The reference trains with 2048.
    pub max_seq_len: Option<usize>,
    /// What to do with sequences longer than the maximum.
    pub overflow: OverflowPolicy,
    /// Samples per shard. Not a setting. Samples of an unfinished shard are kept in the
    /// [journal], so a large shard costs memory, not safety.
    pub shard_size: usize,
    /// Only consider the first `limit` prompts of the dataset.
    pub limit: Option<usize>,
    /// Precision of the stored hidden states.
    pub dtype: FeatureDType,
    /// Prompts processed together: generated as one batch (local target) and then featurised by
    /// one batched teacher-forced pass (see [`TargetModel::generate_batch`] and
    /// [`TargetModel::hidden_batch`]). Not a setting: outputs do not depend on it (on the CPU
    /// backend they are bit-identical for every batch size), so a resumed run may change it.
    pub batch_size: usize,
    /// Resume even when prompts already answered are missing from `prompts` or changed (by
    /// default refused with [`EdaError::ResumeMismatch`]: the output would mix two datasets).
    /// Not a setting.
    pub allow_changed_inputs: bool,
}

/// Default [`RegenConfig::batch_size`].
pub const DEFAULT_BATCH_SIZE: usize = 8;

impl Default for RegenConfig {
    /// Regenerated mode, ChatML, no system prompt, greedy with up to 512 new tokens, reference
    /// mask convention, model's maximum length, skip overlong prompts, 256 samples per shard, F32,
    /// batches of [`DEFAULT_BATCH_SIZE`] prompts.
    fn default() -> Self {
        RegenConfig {
            mode: RegenMode::Regenerated,
            template: ChatTemplate::ChatMl,
            system_prompt: None,
            generation: GenerationConfig { max_new_tokens: 512, ..GenerationConfig::greedy() },
            start_one_early: true,
            max_seq_len: None,
            overflow: OverflowPolicy::Skip,
            shard_size: 256,
            limit: None,
            dtype: FeatureDType::F32,
            batch_size: DEFAULT_BATCH_SIZE,
            allow_changed_inputs: false,
        }
    }
}

/// The settings a resumed run must share with the run that wrote the manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegenSettings {
    /// The target (its `identity` names the weights).
    pub target: ModelInfo,
    /// Regenerated or original responses.
    pub mode: RegenMode,
    /// Chat template.
    pub template: ChatTemplate,
    /// System prompt used for conversations without one.
    pub system_prompt: Option<String>,
    /// Effective generation settings (stop tokens included).
    pub generation: GenerationConfig,
    /// Who generated.
    pub generator: GeneratorRecord,
    /// Loss-mask convention.
    pub start_one_early: bool,
    /// Effective maximum sequence length.
    pub max_seq_len: usize,
    /// Overflow policy.
    pub overflow: OverflowPolicy,
    /// Stored feature precision.
    pub dtype: FeatureDType,
}

/// One completed shard.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardRecord {
    /// Shard file name (relative to the output directory).
    pub file: String,
    /// Sidecar file with the responses as ShareGPT records.
    pub responses_file: String,
    /// Sample ids, in shard order.
    pub ids: Vec<String>,
    /// Tokens in the shard.
    pub tokens: usize,
    /// Tokens with loss mask 1.
    pub masked_tokens: usize,
    /// Size of the shard file in bytes (checked on resume; absent in older manifests).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    /// [`fingerprint_samples`](eda_core::data::fingerprint_samples) of the shard's samples
    /// (checked on resume; absent in older manifests). A hash of the *content*, not of the file's
    /// bytes, so shards written before safetensors output became byte-reproducible still match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_sha256: Option<String>,
    /// [`prompt_sha256`](crate::integrity::prompt_sha256) of each sample's prompt, aligned with
    /// `ids` (compared with the prompts file on resume).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prompt_sha256: Vec<String>,
}

/// A prompt that produced no sample.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SkippedPrompt {
    /// Prompt id.
    pub id: String,
    /// Why.
    pub reason: String,
    /// [`prompt_sha256`](crate::integrity::prompt_sha256) of the prompt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_sha256: Option<String>,
}

/// `manifest.json`: what a regeneration run produced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Always [`MANIFEST_FORMAT`].
    pub format: String,
    /// Settings (compared on resume).
    pub settings: RegenSettings,
    /// Completed shards, in order.
    pub shards: Vec<ShardRecord>,
    /// Prompts that were skipped (not retried on resume).
    pub skipped: Vec<SkippedPrompt>,
    /// Samples in all shards.
    pub samples: usize,
    /// Tokens in all shards.
    pub tokens: usize,
    /// Masked (response) tokens in all shards.
    pub masked_tokens: usize,
    /// Index of the next shard file to write.
    pub next_shard_index: usize,
}

impl Manifest {
    /// Reads a manifest, checking its format tag.
    pub fn load(path: &Path) -> Result<Manifest> {
        let m: Manifest = eda_core::io::read_json(path)?;
        if m.format != MANIFEST_FORMAT {
            return Err(EdaError::json(path, format!("format is `{}`, expected `{MANIFEST_FORMAT}`", m.format)));
        }
        Ok(m)
    }

    /// Ids of every sample in a completed shard, in order.
    pub fn sample_ids(&self) -> impl Iterator<Item = &str> {
        self.shards.iter().flat_map(|s| s.ids.iter().map(String::as_str))
    }

    /// Paths of the shard files under `dir`.
    pub fn shard_paths(&self, dir: &Path) -> Vec<PathBuf> {
        self.shards.iter().map(|s| dir.join(&s.file)).collect()
    }
}

/// What one call of [`regenerate_dataset`] did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegenSummary {
    /// Samples written by this call.
    pub new_samples: usize,
    /// Prompts skipped by this call.
    pub new_skipped: usize,
    /// Prompts already done by an earlier run (those in its journal included).
    pub already_done: usize,
    /// Finished prompts (samples and skipped ones) recovered from the journal of an interrupted
    /// run rather than redone.
    pub recovered: usize,
    /// Shards written by this call.
    pub shards_written: usize,
    /// Response tokens produced by this call.
    pub response_tokens: usize,
    /// Wall-clock seconds.
    pub seconds: f64,
    /// The manifest after this call.
    pub manifest: Manifest,
}

/// Runs the target over `ids` (cache reset first) and packages its post-norm last-layer hidden
/// states as a sample; the loss mask is given by the caller.
pub fn extract_features(target: &mut dyn TargetModel, id: &str, ids: Vec<TokenId>, loss_mask: Vec<u8>) -> Result<FeatureSample> {
    let mut out = extract_features_batch(target, vec![(id.to_owned(), ids, loss_mask)])?;
    out.pop().ok_or_else(|| EdaError::InvalidArgument("feature extraction produced no sample".into()))
}

/// [`extract_features`] for several `(id, ids, loss_mask)` sequences with one batched
/// teacher-forced pass ([`TargetModel::hidden_batch`]); samples come back in input order and
/// equal one-by-one extraction. The target's cache is left empty.
pub fn extract_features_batch(target: &mut dyn TargetModel, items: Vec<(String, Vec<TokenId>, Vec<u8>)>) -> Result<Vec<FeatureSample>> {
    let h = target.info().hidden_size;
    let max = target.info().max_position_embeddings;
    if let Some((_, ids, _)) = items.iter().find(|(_, ids, _)| ids.len() > max) {
        return Err(EdaError::SequenceTooLong { len: ids.len(), max });
    }
    let seqs: Vec<Vec<TokenId>> = items.iter().map(|(_, ids, _)| ids.clone()).collect();
    let hidden = target.hidden_batch(&seqs)?;
    if hidden.len() != items.len() {
        return Err(EdaError::mismatch("hidden-state batches (one per sequence)", items.len(), hidden.len()));
    }
    items
        .into_iter()
        .zip(hidden)
        .map(|((id, ids, mask), hid)| {
            let dims = hid.dims();
            if dims != [ids.len(), h] {
                return Err(EdaError::ShapeMismatch {
                    name: "target hidden states".into(),
                    expected: vec![ids.len(), h],
                    actual: dims.to_vec(),
                });
            }
            FeatureSample::new(id, ids, to_vec_f32(hid)?, h, mask)
        })
        .collect()
}

/// Per-prompt sampling seed: the first 8 bytes of SHA-256(seed ‖ id).
fn prompt_seed(seed: u64, id: &str) -> u64 {
    let mut h = Sha256::new();
    h.update(seed.to_le_bytes());
    h.update(id.as_bytes());
    let d = h.finalize();
    u64::from_le_bytes(d[..8].try_into().expect("8 bytes"))
}

fn settings_diff(old: &RegenSettings, new: &RegenSettings) -> Vec<String> {
    let a = serde_json::to_value(old).unwrap_or_default();
    let b = serde_json::to_value(new).unwrap_or_default();
    match (a.as_object(), b.as_object()) {
        (Some(a), Some(b)) => a
            .keys()
            .filter(|k| a.get(*k) != b.get(*k))
            .map(|k| format!("{k}: {} (manifest) vs {} (now)", a[k.as_str()], b.get(k.as_str()).cloned().unwrap_or_default()))
            .collect(),
        _ => vec!["settings".into()],
    }
}

/// Prepared work for one prompt.
struct Pending<'a> {
    record: &'a PromptRecord,
    prompt_ids: Vec<TokenId>,
    reference_ids: Option<Vec<TokenId>>,
}

enum Outcome {
    Sample(FeatureSample, usize),
    Skipped(String),
}

/// Regenerates (or, in [`RegenMode::Original`], re-encodes) `prompts` into shards under `out_dir`,
/// resuming from an existing manifest. In regenerated mode `regenerator` answers the prompts:
/// [`LocalRegenerator`](crate::LocalRegenerator) with `target` itself, or a remote one such as
/// [`OpenAiRegenerator`](crate::OpenAiRegenerator); hidden states always come from `target`. The
/// manifest records [`Regenerator::record`] (in original mode, [`GeneratorRecord::None`], and
/// `regenerator` is not used).
///
/// Errors: [`EdaError::InvalidConfig`] on a settings mismatch with an existing manifest or bad
/// settings, [`EdaError::Tokenizer`] when the template's end token is missing, plus any error of
/// the target, the server or the file system. Prompts that cannot be used (too long, no reference
/// answer in original mode) are skipped with a warning and recorded.
pub fn regenerate_dataset(
    target: &mut dyn TargetModel,
    tokenizer: &Tokenizer,
    prompts: &[PromptRecord],
    cfg: &RegenConfig,
    regenerator: &mut dyn Regenerator,
    out_dir: &Path,
) -> Result<RegenSummary> {
    let start = Instant::now();
    if cfg.shard_size == 0 {
        return Err(EdaError::InvalidConfig("shard_size must be at least 1".into()));
    }
    if cfg.batch_size == 0 {
        return Err(EdaError::InvalidConfig("batch_size must be at least 1".into()));
    }
    if cfg.mode == RegenMode::Regenerated && cfg.generation.max_new_tokens == 0 {
        return Err(EdaError::InvalidConfig("max_new_tokens must be at least 1".into()));
    }
    cfg.generation.validate()?;
    if prompts.is_empty() {
        return Err(EdaError::EmptyDataset("no prompts to regenerate".into()));
    }
    let info = target.info().clone();
    let max_len = cfg.max_seq_len.map_or(info.max_position_embeddings, |m| m.min(info.max_position_embeddings));
    if max_len < 2 {
        return Err(EdaError::InvalidConfig(format!("maximum sequence length {max_len} leaves no room for a response")));
    }
    let end_id = cfg.template.end_of_turn_id(tokenizer)?;
    // Token closing a reference answer: the template's end of turn, else the model's EOS.
    let closing = end_id.or_else(|| info.eos_token_ids.first().copied());
    let mut generation = cfg.generation.clone();
    for t in info.eos_token_ids.iter().copied().chain(end_id) {
        if !generation.stop_tokens.contains(&t) {
            generation.stop_tokens.push(t);
        }
    }
    let generator = match cfg.mode {
        RegenMode::Original | RegenMode::Text => GeneratorRecord::None,
        RegenMode::Regenerated => regenerator.record(),
    };
    let settings = RegenSettings {
        target: info.clone(),
        mode: cfg.mode,
        template: cfg.template,
        system_prompt: cfg.system_prompt.clone(),
        generation: if cfg.mode != RegenMode::Regenerated {
            GenerationConfig { stop_tokens: vec![], ..GenerationConfig::greedy() }
        } else {
            generation.clone()
        },
        generator,
        start_one_early: cfg.start_one_early,
        max_seq_len: max_len,
        overflow: cfg.overflow,
        dtype: cfg.dtype,
    };

    eda_core::io::check_output_dir(out_dir)?;
    eda_core::io::clean_stale_temp_files(out_dir);
    let manifest_path = out_dir.join(MANIFEST_FILE);
    let journal_path = out_dir.join(JOURNAL_FILE);
    // Finished prompts of an interrupted run that are not in a shard yet, and whether the journal
    // file holds anything else (damage, entries already in a shard) and must be rewritten.
    let mut restored: Vec<JournalEntry> = Vec::new();
    let mut journal_stale = false;
    let mut manifest = if manifest_path.exists() {
        let mut m = Manifest::load(&manifest_path)?;
        let diff = settings_diff(&m.settings, &settings);
        if m.settings != settings {
            return Err(EdaError::InvalidConfig(format!(
                "{} was written with different settings; use another output directory or the same settings ({})",
                manifest_path.display(),
                if diff.is_empty() { "settings differ".to_string() } else { diff.join("; ") }
            )));
        }
        if crate::integrity::drop_bad_shards(&mut m, out_dir)? > 0 {
            recount(&mut m);
        }
        (restored, journal_stale) = load_journal(&journal_path, &m)?;
        let changed = crate::integrity::prompt_differences_with(&m, restored.iter().map(|e| (e.id(), e.prompt_sha256())), prompts);
        if !changed.is_empty() {
            if !cfg.allow_changed_inputs {
                return Err(EdaError::ResumeMismatch { path: manifest_path.clone(), differences: changed });
            }
            tracing::warn!(differences = %changed.join("; "), "resuming with a changed prompts file (allowed explicitly)");
        }
        tracing::info!(
            samples = m.samples,
            shards = m.shards.len(),
            skipped = m.skipped.len(),
            journaled = restored.len(),
            "resuming from {}",
            manifest_path.display()
        );
        m
    } else {
        if std::fs::symlink_metadata(&journal_path).is_ok() {
            // Without the manifest the settings its samples were made with are unknown.
            tracing::warn!(file = %journal_path.display(), "discarding a journal that has no manifest next to it");
            eda_core::io::remove_durable(&journal_path)?;
        }
        Manifest {
            format: MANIFEST_FORMAT.into(),
            settings,
            shards: vec![],
            skipped: vec![],
            samples: 0,
            tokens: 0,
            masked_tokens: 0,
            next_shard_index: 0,
        }
    };

    let done: HashSet<String> = manifest
        .sample_ids()
        .map(str::to_owned)
        .chain(manifest.skipped.iter().map(|s| s.id.clone()))
        .chain(restored.iter().map(|e| e.id().to_owned()))
        .collect();
    let considered = &prompts[..cfg.limit.unwrap_or(prompts.len()).min(prompts.len())];
    let todo: Vec<&PromptRecord> = considered.iter().filter(|r| !done.contains(&r.id)).collect();
    let already_done = considered.len() - todo.len();

    // CPU-side preparation in parallel: chat rendering and tokenisation.
    let system = cfg.system_prompt.as_deref();
    let prepared: Vec<Pending> = todo
        .par_iter()
        .map(|r| -> Result<Pending> {
            if cfg.mode == RegenMode::Text {
                // The first token plays the prompt (the features need a start); the rest is trained on.
                let mut ids = match &r.reference_response {
                    Some(text) => encode_document(tokenizer, text)?,
                    None => vec![],
                };
                let rest = if ids.len() > 1 { ids.split_off(1) } else { vec![] };
                // A document is not a chat turn: it ends with EOS whatever the template says.
                let eos = info.eos_token_ids.first().copied();
                let reference_ids = (!rest.is_empty()).then(|| rest.into_iter().chain(eos).collect());
                return Ok(Pending { record: r, prompt_ids: ids, reference_ids });
            }
            let prompt_ids = encode(tokenizer, &cfg.template.render_prompt(&r.messages, system))?;
            let reference_ids = match (cfg.mode, &r.reference_response) {
                (RegenMode::Original, Some(text)) => {
                    let mut ids = encode(tokenizer, text)?;
                    ids.extend(closing);
                    Some(ids)
                }
                _ => None,
            };
            Ok(Pending { record: r, prompt_ids, reference_ids })
        })
        .collect::<Result<_>>()?;

    let bar = ProgressBar::new(prepared.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("{spinner} regenerate [{elapsed_precise}] {bar:30} {pos}/{len} samples ({per_sec}, ETA {eta}) {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    // A batch can take minutes; keep the spinner and clock moving in between.
    bar.enable_steady_tick(std::time::Duration::from_millis(500));
    let recovered = restored.len();
    tracing::info!(pending = prepared.len(), already_done, recovered, max_len, mode = ?cfg.mode, batch_size = cfg.batch_size, "regenerating");

    let mut summary_new = 0usize;
    let mut new_skipped = 0usize;
    let mut shards_written = 0usize;
    let mut response_tokens = 0usize;
    let mut total_tokens = 0usize;
    // Finished prompts not in a shard yet, in dataset order; all of them are in the journal
    // except those of the current batch, whose records wait in `unjournaled`.
    let mut pending: Vec<JournalEntry> = restored;
    let mut unjournaled: Vec<u8> = Vec::new();
    let mut manifest_on_disk = manifest_path.exists();

    // A journal longer than a shard (the shard size was lowered since): write its full shards.
    while samples_in(&pending) >= cfg.shard_size {
        flush(&mut manifest, &mut pending, cfg.shard_size, out_dir, cfg.dtype)?;
        shards_written += 1;
        manifest_on_disk = true;
        journal_stale = true;
    }
    if journal_stale {
        journal::rewrite(&journal_path, &pending, cfg.dtype)?;
    }

    let loop_start = Instant::now();
    let mut throttle = Throttle::new(LOG_INTERVAL);
    let mut processed = 0usize;
    let batches = prepared.len().div_ceil(cfg.batch_size);
    for (b, chunk) in prepared.chunks(cfg.batch_size).enumerate() {
        let batch_start = Instant::now();
        let outcomes = process_batch(target, chunk, cfg, &generation, max_len, &mut *regenerator)?;
        let (mut batch_new, mut batch_tokens) = (0usize, 0usize);
        // Outcomes are consumed in dataset order, so shards split exactly as one-by-one.
        for (p, outcome) in chunk.iter().zip(outcomes) {
            let entry = match outcome {
                Outcome::Sample(sample, resp_len) => {
                    response_tokens += resp_len;
                    total_tokens += sample.len();
                    summary_new += 1;
                    batch_new += resp_len;
                    batch_tokens += sample.len();
                    tracing::debug!(id = %p.record.id, tokens = sample.len(), response_tokens = resp_len, "sample done");
                    let resp_text = tokenizer.decode(&sample.input_ids[sample.len() - resp_len..], true).unwrap_or_default();
                    let sharegpt = sharegpt_record(p.record, system, &resp_text);
                    JournalEntry::Sample { sample, sharegpt, prompt_sha256: crate::integrity::prompt_sha256(p.record) }
                }
                Outcome::Skipped(reason) => {
                    tracing::warn!(id = %p.record.id, %reason, "skipping prompt");
                    new_skipped += 1;
                    JournalEntry::Skipped(SkippedPrompt {
                        id: p.record.id.clone(),
                        reason,
                        prompt_sha256: Some(crate::integrity::prompt_sha256(p.record)),
                    })
                }
            };
            // Keep the sample exactly as the journal stores it (hidden states in the storage
            // dtype), so a resumed run continues from the same values as an uninterrupted one.
            let (record, entry) = journal::round_trip(entry, cfg.dtype)?;
            unjournaled.extend_from_slice(&record);
            pending.push(entry);
            bar.inc(1);
            if samples_in(&pending) >= cfg.shard_size {
                flush(&mut manifest, &mut pending, cfg.shard_size, out_dir, cfg.dtype)?;
                shards_written += 1;
                manifest_on_disk = true;
                // Everything finished so far is in the shard or the manifest now.
                unjournaled.clear();
                journal::rewrite(&journal_path, &pending, cfg.dtype)?;
            }
        }
        if !unjournaled.is_empty() {
            // The journal is only meaningful next to a manifest naming the settings.
            if !manifest_on_disk {
                eda_core::io::write_json(&manifest_path, &manifest)?;
                manifest_on_disk = true;
            }
            journal::append_records(&journal_path, &unjournaled)?;
            unjournaled.clear();
        }
        processed += chunk.len();
        let secs = loop_start.elapsed().as_secs_f64().max(1e-9);
        let (tok_per_s, new_tok_per_s) = (total_tokens as f64 / secs, response_tokens as f64 / secs);
        bar.set_message(format!("{tok_per_s:.1} tok/s, {new_tok_per_s:.1} new tok/s"));
        let batch_secs = batch_start.elapsed().as_secs_f64().max(1e-9);
        tracing::debug!(
            batch = b + 1,
            batches,
            prompts = chunk.len(),
            tokens = batch_tokens,
            response_tokens = batch_new,
            seconds = batch_secs,
            new_tok_per_s = batch_new as f64 / batch_secs,
            "batch done"
        );
        // Without a terminal the bar is hidden: these lines are the progress report.
        if throttle.due(Instant::now(), b + 1 == batches) {
            let eta = eta_seconds(secs, processed, prepared.len() - processed).unwrap_or(0.0);
            tracing::info!(
                done = already_done + processed,
                total = considered.len(),
                batch = b + 1,
                batches,
                tok_per_s = %format!("{tok_per_s:.1}"),
                new_tok_per_s = %format!("{new_tok_per_s:.1}"),
                eta_s = eta.round() as u64,
                "progress"
            );
        }
    }
    if (!pending.is_empty() || !manifest_on_disk) && flush(&mut manifest, &mut pending, usize::MAX, out_dir, cfg.dtype)? {
        shards_written += 1;
    }
    // Everything is in a shard or the manifest now.
    eda_core::io::remove_durable(&journal_path)?;
    bar.finish_and_clear();
    let seconds = start.elapsed().as_secs_f64();
    let loop_secs = loop_start.elapsed().as_secs_f64().max(1e-9);
    tracing::info!(
        new_samples = summary_new,
        new_skipped,
        recovered,
        shards_written,
        total_samples = manifest.samples,
        seconds,
        tok_per_s = %format!("{:.1}", total_tokens as f64 / loop_secs),
        new_tok_per_s = %format!("{:.1}", response_tokens as f64 / loop_secs),
        "regeneration done"
    );
    Ok(RegenSummary { new_samples: summary_new, new_skipped, already_done, recovered, shards_written, response_tokens, seconds, manifest })
}

/// Reads the journal of an interrupted run: its intact entries that no shard holds yet, in order,
/// and whether the file holds anything else (a damaged tail, entries already in a shard) and so
/// must be rewritten before new records are appended after it.
fn load_journal(path: &Path, m: &Manifest) -> Result<(Vec<JournalEntry>, bool)> {
    let contents = journal::read_journal(path)?;
    let mut stale = false;
    if let Some(problem) = &contents.problem {
        tracing::warn!(
            file = %path.display(),
            %problem,
            kept = contents.entries.len(),
            ignored_bytes = contents.file_bytes - contents.valid_bytes,
            "damaged journal (a run killed while writing it?): the intact records before the damage are kept, the rest is redone"
        );
        stale = true;
    }
    let mut seen: HashSet<String> = m.sample_ids().map(str::to_owned).chain(m.skipped.iter().map(|s| s.id.clone())).collect();
    let before = contents.entries.len();
    let kept: Vec<JournalEntry> = contents.entries.into_iter().filter(|e| seen.insert(e.id().to_owned())).collect();
    if kept.len() < before {
        // Killed after the manifest listed a shard but before the journal was reset.
        tracing::info!(dropped = before - kept.len(), "journal entries already in a shard are dropped");
        stale = true;
    }
    Ok((kept, stale))
}

/// Number of samples (not skipped prompts) among `entries`.
fn samples_in(entries: &[JournalEntry]) -> usize {
    entries.iter().filter(|e| matches!(e, JournalEntry::Sample { .. })).count()
}

fn recount(m: &mut Manifest) {
    m.samples = m.shards.iter().map(|s| s.ids.len()).sum();
    m.tokens = m.shards.iter().map(|s| s.tokens).sum();
    m.masked_tokens = m.shards.iter().map(|s| s.masked_tokens).sum();
}

fn sharegpt_record(r: &PromptRecord, system: Option<&str>, response: &str) -> String {
    if r.messages.is_empty() {
        // A plain-text document: the sidecar keeps the corpus layout it came from.
        return serde_json::json!({"id": r.id, "text": r.reference_response}).to_string();
    }
    let mut conv = Vec::new();
    if let Some(s) = system {
        if !r.messages.iter().any(|m| m.role == Role::System) {
            conv.push(serde_json::json!({"from": "system", "value": s}));
        }
    }
    for m in &r.messages {
        let from = match m.role {
            Role::System => "system",
            Role::User => "human",
            Role::Assistant => "gpt",
        };
        conv.push(serde_json::json!({"from": from, "value": m.content}));
    }
    conv.push(serde_json::json!({"from": "gpt", "value": response}));
    serde_json::json!({"id": r.id, "conversations": conv}).to_string()
}

/// Moves the first `max` samples of `pending` (all when it holds fewer), with the skipped prompts
/// queued before the last of them, into the manifest: the samples as the next shard and its
/// sidecar, then the manifest (every file atomically). Without samples only the manifest is
/// written. Returns whether a shard was written.
fn flush(manifest: &mut Manifest, pending: &mut Vec<JournalEntry>, max: usize, out_dir: &Path, dtype: FeatureDType) -> Result<bool> {
    let mut end = pending.len();
    let mut seen = 0usize;
    for (i, e) in pending.iter().enumerate() {
        if matches!(e, JournalEntry::Sample { .. }) {
            seen += 1;
            if seen == max {
                end = i + 1;
                break;
            }
        }
    }
    let mut samples = Vec::with_capacity(seen);
    let mut lines = Vec::with_capacity(seen);
    let mut prompt_sha256 = Vec::with_capacity(seen);
    for e in pending.drain(..end) {
        match e {
            JournalEntry::Sample { sample, sharegpt, prompt_sha256: h } => {
                samples.push(sample);
                lines.push(sharegpt);
                prompt_sha256.push(h);
            }
            JournalEntry::Skipped(s) => manifest.skipped.push(s),
        }
    }
    if samples.is_empty() {
        eda_core::io::write_json(&out_dir.join(MANIFEST_FILE), manifest)?;
        return Ok(false);
    }
    let index = manifest.next_shard_index;
    let file = format!("shard-{index:05}.safetensors");
    let responses_file = format!("shard-{index:05}.responses.jsonl");
    // The recorded size and hash let a resumed run tell a complete shard from a damaged one.
    let shard_bytes = eda_core::data::shard_to_bytes(&samples, dtype)?;
    eda_core::io::atomic_write(&out_dir.join(&file), &shard_bytes)?;
    let mut text = lines.join("\n");
    text.push('\n');
    eda_core::io::atomic_write(&out_dir.join(&responses_file), text.as_bytes())?;
    let record = ShardRecord {
        file,
        responses_file,
        ids: samples.iter().map(|s| s.id.clone()).collect(),
        tokens: samples.iter().map(FeatureSample::len).sum(),
        masked_tokens: samples.iter().map(FeatureSample::masked_tokens).sum(),
        bytes: Some(shard_bytes.len() as u64),
        content_sha256: Some(eda_core::data::fingerprint_samples(&samples)),
        prompt_sha256,
    };
    manifest.samples += record.ids.len();
    manifest.tokens += record.tokens;
    manifest.masked_tokens += record.masked_tokens;
    tracing::debug!(file = %record.file, samples = record.ids.len(), "shard written");
    manifest.shards.push(record);
    manifest.next_shard_index = index + 1;
    eda_core::io::write_json(&out_dir.join(MANIFEST_FILE), manifest)?;
    Ok(true)
}

/// A prompt ready for generation (after overflow handling).
struct Ready {
    prompt: Vec<TokenId>,
    /// Positions left for the response.
    room: usize,
}

/// Handles one chunk of prompts: overflow rules, responses (one
/// [`Regenerator::regenerate_batch`] call, or the reference answers), then one batched
/// teacher-forced pass. Outcomes
/// come back in chunk order and equal processing each prompt alone.
fn process_batch(
    target: &mut dyn TargetModel,
    chunk: &[Pending],
    cfg: &RegenConfig,
    generation: &GenerationConfig,
    max_len: usize,
    regenerator: &mut dyn Regenerator,
) -> Result<Vec<Outcome>> {
    let mut outcomes: Vec<Option<Outcome>> = Vec::with_capacity(chunk.len());
    let mut ready: Vec<Option<Ready>> = Vec::with_capacity(chunk.len());
    for p in chunk {
        match prepare_prompt(p, cfg, max_len) {
            Ok(r) => {
                ready.push(Some(r));
                outcomes.push(None);
            }
            Err(reason) => {
                ready.push(None);
                outcomes.push(Some(Outcome::Skipped(reason)));
            }
        }
    }
    let gen_cfg = |p: &Pending, r: &Ready| GenerationConfig {
        max_new_tokens: generation.max_new_tokens.min(r.room),
        seed: prompt_seed(generation.seed, &p.record.id),
        ..generation.clone()
    };
    let mut responses: Vec<Option<Vec<TokenId>>> = vec![None; chunk.len()];
    match cfg.mode {
        RegenMode::Original | RegenMode::Text => {
            for (i, p) in chunk.iter().enumerate() {
                if ready[i].is_some() {
                    match &p.reference_ids {
                        Some(r) => responses[i] = Some(r.clone()),
                        None if cfg.mode == RegenMode::Text => {
                            outcomes[i] = Some(Outcome::Skipped("the document is a single token".into()))
                        }
                        None => outcomes[i] = Some(Outcome::Skipped("no reference response (original mode)".into())),
                    }
                }
            }
        }
        RegenMode::Regenerated => {
            let idx: Vec<usize> = (0..chunk.len()).filter(|&i| ready[i].is_some()).collect();
            if !idx.is_empty() {
                let prompts: Vec<Vec<TokenId>> = idx.iter().filter_map(|&i| ready[i].as_ref().map(|r| r.prompt.clone())).collect();
                let cfgs: Vec<GenerationConfig> = idx.iter().filter_map(|&i| ready[i].as_ref().map(|r| gen_cfg(&chunk[i], r))).collect();
                let outs = regenerator.regenerate_batch(target, &prompts, &cfgs)?;
                if outs.len() != idx.len() {
                    return Err(EdaError::mismatch("generations (one per prompt)", idx.len(), outs.len()));
                }
                for (&i, out) in idx.iter().zip(outs) {
                    responses[i] = Some(out);
                }
            }
        }
    }
    // Join prompt and response; everything that survives goes through one feature pass.
    let mut items = Vec::new();
    let mut item_of = vec![None; chunk.len()];
    for (i, p) in chunk.iter().enumerate() {
        let (Some(r), Some(mut response)) = (ready[i].take(), responses[i].take()) else { continue };
        if response.is_empty() {
            outcomes[i] = Some(Outcome::Skipped("empty response".into()));
            continue;
        }
        if response.len() > r.room {
            match cfg.overflow {
                OverflowPolicy::Skip => {
                    outcomes[i] = Some(Outcome::Skipped(format!(
                        "prompt + response = {} tokens, maximum sequence length is {max_len}",
                        r.prompt.len() + response.len()
                    )));
                    continue;
                }
                OverflowPolicy::Truncate => response.truncate(r.room),
            }
        }
        let (ids, mask) = join_with_mask(&r.prompt, &response, cfg.start_one_early);
        item_of[i] = Some((items.len(), response.len()));
        items.push((p.record.id.clone(), ids, mask));
    }
    let mut samples: Vec<Option<FeatureSample>> =
        if items.is_empty() { vec![] } else { extract_features_batch(target, items)?.into_iter().map(Some).collect() };
    outcomes
        .into_iter()
        .zip(item_of)
        .map(|(o, item)| match (o, item) {
            (Some(o), _) => Ok(o),
            (None, Some((k, resp_len))) => samples[k]
                .take()
                .map(|s| Outcome::Sample(s, resp_len))
                .ok_or_else(|| EdaError::InvalidArgument("missing feature sample".into())),
            (None, None) => Err(EdaError::InvalidArgument("prompt left without an outcome".into())),
        })
        .collect()
}

/// The prompt after the overflow rules, or why it is skipped.
fn prepare_prompt(p: &Pending, cfg: &RegenConfig, max_len: usize) -> std::result::Result<Ready, String> {
    let is_text = p.record.messages.is_empty();
    if is_text != (cfg.mode == RegenMode::Text) {
        return Err(if is_text {
            "a plain-text document has no conversation to render (use text mode: `eda features --text`)".into()
        } else {
            "a conversation is not a plain-text document (text mode reads `{\"text\"}` records)".into()
        });
    }
    let mut prompt = p.prompt_ids.clone();
    if prompt.is_empty() {
        return Err("the prompt encodes to no tokens".into());
    }
    if prompt.len() >= max_len {
        match cfg.overflow {
            OverflowPolicy::Skip => return Err(format!("prompt has {} tokens, maximum sequence length is {max_len}", prompt.len())),
            OverflowPolicy::Truncate => {
                tracing::warn!(id = %p.record.id, len = prompt.len(), max_len, "truncating prompt from the left");
                prompt.drain(..prompt.len() - (max_len - 1));
            }
        }
    }
    let room = max_len - prompt.len();
    Ok(Ready { prompt, room })
}
