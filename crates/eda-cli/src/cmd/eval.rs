//! `eda eval`: speculative decoding over a prompts file; metrics JSON and a table.

use std::path::{Path, PathBuf};

use eda_core::{EdaError, Result, TokenId};
use eda_spec::{evaluate_with, EvalOptions};

use super::generate::{load, prompt_text, tok_err, tokenizer_path, DecodeArgs};

/// Flags of `eda eval`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Models, tokenizer and decoding settings.
    #[command(flatten)]
    pub decode: DecodeArgs,
    /// Prompts: JSONL, one `{"prompt": "..."}` per line (FastChat `{"turns": ["..."]}` also
    /// accepted: the first turn is used).
    #[arg(long)]
    pub prompts: PathBuf,
    /// Where to write the metrics JSON (per-prompt and aggregate τ, α, tokens/s, speedup).
    #[arg(long)]
    pub out: PathBuf,
    /// Evaluate only the first N prompts.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Untimed warm-up runs on the first prompt (the reference uses 3).
    #[arg(long, default_value_t = 1)]
    pub warmup: usize,
    /// Skip the autoregressive baseline (no measured speedup, no greedy check).
    #[arg(long)]
    pub no_baseline: bool,
}

/// Reads the prompt texts of a JSONL file.
fn read_prompts(path: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path).map_err(|e| EdaError::io(path, e))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let bad = |message: String| EdaError::MalformedData { path: path.to_path_buf(), record: i + 1, message };
        let v: serde_json::Value = serde_json::from_str(line).map_err(|e| bad(e.to_string()))?;
        let prompt = v
            .get("prompt")
            .and_then(|p| p.as_str())
            .or_else(|| v.get("turns").and_then(|t| t.get(0)).and_then(|t| t.as_str()))
            .ok_or_else(|| bad("expected a string field `prompt` (or `turns`)".into()))?;
        out.push(prompt.to_string());
    }
    if out.is_empty() {
        return Err(EdaError::EmptyDataset(format!("no prompts in {}", path.display())));
    }
    Ok(out)
}

/// Runs `eda eval`.
pub fn run(args: Args) -> Result<()> {
    let mut texts = read_prompts(&args.prompts)?;
    if let Some(n) = args.limit {
        texts.truncate(n.max(1));
    }
    let mut l = load(&args.decode)?;
    let tok_path = tokenizer_path(&args.decode);
    let tokenizer = eda_models::load_tokenizer_for(&tok_path, l.target.info().vocab_size)?;
    let prompts: Vec<Vec<TokenId>> = texts
        .iter()
        .map(|t| Ok(tokenizer.encode(prompt_text(t, args.decode.chat), false).map_err(|e| tok_err(&tok_path, e))?.get_ids().to_vec()))
        .collect::<Result<_>>()?;
    let opts = EvalOptions { warmup: args.warmup, baseline: !args.no_baseline };
    tracing::info!(prompts = prompts.len(), "evaluating");
    let report = evaluate_with(l.target.as_mut(), l.draft.as_mut(), l.strategy.as_mut(), &prompts, &l.cfg, &opts)?;
    if let Some(choice) = l.strategy.choice_report() {
        eprint!("{choice}");
    }
    report.write_json(&args.out)?;
    println!("{report}");
    eprintln!("metrics written to {}", args.out.display());
    Ok(())
}
