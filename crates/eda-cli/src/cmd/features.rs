//! `eda features`: teacher-forced hidden states of a target over text it is given (conversations
//! with their answers, or plain documents), the training data of stage 1 and the base
//! distribution `eda select` measures drift from.

use std::path::PathBuf;

use eda_core::GenerationConfig;
use eda_regen::{load_prompts, load_texts, ChatTemplate, LocalRegenerator, RegenMode};

use super::args::TemplateArgs;
use super::dataset::{DatasetArgs, DatasetJob, Overflow};

/// Flags of `eda features`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Target checkpoint: a HF directory (`config.json`, `*.safetensors`) or a llama.cpp `.gguf`
    /// file. Usually the *base* target.
    #[arg(long)]
    pub target: PathBuf,
    /// `tokenizer.json` of the target (default: `<target>/tokenizer.json`, or the vocabulary of a
    /// `.gguf` target).
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// Conversations *with* answers, in any layout `eda regenerate` reads: JSONL
    /// `{"prompt", "response"}`, `{"messages"}` or ShareGPT JSON whose last turn is the
    /// assistant's. The answer is the loss-masked part; records without one are skipped.
    #[arg(long, required_unless_present = "text", conflicts_with = "text")]
    pub prompts: Option<PathBuf>,
    /// Plain-text documents instead of conversations: a JSONL file of `{"text": ...}` records,
    /// or a directory whose files are one document each (a code tree, for example). No chat
    /// template; every token after the first is in the loss.
    #[arg(long)]
    pub text: Option<PathBuf>,
    /// Chat template and system prompt for `--prompts` (recorded in the manifest, so that
    /// `train`, `eval` and `generate` render prompts the same way).
    #[command(flatten)]
    pub template: TemplateArgs,
    /// Output, sequence length, sharding, batching and precision.
    #[command(flatten)]
    pub dataset: DatasetArgs,
}

/// Runs `eda features`.
pub fn run(args: Args) -> eda_core::Result<()> {
    let (records, mode, source) = match (&args.prompts, &args.text) {
        (Some(p), _) => (load_prompts(p)?, RegenMode::Original, p),
        (None, Some(t)) => (load_texts(t)?, RegenMode::Text, t),
        (None, None) => return Err(eda_core::EdaError::InvalidArgument("give --prompts or --text".into())),
    };
    tracing::info!(records = records.len(), file = %source.display(), ?mode, "inputs loaded");
    let mut job = DatasetJob::open(&args.target, args.tokenizer.as_deref(), &args.dataset)?;
    let (template, system) = if mode == RegenMode::Text {
        (ChatTemplate::Plain, None)
    } else {
        let t = args.template.resolve(&args.target, args.tokenizer.as_deref(), &job.tokenizer_path, &job.tokenizer)?;
        tracing::info!(template = %t, "chat template");
        (t, args.template.system_prompt.clone())
    };
    let cfg = job.config(mode, template, system, GenerationConfig::greedy(), Overflow::Truncate);
    // Nothing is generated: the pipeline reads the given answers or texts.
    job.run(&records, &cfg, &mut LocalRegenerator)
}
