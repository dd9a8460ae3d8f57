//! `eda generate`: speculative decoding of one prompt, printing text as it is committed.

use std::io::Write;
use std::path::{Path, PathBuf};

use eda_core::{DraftModel, EdaError, GenerationConfig, Result, TargetModel, TokenId};
use eda_spec::{tau_per_cycle, tau_reference, AutoStrategy, ChainStrategy, LmDraft, SpeculativeStrategy, Strategy, TreeStrategy};

/// Which kind of draft `--draft` points to.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum DraftKind {
    /// An EDA/EAGLE draft checkpoint (reads the target's features).
    Eda,
    /// A small language model sharing the target's tokenizer (reads tokens only).
    Lm,
}

/// Which decoding strategy to use.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum StrategyKind {
    /// EAGLE-2 dynamic tree drafting.
    Tree,
    /// Chain drafting.
    Chain,
    /// Plain autoregressive decoding (the draft is not loaded).
    Autoregressive,
    /// Measure the draft cost and acceptance on this device with the first prompt, then use the
    /// fastest of chains up to `--gamma` tokens and three small trees (plain decoding when none
    /// is faster); the probe's predictions and measurements are printed to stderr.
    Auto,
}

/// Model, tokenizer and decoding flags shared by `eda generate` and `eda eval`.
#[derive(clap::Args, Debug, Clone)]
pub struct DecodeArgs {
    /// Target model: a HF directory (`config.json` + safetensors) or a llama.cpp `.gguf` file.
    #[arg(long)]
    pub target: PathBuf,
    /// Draft directory: an EDA draft checkpoint (`--draft-kind eda`) or a HF LM (`--draft-kind lm`).
    /// Not needed with `--strategy autoregressive`.
    #[arg(long)]
    pub draft: Option<PathBuf>,
    /// Kind of draft in `--draft`.
    #[arg(long, value_enum, default_value = "eda")]
    pub draft_kind: DraftKind,
    /// `tokenizer.json` of the target (default: `<target>/tokenizer.json`, or the vocabulary of a
    /// `.gguf` target).
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// Device: cpu, wgpu, wgpu:N, cuda, cuda:N (default: `EDA_DEVICE`, else the first compiled-in
    /// GPU backend with a device, else cpu).
    #[arg(long)]
    pub device: Option<String>,
    /// Precision the target and draft compute in (default: `EDA_DTYPE`, else `auto`: f32 on the
    /// CPU, the checkpoint's stored dtype on a GPU that supports it).
    #[arg(long, value_enum)]
    pub compute_dtype: Option<super::device::ComputeDtype>,
    /// Decoding strategy.
    #[arg(long, value_enum, default_value = "tree")]
    pub strategy: StrategyKind,
    /// Tree: expansion steps after the first drafted level (EAGLE-2 `depth`).
    #[arg(long, default_value_t = 5)]
    pub depth: usize,
    /// Tree: children per expanded node and frontier size (EAGLE-2 `top_k`).
    #[arg(long, default_value_t = 10)]
    pub top_k: usize,
    /// Tree: nodes verified per cycle, root included (EAGLE-2 `total_token`).
    #[arg(long, default_value_t = 60)]
    pub total_tokens: usize,
    /// Chain: drafted tokens per cycle (with `--strategy auto`: the longest chain probed).
    #[arg(long, default_value_t = 4)]
    pub gamma: usize,
    /// Maximum number of generated tokens.
    #[arg(long, default_value_t = 512)]
    pub max_new_tokens: usize,
    /// Sampling temperature (0 = greedy).
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f32,
    /// Nucleus sampling threshold in (0, 1] (1 disables it).
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f32,
    /// Seed of the sampler.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Wrap the prompt in the ChatML template used by the EDA evaluation (docs/method.md §6.1).
    #[arg(long)]
    pub chat: bool,
}

/// Flags of `eda generate`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Models, tokenizer and decoding settings.
    #[command(flatten)]
    pub decode: DecodeArgs,
    /// The prompt text.
    #[arg(long)]
    pub prompt: String,
    /// Print the running τ to stderr after every committed chunk.
    #[arg(long)]
    pub live_tau: bool,
}

/// Everything needed to decode: models, tokenizer, strategy and settings.
pub(crate) struct Loaded {
    pub target: Box<dyn TargetModel>,
    /// `None` with `--strategy autoregressive` (no draft is loaded).
    pub draft: Option<Box<dyn DraftModel>>,
    pub strategy: Box<dyn SpeculativeStrategy>,
    pub cfg: GenerationConfig,
}

/// The ChatML prompt of the EDA evaluation (docs/method.md §6.1).
pub(crate) fn chat_prompt(question: &str) -> String {
    format!("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n")
}

/// Loads models and tokenizer and builds the strategy and generation settings.
pub(crate) fn load(a: &DecodeArgs) -> Result<Loaded> {
    let device = super::device::open(a.device.as_deref(), a.compute_dtype, Some(&a.target))?;
    tracing::info!(target = %a.target.display(), "loading target");
    let target = eda_models::Target::from_pretrained(&a.target, &device)?;
    let info = target.info().clone();
    let strategy: Box<dyn SpeculativeStrategy> = match a.strategy {
        StrategyKind::Tree => Box::new(Strategy::Tree(TreeStrategy { depth: a.depth, top_k: a.top_k, total_tokens: a.total_tokens })),
        StrategyKind::Chain => Box::new(Strategy::Chain(ChainStrategy { gamma: a.gamma })),
        StrategyKind::Autoregressive => Box::new(Strategy::Autoregressive),
        StrategyKind::Auto => Box::new(AutoStrategy::new(a.gamma, AutoStrategy::default().trees, 32)),
    };
    let draft: Option<Box<dyn DraftModel>> = if a.strategy == StrategyKind::Autoregressive {
        None
    } else {
        let dir =
            a.draft.as_ref().ok_or_else(|| EdaError::InvalidArgument("--draft is required unless --strategy autoregressive".into()))?;
        tracing::info!(draft = %dir.display(), kind = ?a.draft_kind, "loading draft");
        match a.draft_kind {
            DraftKind::Lm => Some(Box::new(LmDraft::new(Box::new(eda_models::Target::from_pretrained(dir, &device)?)))),
            DraftKind::Eda => {
                let model = eda_draft::EdaDraft::load(dir, target.embedding_weight(), target.lm_head_weight(), &device)?;
                Some(Box::new(eda_draft::DraftSession::new(model)))
            }
        }
    };
    let cfg = GenerationConfig {
        max_new_tokens: a.max_new_tokens,
        temperature: a.temperature,
        top_p: a.top_p,
        seed: a.seed,
        stop_tokens: info.eos_token_ids.clone(),
    };
    cfg.validate()?;
    Ok(Loaded { target: Box::new(target), draft, strategy, cfg })
}

/// Path of the tokenizer file.
pub(crate) fn tokenizer_path(a: &DecodeArgs) -> PathBuf {
    a.tokenizer.clone().unwrap_or_else(|| {
        if eda_models::gguf::is_gguf_path(&a.target) {
            a.target.clone()
        } else {
            a.target.join("tokenizer.json")
        }
    })
}

/// Builds the text to tokenise (with the ChatML template when `chat`).
pub(crate) fn prompt_text(text: &str, chat: bool) -> String {
    if chat {
        chat_prompt(text)
    } else {
        text.to_string()
    }
}

/// A tokenizer error naming its file.
pub(crate) fn tok_err(path: &Path, e: impl std::fmt::Display) -> EdaError {
    EdaError::Tokenizer { path: path.to_path_buf(), message: e.to_string() }
}

/// Says so when generation ended because the sequence reached the model's maximum positions
/// rather than at a stop token or `--max-new-tokens` (otherwise the cut looks like a normal end).
pub(crate) fn position_limit_note(
    prompt_len: usize,
    generated: &[TokenId],
    cfg: &GenerationConfig,
    max_positions: usize,
) -> Option<String> {
    let stopped = generated.last().is_some_and(|t| cfg.stop_tokens.contains(t));
    if stopped || generated.len() >= cfg.max_new_tokens || prompt_len + generated.len() < max_positions {
        return None;
    }
    Some(format!(
        "warning: stopped at the model's maximum of {max_positions} positions (prompt {prompt_len} + generated {} tokens), before --max-new-tokens {} or a stop token",
        generated.len(),
        cfg.max_new_tokens
    ))
}

/// Runs `eda generate`.
pub fn run(args: Args) -> Result<()> {
    let mut l = load(&args.decode)?;
    let tok_path = tokenizer_path(&args.decode);
    let tokenizer = eda_models::load_tokenizer_for(&tok_path, l.target.info().vocab_size)?;
    let prompt =
        tokenizer.encode(prompt_text(&args.prompt, args.decode.chat), false).map_err(|e| tok_err(&tok_path, e))?.get_ids().to_vec();
    let mut generated: Vec<TokenId> = Vec::new();
    let mut printed = String::new();
    let live = args.live_tau;
    let mut on_commit = |new: &[TokenId], m: &eda_core::DecodeMetrics| {
        generated.extend_from_slice(new);
        // Decode everything so far and print the new suffix (multi-token characters stay intact).
        if let Ok(text) = tokenizer.decode(&generated, true) {
            if text.starts_with(&printed) {
                print!("{}", &text[printed.len()..]);
            } else {
                print!("{text}");
            }
            printed = text;
            let _ = std::io::stdout().flush();
        }
        if live {
            eprint!(" [τ {:.2}]", tau_per_cycle(m));
        }
    };
    let max_pos = l.target.info().max_position_embeddings;
    let out = l.strategy.generate_streaming(
        l.target.as_mut(),
        l.draft.as_deref_mut().map(|d| d as &mut dyn DraftModel),
        &prompt,
        &l.cfg,
        &mut on_commit,
    )?;
    println!();
    if let Some(note) = position_limit_note(prompt.len(), &out.tokens, &l.cfg, max_pos) {
        eprintln!("{note}");
    }
    if let Some(report) = l.strategy.choice_report() {
        eprint!("{report}");
    }
    let m = &out.metrics;
    eprintln!(
        "{}: {} tokens in {:.2}s ({:.1} tok/s), τ {:.2} (reference variant {}), α {:.3}, acceptance per depth {:?}, c {:.3}",
        l.strategy.name(),
        m.new_tokens,
        m.wall_seconds,
        m.tokens_per_second(),
        tau_per_cycle(m),
        tau_reference(m).map(|t| format!("{t:.2}")).unwrap_or_else(|| "-".into()),
        m.alpha(),
        m.acceptance_per_depth().iter().map(|x| (x * 100.0).round() / 100.0).collect::<Vec<_>>(),
        m.cost_ratio()
    );
    Ok(())
}
