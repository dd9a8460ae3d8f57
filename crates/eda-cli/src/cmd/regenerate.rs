//! `eda regenerate`: the fine-tuned target answers domain prompts and its hidden states become
//! training shards (see the `eda-regen` crate).

use std::path::PathBuf;

use eda_core::{EdaError, Regenerator, TargetModel};
use eda_regen::{
    load_prompts, regenerate_dataset, LocalRegenerator, OpenAiRegenerator, OpenAiSettings, OverflowPolicy, RegenConfig, RegenMode,
};

use super::args::{tokenizer_path, ComputeArgs, FeatureDtypeArg, SamplingArgs, TemplateArgs};

/// Where responses come from.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// The target answers every prompt (EDA's regenerated data).
    Regenerate,
    /// Reuse the dataset's own answers (the "original data" baseline); prompts without one are skipped.
    Original,
}

/// What to do with sequences longer than `--max-seq-len`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Overflow {
    /// Skip the prompt (logged and recorded in the manifest).
    Skip,
    /// Keep the prompt's last tokens and cut the response's tail.
    Truncate,
}

/// Flags of `eda regenerate`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Target checkpoint: a HF directory (`config.json`, `*.safetensors`) or a llama.cpp `.gguf`
    /// file; it computes the hidden states and, without `--server-url`, generates the answers.
    #[arg(long)]
    pub target: PathBuf,
    /// `tokenizer.json` of the target (default: `<target>/tokenizer.json`, or the vocabulary of a
    /// `.gguf` target).
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// Prompts file: JSONL (`{"prompt"}` or `{"messages"}`) or ShareGPT JSON, detected automatically.
    #[arg(long)]
    pub prompts: PathBuf,
    /// Output directory for shards and `manifest.json`; an existing run there is resumed.
    #[arg(long)]
    pub out: PathBuf,
    /// Regenerate answers with the target, or reuse the dataset's original answers.
    #[arg(long, value_enum, default_value_t = Mode::Regenerate)]
    pub mode: Mode,
    /// Generation length and sampling.
    #[command(flatten)]
    pub sampling: SamplingArgs,
    /// Chat template and system prompt.
    #[command(flatten)]
    pub template: TemplateArgs,
    /// Maximum sequence length, prompt plus answer (capped by the model's maximum positions).
    #[arg(long, default_value_t = 2048)]
    pub max_seq_len: usize,
    /// What to do with prompts or samples longer than `--max-seq-len`.
    #[arg(long, value_enum, default_value_t = Overflow::Skip)]
    pub overflow: Overflow,
    /// Start the loss mask at the first answer token instead of one token early on the last
    /// header token (the reference implementation's convention, the default).
    #[arg(long)]
    pub exact_mask: bool,
    /// Samples per shard file.
    #[arg(long, default_value_t = 256)]
    pub shard_size: usize,
    /// Prompts generated together (per-sequence KV caches) and then featurised by one batched
    /// teacher-forced pass. Larger batches raise throughput at the cost of memory; the output
    /// does not depend on it, so a resumed run may use another value.
    #[arg(long, default_value_t = eda_regen::DEFAULT_BATCH_SIZE, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=eda_models::MAX_BATCH_SIZE as u64))]
    pub batch_size: usize,
    /// Only process the first N prompts of the file.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Storage precision of the hidden states.
    #[arg(long, value_enum, default_value_t = FeatureDtypeArg::F32)]
    pub dtype: FeatureDtypeArg,
    /// Device and compute precision of the target (features are stored as `--dtype`).
    #[command(flatten)]
    pub compute: ComputeArgs,
    /// Base URL of an OpenAI-compatible completions server (vLLM, SGLang, llama.cpp) that
    /// generates the answers instead of the local target; hidden states stay local.
    #[arg(long, requires = "server_model")]
    pub server_url: Option<String>,
    /// Model name served by `--server-url`.
    #[arg(long, requires = "server_url")]
    pub server_model: Option<String>,
    /// API key for `--server-url` (default: the `OPENAI_API_KEY` environment variable, if set).
    #[arg(long)]
    pub server_api_key: Option<String>,
    /// Timeout of one server request, in seconds.
    #[arg(long, default_value_t = 600)]
    pub server_timeout: u64,
    /// Resume `--out` even though prompts it already answered changed or are missing from
    /// `--prompts` (by default refused, naming them: the output would mix two datasets).
    #[arg(long)]
    pub allow_changed_inputs: bool,
}

/// Runs `eda regenerate`.
pub fn run(args: Args) -> eda_core::Result<()> {
    let device = args.compute.open(&args.target)?;
    let prompts = load_prompts(&args.prompts)?;
    tracing::info!(prompts = prompts.len(), file = %args.prompts.display(), "prompts loaded");
    let mut target = eda_models::Target::from_pretrained(&args.target, &device)?;
    let tokenizer_path = tokenizer_path(&args.target, args.tokenizer.as_deref());
    let tokenizer = eda_models::load_tokenizer_for(&tokenizer_path, target.info().vocab_size)?;
    let template = args.template.resolve(&args.target, args.tokenizer.as_deref(), &tokenizer_path, &tokenizer)?;
    tracing::info!(%template, "chat template");
    let cfg = RegenConfig {
        mode: match args.mode {
            Mode::Regenerate => RegenMode::Regenerated,
            Mode::Original => RegenMode::Original,
        },
        template,
        system_prompt: args.template.system_prompt.clone(),
        generation: args.sampling.generation_config(vec![]),
        start_one_early: !args.exact_mask,
        max_seq_len: Some(args.max_seq_len),
        overflow: match args.overflow {
            Overflow::Skip => OverflowPolicy::Skip,
            Overflow::Truncate => OverflowPolicy::Truncate,
        },
        shard_size: args.shard_size,
        batch_size: args.batch_size,
        limit: args.limit,
        dtype: args.dtype.into(),
        allow_changed_inputs: args.allow_changed_inputs,
    };
    let mut remote = match (&args.server_url, &args.server_model) {
        (Some(url), Some(model)) => {
            let mut s = OpenAiSettings::new(url.clone(), model.clone());
            s.api_key = args.server_api_key.clone().or_else(|| std::env::var("OPENAI_API_KEY").ok());
            s.timeout_secs = args.server_timeout;
            let end = template.end_of_turn_id(&tokenizer)?;
            Some(OpenAiRegenerator::new(s, tokenizer.clone(), end))
        }
        (None, None) => None,
        _ => return Err(EdaError::InvalidArgument("--server-url and --server-model go together".into())),
    };
    let regenerator: &mut dyn Regenerator = match remote.as_mut() {
        Some(r) => r,
        None => &mut LocalRegenerator,
    };
    let summary = regenerate_dataset(&mut target, &tokenizer, &prompts, &cfg, regenerator, &args.out)?;
    let m = &summary.manifest;
    println!(
        "{} new samples ({} skipped, {} already done) in {:.1}s; {} in total, {} tokens, {} masked; manifest: {}",
        summary.new_samples,
        summary.new_skipped,
        summary.already_done,
        summary.seconds,
        m.samples,
        m.tokens,
        m.masked_tokens,
        args.out.join(eda_regen::MANIFEST_FILE).display()
    );
    Ok(())
}
