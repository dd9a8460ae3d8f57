//! `eda train`: stage 1 (train a draft on base-target features) or stage 2 (adapt a stage-1
//! draft's private experts to a fine-tuned target's features). See the `eda-train` crate.

use std::path::{Path, PathBuf};

use burn::tensor::{Device, Tensor, TensorData};
use eda_core::data::FeatureSample;
use eda_core::{EdaError, ModelInfo};
use eda_draft::EdaDraftConfig;
use eda_train::{DraftTrainer, LossNorm, NoiseConfig, PrivateInit, Stage, Stage2Freeze, TrainConfig, WarmupShape};

/// Training stage.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum StageArg {
    /// Train every draft parameter (except the frozen embedding / LM head) on base-target features.
    Stage1,
    /// Load `--stage1`, freeze its attention, norm and shared experts, train `fc` and the private
    /// group on fine-tuned-target features (see `--freeze`).
    Stage2,
}

/// Stage-2 private-group initialisation.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum PrivateInitArg {
    /// Fresh random init (what the reference code does).
    Random,
    /// Keep the stage-1 private weights.
    FromStage1,
}

/// Stage-2 freezing.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum FreezeArg {
    /// Freeze fc, attention, norm and shared experts: only the private group trains.
    SharedGroup,
    /// The reference script (default): freeze attention, norm and shared experts; `fc` also trains.
    Reference,
    /// Freeze nothing: full fine-tuning of the stage-1 draft (the full-retraining baseline; pair
    /// with `--private-init from-stage1` to start every weight from stage 1).
    None,
}

/// Input-feature noise.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoiseArg {
    /// No noise.
    None,
    /// U(-a, a) with a = `--noise-scale` (default 0.1).
    Uniform,
    /// The reference's (U(0,1) − 0.5)·std·512/L with std = `--noise-scale` (use 0.2).
    Reference,
}

/// Loss normalisation.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum NormArg {
    /// Divide by the number of masked tokens.
    Masked,
    /// Divide by batch × padded length (the reference).
    Batch,
}

/// Flags of `eda train`. Flags override the values of `--config`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Training stage.
    #[arg(long, value_enum, default_value_t = StageArg::Stage1)]
    pub stage: StageArg,
    /// Feature shards: files, directories (their feature shards; other files such as the
    /// `stats.safetensors` of `eda select` are skipped) or file-name globs, as written by
    /// `eda features`, `eda regenerate` and `eda select`. The chat format they recorded is
    /// written with the draft (`chat_format.json`) for `eval` and `generate`.
    #[arg(long, required = true, num_args = 1..)]
    pub features: Vec<PathBuf>,
    /// Target checkpoint directory (HF layout) providing the frozen LM head: the base target in
    /// stage 1, the fine-tuned target in stage 2. Also provides the embedding in stage 1.
    #[arg(long)]
    pub target: PathBuf,
    /// Checkpoint directory to take the token embedding from. Default: `--target` in stage 1; in
    /// stage 2 the *base* target the stage-1 draft was trained with (recorded in its
    /// `base_target.json`), as the reference keeps the base embedding. Pass the fine-tuned
    /// target here to use its embedding instead.
    #[arg(long)]
    pub embedding_from: Option<PathBuf>,
    /// Stage-1 draft directory (the `draft/` folder of a stage-1 run); required for stage 2.
    #[arg(long)]
    pub stage1: Option<PathBuf>,
    /// Output directory (checkpoints, metrics.jsonl, `report.json` with the run's steps, tokens,
    /// seconds and trainable parameters, final `draft/`); an unfinished run there is resumed.
    #[arg(long)]
    pub out: PathBuf,
    /// JSON training configuration (`eda_train::TrainConfig`); flags below override it.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Stage 1: JSON draft configuration (`eda_draft::EdaDraftConfig`); default: derived from the target.
    #[arg(long)]
    pub draft_config: Option<PathBuf>,
    /// Stage 1 without `--draft-config`: shared expert intermediate size (default: the target's).
    #[arg(long)]
    pub intermediate_size: Option<usize>,
    /// Stage 1 without `--draft-config`: private expert intermediate size (default: the shared one).
    #[arg(long)]
    pub private_intermediate_size: Option<usize>,
    /// Reduced draft vocabulary of K tokens (EAGLE-3 style): the draft's LM head covers only the K
    /// target tokens most frequent at loss-masked positions of `--features`, plus the target's
    /// EOS tokens. Every drafting step and the training loss get cheaper (on SmolLM2-135M shapes
    /// K = 8192 cuts a CPU drafting step from ≈ 8 to ≈ 4 ms); decoding stays exact, since tokens
    /// outside the K are never proposed but still emitted by the verifier with the target's
    /// probability. The mapping (`d2t`) is saved with the draft (`draft_vocab_size` in its
    /// config.json) and `eda generate` / `eda eval` load it transparently. Stage 1 default: the
    /// full vocabulary, or `draft_vocab_size` of `--draft-config`. Stage 2 default: keep the
    /// stage-1 draft's mapping; giving K recomputes it from the stage-2 features.
    #[arg(long, value_name = "K")]
    pub draft_vocab: Option<usize>,
    /// Total optimiser steps (overrides `--epochs`; default: as many as `--epochs` make).
    #[arg(long)]
    pub steps: Option<usize>,
    /// Passes over the data (default: 1).
    #[arg(long)]
    pub epochs: Option<f64>,
    /// Sequences per micro-batch (default: 4).
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Micro-batches per optimiser step (default: 1).
    #[arg(long)]
    pub grad_accum: Option<usize>,
    /// Truncate samples to this many tokens (default: 2048).
    #[arg(long)]
    pub max_len: Option<usize>,
    /// Peak learning rate (default: 0.0002, cosine decay to 0).
    #[arg(long)]
    pub lr: Option<f64>,
    /// Linear warmup steps (default: 0).
    #[arg(long)]
    pub warmup_steps: Option<usize>,
    /// Use the reference schedule (log warmup over 2000 steps, linear decay to 0 at 800k steps),
    /// then apply `--lr` / `--warmup-steps` if given.
    #[arg(long)]
    pub reference_schedule: bool,
    /// AdamW weight decay (default: 0; betas 0.9 / 0.95).
    #[arg(long)]
    pub weight_decay: Option<f64>,
    /// Global gradient-norm clip (0 disables; negative values are rejected; default: 0.5).
    #[arg(long, allow_hyphen_values = true)]
    pub grad_clip: Option<f64>,
    /// Input-feature noise kind (default: uniform).
    #[arg(long, value_enum)]
    pub noise: Option<NoiseArg>,
    /// Noise amplitude (uniform; default: 0.1) or std (reference; default: 0.2).
    #[arg(long)]
    pub noise_scale: Option<f32>,
    /// Loss normalisation (default: masked).
    #[arg(long, value_enum)]
    pub loss_norm: Option<NormArg>,
    /// Stage 2: private-group initialisation (default: random).
    #[arg(long, value_enum)]
    pub private_init: Option<PrivateInitArg>,
    /// Stage 2: which groups are frozen (default: reference, which also trains `fc`).
    #[arg(long, value_enum)]
    pub freeze: Option<FreezeArg>,
    /// Stage 2: adapt with LoRA adapters of this rank instead of the private experts (the
    /// LoRA-on-the-draft baseline): the stage-1 draft is kept whole and frozen, and adapters on its
    /// attention projections and every expert's gate/up/down projections are the only trainable
    /// parameters. The saved draft holds the merged weights (an ordinary EDA draft).
    #[arg(long, value_name = "R", conflicts_with_all = ["freeze", "private_init"])]
    pub lora_rank: Option<usize>,
    /// LoRA alpha: adapter updates are scaled by alpha / rank (default: 2 × rank).
    #[arg(long, requires = "lora_rank")]
    pub lora_alpha: Option<f64>,
    /// Projections that get adapters, comma-separated: q, k, v, o (attention), gate, up, down
    /// (every expert).
    #[arg(long, value_delimiter = ',', default_value = "q,k,v,o,gate,up,down", requires = "lora_rank")]
    pub lora_modules: Vec<String>,
    /// Seed of shuffling, noise and initialisation (default: 0).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Checkpoint every N steps (0: only at the end; default: 500).
    #[arg(long)]
    pub checkpoint_every: Option<usize>,
    /// Resume a checkpoint in `--out` even though its settings, training data or frozen
    /// weights differ from this run's (by default such a resume is refused, naming the
    /// differences, because it mixes two runs into one draft).
    #[arg(long)]
    pub allow_changed_inputs: bool,
    /// Device (training computes in f32).
    #[command(flatten)]
    pub device: super::args::DeviceArgs,
}

fn build_config(args: &Args) -> eda_core::Result<TrainConfig> {
    let mut c = match &args.config {
        Some(p) => TrainConfig::from_json_file(p)?,
        None => TrainConfig::default(),
    };
    c.stage = match args.stage {
        StageArg::Stage1 => Stage::Stage1,
        StageArg::Stage2 => Stage::Stage2,
    };
    if args.reference_schedule {
        c.schedule = eda_train::ScheduleConfig::reference();
    }
    if let Some(v) = args.steps {
        c.steps = Some(v);
    }
    if let Some(v) = args.epochs {
        c.epochs = v;
        if args.steps.is_none() {
            c.steps = None;
        }
    }
    if let Some(v) = args.batch_size {
        c.batch_size = v;
    }
    if let Some(v) = args.grad_accum {
        c.grad_accum = v;
    }
    if let Some(v) = args.max_len {
        c.max_len = v;
    }
    if let Some(v) = args.lr {
        c.schedule.lr = v;
    }
    if let Some(v) = args.warmup_steps {
        c.schedule.warmup_steps = v;
        if !args.reference_schedule {
            c.schedule.warmup = WarmupShape::Linear;
        }
    }
    if let Some(v) = args.weight_decay {
        c.adamw.weight_decay = v;
    }
    if let Some(v) = args.grad_clip {
        // Only an explicit 0 disables clipping; a negative or NaN value is a typo, not "off".
        if !(v >= 0.0 && v.is_finite()) {
            return Err(EdaError::InvalidArgument(format!("--grad-clip must be a finite number >= 0 (0 disables clipping), got {v}")));
        }
        c.grad_clip = if v > 0.0 { Some(v) } else { None };
    }
    if let Some(kind) = args.noise {
        c.noise = match kind {
            NoiseArg::None => NoiseConfig::None,
            NoiseArg::Uniform => NoiseConfig::Uniform { amplitude: args.noise_scale.unwrap_or(0.1) },
            NoiseArg::Reference => NoiseConfig::ReferenceScaled { std: args.noise_scale.unwrap_or(0.2) },
        };
    } else if let Some(s) = args.noise_scale {
        c.noise = match c.noise {
            NoiseConfig::ReferenceScaled { .. } => NoiseConfig::ReferenceScaled { std: s },
            _ => NoiseConfig::Uniform { amplitude: s },
        };
    }
    if let Some(n) = args.loss_norm {
        c.loss.norm = match n {
            NormArg::Masked => LossNorm::MaskedTokens,
            NormArg::Batch => LossNorm::BatchTokens,
        };
    }
    if let Some(p) = args.private_init {
        c.private_init = match p {
            PrivateInitArg::Random => PrivateInit::Random,
            PrivateInitArg::FromStage1 => PrivateInit::FromStage1,
        };
    }
    if let Some(f) = args.freeze {
        c.stage2_freeze = match f {
            FreezeArg::SharedGroup => Stage2Freeze::SharedGroup,
            FreezeArg::Reference => Stage2Freeze::Reference,
            FreezeArg::None => Stage2Freeze::None,
        };
    }
    if let Some(rank) = args.lora_rank {
        if args.stage != StageArg::Stage2 {
            return Err(EdaError::InvalidArgument("--lora-rank adapts a stage-1 draft: use it with --stage stage2".into()));
        }
        let modules = args.lora_modules.iter().map(|m| m.parse::<eda_models::LoraModule>()).collect::<eda_core::Result<Vec<_>>>()?;
        c.lora = Some(eda_models::LoraSpec { rank, alpha: args.lora_alpha.unwrap_or(2.0 * rank as f64), modules });
    }
    if let Some(v) = args.seed {
        c.seed = v;
    }
    if let Some(v) = args.checkpoint_every {
        c.checkpoint_every = v;
    }
    c.validate()?;
    Ok(c)
}

/// The feature shard files named by `paths` (files, directories or globs; see
/// [`eda_core::shard_files`]).
fn feature_files(paths: &[PathBuf]) -> eda_core::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for p in paths {
        files.extend(eda_core::shard_files::shard_files(p)?);
    }
    Ok(files)
}

/// Reads every sample of the shard `files` (`paths` names them in errors).
fn load_features(files: &[PathBuf], paths: &[PathBuf]) -> eda_core::Result<Vec<FeatureSample>> {
    // Sample ids must be unique across files: a shard named twice would be trained on twice.
    let out = eda_core::data::read_shards(files)?;
    if out.is_empty() {
        return Err(EdaError::EmptyDataset(format!("no feature samples in {paths:?}")));
    }
    Ok(out)
}

/// The chat format the draft is trained under: the one its features recorded, else (stage 2) the
/// stage-1 draft's.
fn chat_format_of(args: &Args, feature_files: &[PathBuf]) -> eda_core::Result<Option<eda_regen::ChatFormat>> {
    let from_features = eda_regen::ChatFormat::of_shards(feature_files)?;
    let found = match (&from_features, &args.stage1) {
        (None, Some(stage1)) if args.stage == StageArg::Stage2 => eda_regen::ChatFormat::read(stage1)?,
        _ => from_features,
    };
    match &found {
        Some(f) => tracing::info!(format = %f, "chat format of the training data (recorded with the draft)"),
        None => tracing::info!("no chat format recorded with the features; eval and generate will need --chat or --raw"),
    }
    Ok(found)
}

/// `base_target.json` of a draft directory: the base target its shared group was trained with.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BaseTarget {
    /// The base checkpoint directory (absolute when it could be resolved).
    pub target: PathBuf,
}

impl BaseTarget {
    const FILE: &'static str = "base_target.json";

    /// Records `target` in `draft_dir`.
    pub fn write(draft_dir: &Path, target: &Path) -> eda_core::Result<()> {
        let target = std::fs::canonicalize(target).unwrap_or_else(|_| target.to_path_buf());
        eda_core::io::write_json(&draft_dir.join(Self::FILE), &BaseTarget { target })
    }

    /// The record of `draft_dir`, if it has one.
    pub fn read(draft_dir: &Path) -> eda_core::Result<Option<PathBuf>> {
        let path = draft_dir.join(Self::FILE);
        if !path.is_file() {
            return Ok(None);
        }
        Ok(Some(eda_core::io::read_json::<BaseTarget>(&path)?.target))
    }
}

/// Where the draft's token embedding comes from (see `--embedding-from`).
fn embedding_dir(args: &Args) -> eda_core::Result<PathBuf> {
    if let Some(dir) = &args.embedding_from {
        return Ok(dir.clone());
    }
    let (StageArg::Stage2, Some(stage1)) = (args.stage, &args.stage1) else { return Ok(args.target.clone()) };
    match BaseTarget::read(stage1)? {
        // `eda train` reads HF directories only (a GGUF base recorded by import-eagle is not one).
        Some(base) if base.join("config.json").is_file() => {
            tracing::info!(base = %base.display(), "stage 2 keeps the base target's embedding (recorded with the stage-1 draft)");
            Ok(base)
        }
        Some(base) => Err(EdaError::InvalidArgument(format!(
            "the stage-1 draft was trained with base target {}, which is gone or not a HF checkpoint directory; pass \
             --embedding-from <base target directory> (or the fine-tuned target to use its embedding)",
            base.display()
        ))),
        None => {
            tracing::warn!(
                "{} does not record its base target; taking the embedding of --target (pass --embedding-from <base target> \
                 to keep the base embedding, as the reference does)",
                stage1.display()
            );
            Ok(args.target.clone())
        }
    }
}

/// The target's config, and `[vocab, hidden]` matrices `name` read from its weights.
fn read_matrix(dir: &Path, cfg: &eda_models::ModelConfig, name: &str, device: &Device) -> eda_core::Result<Tensor<2>> {
    let src = eda_models::WeightSource::open(dir)?;
    let (v, h) = (cfg.vocab_size, cfg.hidden_size);
    let name =
        if name == "lm_head.weight" && (cfg.tie_word_embeddings || !src.contains(name)) { "model.embed_tokens.weight" } else { name };
    let vals = src.read_f32(name, &[v, h])?;
    Ok(Tensor::from_data(TensorData::new(vals, [v, h]), device))
}

/// Restricts `draft` to the `k` most frequent target tokens of `data` plus the target's EOS ids.
fn with_draft_vocab(
    draft: eda_draft::EdaDraft,
    k: usize,
    data: &[FeatureSample],
    tcfg: &eda_models::ModelConfig,
) -> eda_core::Result<eda_draft::EdaDraft> {
    let ids = eda_train::vocab::top_k_tokens(data, k, &tcfg.eos_token_ids, tcfg.vocab_size)?;
    tracing::info!(
        k,
        coverage = eda_train::vocab::coverage(data, &ids),
        "reduced draft vocabulary (coverage = share of loss-masked training tokens inside it)"
    );
    draft.with_draft_vocab(ids)
}

/// Optimiser steps below which a run cannot teach a draft much (EAGLE trains for tens of thousands).
const MIN_USEFUL_STEPS: usize = 200;
/// Loss-masked training tokens below which the same holds.
const MIN_USEFUL_TOKENS: usize = 10_000;

/// A warning when the run is too small to learn anything, naming what to raise.
fn small_run_warning(cfg: &TrainConfig, data: &[FeatureSample]) -> Option<String> {
    let steps = cfg.total_steps(data.len());
    let tokens: usize = data.iter().map(|s| s.loss_mask.iter().filter(|&&m| m != 0).count()).sum();
    (steps < MIN_USEFUL_STEPS || tokens < MIN_USEFUL_TOKENS).then(|| {
        format!(
            "this run makes {steps} optimiser steps over {tokens} loss-masked tokens ({} samples); a draft needs at least \
             {MIN_USEFUL_STEPS} steps and {MIN_USEFUL_TOKENS} tokens to learn much: add data, or raise --epochs / --steps",
            data.len()
        )
    })
}

/// Runs `eda train`.
pub fn run(args: Args) -> eda_core::Result<()> {
    // Training is f32 only (half-precision training diverges without f32 master weights, which
    // burn 0.22 cannot keep beside half activations on one device; see DraftTrainer::new).
    let device = super::device::open(args.device.device.as_deref(), Some(super::device::ComputeDtype::F32), None)?;
    let cfg = build_config(&args)?;
    eda_core::io::check_output_dir(&args.out)?;
    eda_core::io::clean_stale_temp_files(&args.out);
    let files = feature_files(&args.features)?;
    let data = load_features(&files, &args.features)?;
    tracing::info!(samples = data.len(), tokens = data.iter().map(|s| s.len()).sum::<usize>(), "features loaded");
    let chat_format = chat_format_of(&args, &files)?;
    if let Some(w) = small_run_warning(&cfg, &data) {
        tracing::warn!("{w}");
    }

    let tcfg = eda_models::ModelConfig::from_file(&args.target.join("config.json"))?;
    let lm_head = read_matrix(&args.target, &tcfg, "lm_head.weight", &device)?;
    let emb_dir = embedding_dir(&args)?;
    let ecfg = if emb_dir == args.target { tcfg.clone() } else { eda_models::ModelConfig::from_file(&emb_dir.join("config.json"))? };
    if ecfg.vocab_size != tcfg.vocab_size || ecfg.hidden_size != tcfg.hidden_size {
        return Err(EdaError::mismatch(
            "vocabulary x hidden size (--embedding-from vs --target)",
            tcfg.vocab_size * tcfg.hidden_size,
            ecfg.vocab_size * ecfg.hidden_size,
        ));
    }
    let embedding = read_matrix(&emb_dir, &ecfg, "model.embed_tokens.weight", &device)?;

    let draft = match cfg.stage {
        Stage::Stage1 => {
            let mut dcfg: EdaDraftConfig = match &args.draft_config {
                Some(p) => eda_core::io::read_json(p)?,
                None => {
                    let info = ModelInfo {
                        model_type: tcfg.model_type.to_string(),
                        vocab_size: tcfg.vocab_size,
                        hidden_size: tcfg.hidden_size,
                        max_position_embeddings: tcfg.max_position_embeddings,
                        eos_token_ids: tcfg.eos_token_ids.clone(),
                        identity: String::new(),
                    };
                    let i = args.intermediate_size.unwrap_or(tcfg.intermediate_size);
                    let p = args.private_intermediate_size.unwrap_or(i);
                    EdaDraftConfig::for_target(&info, tcfg.num_attention_heads, tcfg.num_key_value_heads, i, p)
                        .with_rope_theta(tcfg.rope_theta)
                }
            };
            // The mapping comes from the data, so the draft is built full-vocabulary first.
            let k = args.draft_vocab.or(dcfg.draft_vocab_size.take());
            let draft = eda_train::stage1_draft(&dcfg, embedding, lm_head, &cfg, &device)?;
            match k {
                Some(k) => with_draft_vocab(draft, k, &data, &tcfg)?,
                None => draft,
            }
        }
        Stage::Stage2 => {
            let dir = args
                .stage1
                .as_ref()
                .ok_or_else(|| EdaError::InvalidArgument("--stage1 <draft dir> is required for --stage stage2".into()))?;
            let draft = eda_train::stage2_draft(dir, embedding, lm_head, &cfg, &device)?;
            match args.draft_vocab {
                Some(k) => with_draft_vocab(draft, k, &data, &tcfg)?,
                None => draft,
            }
        }
    };
    let counts = draft.param_counts();
    tracing::info!(
        trainable = counts.trainable,
        draft = counts.draft(),
        ratio = counts.trainable_ratio(),
        ratio_with_embedding = counts.trainable_ratio_with_embedding(),
        "draft parameters (trainable share without / with embedding)"
    );
    let mut trainer = DraftTrainer::new(cfg, draft, &device, &args.out)?.allow_changed_inputs(args.allow_changed_inputs);
    let report = trainer.train(&data)?;
    // What the run cost (steps, tokens, seconds, trainable parameters), for comparisons.
    eda_core::io::write_json(&args.out.join("report.json"), &report)?;
    if let Some(f) = &chat_format {
        // eval and generate render prompts the way the training data was rendered.
        f.write(&args.out.join("draft"))?;
    }
    // The base target travels with the draft, so that a later stage 2 keeps its embedding.
    let base = if args.stage == StageArg::Stage1 { args.target.clone() } else { emb_dir.clone() };
    BaseTarget::write(&args.out.join("draft"), &base)?;
    // A tied target's embedding and LM head are one matrix, held twice by the draft: count it once.
    let tied = tcfg.tie_word_embeddings && emb_dir == args.target;
    let total_params = report.total_params - if tied { tcfg.vocab_size * tcfg.hidden_size } else { 0 };
    println!(
        "{} steps, final loss {:.4}, top-1 {:.3}; {} tokens in {:.1}s ({:.0} tokens/s); {} of {} parameters trained; draft: {}",
        report.steps,
        report.final_loss,
        report.final_top1,
        report.tokens,
        report.seconds,
        report.tokens as f64 / report.seconds.max(1e-9),
        report.trainable_params,
        total_params,
        args.out.join("draft").display()
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

    /// Deterministic pseudo-random values in [-1, 1).
    fn vals(n: usize, seed: u64) -> Vec<f32> {
        let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (0..n)
            .map(|_| {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((x >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    /// A target directory with only what `eda train` reads: config.json, embedding and LM head.
    fn write_target(dir: &Path, seed: u64) {
        let (v, h) = (32usize, 16usize);
        eda_models::ModelConfig::qwen2(v, h, 32, 1, 4, 2, 256).save(&dir.join("config.json")).unwrap();
        let n = v * h * 4;
        let header = format!(
            r#"{{"model.embed_tokens.weight":{{"dtype":"F32","shape":[{v},{h}],"data_offsets":[0,{n}]}},"lm_head.weight":{{"dtype":"F32","shape":[{v},{h}],"data_offsets":[{n},{}]}}}}"#,
            2 * n
        );
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(header.as_bytes());
        for x in vals(2 * v * h, seed) {
            bytes.extend_from_slice(&x.to_le_bytes());
        }
        std::fs::write(dir.join("model.safetensors"), bytes).unwrap();
    }

    #[test]
    fn help_states_the_defaults_the_config_really_has() {
        use clap::CommandFactory;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            args: Args,
        }
        let c = TrainConfig::default();
        let (NoiseConfig::Uniform { amplitude }, Some(clip)) = (c.noise, c.grad_clip) else { panic!("default noise/clip changed") };
        let want = [
            ("epochs", c.epochs.to_string()),
            ("batch-size", c.batch_size.to_string()),
            ("grad-accum", c.grad_accum.to_string()),
            ("max-len", c.max_len.to_string()),
            ("lr", c.schedule.lr.to_string()),
            ("warmup-steps", c.schedule.warmup_steps.to_string()),
            ("weight-decay", c.adamw.weight_decay.to_string()),
            ("grad-clip", clip.to_string()),
            ("noise-scale", amplitude.to_string()),
            ("seed", c.seed.to_string()),
            ("checkpoint-every", c.checkpoint_every.to_string()),
        ];
        let cmd = Cli::command();
        for (flag, value) in want {
            let arg = cmd.get_arguments().find(|a| a.get_long() == Some(flag)).unwrap_or_else(|| panic!("--{flag}"));
            let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
            assert!(help.contains(&format!("default: {value}")), "--{flag}: help `{help}` does not state the default {value}");
        }
        assert!(c.steps.is_none() && c.loss.norm == LossNorm::MaskedTokens && c.private_init == PrivateInit::Random);
        assert_eq!(c.stage2_freeze, Stage2Freeze::Reference);
    }

    #[test]
    fn a_run_too_small_to_learn_is_warned_about() {
        let sample = |n: usize| FeatureSample::new("s", vec![1; n], vec![0.0; n], 1, vec![1; n]).unwrap();
        let small: Vec<FeatureSample> = (0..40).map(|_| sample(100)).collect();
        let w = small_run_warning(&TrainConfig::default(), &small).expect("10 steps warn");
        assert!(w.contains("10 optimiser steps over 4000 loss-masked tokens"), "{w}");
        let cfg = TrainConfig { epochs: 20.0, ..TrainConfig::default() };
        let big: Vec<FeatureSample> = (0..40).map(|_| sample(300)).collect();
        assert_eq!(small_run_warning(&cfg, &big), None, "200 steps over 12000 tokens is enough");
    }

    #[test]
    fn grad_clip_must_be_non_negative() {
        let parse =
            |v: &str| Cli::try_parse_from(["eda", "--features", "f", "--target", "t", "--out", "o", "--grad-clip", v]).unwrap().args;
        assert!(matches!(build_config(&parse("-1")), Err(EdaError::InvalidArgument(_))));
        assert!(matches!(build_config(&parse("NaN")), Err(EdaError::InvalidArgument(_))));
        assert_eq!(build_config(&parse("0")).unwrap().grad_clip, None);
        assert_eq!(build_config(&parse("0.25")).unwrap().grad_clip, Some(0.25));
    }

    #[test]
    fn stage1_then_stage2_from_the_command_line() {
        let root = tempfile::tempdir().unwrap();
        let (base, ft) = (root.path().join("base"), root.path().join("ft"));
        std::fs::create_dir_all(&base).unwrap();
        std::fs::create_dir_all(&ft).unwrap();
        write_target(&base, 1);
        write_target(&ft, 2);
        let samples: Vec<FeatureSample> = (0..6u64)
            .map(|i| {
                let ids: Vec<u32> = vals(10, 100 + i).iter().map(|x| ((x + 1.0) * 15.9) as u32).collect();
                FeatureSample::new(format!("{i}"), ids, vals(160, 200 + i), 16, vec![1; 10]).unwrap()
            })
            .collect();
        let shards = root.path().join("shards");
        eda_core::data::write_shard(&shards.join("shard-0.safetensors"), &samples, eda_core::data::FeatureDType::F32).unwrap();
        let p = |v: &Path| v.to_str().unwrap().to_string();
        let s1 = root.path().join("s1");
        let cli = Cli::try_parse_from([
            "eda",
            "--features",
            &p(&shards),
            "--target",
            &p(&base),
            "--out",
            &p(&s1),
            "--steps",
            "3",
            "--batch-size",
            "2",
            "--device",
            "cpu",
        ])
        .unwrap();
        run(cli.args).unwrap();
        assert!(s1.join("draft").is_dir());
        let recorded = BaseTarget::read(&s1.join("draft")).unwrap().expect("stage 1 records its base target");
        assert_eq!(recorded, std::fs::canonicalize(&base).unwrap());
        // Stage 2 defaults to the recorded base embedding (the reference's choice)...
        let stage2 = |extra: &[&str]| {
            let mut argv = vec!["eda", "--stage", "stage2", "--features", "f", "--target", ft.to_str().unwrap(), "--out", "o"];
            argv.extend_from_slice(extra);
            Cli::try_parse_from(argv).unwrap().args
        };
        let s1_draft = p(&s1.join("draft"));
        assert_eq!(embedding_dir(&stage2(&["--stage1", &s1_draft])).unwrap(), recorded);
        // ... unless told otherwise; a record pointing nowhere is an error naming the way out.
        assert_eq!(embedding_dir(&stage2(&["--stage1", &s1_draft, "--embedding-from", &p(&ft)])).unwrap(), ft);
        let moved = root.path().join("moved");
        std::fs::create_dir_all(&moved).unwrap();
        BaseTarget::write(&moved, &root.path().join("gone")).unwrap();
        let err = embedding_dir(&stage2(&["--stage1", &p(&moved)])).unwrap_err().to_string();
        assert!(err.contains("--embedding-from"), "{err}");
        // A draft without a record (older runs) falls back to --target.
        assert_eq!(embedding_dir(&stage2(&["--stage1", &p(&root.path().join("no-record"))])).unwrap(), ft);
        let s2 = root.path().join("s2");
        let cli = Cli::try_parse_from([
            "eda",
            "--stage",
            "stage2",
            "--features",
            &p(&shards),
            "--target",
            &p(&ft),
            "--stage1",
            &p(&s1.join("draft")),
            "--out",
            &p(&s2),
            "--steps",
            "2",
            "--noise",
            "reference",
            "--loss-norm",
            "batch",
            "--device",
            "cpu",
        ])
        .unwrap();
        run(cli.args).unwrap();
        assert_eq!(std::fs::read_to_string(s2.join("metrics.jsonl")).unwrap().lines().count(), 2);
        assert_eq!(BaseTarget::read(&s2.join("draft")).unwrap(), Some(recorded), "stage 2 passes the base target on");
        // The LoRA-on-the-draft baseline: adapters only, saved merged.
        let s2l = root.path().join("s2-lora");
        let (shards_s, ft_s, out_l) = (p(&shards), p(&ft), p(&s2l));
        let mut argv = vec!["eda", "--stage", "stage2", "--features", &shards_s, "--target", &ft_s, "--stage1", &s1_draft];
        argv.extend(["--out", &out_l, "--steps", "2", "--lora-rank", "2", "--lora-modules", "q,v,down", "--device", "cpu"]);
        run(Cli::try_parse_from(argv).unwrap().args).unwrap();
        let saved: TrainConfig = TrainConfig::from_json_file(&s2l.join("train_config.json")).unwrap();
        let spec = saved.lora.expect("the run records its LoRA spec");
        assert_eq!((spec.rank, spec.alpha, spec.modules.len()), (2, 4.0, 3));
        let trainable = |dir: &Path| -> u64 {
            let r: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("report.json")).unwrap()).unwrap();
            r["trainable_params"].as_u64().unwrap()
        };
        assert!(0 < trainable(&s2l) && trainable(&s2l) < trainable(&s2) / 4, "{} vs {}", trainable(&s2l), trainable(&s2));
        assert!(s2l.join("draft/model.safetensors").is_file());
        // LoRA is a stage-2 method and replaces the freezing plan.
        let lora_stage1 = stage2(&["--lora-rank", "2"]);
        assert!(matches!(build_config(&Args { stage: StageArg::Stage1, ..lora_stage1 }), Err(EdaError::InvalidArgument(_))));
        let both =
            ["eda", "--stage", "stage2", "--features", "f", "--target", "t", "--out", "o", "--lora-rank", "2", "--freeze", "reference"];
        assert!(Cli::try_parse_from(both).is_err());
        // stage 2 without --stage1 is a clear error
        let cli = Cli::try_parse_from([
            "eda",
            "--stage",
            "stage2",
            "--features",
            &p(&shards),
            "--target",
            &p(&ft),
            "--out",
            &p(&root.path().join("s3")),
        ])
        .unwrap();
        assert!(matches!(run(cli.args), Err(EdaError::InvalidArgument(_))));
    }

    #[test]
    fn reduced_draft_vocabulary_from_the_command_line() {
        let root = tempfile::tempdir().unwrap();
        let base = root.path().join("base");
        std::fs::create_dir_all(&base).unwrap();
        write_target(&base, 1);
        let samples: Vec<FeatureSample> = (0..6u64)
            .map(|i| {
                // tokens 3..13 only (eos 0 never occurs in the data)
                let ids: Vec<u32> = vals(10, 300 + i).iter().map(|x| 3 + ((x + 1.0) * 4.99) as u32).collect();
                FeatureSample::new(format!("{i}"), ids, vals(160, 400 + i), 16, vec![1; 10]).unwrap()
            })
            .collect();
        let shards = root.path().join("shards");
        eda_core::data::write_shard(&shards.join("shard-0.safetensors"), &samples, eda_core::data::FeatureDType::F32).unwrap();
        let p = |v: &Path| v.to_str().unwrap().to_string();
        let device = eda_core::backend::device_from_name("cpu").unwrap();
        let tcfg = eda_models::ModelConfig::from_file(&base.join("config.json")).unwrap();
        let head = read_matrix(&base, &tcfg, "lm_head.weight", &device).unwrap();
        let emb = read_matrix(&base, &tcfg, "model.embed_tokens.weight", &device).unwrap();

        let s1 = root.path().join("s1");
        let cli = Cli::try_parse_from([
            "eda",
            "--features",
            &p(&shards),
            "--target",
            &p(&base),
            "--out",
            &p(&s1),
            "--steps",
            "2",
            "--batch-size",
            "2",
            "--draft-vocab",
            "8",
            "--device",
            "cpu",
        ])
        .unwrap();
        run(cli.args).unwrap();
        let d1 = eda_draft::EdaDraft::load(&s1.join("draft"), emb.clone(), head.clone(), &device).unwrap();
        assert_eq!(d1.config().draft_vocab_size, Some(8));
        let ids = d1.draft_vocab().unwrap().to_vec();
        assert!(tcfg.eos_token_ids.iter().all(|e| ids.contains(e)), "EOS ids are always in the draft vocabulary: {ids:?}");
        assert_eq!(ids, eda_train::vocab::top_k_tokens(&samples, 8, &tcfg.eos_token_ids, 32).unwrap());

        // Stage 2 keeps the stage-1 mapping unless --draft-vocab is given again.
        let s2 = root.path().join("s2");
        let cli = Cli::try_parse_from([
            "eda",
            "--stage",
            "stage2",
            "--features",
            &p(&shards),
            "--target",
            &p(&base),
            "--stage1",
            &p(&s1.join("draft")),
            "--out",
            &p(&s2),
            "--steps",
            "1",
            "--device",
            "cpu",
        ])
        .unwrap();
        run(cli.args).unwrap();
        let d2 = eda_draft::EdaDraft::load(&s2.join("draft"), emb.clone(), head.clone(), &device).unwrap();
        assert_eq!(d2.draft_vocab(), Some(ids.as_slice()));
        let s3 = root.path().join("s3");
        let cli = Cli::try_parse_from([
            "eda",
            "--stage",
            "stage2",
            "--features",
            &p(&shards),
            "--target",
            &p(&base),
            "--stage1",
            &p(&s1.join("draft")),
            "--out",
            &p(&s3),
            "--steps",
            "1",
            "--draft-vocab",
            "5",
            "--device",
            "cpu",
        ])
        .unwrap();
        run(cli.args).unwrap();
        let d3 = eda_draft::EdaDraft::load(&s3.join("draft"), emb, head, &device).unwrap();
        assert_eq!(d3.draft_vocab().map(<[u32]>::len), Some(5));

        // K larger than the vocabulary is a clear error.
        let cli = Cli::try_parse_from([
            "eda",
            "--features",
            &p(&shards),
            "--target",
            &p(&base),
            "--out",
            &p(&root.path().join("s4")),
            "--steps",
            "1",
            "--draft-vocab",
            "33",
            "--device",
            "cpu",
        ])
        .unwrap();
        assert!(matches!(run(cli.args), Err(EdaError::InvalidArgument(_))));
    }
}
