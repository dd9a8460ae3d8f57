//! `eda finetune`: LoRA fine-tuning of a *target* on conversations with answers or on plain
//! documents, merged into an ordinary HF checkpoint. This is how a base model becomes the
//! fine-tuned target EDA adapts a draft to (see `eda_train::finetune`).
//!
//! Output under `--out`: `checkpoints/` (adapters + optimiser state; an interrupted run resumes
//! from the newest), `model/` (the merged checkpoint with the tokenizer files and the chat format)
//! and `finetune_report.json` (losses, cost, and the perplexity of `--eval` before and after).

use std::path::{Path, PathBuf};

use eda_core::{EdaError, TokenId};
use eda_models::{LoraModule, LoraSpec};
use eda_regen::template::{encode, encode_document, join_with_mask};
use eda_regen::{load_prompts, load_texts, ChatFormat, ChatTemplate, PromptRecord};
use eda_train::finetune::{mean_nll, FinetuneConfig, FinetuneReport, LmExample, LoraFinetuner, Nll};
use serde::Serialize;
use tokenizers::Tokenizer;

use super::args::TemplateArgs;

/// Flags of `eda finetune`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Base checkpoint: a HF directory (`config.json`, safetensors or `pytorch_model.bin`,
    /// `tokenizer.json`). For a llama.cpp `.gguf` model run `eda convert` first.
    #[arg(long)]
    pub target: PathBuf,
    /// Conversations *with* answers (JSONL `{"prompt", "response"}`, `{"messages"}` or ShareGPT
    /// JSON whose last turn is the assistant's); only the answers are trained on.
    #[arg(long, required_unless_present = "text", conflicts_with = "text")]
    pub prompts: Option<PathBuf>,
    /// Plain documents instead (JSONL `{"text"}` records or a directory of files, such as a code
    /// tree); every token after the first is trained on.
    #[arg(long)]
    pub text: Option<PathBuf>,
    /// Held-out data of the same kind as the training data: its perplexity (answer tokens only)
    /// is measured before and after fine-tuning and written to the report.
    #[arg(long)]
    pub eval: Option<PathBuf>,
    /// Chat template and system prompt for `--prompts` (recorded with the merged model).
    #[command(flatten)]
    pub template: TemplateArgs,
    /// Output directory; an unfinished run there is resumed.
    #[arg(long)]
    pub out: PathBuf,
    /// LoRA rank r.
    #[arg(long, default_value_t = 8)]
    pub rank: usize,
    /// LoRA alpha: updates are scaled by alpha / r.
    #[arg(long, default_value_t = 16.0)]
    pub alpha: f64,
    /// Projections to adapt in every layer, comma-separated: q, k, v, o, gate, up, down
    /// (PEFT names with `_proj` are accepted too).
    #[arg(long, value_delimiter = ',', default_value = "q,k,v,o,gate,up,down")]
    pub modules: Vec<String>,
    /// Optimiser steps.
    #[arg(long, default_value_t = 300)]
    pub steps: usize,
    /// Sequences per step.
    #[arg(long, default_value_t = 4)]
    pub batch_size: usize,
    /// Truncate training sequences to this many tokens (their tail is dropped).
    #[arg(long, default_value_t = 512)]
    pub max_len: usize,
    /// Peak learning rate (linear warmup, cosine decay to 10 %).
    #[arg(long, default_value_t = 5e-4)]
    pub lr: f64,
    /// Warmup steps.
    #[arg(long, default_value_t = 20)]
    pub warmup_steps: usize,
    /// AdamW weight decay on the adapters.
    #[arg(long, default_value_t = 0.0)]
    pub weight_decay: f64,
    /// Global gradient-norm clip (0 disables).
    #[arg(long, default_value_t = 1.0)]
    pub grad_clip: f64,
    /// Seed of the adapters' initialisation and of the data order.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Checkpoint every N steps (0: only at the end).
    #[arg(long, default_value_t = 50)]
    pub checkpoint_every: usize,
    /// Device (training computes in f32).
    #[command(flatten)]
    pub device: super::args::DeviceArgs,
}

/// `finetune_report.json`.
#[derive(Debug, Serialize)]
struct Report<'a> {
    base: String,
    training_examples: usize,
    training_tokens: usize,
    config: &'a FinetuneConfig,
    train: &'a FinetuneReport,
    eval_before: Option<Nll>,
    eval_after: Option<Nll>,
}

/// One training sequence per record: the rendered prompt (masked out) and the answer closed by
/// `closing`, or a whole document.
fn examples(
    records: &[PromptRecord],
    text: bool,
    tok: &Tokenizer,
    format: &ChatFormat,
    closing: Option<TokenId>,
) -> eda_core::Result<Vec<LmExample>> {
    let mut out = Vec::with_capacity(records.len());
    for r in records {
        let Some(answer) = r.reference_response.as_deref().filter(|a| !a.is_empty()) else {
            tracing::warn!(id = %r.id, "record without an answer skipped");
            continue;
        };
        let (ids, mask) = if text {
            let ids: Vec<TokenId> = encode_document(tok, answer)?.into_iter().chain(closing).collect();
            let mut mask = vec![1u8; ids.len()];
            mask[0] = 0;
            (ids, mask)
        } else {
            let prompt = encode(tok, &format.template.render_prompt(&r.messages, format.system_prompt.as_deref()))?;
            let answer: Vec<TokenId> = encode(tok, answer)?.into_iter().chain(closing).collect();
            join_with_mask(&prompt, &answer, false)
        };
        if ids.len() < 2 {
            continue;
        }
        out.push(LmExample::new(r.id.clone(), ids, mask)?);
    }
    if out.is_empty() {
        return Err(EdaError::EmptyDataset("no record with an answer to train on".into()));
    }
    Ok(out)
}

fn load_records(path: &Path, text: bool) -> eda_core::Result<Vec<PromptRecord>> {
    if text {
        load_texts(path)
    } else {
        load_prompts(path)
    }
}

/// Runs `eda finetune`.
pub fn run(args: Args) -> eda_core::Result<()> {
    if eda_models::gguf::is_gguf_path(&args.target) {
        return Err(EdaError::InvalidArgument(format!(
            "{} is a GGUF file; convert it first (eda convert {} DIR) and fine-tune DIR",
            args.target.display(),
            args.target.display()
        )));
    }
    let modules = args.modules.iter().map(|m| m.parse::<LoraModule>()).collect::<eda_core::Result<Vec<_>>>()?;
    let cfg = FinetuneConfig {
        lora: LoraSpec { rank: args.rank, alpha: args.alpha, modules },
        steps: args.steps,
        batch_size: args.batch_size,
        max_len: args.max_len,
        lr: args.lr,
        warmup_steps: args.warmup_steps,
        weight_decay: args.weight_decay,
        grad_clip: args.grad_clip,
        seed: args.seed,
        checkpoint_every: args.checkpoint_every,
        keep_checkpoints: 2,
    };
    cfg.validate()?;
    let device = super::device::open(args.device.device.as_deref(), Some(super::device::ComputeDtype::F32), None)?;
    eda_core::io::check_output_dir(&args.out)?;
    eda_core::io::clean_stale_temp_files(&args.out);

    let (mcfg, base, _) = eda_models::load_pretrained(&args.target, &device)?;
    let tok_path = args.target.join("tokenizer.json");
    let tok = eda_models::load_tokenizer(&tok_path, mcfg.vocab_size)?;
    let text = args.text.is_some();
    let format = if text {
        ChatFormat { template: ChatTemplate::Plain, system_prompt: None }
    } else {
        let template = args.template.resolve(&args.target, None, &tok_path, &tok)?;
        ChatFormat { template, system_prompt: args.template.system_prompt.clone() }
    };
    // Answers end the way the model ends a turn (documents with EOS).
    let end_of_turn = if text { None } else { format.template.end_of_turn_id(&tok)? };
    let closing = end_of_turn.or_else(|| mcfg.eos_token_ids.first().copied());
    let source =
        args.prompts.as_ref().or(args.text.as_ref()).ok_or_else(|| EdaError::InvalidArgument("give --prompts or --text".into()))?;
    let train = examples(&load_records(source, text)?, text, &tok, &format, closing)?;
    let eval = match &args.eval {
        Some(p) => Some(examples(&load_records(p, text)?, text, &tok, &format, closing)?),
        None => None,
    };
    let training_tokens: usize = train.iter().map(LmExample::trained_tokens).sum();
    tracing::info!(examples = train.len(), tokens = training_tokens, format = %format, "fine-tuning data");

    let eval_before = match &eval {
        Some(e) => Some(mean_nll(&base, e, args.batch_size)?),
        None => None,
    };
    if let Some(n) = &eval_before {
        tracing::info!(perplexity = n.perplexity(), tokens = n.tokens, "held-out perplexity of the base model");
    }
    let mut tuner = LoraFinetuner::new(cfg.clone(), base, &device, &args.out)?;
    tracing::info!(trainable = tuner.trainable_params(), "LoRA parameters");
    let report = tuner.train(&train)?;
    let merged = tuner.into_merged();
    let eval_after = match &eval {
        Some(e) => Some(mean_nll(&merged, e, args.batch_size)?),
        None => None,
    };

    let model_dir = args.out.join("model");
    for f in ["tokenizer.json", "tokenizer_config.json", "generation_config.json"] {
        let src = args.target.join(f);
        if src.is_file() {
            let bytes = std::fs::read(&src).map_err(|e| EdaError::io(&src, e))?;
            eda_core::io::atomic_write(&model_dir.join(f), &bytes)?;
        }
    }
    if !text {
        format.write(&model_dir)?;
    }
    merged.save_pretrained(&mcfg, &model_dir)?;
    let out = Report {
        base: args.target.display().to_string(),
        training_examples: train.len(),
        training_tokens,
        config: &cfg,
        train: &report,
        eval_before,
        eval_after,
    };
    eda_core::io::write_json(&args.out.join("finetune_report.json"), &out)?;
    println!(
        "{} steps ({} resumed), loss {:.3} -> {:.3}; {} of {} parameters trained ({:.2} %), {:.0} s; model: {}",
        report.steps,
        report.resumed_from,
        report.initial_loss,
        report.final_loss,
        report.trainable_params,
        report.base_params,
        100.0 * report.trainable_params as f64 / report.base_params.max(1) as f64,
        report.seconds,
        model_dir.display()
    );
    if let (Some(b), Some(a)) = (eval_before, eval_after) {
        println!("held-out perplexity {:.3} -> {:.3} over {} answer tokens", b.perplexity(), a.perplexity(), a.tokens);
    }
    Ok(())
}
