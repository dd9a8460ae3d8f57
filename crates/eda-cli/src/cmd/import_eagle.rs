//! `eda import-eagle`: an existing EAGLE-1/2 draft as the starting point of EDA adaptation.

use std::path::PathBuf;

use eda_core::TargetModel;

use super::args::DeviceArgs;

/// Flags of `eda import-eagle`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// EAGLE-1/2 draft directory: `config.json` (LlamaForCausalLM-style, one layer) and its weights
    /// as `model.safetensors` or the `pytorch_model.bin` SafeAILab/EAGLE releases ship.
    pub eagle: PathBuf,
    /// Target checkpoint the EAGLE draft was trained for (HF directory or `.gguf`): its embedding
    /// and LM head complete the draft; hidden size and vocabulary must match the draft's.
    #[arg(long)]
    pub target: PathBuf,
    /// Output directory of the EDA draft (`config.json` + `model.safetensors`), usable as
    /// `eda train --stage stage2 --stage1 OUT`.
    #[arg(long)]
    pub out: PathBuf,
    /// Width of the fresh private expert added beside the imported MLP (which becomes the shared
    /// expert) [default: the imported MLP's width]. 0 imports a plain EAGLE draft.
    #[arg(long, value_name = "P")]
    pub private_intermediate_size: Option<usize>,
    /// Seed of the private expert's initialisation.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// The device the draft is loaded on to convert it.
    #[command(flatten)]
    pub device: DeviceArgs,
}

/// Runs `eda import-eagle`.
pub fn run(args: Args) -> eda_core::Result<()> {
    eda_core::io::check_output_dir(&args.out)?;
    let (device, target) = super::device::conversion_target(&args.device, &args.target)?;
    // Read loosely here: `load_eagle` checks the format and names what it found instead.
    let raw: serde_json::Value = eda_core::io::read_json(&args.eagle.join(eda_draft::checkpoint::CONFIG_FILE))?;
    let width = raw.get("intermediate_size").and_then(serde_json::Value::as_u64).unwrap_or(0) as usize;
    let private = args.private_intermediate_size.unwrap_or(width);
    let draft =
        eda_draft::EdaDraft::load_eagle(&args.eagle, target.embedding_weight(), target.lm_head_weight(), private, args.seed, &device)?;
    draft.save(&args.out)?;
    // Stage 2 keeps this base target's embedding by default.
    super::train::BaseTarget::write(&args.out, &args.target)?;
    let c = draft.config();
    println!(
        "wrote {} (EDA draft from EAGLE {}: shared MLP width {}, fresh private expert width {}, vocabulary {}); adapt it with `eda train --stage stage2 --stage1 {}`",
        args.out.display(),
        args.eagle.display(),
        c.intermediate_size,
        c.private_intermediate_size,
        c.vocab_size,
        args.out.display()
    );
    Ok(())
}
