//! `eda eval`: speculative decoding over a prompts file; metrics JSON and a table.

use std::path::{Path, PathBuf};

use eda_core::{EdaError, Result, TokenId};
use eda_spec::replay::{evaluate_replay, Recording, ReplayTarget};
use eda_spec::{evaluate_with, BaselineCache, EvalOptions};

use super::generate::{load, DecodeArgs, PromptEncoder, StrategyKind};

/// Flags of `eda eval`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Models, tokenizer and decoding settings.
    #[command(flatten)]
    pub decode: DecodeArgs,
    /// Prompts file, in any layout `eda regenerate` reads: JSONL (`{"prompt"}`, `{"messages"}`,
    /// FastChat `{"turns"}`: the first turn) or ShareGPT JSON. A trailing assistant turn is dropped.
    #[arg(long, required_unless_present = "replay", conflicts_with = "replay")]
    pub prompts: Option<PathBuf>,
    /// Replay instead of decoding with the target: a greedy `eda regenerate` output folder of
    /// `--target` (manifest + shards). Its recorded answers and hidden states stand in for the
    /// target (eda_spec::replay), so τ, α and acceptance per depth cost only the draft's time and
    /// equal a live greedy evaluation of the same prompts; the prompts, chat template, stop tokens
    /// and lengths are the recording's (`--prompts`, `--chat`, `--max-new-tokens` do not apply).
    /// No speedup or cost ratio is measured. Needs a drafting `--strategy` (chain or tree).
    #[arg(long, value_name = "DIR")]
    pub replay: Option<PathBuf>,
    /// Where to write the metrics JSON (per-prompt and aggregate τ, α, tokens/s, speedup).
    #[arg(long)]
    pub out: PathBuf,
    /// Evaluate only the first N prompts, N >= 1 (default: all).
    #[arg(long)]
    pub limit: Option<usize>,
    /// Untimed warm-up runs on the first prompt (the reference uses 3).
    #[arg(long, default_value_t = 1)]
    pub warmup: usize,
    /// Skip the autoregressive baseline (no measured speedup, no greedy check).
    #[arg(long)]
    pub no_baseline: bool,
    /// Directory of saved autoregressive baselines (default: `$EDA_CACHE_DIR/baselines`, else
    /// `$XDG_CACHE_HOME/eda/baselines`, else `~/.cache/eda/baselines`). The baseline of the same
    /// target weights, prompts, generation settings, --warmup, device, precision and host is
    /// reused instead of decoded again; the metrics JSON (`baseline.source: "cached"`, file,
    /// time measured) and a line under the table say so.
    #[arg(long, value_name = "DIR")]
    pub baseline_cache: Option<PathBuf>,
    /// Measure the autoregressive baseline side by side again even when a saved one exists, and
    /// replace the saved one.
    #[arg(long, conflicts_with = "no_baseline")]
    pub fresh_baseline: bool,
}

/// Runs `eda eval`.
pub fn run(args: Args) -> Result<()> {
    if args.limit == Some(0) {
        return Err(EdaError::InvalidArgument("--limit must be at least 1 (it is the number of prompts to evaluate)".into()));
    }
    // Refuse an unusable --out before minutes of decoding, not after.
    eda_core::io::check_output_file(&args.out)?;
    if let Some(dir) = &args.replay {
        return run_replay(&args, dir);
    }
    let prompts_path = args.prompts.as_ref().ok_or_else(|| EdaError::InvalidArgument("--prompts or --replay is required".into()))?;
    let mut records = eda_regen::load_prompts(prompts_path)?;
    if let Some(n) = args.limit {
        records.truncate(n);
    }
    let mut l = load(&args.decode)?;
    let encoder = PromptEncoder::new(&args.decode, l.target.info().vocab_size)?;
    let prompts: Vec<Vec<TokenId>> = records.iter().map(|r| encoder.encode(&r.messages)).collect::<Result<_>>()?;
    // Plain decoding is its own baseline: timing it twice would only report noise as a "speedup".
    let opts = EvalOptions { warmup: args.warmup, baseline: !args.no_baseline && l.draft.is_some() };
    tracing::info!(prompts = prompts.len(), "evaluating");
    let cache_dir = args.baseline_cache.clone().or_else(BaselineCache::default_dir);
    let draft = l.draft.as_deref_mut().map(|d| d as &mut dyn eda_core::DraftModel);
    let report = match cache_dir {
        Some(dir) => {
            BaselineCache::new(dir).evaluate(l.target.as_mut(), draft, l.strategy.as_mut(), &prompts, &l.cfg, &opts, args.fresh_baseline)?
        }
        None => {
            tracing::debug!("no cache directory (no --baseline-cache, EDA_CACHE_DIR, XDG_CACHE_HOME or HOME): the autoregressive baseline is measured and not kept");
            evaluate_with(l.target.as_mut(), draft, l.strategy.as_mut(), &prompts, &l.cfg, &opts)?
        }
    };
    if let Some(choice) = l.strategy.choice_report() {
        eprint!("{choice}");
    }
    report.write_json(&args.out)?;
    println!("{report}");
    eprintln!("metrics written to {}", args.out.display());
    Ok(())
}

/// `eda eval --replay DIR`: the draft against the target's recorded greedy answers.
fn run_replay(args: &Args, dir: &Path) -> Result<()> {
    let manifest_path = dir.join(eda_regen::MANIFEST_FILE);
    let manifest = eda_regen::Manifest::load(&manifest_path)?;
    let settings = &manifest.settings;
    if settings.mode != eda_regen::RegenMode::Regenerated || !settings.generation.is_greedy() {
        return Err(EdaError::InvalidArgument(format!(
            "--replay needs the target's own greedy answers; {} holds {} data (mode {:?}, temperature {})",
            dir.display(),
            if settings.mode == eda_regen::RegenMode::Regenerated { "sampled" } else { "original" },
            settings.mode,
            settings.generation.temperature
        )));
    }
    let device = args.decode.compute.open(&args.decode.target)?;
    if matches!(args.decode.strategy.kind(&device), StrategyKind::Autoregressive | StrategyKind::Auto) {
        return Err(EdaError::InvalidArgument(
            "--replay evaluates a draft: use --strategy chain or tree (auto and autoregressive time the target, which a replay does not run)"
                .into(),
        ));
    }
    let l = load(&args.decode)?;
    let info = l.target.info().clone();
    if info.identity != settings.target.identity {
        return Err(EdaError::InvalidArgument(format!(
            "{} was recorded by another target (identity {}), not by --target {} (identity {}): a replay stands in for the target that recorded it",
            dir.display(),
            settings.target.identity,
            args.decode.target.display(),
            info.identity
        )));
    }
    let mut samples = eda_core::data::read_shards(&manifest.shard_paths(dir))?;
    if let Some(n) = args.limit {
        samples.truncate(n);
    }
    let recordings = samples.iter().map(|s| Recording::from_sample(s, settings.start_one_early)).collect::<Result<Vec<_>>>()?;
    let mut replay = ReplayTarget::new(info, l.target.embedding_weight(), l.target.lm_head_weight(), recordings)?;
    // The live target is not needed any more: free its memory before decoding.
    let super::generate::Loaded { target, mut draft, mut strategy, .. } = l;
    drop(target);
    let draft = draft.as_deref_mut().ok_or_else(|| EdaError::InvalidArgument("--replay needs --draft".into()))?;
    tracing::info!(recordings = replay.recordings().len(), dir = %dir.display(), "replaying");
    let report = evaluate_replay(&mut replay, draft, strategy.as_mut(), &settings.generation)?;
    report.write_json(&args.out)?;
    println!("{report}");
    eprintln!("replayed {} recorded answers of {}; metrics written to {}", report.prompts.len(), dir.display(), args.out.display());
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
        assert_eq!(eda_regen::load_prompts(&prompts).unwrap()[0].messages, super::super::args::user_message("hi"));
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
