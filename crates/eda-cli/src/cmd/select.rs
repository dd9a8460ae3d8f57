//! `eda select`: fit (or load) base-target feature statistics, score regenerated candidate
//! samples by Mahalanobis distance and write the selected subset (see the `eda-select` crate).
//!
//! Outputs in `--out`: `selected.safetensors` (the kept samples, in input order, as one feature
//! shard), `selection.json` (settings, ranked indices and ids, every score, drift summary) and,
//! when the statistics were fitted here, `stats.safetensors` (reusable with `--stats`).
//!
//! The drift summary's base distances are scored on base samples held out of the fit
//! (`--drift-holdout`, chosen by a hash of the sample id), since the fitted samples' own
//! distances are biased low. With `--stats` there are no base samples (the statistics were
//! fitted elsewhere, on data this run cannot see), so the summary shows the tuned distances only.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use eda_core::data::{read_shard, write_shard, FeatureSample};
use eda_core::{EdaError, SampleSelector, Selection};
use eda_select::{
    DriftSummary, FeatureStats, FitConfig, FitUnit, HoldoutSplit, KeepAll, MahalanobisModel, MahalanobisSelector, Pooling, PositionFilter,
    RandomSelector, ScoreConfig, SelectionExt, Shrinkage, DEFAULT_DRIFT_HOLDOUT,
};
use serde::Serialize;

use super::args::FeatureDtypeArg;

/// Selection method.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// Keep the samples whose hidden states lie farthest from the base-feature Gaussian (EDA).
    Mahalanobis,
    /// Keep a uniformly random subset (baseline; reproducible with `--seed`).
    Random,
    /// Keep every sample (baseline; `--fraction` is ignored, `--token-budget` keeps a prefix).
    All,
}

/// Flags of `eda select`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Base-target feature shards on general data (`eda features`) to fit the statistics on: a directory (every
    /// `*.safetensors` in it) or a file glob such as `feats/base/shard-*.safetensors`.
    #[arg(long, conflicts_with = "stats")]
    pub base_shards: Option<String>,
    /// Previously fitted statistics (`stats.safetensors` written by an earlier `eda select`),
    /// instead of `--base-shards`.
    #[arg(long)]
    pub stats: Option<PathBuf>,
    /// Regenerated candidate shards to select from: a directory or a file glob.
    #[arg(long)]
    pub shards: String,
    /// Fraction of candidate samples to keep, in (0, 1] (at least one sample is kept).
    #[arg(long, conflicts_with = "token_budget")]
    pub fraction: Option<f64>,
    /// Keep the best-ranked samples whose total length (all positions) fits in this many tokens.
    #[arg(long)]
    pub token_budget: Option<usize>,
    /// Selection method.
    #[arg(long, value_enum, default_value_t = Method::Mahalanobis)]
    pub method: Method,
    /// Pooling of per-token distances into a sample score: `mean`, `max`, `quantile:<q>`, or
    /// `pooled` (distance of the sample's mean feature; pair with `--fit-unit sample-means`).
    #[arg(long, default_value = "mean", value_parser = parse_pooling)]
    pub pooling: Pooling,
    /// Positions whose hidden states are used, for fitting and scoring: `response`
    /// (loss_mask = 1) or `all`.
    #[arg(long, default_value = "response", value_parser = parse_positions)]
    pub positions: PositionFilter,
    /// Observations of the reference Gaussian when fitting: `tokens` (every position) or
    /// `sample-means` (one mean feature per sample).
    #[arg(long, default_value = "tokens", value_parser = parse_unit)]
    pub fit_unit: FitUnit,
    /// Covariance shrinkage: `lw` (Ledoit–Wolf) or `ridge:<α>` with α in [0, 1] (`ridge:0` = no
    /// regularisation). Default: `lw` when fitting, the recorded value with `--stats`.
    #[arg(long, value_parser = parse_shrinkage)]
    pub shrinkage: Option<Shrinkage>,
    /// Seed of `--method random`.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Tokens per batched triangular solve when scoring.
    #[arg(long, default_value_t = 512)]
    pub batch_tokens: usize,
    /// Precision of hidden states in the written shard.
    #[arg(long, value_enum, default_value_t = FeatureDtypeArg::F32)]
    pub dtype: FeatureDtypeArg,
    /// Skip the drift summary (saves one scoring pass over the base shards).
    #[arg(long)]
    pub no_drift: bool,
    /// Fraction of the `--base-shards` samples left out of the statistics fit and scored for the
    /// drift summary's base distances (the fitted samples' own distances are biased low). Chosen
    /// by a hash of the sample id: the same samples in every run, whatever the shard order; at
    /// least one; none with fewer than 10 base samples (the summary then says the baseline is
    /// in-sample). The samples are held out with `--no-drift` too, so that the statistics and
    /// the selection do not depend on it. `0` fits on every sample (in-sample baseline).
    /// Not used with `--stats`.
    #[arg(long, default_value_t = DEFAULT_DRIFT_HOLDOUT, conflicts_with = "stats")]
    pub drift_holdout: f64,
    /// Output directory (created if needed).
    #[arg(long)]
    pub out: PathBuf,
}

pub(crate) fn parse_pooling(s: &str) -> Result<Pooling, String> {
    s.parse().map_err(|e: EdaError| e.to_string())
}
fn parse_positions(s: &str) -> Result<PositionFilter, String> {
    s.parse().map_err(|e: EdaError| e.to_string())
}
fn parse_unit(s: &str) -> Result<FitUnit, String> {
    s.parse().map_err(|e: EdaError| e.to_string())
}
fn parse_shrinkage(s: &str) -> Result<Shrinkage, String> {
    s.parse().map_err(|e: EdaError| e.to_string())
}

/// Shard files named by a directory, a file-name glob or one file (see [`eda_core::shard_files`]).
fn shard_paths(spec: &str) -> eda_core::Result<Vec<PathBuf>> {
    eda_core::shard_files::shard_files(Path::new(spec))
}

fn read_all(paths: &[PathBuf]) -> eda_core::Result<Vec<FeatureSample>> {
    read_all_where(paths, |_| true)
}

/// The samples of `paths` for which `keep` is true (dropped shard by shard, so the others are
/// never all in memory at once).
fn read_all_where(paths: &[PathBuf], keep: impl Fn(&FeatureSample) -> bool) -> eda_core::Result<Vec<FeatureSample>> {
    let mut all = Vec::new();
    let mut origin = Vec::new();
    for (k, p) in paths.iter().enumerate() {
        let mut s = read_shard(p)?;
        s.retain(&keep);
        tracing::info!(shard = %p.display(), samples = s.len(), "read shard");
        origin.extend(std::iter::repeat_n(k, s.len()));
        all.extend(s);
    }
    // A sample read twice would be scored, ranked and kept twice.
    eda_core::data::ensure_unique_ids(&all, |i| paths[origin[i]].display().to_string())?;
    Ok(all)
}

/// The hold-out split of the base samples in `paths` at `fraction`, from the shards' headers
/// (no features are read). Duplicate ids are refused: they would be fitted or scored twice.
fn base_split(paths: &[PathBuf], fraction: f64) -> eda_core::Result<HoldoutSplit> {
    let mut ids = Vec::new();
    let mut first_seen = std::collections::HashMap::new();
    for (k, p) in paths.iter().enumerate() {
        for id in eda_core::data::read_shard_ids(p)? {
            if let Some(&j) = first_seen.get(&id) {
                let (first, second) = (paths[j as usize].display().to_string(), p.display().to_string());
                return Err(EdaError::DuplicateId { id, first, second });
            }
            first_seen.insert(id.clone(), k as u32);
            ids.push(id);
        }
    }
    let split = HoldoutSplit::new(&ids, fraction)?;
    match split.note() {
        Some(note) if fraction > 0.0 => tracing::warn!("drift baseline: {note}"),
        _ => {
            tracing::info!(fitted = split.fitted(), held_out = split.held_out(), "base samples held out of the fit for the drift baseline")
        }
    }
    Ok(split)
}

/// Refuses an `--out` whose files would replace one of the input shards (for example `--out`
/// equal to the `--shards` directory after an earlier run wrote `selected.safetensors` there).
fn check_out_vs_inputs(out: &Path, inputs: &[PathBuf]) -> eda_core::Result<()> {
    let canon = |p: &Path| std::fs::canonicalize(p).ok();
    for name in ["selected.safetensors", "stats.safetensors"] {
        let Some(o) = canon(&out.join(name)) else { continue };
        if inputs.iter().any(|i| canon(i).as_deref() == Some(o.as_path())) {
            return Err(EdaError::InvalidArgument(format!(
                "--out {} would overwrite the input shard {name} (it is also read as a candidate or base shard); use another --out",
                out.display()
            )));
        }
    }
    Ok(())
}

/// Summary of the statistics used, recorded in `selection.json`.
#[derive(Serialize)]
struct StatsInfo {
    source: String,
    dim: usize,
    count: u64,
    shrinkage: String,
    alpha: f64,
    ledoit_wolf_alpha: f64,
    jitter: f64,
    positions: String,
    unit: String,
    /// Base samples in `--base-shards` (absent with `--stats`: fitted on data unseen here).
    base_samples: Option<usize>,
    /// Base samples the statistics were fitted on.
    base_samples_fitted: Option<usize>,
    /// Base samples held out of the fit for the drift baseline.
    base_samples_held_out: Option<usize>,
    /// The `--drift-holdout` fraction used.
    drift_holdout: Option<f64>,
}

/// Contents of `selection.json`.
#[derive(Serialize)]
struct Report {
    method: String,
    pooling: Option<String>,
    positions: String,
    seed: u64,
    fraction: Option<f64>,
    token_budget: Option<usize>,
    candidate_shards: Vec<PathBuf>,
    candidates: usize,
    selected: usize,
    candidate_tokens: usize,
    selected_tokens: usize,
    /// Kept samples, best first (indices into the concatenated candidate shards).
    indices: Vec<usize>,
    /// Ids of the kept samples, best first.
    ids: Vec<String>,
    /// Score of every candidate, in input order.
    scores: Vec<f64>,
    stats: Option<StatsInfo>,
    drift: Option<DriftSummary>,
    seconds: f64,
}

/// Runs `eda select`.
pub fn run(args: Args) -> eda_core::Result<()> {
    let started = Instant::now();
    if args.fraction.is_none() && args.token_budget.is_none() {
        return Err(EdaError::InvalidArgument("give --fraction or --token-budget".into()));
    }
    eda_core::io::check_output_dir(&args.out)?;
    eda_core::io::clean_stale_temp_files(&args.out);
    let cand_paths = shard_paths(&args.shards)?;
    check_out_vs_inputs(&args.out, &cand_paths)?;
    if let Some(spec) = &args.base_shards {
        check_out_vs_inputs(&args.out, &shard_paths(spec)?)?;
    }
    let candidates = read_all(&cand_paths)?;
    if candidates.is_empty() {
        return Err(EdaError::EmptyDataset(format!("no samples in `{}`", args.shards)));
    }

    let mut stats_info = None;
    let mut drift = None;
    let (selector, pooling): (Box<dyn SampleSelector>, Option<String>) = match args.method {
        Method::Random => (Box::new(RandomSelector { seed: args.seed }), None),
        Method::All => (Box::new(KeepAll), None),
        Method::Mahalanobis => {
            let (stats, source, base) = match (&args.base_shards, &args.stats) {
                (Some(spec), _) => {
                    let paths = shard_paths(spec)?;
                    let split = base_split(&paths, args.drift_holdout)?;
                    let cfg = FitConfig { positions: args.positions, unit: args.fit_unit, shrinkage: args.shrinkage.unwrap_or_default() };
                    let t = Instant::now();
                    let stats = FeatureStats::fit_shards_where(&paths, &cfg, |s| !split.is_held_out(&s.id))?;
                    tracing::info!(
                        dim = stats.dim,
                        count = stats.count,
                        ledoit_wolf_alpha = stats.ledoit_wolf_alpha,
                        seconds = t.elapsed().as_secs_f64(),
                        "fitted reference statistics"
                    );
                    let out = args.out.join("stats.safetensors");
                    stats.save(&out)?;
                    tracing::info!(path = %out.display(), "saved statistics");
                    (stats, spec.clone(), Some((paths, split)))
                }
                (None, Some(p)) => {
                    let mut stats = FeatureStats::load(p)?;
                    if let Some(s) = args.shrinkage {
                        stats = stats.with_shrinkage(s);
                    }
                    (stats, p.display().to_string(), None)
                }
                (None, None) => return Err(EdaError::InvalidArgument("--method mahalanobis needs --base-shards or --stats".into())),
            };
            if (stats.config.unit == FitUnit::SampleMeans) != (args.pooling == Pooling::PoolThenDistance) {
                tracing::warn!(unit = %stats.config.unit, pooling = %args.pooling, "statistics fitted on {} but scoring with `{}` pooling: distances compare different scales", stats.config.unit, args.pooling);
            }
            let t = Instant::now();
            let model = Arc::new(MahalanobisModel::from_stats(&stats)?);
            tracing::info!(alpha = model.alpha(), jitter = model.jitter(), seconds = t.elapsed().as_secs_f64(), "factorised covariance");
            let sel = MahalanobisSelector::new(
                model.clone(),
                ScoreConfig { positions: args.positions, pooling: args.pooling, batch_tokens: args.batch_tokens },
            )?;
            if !args.no_drift {
                let d = match &base {
                    Some((paths, split)) => {
                        let scored = read_all_where(paths, |s| split.is_scored(&s.id))?;
                        DriftSummary::compute(&sel, Some(&scored), &candidates)?.with_base_samples(split.baseline())
                    }
                    None => DriftSummary::compute(&sel, None, &candidates)?,
                };
                println!("{d}");
                drift = Some(d);
            }
            stats_info = Some(StatsInfo {
                source,
                dim: stats.dim,
                count: stats.count,
                shrinkage: stats.config.shrinkage.to_string(),
                alpha: model.alpha(),
                ledoit_wolf_alpha: stats.ledoit_wolf_alpha,
                jitter: model.jitter(),
                positions: stats.config.positions.to_string(),
                unit: stats.config.unit.to_string(),
                base_samples: base.as_ref().map(|(_, s)| s.total()),
                base_samples_fitted: base.as_ref().map(|(_, s)| s.fitted()),
                base_samples_held_out: base.as_ref().map(|(_, s)| s.held_out()),
                drift_holdout: base.as_ref().map(|(_, s)| s.fraction()),
            });
            (Box::new(sel), Some(args.pooling.to_string()))
        }
    };

    let t = Instant::now();
    let Selection { indices, scores } = match args.token_budget {
        Some(budget) => selector.select_by_tokens(&candidates, budget)?,
        None => selector.select(&candidates, args.fraction.unwrap_or(1.0))?,
    };
    tracing::info!(
        selector = selector.name(),
        kept = indices.len(),
        of = candidates.len(),
        seconds = t.elapsed().as_secs_f64(),
        "selected"
    );

    let mut in_order = indices.clone();
    in_order.sort_unstable();
    let kept: Vec<FeatureSample> = in_order.iter().map(|&i| candidates[i].clone()).collect();
    let shard = args.out.join("selected.safetensors");
    write_shard(&shard, &kept, args.dtype.into())?;
    // The selection keeps the rendering of the data it came from, for `eda train` to pass on.
    match eda_regen::ChatFormat::of_shards(&cand_paths)? {
        Some(f) => f.write(&args.out)?,
        None => {
            // A stale record of an earlier run here would outlive the data it described.
            let stale = args.out.join(eda_regen::CHAT_FORMAT_FILE);
            if let Err(e) = std::fs::remove_file(&stale) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    return Err(EdaError::io(&stale, e));
                }
            }
        }
    }

    let report = Report {
        method: selector.name().to_string(),
        pooling,
        positions: args.positions.to_string(),
        seed: args.seed,
        fraction: args.fraction,
        token_budget: args.token_budget,
        candidate_shards: cand_paths,
        candidates: candidates.len(),
        selected: indices.len(),
        candidate_tokens: candidates.iter().map(FeatureSample::len).sum(),
        selected_tokens: kept.iter().map(FeatureSample::len).sum(),
        ids: indices.iter().map(|&i| candidates[i].id.clone()).collect(),
        indices,
        scores,
        stats: stats_info,
        drift,
        seconds: started.elapsed().as_secs_f64(),
    };
    let json = args.out.join("selection.json");
    eda_core::io::write_json(&json, &report)?;
    println!(
        "kept {} of {} samples ({} of {} tokens) with `{}`; wrote {} and {}",
        report.selected,
        report.candidates,
        report.selected_tokens,
        report.candidate_tokens,
        report.method,
        shard.display(),
        json.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    fn shard(path: &Path, ids: &[&str]) {
        let samples: Vec<FeatureSample> =
            ids.iter().map(|id| FeatureSample::new(*id, vec![1, 2, 3], vec![0.25; 6], 2, vec![0, 1, 1]).unwrap()).collect();
        write_shard(path, &samples, eda_core::data::FeatureDType::F32).unwrap();
    }

    #[test]
    fn select_refuses_duplicate_ids_and_its_own_output_as_input() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("cands");
        shard(&dir.join("a.safetensors"), &["x", "y"]);
        shard(&dir.join("b.safetensors"), &["z"]);
        let d = dir.to_str().unwrap().to_string();
        let parse =
            |out: &str| Cli::try_parse_from(["eda", "--shards", &d, "--method", "all", "--fraction", "1", "--out", out]).unwrap().args;
        // --out equal to --shards: the first run is fine, the second would read selected.safetensors back.
        run(parse(&d)).unwrap();
        assert!(matches!(run(parse(&d)), Err(EdaError::InvalidArgument(m)) if m.contains("overwrite")));
        // The same samples present twice under another name are caught by their ids.
        std::fs::rename(dir.join("selected.safetensors"), dir.join("c.safetensors")).unwrap();
        let other = root.path().join("out");
        match run(parse(other.to_str().unwrap())) {
            Err(EdaError::DuplicateId { id, .. }) => assert_eq!(id, "x"),
            r => panic!("expected DuplicateId, got {r:?}"),
        }
    }

    /// Samples with varied 4-wide features (three response tokens each), ids `{prefix}{i}`.
    fn varied_shard(path: &Path, prefix: &str, n: usize, offset: f32) {
        let samples: Vec<FeatureSample> = (0..n)
            .map(|i| {
                let h: Vec<f32> = (0..12).map(|j| ((i * 7 + j * 13) % 11) as f32 * 0.3 + (j % 4) as f32 + offset).collect();
                FeatureSample::new(format!("{prefix}{i}"), vec![1, 2, 3, 4], [h, vec![0.0; 4]].concat(), 4, vec![1, 1, 1, 0]).unwrap()
            })
            .collect();
        write_shard(path, &samples, eda_core::data::FeatureDType::F32).unwrap();
    }

    fn selection_json(out: &Path) -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(out.join("selection.json")).unwrap()).unwrap()
    }

    #[test]
    fn the_drift_baseline_is_scored_on_held_out_base_samples() {
        let root = tempfile::tempdir().unwrap();
        let base = root.path().join("base");
        varied_shard(&base.join("a.safetensors"), "g", 30, 0.0);
        varied_shard(&base.join("b.safetensors"), "h", 30, 0.0);
        let cands = root.path().join("c.safetensors");
        varied_shard(&cands, "m", 10, 1.0);
        let run_with = |extra: &[&str], out: &str| {
            let out = root.path().join(out);
            let mut argv = vec!["eda", "--shards", cands.to_str().unwrap(), "--fraction", "0.5", "--out", out.to_str().unwrap()];
            argv.extend_from_slice(extra);
            run(Cli::try_parse_from(argv).unwrap().args).unwrap();
            selection_json(&out)
        };
        let b = base.to_str().unwrap();
        let j = run_with(&["--base-shards", b], "o1");
        let stats = &j["stats"];
        assert_eq!(stats["base_samples"], 60);
        let held = stats["base_samples_held_out"].as_u64().unwrap();
        assert!((1..20).contains(&held), "{stats}");
        assert_eq!(stats["base_samples_fitted"].as_u64().unwrap() + held, 60);
        assert_eq!(stats["drift_holdout"], 0.1);
        let drift = &j["drift"];
        assert_eq!(drift["base_samples"]["held_out"], true);
        assert_eq!(drift["base_samples"]["scored_samples"].as_u64(), Some(held));
        // Three response tokens per held-out sample are scored, and nothing else.
        assert_eq!(drift["base"]["count"].as_u64(), Some(3 * held));

        // The same samples are held out whatever the shard order.
        let glob = format!("{}/*.safetensors", b);
        let again = run_with(&["--base-shards", &glob], "o2");
        for k in ["base_samples_held_out", "count", "ledoit_wolf_alpha"] {
            assert_eq!(again["stats"][k], j["stats"][k], "{k}");
        }
        assert_eq!(again["drift"]["base"], j["drift"]["base"]);

        // 0: the old in-sample baseline, said so.
        let zero = run_with(&["--base-shards", b, "--drift-holdout", "0"], "o3");
        assert_eq!(zero["stats"]["base_samples_held_out"], 0);
        assert_eq!(zero["drift"]["base_samples"]["held_out"], false);
        assert_eq!(zero["drift"]["base"]["count"], 180);

        // Too few base samples to hold any out: in-sample, with the reason recorded.
        let few = root.path().join("few.safetensors");
        varied_shard(&few, "f", 6, 0.0);
        let j = run_with(&["--base-shards", few.to_str().unwrap()], "o4");
        assert_eq!(j["stats"]["base_samples_held_out"], 0);
        assert!(j["drift"]["base_samples"]["note"].as_str().unwrap().contains("only 6 base samples"), "{}", j["drift"]);

        // Precomputed statistics: no base samples, no base distances; the flag does not apply.
        let stats_file = root.path().join("o1/stats.safetensors");
        let j = run_with(&["--stats", stats_file.to_str().unwrap()], "o5");
        assert!(j["drift"]["base"].is_null() && j["stats"]["base_samples"].is_null());
        assert!(Cli::try_parse_from(["eda", "--shards", "x", "--fraction", "1", "--out", "o", "--stats", "s", "--drift-holdout", "0.2"])
            .is_err());
        let o6 = root.path().join("o6");
        let argv = [
            "eda",
            "--shards",
            cands.to_str().unwrap(),
            "--base-shards",
            b,
            "--fraction",
            "1",
            "--out",
            o6.to_str().unwrap(),
            "--drift-holdout",
            "1",
        ];
        assert!(matches!(run(Cli::try_parse_from(argv).unwrap().args), Err(EdaError::InvalidArgument(_))));
    }

    #[test]
    fn token_budget_smaller_than_every_sample_is_an_error() {
        let root = tempfile::tempdir().unwrap();
        let f = root.path().join("a.safetensors");
        shard(&f, &["x", "y"]);
        let out = root.path().join("out");
        let cli = Cli::try_parse_from([
            "eda",
            "--shards",
            f.to_str().unwrap(),
            "--method",
            "all",
            "--token-budget",
            "2",
            "--out",
            out.to_str().unwrap(),
        ])
        .unwrap();
        assert!(matches!(run(cli.args), Err(EdaError::InvalidArgument(_))));
        assert!(!out.join("selected.safetensors").exists());
        let cli = Cli::try_parse_from([
            "eda",
            "--shards",
            f.to_str().unwrap(),
            "--method",
            "all",
            "--token-budget",
            "3",
            "--out",
            out.to_str().unwrap(),
        ])
        .unwrap();
        run(cli.args).unwrap();
        assert_eq!(read_shard(&out.join("selected.safetensors")).unwrap().len(), 1);
    }
}
