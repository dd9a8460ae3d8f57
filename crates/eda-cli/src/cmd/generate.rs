//! `eda generate`: speculative decoding of one prompt, printing text as it is committed.

use std::io::Write;
use std::path::{Path, PathBuf};

use eda_core::{DraftModel, EdaError, GenerationConfig, Result, TargetModel, TokenId};
use eda_regen::{ChatFormat, ChatTemplate, Message, Role};
use eda_spec::{tau_per_cycle, tau_reference, LmDraft, SpeculativeStrategy};
use tokenizers::Tokenizer;

use super::args::{ComputeArgs, SamplingArgs, StrategyArgs, TemplateArg, TemplateArgs, EVAL_SYSTEM_PROMPT};
pub use super::args::{DraftKind, StrategyKind};

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
    /// Device and compute precision.
    #[command(flatten)]
    pub compute: ComputeArgs,
    /// Decoding strategy and its shape.
    #[command(flatten)]
    pub strategy: StrategyArgs,
    /// Generation length and sampling.
    #[command(flatten)]
    pub sampling: SamplingArgs,
    /// Render the prompt with the chat template (`--template`) and a system prompt, as EDA's
    /// evaluation does (docs/method.md §6.1). This is the default when the draft folder records
    /// the chat format of its training data (`chat_format.json`, written by `eda train`): then
    /// that template and system prompt are used unless `--template` or `--system-prompt` say
    /// otherwise. Without a recorded format and without `--chat`, the text is tokenised as given.
    #[arg(long)]
    pub chat: bool,
    /// Tokenise the prompt text as given, even when the draft records a chat format.
    #[arg(long, conflicts_with = "chat")]
    pub raw: bool,
    /// Chat template and system prompt used by `--chat`.
    #[command(flatten)]
    pub template: TemplateArgs,
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

/// Loads models and tokenizer and builds the strategy and generation settings.
pub(crate) fn load(a: &DecodeArgs) -> Result<Loaded> {
    let device = a.compute.open(&a.target)?;
    tracing::info!(target = %a.target.display(), "loading target");
    let target = eda_models::Target::from_pretrained(&a.target, &device)?;
    let info = target.info().clone();
    let strategy = a.strategy.build(&device);
    let draft: Option<Box<dyn DraftModel>> = if a.strategy.kind(&device) == StrategyKind::Autoregressive {
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
    let cfg = a.sampling.generation_config(info.eos_token_ids.clone());
    cfg.validate()?;
    Ok(Loaded { target: Box::new(target), draft, strategy, cfg })
}

/// Turns conversations into prompt token ids: rendered by the chat template (with `--chat`, or
/// by default when the draft records its training data's chat format), else the text of the last
/// user turn, tokenised as given.
pub(crate) struct PromptEncoder {
    tokenizer: Tokenizer,
    path: PathBuf,
    /// The template and system prompt, when prompts are rendered as chats.
    chat: Option<(ChatTemplate, Option<String>)>,
}

impl PromptEncoder {
    /// The encoder `a` asks for, over the target's tokenizer (checked against `vocab_size`).
    pub(crate) fn new(a: &DecodeArgs, vocab_size: usize) -> Result<Self> {
        let path = super::args::tokenizer_path(&a.target, a.tokenizer.as_deref());
        let tokenizer = eda_models::load_tokenizer_for(&path, vocab_size)?;
        let recorded = match &a.draft {
            Some(dir) if !a.raw => ChatFormat::read(dir)?,
            _ => None,
        };
        let chat = if a.raw || !(a.chat || recorded.is_some()) {
            None
        } else {
            let template = match (a.template.template, &recorded) {
                (TemplateArg::Auto, Some(r)) => r.template,
                _ => a.template.resolve(&a.target, a.tokenizer.as_deref(), &path, &tokenizer)?,
            };
            let system = match (&a.template.system_prompt, &recorded) {
                (Some(s), _) => Some(s.clone()),
                (None, Some(r)) => r.system_prompt.clone(),
                (None, None) => Some(EVAL_SYSTEM_PROMPT.to_string()),
            };
            let used = ChatFormat { template, system_prompt: system.clone() };
            match &recorded {
                Some(r) if *r != used => {
                    tracing::warn!(draft = %r, prompts = %used, "prompts are rendered differently from the draft's training data; τ may drop")
                }
                Some(_) => tracing::info!(format = %used, "chat prompt, as recorded with the draft"),
                None => tracing::info!(format = %used, "chat prompt"),
            }
            Some((template, system))
        };
        Ok(PromptEncoder { tokenizer, path, chat })
    }

    /// The tokenizer.
    pub(crate) fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// The prompt text of `messages` (a conversation ending with a user turn).
    fn render(&self, messages: &[Message]) -> String {
        match &self.chat {
            Some((template, system)) => template.render_prompt(messages, system.as_deref()),
            None => messages.iter().rev().find(|m| m.role == Role::User).map(|m| m.content.clone()).unwrap_or_default(),
        }
    }

    /// The prompt ids of `messages` (a conversation ending with a user turn).
    pub(crate) fn encode(&self, messages: &[Message]) -> Result<Vec<TokenId>> {
        Ok(self.tokenizer.encode(self.render(messages), false).map_err(|e| tok_err(&self.path, e))?.get_ids().to_vec())
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
    let encoder = PromptEncoder::new(&args.decode, l.target.info().vocab_size)?;
    let tokenizer = encoder.tokenizer();
    let prompt = encoder.encode(&super::args::user_message(&args.prompt))?;
    let mut generated: Vec<TokenId> = Vec::new();
    let mut printed = String::new();
    let autoregressive = l.draft.is_none();
    // τ is meaningless for plain decoding, and undefined before the first verification.
    let live = args.live_tau && !autoregressive;
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
        if live && m.target_forwards > 1 {
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
    if live {
        eprintln!();
    }
    if autoregressive {
        eprintln!("autoregressive: {} tokens in {:.2}s ({:.1} tok/s)", m.new_tokens, m.wall_seconds, m.tokens_per_second());
        return Ok(());
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_prompts_are_rendered_by_the_shared_template_with_the_evaluation_system_prompt() {
        let tokenizer: Tokenizer = r#"{"version":"1.0","truncation":null,"padding":null,"added_tokens":[],"normalizer":null,
            "pre_tokenizer":{"type":"Whitespace"},"post_processor":null,"decoder":null,
            "model":{"type":"WordLevel","vocab":{"<unk>":0,"hi":1},"unk_token":"<unk>"}}"#
            .parse()
            .unwrap();
        let question = super::super::args::user_message("What is 2+2?");
        let chat = PromptEncoder {
            tokenizer: tokenizer.clone(),
            path: PathBuf::from("t.json"),
            chat: Some((ChatTemplate::ChatMl, Some(EVAL_SYSTEM_PROMPT.to_string()))),
        };
        // The prompt EDA's evaluation feeds the target (docs/method.md §6.1).
        assert_eq!(
            chat.render(&question),
            "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n"
        );
        let plain = PromptEncoder { tokenizer, path: PathBuf::from("t.json"), chat: None };
        let convo = [Message::new(Role::System, "S"), Message::new(Role::User, "hi")];
        assert_eq!(plain.render(&convo), "hi", "without --chat the last user turn is the prompt text");
        assert_eq!(plain.encode(&convo).unwrap(), vec![1]);
    }

    #[test]
    fn the_drafts_recorded_chat_format_renders_prompts_unless_overridden() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            a: DecodeArgs,
        }
        let fixture = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/qwen2-tiny");
        let draft = tempfile::tempdir().unwrap();
        let (t, d) = (fixture.to_str().unwrap(), draft.path().to_str().unwrap());
        let encoder = |extra: &[&str]| {
            let mut argv = vec!["eda", "--target", t, "--draft", d];
            argv.extend_from_slice(extra);
            PromptEncoder::new(&Cli::try_parse_from(argv).unwrap().a, 512).unwrap()
        };
        let q = super::super::args::user_message("hi");
        assert_eq!(encoder(&[]).render(&q), "hi", "nothing recorded: the text as given");
        assert!(encoder(&["--chat"]).render(&q).contains(EVAL_SYSTEM_PROMPT), "--chat without a record: EDA's system prompt");

        ChatFormat { template: ChatTemplate::Plain, system_prompt: None }.write(draft.path()).unwrap();
        assert_eq!(encoder(&[]).render(&q), "User: hi\nAssistant: ", "the recorded format, with no system prompt");
        assert_eq!(encoder(&["--chat"]).render(&q), "User: hi\nAssistant: ");
        assert_eq!(encoder(&["--raw"]).render(&q), "hi");
        assert_eq!(encoder(&["--system-prompt", "S"]).render(&q), "S\n\nUser: hi\nAssistant: ", "a flag overrides the record");
        assert!(encoder(&["--template", "chatml"]).render(&q).starts_with("<|im_start|>user\nhi"));
        assert!(Cli::try_parse_from(["eda", "--target", t, "--chat", "--raw"]).is_err(), "--chat and --raw exclude each other");
    }
}
