//! `eda demo`: the whole EDA pipeline end to end (see `eda_demo`).

use std::path::PathBuf;

use eda_demo::{DemoConfig, ExternalModels, Scale};

/// Flags of `eda demo`.
///
/// Without model flags the demo trains its own tiny Qwen2-architecture targets (a base LM on
/// general chat and fine-tuned copies on math and code) on embedded corpora, then runs the
/// EDA pipeline on them. With `--base/--target/--prompts/--general-prompts` it runs the same
/// pipeline on real HF checkpoints (use `--features cuda` and `EDA_DEVICE=cuda` for 7B models).
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Output folder; every stage writes under it and is skipped when its artefact exists
    /// (rerun the same command to resume).
    #[arg(long, default_value = "eda-out")]
    pub out: PathBuf,
    /// Seed of every random choice (data splits, initialisation, shuffling, random selection).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Fraction of the regenerated samples kept by Mahalanobis (and random) selection.
    #[arg(long, default_value_t = 0.5)]
    pub select_fraction: f64,
    /// Minimal sizes and step counts (for tests and smoke runs; the numbers are not meaningful).
    #[arg(long)]
    pub quick: bool,
    /// Device (`cpu`, `cuda`, `cuda:N`, `wgpu`); default: `EDA_DEVICE`, else the best compiled-in.
    #[arg(long)]
    pub device: Option<String>,
    /// HF checkpoint directory of the base target (requires --target, --prompts, --general-prompts).
    #[arg(long, requires_all = ["target", "prompts", "general_prompts"])]
    pub base: Option<PathBuf>,
    /// HF checkpoint directories of fine-tuned targets, comma-separated (or repeated).
    #[arg(long, value_delimiter = ',', requires = "base")]
    pub target: Vec<PathBuf>,
    /// Domain prompts for the fine-tuned targets (prompt JSONL, chat JSONL or ShareGPT JSON);
    /// reference answers, when present, give the original-data baseline.
    #[arg(long, requires = "base")]
    pub prompts: Option<PathBuf>,
    /// General prompts with reference answers: base-target features for the stage-1 draft.
    #[arg(long, requires = "base")]
    pub general_prompts: Option<PathBuf>,
    /// Number of general samples for stage 1 (overrides the preset).
    #[arg(long)]
    pub general_samples: Option<usize>,
    /// Number of domain prompts regenerated per target (overrides the preset).
    #[arg(long)]
    pub domain_samples: Option<usize>,
    /// Number of held-out evaluation prompts per target (overrides the preset).
    #[arg(long)]
    pub eval_prompts: Option<usize>,
    /// Hide progress bars.
    #[arg(long)]
    pub no_progress: bool,
}

/// Runs `eda demo`.
pub fn run(args: Args) -> eda_core::Result<()> {
    let mut scale = if args.quick { Scale::quick() } else { Scale::full() };
    if let Some(n) = args.general_samples {
        scale.general_samples = n;
    }
    if let Some(n) = args.domain_samples {
        scale.domain_samples = n;
    }
    if let Some(n) = args.eval_prompts {
        scale.eval_prompts = n;
    }
    let external = match (args.base, args.prompts, args.general_prompts) {
        (Some(base), Some(prompts), Some(general_prompts)) => Some(ExternalModels { base, targets: args.target, prompts, general_prompts }),
        (None, None, None) => None,
        _ => return Err(eda_core::EdaError::InvalidArgument("--base, --target, --prompts and --general-prompts go together".into())),
    };
    let cfg = DemoConfig { out: args.out, seed: args.seed, scale, select_fraction: args.select_fraction, external, device: args.device, progress: !args.no_progress };
    let results = eda_demo::run_demo(&cfg)?;
    eprintln!("demo finished in {:.1} s ({} stages run, {} skipped)", results.wall_seconds, results.stages.ran.len(), results.stages.skipped.len());
    Ok(())
}
