//! `eda export`: an EDA draft in a layout other speculative-decoding code reads.

use std::path::PathBuf;

use eda_core::TargetModel;

use super::args::DeviceArgs;

/// Checkpoint layout to write.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// SafeAILab/EAGLE-1 (`config.json` in LlamaForCausalLM style + `model.safetensors` with
    /// `fc`, `layers.0.*` and `embed_tokens`). The shared and private experts of a 1 + 1 top-1
    /// draft fold exactly into one MLP of width I + P; other expert layouts are refused. A
    /// reduced draft vocabulary is not exported (EAGLE-1 predicts over the full vocabulary with
    /// the target's LM head).
    Eagle,
}

/// Flags of `eda export`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// EDA draft directory (the `draft/` folder written by `eda train`).
    #[arg(long)]
    pub draft: PathBuf,
    /// Target checkpoint directory the draft was trained for (HF layout): its embedding and LM
    /// head complete the draft and are checked against the draft's sizes.
    #[arg(long)]
    pub target: PathBuf,
    /// Output layout.
    #[arg(long, value_enum, default_value_t = Format::Eagle)]
    pub format: Format,
    /// Output directory (created; files of the same names are replaced atomically).
    #[arg(long)]
    pub out: PathBuf,
    /// The device the draft is loaded on to convert it.
    #[command(flatten)]
    pub device: DeviceArgs,
}

/// Runs `eda export`.
pub fn run(args: Args) -> eda_core::Result<()> {
    eda_core::io::check_output_dir(&args.out)?;
    let device = super::device::open(args.device.device.as_deref(), Some(super::device::ComputeDtype::F32), None)?;
    let target = eda_models::Target::from_pretrained(&args.target, &device)?;
    let draft = eda_draft::EdaDraft::load(&args.draft, target.embedding_weight(), target.lm_head_weight(), &device)?;
    match args.format {
        Format::Eagle => draft.save_eagle(&args.out)?,
    }
    let cfg = draft.eagle_config()?;
    println!(
        "wrote {} (EAGLE-1 layout for {}: hidden {}, MLP width {}, vocabulary {})",
        args.out.display(),
        target.info().model_type,
        cfg.hidden_size,
        cfg.intermediate_size,
        cfg.vocab_size
    );
    Ok(())
}
