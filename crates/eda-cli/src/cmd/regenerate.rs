//! `eda regenerate`: the fine-tuned target answers domain prompts and its hidden states become
//! training shards (see the `eda-regen` crate).

use std::path::{Path, PathBuf};

use eda_core::data::FeatureDType;
use eda_core::{EdaError, GenerationConfig, Regenerator, TargetModel};
use eda_regen::{
    load_prompts, regenerate_dataset, ChatTemplate, LocalRegenerator, OpenAiRegenerator, OpenAiSettings, OverflowPolicy, RegenConfig,
    RegenMode,
};

/// Where responses come from.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// The target answers every prompt (EDA's regenerated data).
    Regenerate,
    /// Reuse the dataset's own answers (the "original data" baseline); prompts without one are skipped.
    Original,
}

/// Chat template choice.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Template {
    /// Detect from `tokenizer_config.json` (next to the tokenizer, else in the target directory;
    /// for a `.gguf` target without `--tokenizer`, from the file's `tokenizer.chat_template`).
    Auto,
    /// Qwen2 ChatML (`<|im_start|>`/`<|im_end|>`).
    Chatml,
    /// Llama 3 headers (`<|start_header_id|>`, `<|eot_id|>`).
    Llama3,
    /// No special tokens: `User: ...\nAssistant: `.
    Plain,
}

/// What to do with sequences longer than `--max-seq-len`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Overflow {
    /// Skip the prompt (logged and recorded in the manifest).
    Skip,
    /// Keep the prompt's last tokens and cut the response's tail.
    Truncate,
}

/// Storage precision of hidden states.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dtype {
    /// 32-bit floats.
    F32,
    /// bfloat16 (half the size, like the reference).
    Bf16,
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
    /// Maximum number of generated tokens per answer.
    #[arg(long, default_value_t = 512)]
    pub max_new_tokens: usize,
    /// Sampling temperature; 0 decodes greedily.
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f32,
    /// Nucleus sampling threshold in (0, 1]; 1 disables it.
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f32,
    /// Sampling seed (each prompt's seed is derived from it and the prompt id).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// System prompt for conversations without one, e.g. "You are a helpful assistant.".
    #[arg(long)]
    pub system_prompt: Option<String>,
    /// Chat template.
    #[arg(long, value_enum, default_value_t = Template::Auto)]
    pub template: Template,
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
    #[arg(long, value_enum, default_value_t = Dtype::F32)]
    pub dtype: Dtype,
    /// Device for the target (`cpu`, `wgpu`, `wgpu:N`, `cuda`, `cuda:N`); default: `EDA_DEVICE`,
    /// else the first compiled-in GPU backend with a device, else cpu.
    #[arg(long)]
    pub device: Option<String>,
    /// Precision the target computes in (default: `EDA_DTYPE`, else `auto`: f32 on the CPU, the
    /// checkpoint's stored dtype on a GPU that supports it). Features are stored as `--dtype`.
    #[arg(long, value_enum)]
    pub compute_dtype: Option<super::device::ComputeDtype>,
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

fn detect_template(args: &Args, tokenizer_path: &Path) -> eda_core::Result<ChatTemplate> {
    Ok(match args.template {
        Template::Chatml => ChatTemplate::ChatMl,
        Template::Llama3 => ChatTemplate::Llama3,
        Template::Plain => ChatTemplate::Plain,
        Template::Auto if args.tokenizer.is_none() && eda_models::gguf::is_gguf_path(&args.target) => {
            ChatTemplate::from_jinja(&eda_models::gguf::chat_template(&args.target)?.unwrap_or_default())
        }
        Template::Auto => {
            let beside = tokenizer_path.parent().map(|d| d.join("tokenizer_config.json"));
            let cfg = beside.filter(|p| p.exists()).unwrap_or_else(|| args.target.join("tokenizer_config.json"));
            ChatTemplate::detect(&cfg)?
        }
    })
}

/// Runs `eda regenerate`.
pub fn run(args: Args) -> eda_core::Result<()> {
    let device = super::device::open(args.device.as_deref(), args.compute_dtype, Some(&args.target))?;
    let prompts = load_prompts(&args.prompts)?;
    tracing::info!(prompts = prompts.len(), file = %args.prompts.display(), "prompts loaded");
    let mut target = eda_models::Target::from_pretrained(&args.target, &device)?;
    let tokenizer_path = args.tokenizer.clone().unwrap_or_else(|| {
        if eda_models::gguf::is_gguf_path(&args.target) {
            args.target.clone()
        } else {
            args.target.join("tokenizer.json")
        }
    });
    let tokenizer = eda_models::load_tokenizer_for(&tokenizer_path, target.info().vocab_size)?;
    let template = detect_template(&args, &tokenizer_path)?;
    tracing::info!(%template, "chat template");
    let cfg = RegenConfig {
        mode: match args.mode {
            Mode::Regenerate => RegenMode::Regenerated,
            Mode::Original => RegenMode::Original,
        },
        template,
        system_prompt: args.system_prompt.clone(),
        generation: GenerationConfig {
            max_new_tokens: args.max_new_tokens,
            temperature: args.temperature,
            top_p: args.top_p,
            seed: args.seed,
            stop_tokens: vec![],
        },
        start_one_early: !args.exact_mask,
        max_seq_len: Some(args.max_seq_len),
        overflow: match args.overflow {
            Overflow::Skip => OverflowPolicy::Skip,
            Overflow::Truncate => OverflowPolicy::Truncate,
        },
        shard_size: args.shard_size,
        batch_size: args.batch_size,
        limit: args.limit,
        dtype: match args.dtype {
            Dtype::F32 => FeatureDType::F32,
            Dtype::Bf16 => FeatureDType::BF16,
        },
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
