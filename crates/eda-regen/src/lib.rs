//! # eda-regen
//!
//! Data regeneration for EDA (docs/method.md §4): the **fine-tuned target answers the domain prompts
//! itself**, then one teacher-forced forward pass over `prompt ++ answer` records the target's
//! last-layer hidden states (after the final norm, the LM-head input) at every position. The
//! results are [`FeatureSample`](eda_core::data::FeatureSample)s written to safetensors shards
//! with a resumable `manifest.json`.
//!
//! Pieces:
//!
//! - [`prompts`]: JSONL / chat JSONL / ShareGPT JSON loading into [`PromptRecord`]s, and
//!   plain-text documents ([`load_texts`]);
//! - [`template`]: [`ChatTemplate`] (ChatML, Llama 3, plain) and the loss mask;
//! - [`chat_format`]: [`ChatFormat`], the rendering recorded with data and drafts;
//! - [`regenerator`]: [`LocalRegenerator`] (the target itself) and [`OpenAiRegenerator`] (an
//!   OpenAI-compatible `/v1/completions` server, answers re-tokenised locally);
//! - [`pipeline`]: [`regenerate_dataset`], shards, [`Manifest`], resume;
//! - [`journal`]: the append-only log of finished samples not yet in a shard, so that a killed run
//!   loses only the samples in flight;
//! - [`integrity`]: what a resumed run checks (damaged shards, changed prompts).
//!
//! Prompts are processed in batches of [`RegenConfig::batch_size`]: the local target
//! ([`LocalRegenerator`]) generates a batch together ([`TargetModel::generate_batch`](eda_core::TargetModel::generate_batch),
//! per-sequence KV caches, finished answers leave the batch) and featurises it with one
//! teacher-forced pass ([`extract_features_batch`]); outputs do not depend on the batch size.
//! CPU-side work that does not need the model, i.e. chat rendering and tokenisation of every
//! pending prompt (and of reference answers), runs up front in parallel with rayon; shards are
//! serialised between batches on the calling thread (serialising a shard is small next to
//! generating its samples).

#![warn(missing_docs)]

pub mod chat_format;
pub mod integrity;
pub mod journal;
pub mod pipeline;
mod progress;
pub mod prompts;
pub mod regenerator;
pub mod template;

pub use chat_format::{ChatFormat, CHAT_FORMAT_FILE};
pub use journal::JOURNAL_FILE;
pub use pipeline::{
    extract_features, extract_features_batch, regenerate_dataset, GeneratorRecord, Manifest, OverflowPolicy, RegenConfig, RegenMode,
    RegenSettings, RegenSummary, ShardRecord, SkippedPrompt, DEFAULT_BATCH_SIZE, MANIFEST_FILE, MANIFEST_FORMAT,
};
pub use prompts::{load_prompts, load_texts, parse_prompts, Message, PromptFormat, PromptRecord, Role};
pub use regenerator::{LocalRegenerator, OpenAiRegenerator, OpenAiSettings};
pub use template::ChatTemplate;
