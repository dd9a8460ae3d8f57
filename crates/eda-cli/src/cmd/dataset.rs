//! What `eda regenerate` and `eda features` share: the output flags and the run of the
//! `eda-regen` pipeline that writes shards and `manifest.json`.

use std::path::{Path, PathBuf};

use eda_core::{GenerationConfig, Regenerator, TargetModel};
use eda_regen::{regenerate_dataset, ChatTemplate, OverflowPolicy, PromptRecord, RegenConfig, RegenMode};
use tokenizers::Tokenizer;

use super::args::{tokenizer_path, ComputeArgs, FeatureDtypeArg};

/// What to do with sequences longer than `--max-seq-len`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Overflow {
    /// Skip the prompt (logged and recorded in the manifest).
    Skip,
    /// Keep the prompt's last tokens and cut the response's tail.
    Truncate,
}

/// Output, sequence length, sharding, batching and precision of a feature dataset.
#[derive(clap::Args, Debug, Clone)]
pub struct DatasetArgs {
    /// Output directory for shards and `manifest.json`; an existing run there is resumed, keeping
    /// every sample it finished.
    #[arg(long)]
    pub out: PathBuf,
    /// Maximum sequence length, prompt plus answer (capped by the model's maximum positions).
    #[arg(long, default_value_t = 2048)]
    pub max_seq_len: usize,
    /// What to do with samples longer than `--max-seq-len` (default: `skip` for `eda regenerate`,
    /// `truncate` for `eda features`, which keeps the start of long documents as EAGLE does).
    #[arg(long, value_enum)]
    pub overflow: Option<Overflow>,
    /// Start the loss mask at the first answer token instead of one token early on the last
    /// header token (the reference implementation's convention, the default).
    #[arg(long)]
    pub exact_mask: bool,
    /// Samples per shard file. Samples of an unfinished shard are journaled after every batch
    /// (`pending.journal`), so an interrupted run loses only the batch in flight; a resumed run
    /// may use another value.
    #[arg(long, default_value_t = 256)]
    pub shard_size: usize,
    /// Prompts processed together (generated with per-sequence KV caches, then featurised by one
    /// batched teacher-forced pass). Larger batches raise throughput at the cost of memory; the
    /// output does not depend on it, so a resumed run may use another value.
    #[arg(long, default_value_t = eda_regen::DEFAULT_BATCH_SIZE, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=eda_models::MAX_BATCH_SIZE as u64))]
    pub batch_size: usize,
    /// Only process the first N records of the file (default: all).
    #[arg(long)]
    pub limit: Option<usize>,
    /// Storage precision of the hidden states.
    #[arg(long, value_enum, default_value_t = FeatureDtypeArg::F32)]
    pub dtype: FeatureDtypeArg,
    /// Device and compute precision of the target (features are stored as `--dtype`).
    #[command(flatten)]
    pub compute: ComputeArgs,
    /// Resume `--out` even though records it already processed changed or are missing from the
    /// input (by default refused, naming them: the output would mix two datasets).
    #[arg(long)]
    pub allow_changed_inputs: bool,
}

/// A target and its tokenizer, opened for one dataset run.
pub struct DatasetJob<'a> {
    /// The target computing the features (and, when regenerating locally, the answers).
    pub target: eda_models::Target,
    /// Its tokenizer.
    pub tokenizer: Tokenizer,
    /// Where the tokenizer was read from.
    pub tokenizer_path: PathBuf,
    args: &'a DatasetArgs,
}

impl<'a> DatasetJob<'a> {
    /// Opens the device, the target and its tokenizer (checked against the target's vocabulary).
    pub fn open(target: &Path, tokenizer_flag: Option<&Path>, args: &'a DatasetArgs) -> eda_core::Result<Self> {
        let device = args.compute.open(target)?;
        let model = eda_models::Target::from_pretrained(target, &device)?;
        let tokenizer_path = tokenizer_path(target, tokenizer_flag);
        let tokenizer = eda_models::load_tokenizer_for(&tokenizer_path, model.info().vocab_size)?;
        Ok(DatasetJob { target: model, tokenizer, tokenizer_path, args })
    }

    /// The pipeline settings for `mode`, with `overflow` unless `--overflow` says otherwise.
    pub fn config(
        &self,
        mode: RegenMode,
        template: ChatTemplate,
        system_prompt: Option<String>,
        generation: GenerationConfig,
        overflow: Overflow,
    ) -> RegenConfig {
        let a = self.args;
        RegenConfig {
            mode,
            template,
            system_prompt,
            generation,
            start_one_early: !a.exact_mask,
            max_seq_len: Some(a.max_seq_len),
            overflow: match a.overflow.unwrap_or(overflow) {
                Overflow::Skip => OverflowPolicy::Skip,
                Overflow::Truncate => OverflowPolicy::Truncate,
            },
            shard_size: a.shard_size,
            batch_size: a.batch_size,
            limit: a.limit,
            dtype: a.dtype.into(),
            allow_changed_inputs: a.allow_changed_inputs,
        }
    }

    /// Runs the pipeline over `records` into `--out` and prints a one-line summary.
    pub fn run(&mut self, records: &[PromptRecord], cfg: &RegenConfig, regenerator: &mut dyn Regenerator) -> eda_core::Result<()> {
        let out = &self.args.out;
        let summary = regenerate_dataset(&mut self.target as &mut dyn TargetModel, &self.tokenizer, records, cfg, regenerator, out)?;
        let m = &summary.manifest;
        println!(
            "{} new samples ({} skipped, {} already done, {} of them recovered from the journal) in {:.1}s; {} in total, {} tokens, {} masked; manifest: {}",
            summary.new_samples,
            summary.new_skipped,
            summary.already_done,
            summary.recovered,
            summary.seconds,
            m.samples,
            m.tokens,
            m.masked_tokens,
            out.join(eda_regen::MANIFEST_FILE).display()
        );
        Ok(())
    }
}
