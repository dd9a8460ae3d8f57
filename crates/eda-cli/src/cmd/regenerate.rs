//! `eda regenerate`: the fine-tuned target answers domain prompts and its hidden states become
//! training shards (see the `eda-regen` crate).

use std::path::PathBuf;

use eda_core::{EdaError, Regenerator};
use eda_regen::{load_prompts, LocalRegenerator, OpenAiRegenerator, OpenAiSettings, RegenMode};

use super::args::{SamplingArgs, TemplateArgs};
use super::dataset::{DatasetArgs, DatasetJob, Overflow};

/// Where responses come from.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// The target answers every prompt (EDA's regenerated data).
    Regenerate,
    /// Reuse the dataset's own answers (the "original data" baseline; `eda features --prompts`
    /// does the same); prompts without one are skipped.
    Original,
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
    /// Prompts file: JSONL (`{"prompt"}`, `{"messages"}`, FastChat `{"turns"}`) or ShareGPT JSON,
    /// detected automatically.
    #[arg(long)]
    pub prompts: PathBuf,
    /// Regenerate answers with the target, or reuse the dataset's original answers.
    #[arg(long, value_enum, default_value_t = Mode::Regenerate)]
    pub mode: Mode,
    /// Generation length and sampling.
    #[command(flatten)]
    pub sampling: SamplingArgs,
    /// Chat template and system prompt.
    #[command(flatten)]
    pub template: TemplateArgs,
    /// Output, sequence length, sharding, batching and precision.
    #[command(flatten)]
    pub dataset: DatasetArgs,
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
    /// Retries of a server request after a transient failure (connection refused or reset,
    /// timeout, HTTP 429/5xx), waiting 1 s, 2 s, 4 s, ... in between. When they run out the run
    /// stops with an error; every finished sample is kept, so rerunning resumes.
    #[arg(long, default_value_t = 3, value_name = "N")]
    pub server_retries: u32,
}

/// Runs `eda regenerate`.
pub fn run(args: Args) -> eda_core::Result<()> {
    let prompts = load_prompts(&args.prompts)?;
    tracing::info!(prompts = prompts.len(), file = %args.prompts.display(), "prompts loaded");
    let mode = match args.mode {
        Mode::Regenerate => RegenMode::Regenerated,
        Mode::Original => RegenMode::Original,
    };
    let mut job = DatasetJob::open(&args.target, args.tokenizer.as_deref(), &args.dataset)?;
    let template = args.template.resolve(&args.target, args.tokenizer.as_deref(), &job.tokenizer_path, &job.tokenizer)?;
    tracing::info!(%template, "chat template");
    let cfg = job.config(mode, template, args.template.system_prompt.clone(), args.sampling.generation_config(vec![]), Overflow::Skip);
    let mut remote = match (&args.server_url, &args.server_model) {
        (Some(url), Some(model)) => {
            let mut s = OpenAiSettings::new(url.clone(), model.clone());
            s.api_key = args.server_api_key.clone().or_else(|| std::env::var("OPENAI_API_KEY").ok());
            s.timeout_secs = args.server_timeout;
            s.max_retries = args.server_retries;
            let end = template.end_of_turn_id(&job.tokenizer)?;
            Some(OpenAiRegenerator::new(s, job.tokenizer.clone(), end))
        }
        (None, None) => None,
        _ => return Err(EdaError::InvalidArgument("--server-url and --server-model go together".into())),
    };
    let regenerator: &mut dyn Regenerator = match remote.as_mut() {
        Some(r) => r,
        None => &mut LocalRegenerator,
    };
    job.run(&prompts, &cfg, regenerator)
}
