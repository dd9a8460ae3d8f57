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
    /// Evaluate only the first N prompts (N >= 1).
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
    // A UTF-8 byte-order mark (Windows editors) is not part of the first record.
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
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
    if args.limit == Some(0) {
        return Err(EdaError::InvalidArgument("--limit must be at least 1 (it is the number of prompts to evaluate)".into()));
    }
    // Refuse an unusable --out before minutes of decoding, not after.
    eda_core::io::check_output_file(&args.out)?;
    let mut texts = read_prompts(&args.prompts)?;
    if let Some(n) = args.limit {
        texts.truncate(n);
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
    let report = evaluate_with(
        l.target.as_mut(),
        l.draft.as_deref_mut().map(|d| d as &mut dyn eda_core::DraftModel),
        l.strategy.as_mut(),
        &prompts,
        &l.cfg,
        &opts,
    )?;
    if let Some(choice) = l.strategy.choice_report() {
        eprint!("{choice}");
    }
    report.write_json(&args.out)?;
    println!("{report}");
    eprintln!("metrics written to {}", args.out.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_cut_by_the_maximum_positions_is_reported() {
        use super::super::generate::position_limit_note;
        let cfg = eda_core::GenerationConfig { max_new_tokens: 10, stop_tokens: vec![0], ..eda_core::GenerationConfig::greedy() };
        let note = position_limit_note(6, &[5, 5], &cfg, 8).expect("cut at 8 positions");
        assert!(note.contains("maximum of 8 positions"), "{note}");
        assert_eq!(position_limit_note(6, &[5, 0], &cfg, 8), None, "ended at a stop token");
        assert_eq!(position_limit_note(2, &[5; 10], &cfg, 12), None, "ended at --max-new-tokens");
        assert_eq!(position_limit_note(2, &[5, 5], &cfg, 100), None);
    }

    #[test]
    fn limit_zero_and_an_unsafe_out_are_refused_before_loading_anything() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            args: Args,
        }
        let dir = tempfile::tempdir().unwrap();
        let prompts = dir.path().join("p.jsonl");
        std::fs::write(&prompts, "\u{feff}{\"prompt\": \"hi\"}\n").unwrap();
        assert_eq!(read_prompts(&prompts).unwrap(), vec!["hi".to_string()]);
        let p = prompts.to_str().unwrap();
        let missing = dir.path().join("no-model");
        let m = missing.to_str().unwrap();
        let out = dir.path().join("m.json");
        let parse = |limit: &str, out: &str| {
            Cli::try_parse_from(["eda", "--target", m, "--draft", m, "--prompts", p, "--out", out, "--limit", limit]).unwrap().args
        };
        assert!(matches!(run(parse("0", out.to_str().unwrap())), Err(EdaError::InvalidArgument(_))));
        assert!(matches!(run(parse("1", dir.path().to_str().unwrap())), Err(EdaError::UnsafeOutput { .. })));
    }
}
