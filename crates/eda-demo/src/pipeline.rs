//! The end-to-end EDA pipeline (docs/method.md §9): built-in (or given) targets, stage-1 draft, collapse,
//! regeneration, Mahalanobis selection, stage-2 adaptation, baselines, one results table.
//!
//! Output layout under [`DemoConfig::out`]:
//!
//! | path | content |
//! |---|---|
//! | `demo_config.json` | the configuration of the latest run |
//! | `tokenizer/` | the shared BPE tokenizer (built-in targets only) |
//! | `targets/{base,math,code}/` | built-in targets as HF checkpoints |
//! | `features/general/` | base-target features of general data (shards + manifest) |
//! | `features/base_stats.safetensors` | fitted Mahalanobis statistics (`..._sample_means` for `pooled`) |
//! | `drafts/stage1/` | the stage-1 draft (trainer directory; `draft/` is the model) |
//! | `data/<target>/{regenerated,original}/` | domain features of each fine-tuned target |
//! | `data/<target>/selection.json` | Mahalanobis and random selections |
//! | `drafts/<target>/<method>/` | adapted / retrained drafts |
//! | `eval/<target>/<method>.json` | full evaluation reports (eda-spec `EvalReport`) |
//! | `results.json`, `results.md`, `tau.svg`, `tau.png` | the comparison table and plot |
//!
//! Every stage is skipped when its artefact exists, so an interrupted run resumes.

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::tensor::{Device, Tensor};
use eda_core::data::{read_shard, FeatureDType, FeatureSample};
use eda_core::{EdaError, GenerationConfig, Result, SampleSelector, TargetModel, TokenId};
use eda_draft::{DraftSession, EdaDraft, EdaDraftConfig};
use eda_models::{CausalLm, ModelConfig, Target};
use eda_regen::{
    regenerate_dataset, ChatTemplate, LocalRegenerator, Manifest, OverflowPolicy, PromptRecord, RegenConfig, RegenMode, MANIFEST_FILE,
};
use eda_select::{FeatureStats, FitConfig, FitUnit, MahalanobisSelector, Pooling, RandomSelector, ScoreConfig};
use eda_spec::EvalReport;
use eda_train::{DecayShape, DraftTrainer, ScheduleConfig, Stage, TrainConfig, TrainReport};
use serde::{Deserialize, Serialize};
use tokenizers::Tokenizer;

use crate::config::{DemoConfig, Scale};
use crate::corpora::{split, Domain};
use crate::lm::{save_target, target_exists, token_stream, train_lm};
pub use crate::results::StageLog;
use crate::results::{DemoResults, MethodResult, RESULTS_FORMAT};
use crate::tok;

/// The comparison methods, in table order.
pub const METHODS: [&str; 6] = ["no-adapt", "full-ft", "stage2-original", "stage2-regen-all", "random", "eda"];

/// One fine-tuned target of the run.
#[derive(Debug, Clone)]
struct TargetJob {
    name: String,
    dir: PathBuf,
    train: Vec<PromptRecord>,
    eval: Vec<PromptRecord>,
}

/// Everything the pipeline needs once the targets exist.
#[derive(Debug, Clone)]
struct Models {
    base_dir: PathBuf,
    general_train: Vec<PromptRecord>,
    general_eval: Vec<PromptRecord>,
    targets: Vec<TargetJob>,
}

fn prompt_len(tok: &Tokenizer, r: &PromptRecord) -> Result<usize> {
    Ok(tok::encode(tok, &ChatTemplate::ChatMl.render_prompt(&r.messages, None))?.len())
}

/// Keeps records whose ChatML prompt leaves room for `room` more tokens within `max_pos`.
fn fitting(tok: &Tokenizer, records: Vec<PromptRecord>, max_pos: usize, room: usize) -> Result<Vec<PromptRecord>> {
    let mut out = Vec::with_capacity(records.len());
    for r in records {
        if prompt_len(tok, &r)? + room <= max_pos {
            out.push(r);
        }
    }
    Ok(out)
}

/// Splits `records` into (train, held-out eval): the eval prompts are drawn (seeded) among the
/// records whose prompt fits the positions; train keeps every other record (LM training uses
/// them all, regeneration filters them again).
fn split_fitting(tok: &Tokenizer, records: Vec<PromptRecord>, s: &Scale, seed: u64) -> Result<(Vec<PromptRecord>, Vec<PromptRecord>)> {
    let fit = fitting(tok, records.clone(), s.max_positions, room(s))?;
    let (_, eval) = split(&fit, s.eval_prompts, seed);
    if eval.is_empty() {
        return Err(EdaError::EmptyDataset(format!("no prompt fits {} positions with {} tokens to spare", s.max_positions, room(s))));
    }
    let held: std::collections::HashSet<&str> = eval.iter().map(|r| r.id.as_str()).collect();
    let mut train: Vec<PromptRecord> = records.into_iter().filter(|r| !held.contains(r.id.as_str())).collect();
    {
        use rand::seq::SliceRandom;
        train.shuffle(&mut eda_core::sampling::seeded_rng(seed ^ 0x9e37_79b9));
    }
    Ok((train, eval))
}

fn room(scale: &Scale) -> usize {
    scale.regen_max_new_tokens.max(scale.eval_max_new_tokens + scale.tree.total_tokens) + 8
}

/// Trains (or finds) the built-in tokenizer and targets.
fn builtin_models(cfg: &DemoConfig, device: &Device, log: &mut StageLog) -> Result<Models> {
    let s = &cfg.scale;
    let tok_dir = cfg.out.join("tokenizer");
    let had_tok = tok_dir.join("tokenizer.json").is_file();
    let tokenizer = tok::load_or_train(s.vocab_size, &tok_dir)?;
    log.record("tokenizer", !had_tok);
    let vocab = eda_models::tokenizer_vocab_size(&tokenizer).max(s.vocab_size);
    let mut mcfg = ModelConfig::qwen2(vocab, s.hidden_size, s.intermediate_size, s.layers, s.heads, s.kv_heads, s.max_positions);
    mcfg.eos_token_ids = vec![2, 0];
    let room = room(s);

    let (gen_train, gen_eval) = split_fitting(&tokenizer, Domain::General.records()?, s, cfg.seed)?;
    let base_dir = cfg.out.join("targets/base");
    let ran = !target_exists(&base_dir);
    if ran {
        let (stream, starts) = token_stream(&gen_train, &tokenizer)?;
        device.seed(cfg.seed);
        let model = CausalLm::new(&mcfg, device);
        let settings = crate::lm::LmTrainSettings { seed: s.base_lm.seed ^ cfg.seed, ..s.base_lm.clone() };
        let (model, report) = train_lm(model, &stream, &starts, &settings, device, "base LM (general)", cfg.progress)?;
        save_target(&model, &mcfg, &tok_dir, &report, &base_dir)?;
    }
    log.record("target:base", ran);

    let mut targets = Vec::new();
    for d in Domain::FINE_TUNED {
        let (train, eval) = split_fitting(&tokenizer, d.records()?, s, cfg.seed.wrapping_add(d as u64))?;
        let dir = cfg.out.join("targets").join(d.name());
        let ran = !target_exists(&dir);
        if ran {
            let (stream, starts) = token_stream(&train, &tokenizer)?;
            let base = Target::from_pretrained(&base_dir, device)?.into_model();
            let settings = crate::lm::LmTrainSettings { seed: s.finetune_lm.seed ^ cfg.seed ^ (d as u64) << 8, ..s.finetune_lm.clone() };
            let (model, report) = train_lm(base, &stream, &starts, &settings, device, &format!("fine-tune {} LM", d.name()), cfg.progress)?;
            save_target(&model, &mcfg, &tok_dir, &report, &dir)?;
        }
        log.record(format!("target:{}", d.name()), ran);
        let train = fitting(&tokenizer, train, s.max_positions, room)?;
        if train.is_empty() {
            return Err(EdaError::EmptyDataset(format!("{} domain: no training prompt fits {} positions", d.name(), s.max_positions)));
        }
        targets.push(TargetJob { name: d.name().into(), dir, train: train.into_iter().take(s.domain_samples).collect(), eval });
    }
    Ok(Models { base_dir, general_train: gen_train.into_iter().take(s.general_samples).collect(), general_eval: gen_eval, targets })
}

fn external_models(cfg: &DemoConfig) -> Result<Models> {
    let e = cfg.external.as_ref().ok_or_else(|| EdaError::InvalidArgument("no external models".into()))?;
    let s = &cfg.scale;
    let tokenizer = eda_models::load_tokenizer_for(&e.base, usize::MAX)?;
    let room = room(s);
    let general = eda_regen::load_prompts(&e.general_prompts)?;
    let (gen_train, gen_eval) = split(&general, s.eval_prompts, cfg.seed);
    let max_pos = eda_models::load_config(&e.base)?.max_position_embeddings.min(4096);
    let prompts = eda_regen::load_prompts(&e.prompts)?;
    let (train, eval) = split(&prompts, s.eval_prompts, cfg.seed.wrapping_add(1));
    let train: Vec<_> = fitting(&tokenizer, train, max_pos, room)?.into_iter().take(s.domain_samples).collect();
    let eval = fitting(&tokenizer, eval, max_pos, room)?;
    let mut targets = Vec::new();
    for (i, dir) in e.targets.iter().enumerate() {
        let base_name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| format!("target{i}"));
        let name = if targets.iter().any(|t: &TargetJob| t.name == base_name) { format!("{base_name}-{i}") } else { base_name };
        targets.push(TargetJob { name, dir: dir.clone(), train: train.clone(), eval: eval.clone() });
    }
    Ok(Models {
        base_dir: e.base.clone(),
        general_train: fitting(&tokenizer, gen_train, max_pos, room)?.into_iter().take(s.general_samples).collect(),
        general_eval: fitting(&tokenizer, gen_eval, max_pos, room)?,
        targets,
    })
}

/// Runs `regenerate_dataset` into `dir` (resuming) and reads every sample back.
#[allow(clippy::too_many_arguments)]
fn featurise(
    target: &mut Target,
    tokenizer: &Tokenizer,
    prompts: &[PromptRecord],
    mode: RegenMode,
    cfg: &DemoConfig,
    dir: &Path,
    log: &mut StageLog,
    label: &str,
) -> Result<Vec<FeatureSample>> {
    let manifest_path = dir.join(MANIFEST_FILE);
    let done =
        manifest_path.is_file() && Manifest::load(&manifest_path).map(|m| m.samples + m.skipped.len() >= prompts.len()).unwrap_or(false);
    if !done {
        let rc = RegenConfig {
            mode,
            template: ChatTemplate::ChatMl,
            system_prompt: None,
            generation: GenerationConfig { max_new_tokens: cfg.scale.regen_max_new_tokens, seed: cfg.seed, ..GenerationConfig::greedy() },
            start_one_early: true,
            max_seq_len: Some(target.info().max_position_embeddings),
            overflow: OverflowPolicy::Truncate,
            shard_size: 64,
            limit: None,
            dtype: FeatureDType::F32,
            batch_size: eda_regen::DEFAULT_BATCH_SIZE,
            allow_changed_inputs: false,
        };
        let summary = regenerate_dataset(target, tokenizer, prompts, &rc, &mut LocalRegenerator, dir)?;
        tracing::info!(
            label,
            new = summary.new_samples,
            skipped = summary.new_skipped,
            response_tokens = summary.response_tokens,
            seconds = summary.seconds,
            "featurised"
        );
    }
    log.record(label, !done);
    let manifest = Manifest::load(&manifest_path)?;
    let mut out = Vec::new();
    for p in manifest.shard_paths(dir) {
        out.extend(read_shard(&p)?);
    }
    Ok(out)
}

fn draft_train_config(cfg: &DemoConfig, stage: Stage, epochs: f64, lr: f64, seed: u64) -> TrainConfig {
    let s = &cfg.scale;
    TrainConfig {
        stage,
        epochs,
        batch_size: s.draft_batch_size,
        max_len: s.max_positions.max(2),
        schedule: ScheduleConfig { lr, min_lr: lr * 0.1, warmup_steps: 10, decay: DecayShape::Cosine, ..ScheduleConfig::default() },
        seed,
        checkpoint_every: 100,
        keep_checkpoints: 1,
        log_every: 50,
        // Stage 2 as in the reference script (docs/method.md §3.6): shared expert, attention and norm
        // frozen, private expert + router and `fc` trained; the private group starts at random.
        stage2_freeze: eda_train::Stage2Freeze::Reference,
        private_init: eda_train::PrivateInit::Random,
        ..TrainConfig::default()
    }
}

/// How a draft is built before training.
enum DraftInit<'a> {
    /// A fresh draft (stage 1, or full retraining): every parameter but embedding/head trains.
    Fresh(&'a EdaDraftConfig),
    /// Stage 2 from the stage-1 draft in this directory.
    Stage2(&'a Path),
}

/// A trained draft plus what its training cost.
struct Trained {
    draft: EdaDraft,
    report: TrainReport,
}

/// Trains a draft into `dir` (resuming from its checkpoints), or loads it when finished.
#[allow(clippy::too_many_arguments)]
fn train_draft(
    dir: &Path,
    init: DraftInit<'_>,
    data: &[FeatureSample],
    embedding: &Tensor<2>,
    lm_head: &Tensor<2>,
    tc: TrainConfig,
    device: &Device,
    cfg: &DemoConfig,
    log: &mut StageLog,
    label: &str,
) -> Result<Trained> {
    let report_path = dir.join("report.json");
    let draft_dir = dir.join("draft");
    let ran = !(report_path.is_file() && draft_dir.is_dir());
    if ran {
        let model = match init {
            DraftInit::Fresh(dc) => eda_train::stage1_draft(dc, embedding.clone(), lm_head.clone(), &tc, device)?,
            DraftInit::Stage2(stage1) => eda_train::stage2_draft(stage1, embedding.clone(), lm_head.clone(), &tc, device)?,
        };
        tracing::info!(label, samples = data.len(), trainable = model.param_counts().trainable, "training draft");
        let mut trainer = DraftTrainer::new(tc, model, device, dir)?.progress(cfg.progress);
        let report = trainer.train(data)?;
        eda_core::io::write_json(&report_path, &report)?;
    }
    log.record(label, ran);
    let report: TrainReport = eda_core::io::read_json(&report_path)?;
    let draft = EdaDraft::load(&draft_dir, embedding.clone(), lm_head.clone(), device)?;
    Ok(Trained { draft, report })
}

/// Evaluates `draft` on `target` over `prompts` (or reads the cached report).
#[allow(clippy::too_many_arguments)]
fn evaluate_cached(
    path: &Path,
    target: &mut Target,
    draft: EdaDraft,
    prompts: &[Vec<TokenId>],
    cfg: &DemoConfig,
    log: &mut StageLog,
    label: &str,
) -> Result<EvalReport> {
    let ran = !path.is_file();
    if ran {
        let mut session = DraftSession::new(draft);
        let mut strategy = cfg.scale.tree;
        let gen = GenerationConfig {
            max_new_tokens: cfg.scale.eval_max_new_tokens,
            stop_tokens: target.info().eos_token_ids.clone(),
            seed: cfg.seed,
            ..GenerationConfig::greedy()
        };
        let report = eda_spec::evaluate(target, Some(&mut session), &mut strategy, prompts, &gen)?;
        report.write_json(path)?;
    }
    log.record(label, ran);
    eda_core::io::read_json(path)
}

fn encode_prompts(tokenizer: &Tokenizer, records: &[PromptRecord]) -> Result<Vec<Vec<TokenId>>> {
    records.iter().map(|r| tok::encode(tokenizer, &ChatTemplate::ChatMl.render_prompt(&r.messages, None))).collect()
}

/// The saved selections of one target.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct SelectionFile {
    fraction: f64,
    /// Absent in files written before pooling was configurable: those used the mean.
    #[serde(default)]
    pooling: Pooling,
    mahalanobis: Vec<usize>,
    random: Vec<usize>,
    scores: Vec<f64>,
    seconds: f64,
}

/// A selection made with another fraction or pooling than `cfg`'s is removed with what was
/// trained and evaluated on it, so that the run redoes them (rather than reporting stale rows).
fn invalidate_stale_selection(sel_path: &Path, cfg: &DemoConfig, drafts_dir: &Path, eval_dir: &Path) -> Result<()> {
    if !sel_path.is_file() {
        return Ok(());
    }
    let old: SelectionFile = eda_core::io::read_json(sel_path)?;
    if old.fraction == cfg.select_fraction && old.pooling == cfg.pooling {
        return Ok(());
    }
    tracing::info!(file = %sel_path.display(), "selection settings changed: selecting, training and evaluating eda/random again");
    std::fs::remove_file(sel_path).map_err(|e| EdaError::io(sel_path, e))?;
    for m in ["eda", "random"] {
        let d = drafts_dir.join(m);
        if d.exists() {
            std::fs::remove_dir_all(&d).map_err(|e| EdaError::io(&d, e))?;
        }
        let f = eval_dir.join(format!("{m}.json"));
        if f.exists() {
            std::fs::remove_file(&f).map_err(|e| EdaError::io(&f, e))?;
        }
    }
    Ok(())
}

fn subset(samples: &[FeatureSample], idx: &[usize]) -> Vec<FeatureSample> {
    idx.iter().map(|&i| samples[i].clone()).collect()
}

fn row(target: &str, method: &str, ev: &EvalReport, trained: Option<&TrainReport>, samples: usize, selection_seconds: f64) -> MethodResult {
    let a = &ev.aggregate;
    MethodResult {
        target: target.into(),
        method: method.into(),
        tau: a.tau,
        tau_reference: a.tau_reference,
        tokens_per_target_forward: a.tokens_per_target_forward,
        alpha: a.alpha,
        speedup: a.speedup,
        tokens_per_second: a.tokens_per_second,
        baseline_tokens_per_second: a.baseline_tokens_per_second,
        greedy_matches: a.greedy_matches,
        prompts: a.prompts,
        trainable_params: trained.map_or(0, |r| r.trainable_params),
        train_samples: samples,
        train_steps: trained.map_or(0, |r| r.steps),
        train_seconds: trained.map_or(0.0, |r| r.seconds) + selection_seconds,
    }
}

/// Runs the whole demo; see the [module docs](self) for what is written where.
pub fn run_demo(cfg: &DemoConfig) -> Result<DemoResults> {
    cfg.validate()?;
    let start = Instant::now();
    let device = match &cfg.device {
        Some(n) => eda_core::backend::device_from_name(n)?,
        None => eda_core::backend::default_device()?,
    };
    std::fs::create_dir_all(&cfg.out).map_err(|e| EdaError::io(&cfg.out, e))?;
    eda_core::io::write_json(&cfg.out.join("demo_config.json"), cfg)?;
    let mut log = StageLog::default();
    let s = &cfg.scale;

    // 1. Targets.
    let models = match cfg.external {
        None => builtin_models(cfg, &device, &mut log)?,
        Some(_) => external_models(cfg)?,
    };
    let tokenizer = eda_models::load_tokenizer_for(&models.base_dir, usize::MAX)?;

    // 2. Base-target features of general data, stage-1 draft, τ on the base target.
    let mut base = Target::from_pretrained(&models.base_dir, &device)?;
    let general = featurise(
        &mut base,
        &tokenizer,
        &models.general_train,
        RegenMode::Original,
        cfg,
        &cfg.out.join("features/general"),
        &mut log,
        "features:general",
    )?;
    let base_emb = base.embedding_weight();
    let base_head = base.lm_head_weight();
    let dcfg = EdaDraftConfig::for_target(base.info(), s.draft_heads, s.draft_kv_heads, s.draft_intermediate, s.draft_private_intermediate);
    let stage1_dir = cfg.out.join("drafts/stage1");
    let stage1 = train_draft(
        &stage1_dir,
        DraftInit::Fresh(&dcfg),
        &general,
        &base_emb,
        &base_head,
        draft_train_config(cfg, Stage::Stage1, s.stage1_epochs, s.draft_lr, cfg.seed),
        &device,
        cfg,
        &mut log,
        "draft:stage1",
    )?;
    let mut rows = Vec::new();
    let general_prompts = encode_prompts(&tokenizer, &models.general_eval)?;
    if !general_prompts.is_empty() {
        let ev = evaluate_cached(
            &cfg.out.join("eval/base/stage1.json"),
            &mut base,
            stage1.draft.clone(),
            &general_prompts,
            cfg,
            &mut log,
            "eval:base/stage1",
        )?;
        rows.push(row("base", "stage1", &ev, Some(&stage1.report), general.len(), 0.0));
    }
    drop(base);

    // 3. Mahalanobis statistics of the base features.
    // Pool-then-distance compares sample means, so its statistics are those of base sample means.
    let unit = if cfg.pooling == Pooling::PoolThenDistance { FitUnit::SampleMeans } else { FitUnit::Tokens };
    let stats_path = cfg.out.join(match unit {
        FitUnit::SampleMeans => "features/base_stats_sample_means.safetensors",
        _ => "features/base_stats.safetensors",
    });
    let t_fit = Instant::now();
    let ran = !stats_path.is_file();
    if ran {
        FeatureStats::fit(&general, &FitConfig { unit, ..FitConfig::default() })?.save(&stats_path)?;
    }
    log.record("select:fit-base-stats", ran);
    let stats = FeatureStats::load(&stats_path)?;
    let fit_seconds = t_fit.elapsed().as_secs_f64();
    let selector = MahalanobisSelector::from_stats(&stats, ScoreConfig { pooling: cfg.pooling, ..ScoreConfig::default() })?;
    drop(general);

    // 4. Per fine-tuned target.
    let stage1_draft_dir = stage1_dir.join("draft");
    for job in &models.targets {
        let name = job.name.as_str();
        let mut target = Target::from_pretrained(&job.dir, &device)?;
        let emb = target.embedding_weight();
        let head = target.lm_head_weight();
        let eval_prompts = encode_prompts(&tokenizer, &job.eval)?;
        let data_dir = cfg.out.join("data").join(name);
        let regen = featurise(
            &mut target,
            &tokenizer,
            &job.train,
            RegenMode::Regenerated,
            cfg,
            &data_dir.join("regenerated"),
            &mut log,
            &format!("regenerate:{name}"),
        )?;
        let original = featurise(
            &mut target,
            &tokenizer,
            &job.train,
            RegenMode::Original,
            cfg,
            &data_dir.join("original"),
            &mut log,
            &format!("features-original:{name}"),
        )
        .or_else(|e| match e {
            EdaError::EmptyDataset(_) => Ok(Vec::new()),
            other => Err(other),
        })?;
        if regen.is_empty() {
            return Err(EdaError::EmptyDataset(format!("no regenerated samples for target {name}")));
        }

        // Selection (Mahalanobis top fraction vs random at the same budget).
        let eval_dir = cfg.out.join("eval").join(name);
        let drafts_dir = cfg.out.join("drafts").join(name);
        let sel_path = data_dir.join("selection.json");
        invalidate_stale_selection(&sel_path, cfg, &drafts_dir, &eval_dir)?;
        let ran = !sel_path.is_file();
        if ran {
            let t = Instant::now();
            let m = selector.select(&regen, cfg.select_fraction)?;
            let seconds = t.elapsed().as_secs_f64() + fit_seconds;
            let r = RandomSelector { seed: cfg.seed }.select(&regen, cfg.select_fraction)?;
            eda_core::io::write_json(
                &sel_path,
                &SelectionFile {
                    fraction: cfg.select_fraction,
                    pooling: cfg.pooling,
                    mahalanobis: m.indices,
                    random: r.indices,
                    scores: m.scores,
                    seconds,
                },
            )?;
        }
        log.record(format!("select:{name}"), ran);
        let sel: SelectionFile = eda_core::io::read_json(&sel_path)?;
        if sel.mahalanobis.iter().chain(&sel.random).any(|&i| i >= regen.len()) {
            return Err(EdaError::InvalidArgument(format!(
                "{} indexes past the {} regenerated samples; delete it to reselect",
                sel_path.display(),
                regen.len()
            )));
        }

        // (a) no adaptation: the stage-1 draft with the target's LM head.
        let no_adapt = EdaDraft::load(&stage1_draft_dir, base_emb.clone(), head.clone(), &device)?;
        let ev = evaluate_cached(
            &eval_dir.join("no-adapt.json"),
            &mut target,
            no_adapt,
            &eval_prompts,
            cfg,
            &mut log,
            &format!("eval:{name}/no-adapt"),
        )?;
        rows.push(row(name, "no-adapt", &ev, None, 0, 0.0));

        let stage2_cfg =
            |seed_off: u64| draft_train_config(cfg, Stage::Stage2, s.adapt_epochs, s.stage2_lr, cfg.seed.wrapping_add(seed_off));
        let mut plans: Vec<(&str, Vec<FeatureSample>, f64)> = Vec::new();
        plans.push(("full-ft", regen.clone(), 0.0));
        if !original.is_empty() {
            plans.push(("stage2-original", original.clone(), 0.0));
        } else {
            tracing::warn!(target = name, "no reference answers: skipping the original-data baseline");
        }
        plans.push(("stage2-regen-all", regen.clone(), 0.0));
        plans.push(("random", subset(&regen, &sel.random), 0.0));
        plans.push(("eda", subset(&regen, &sel.mahalanobis), sel.seconds));
        for (method, data, sel_seconds) in plans {
            let dir = drafts_dir.join(method);
            let label = format!("draft:{name}/{method}");
            let trained = if method == "full-ft" {
                train_draft(
                    &dir,
                    DraftInit::Fresh(&dcfg),
                    &data,
                    &emb,
                    &head,
                    draft_train_config(cfg, Stage::Stage1, s.adapt_epochs, s.draft_lr, cfg.seed.wrapping_add(11)),
                    &device,
                    cfg,
                    &mut log,
                    &label,
                )?
            } else {
                train_draft(
                    &dir,
                    DraftInit::Stage2(&stage1_draft_dir),
                    &data,
                    &base_emb,
                    &head,
                    stage2_cfg(12),
                    &device,
                    cfg,
                    &mut log,
                    &label,
                )?
            };
            let ev = evaluate_cached(
                &eval_dir.join(format!("{method}.json")),
                &mut target,
                trained.draft,
                &eval_prompts,
                cfg,
                &mut log,
                &format!("eval:{name}/{method}"),
            )?;
            rows.push(row(name, method, &ev, Some(&trained.report), data.len(), sel_seconds));
        }
    }

    let results = DemoResults {
        format: RESULTS_FORMAT.into(),
        seed: cfg.seed,
        select_fraction: cfg.select_fraction,
        tree: format!("tree(depth={}, top_k={}, total_tokens={})", s.tree.depth, s.tree.top_k, s.tree.total_tokens),
        device: format!("{device:?}"),
        rows,
        stages: log,
        wall_seconds: start.elapsed().as_secs_f64(),
    };
    crate::report::write_outputs(&results, &cfg.out)?;
    Ok(results)
}
