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
    /// the target's LM head). The weights are also written as `pytorch_model.bin`, the file
    /// EAGLE's released code (`eagle-llm`) loads.
    Eagle,
    /// vLLM's speculators format (`speculators_model_type: "eagle"`): the same folded EAGLE-1
    /// network as `fusion_fc.*` + `transformer.*` in `model.safetensors`, and a `config.json`
    /// naming the verifier (`--verifier`) and the number of proposed tokens
    /// (`--speculative-tokens`).
    Speculators,
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
    /// `--format speculators`: the verifier the config names, a local path or a hub id such as
    /// `HuggingFaceTB/SmolLM2-135M-Instruct` [default: the --target path as given].
    #[arg(long, value_name = "NAME_OR_PATH")]
    pub verifier: Option<String>,
    /// `--format speculators`: tokens the draft proposes per step (the config's greedy
    /// proposal; vLLM's `num_speculative_tokens` unless it is set there).
    #[arg(long, default_value_t = 5, value_name = "N")]
    pub speculative_tokens: usize,
    /// The device the draft is loaded on to convert it.
    #[command(flatten)]
    pub device: DeviceArgs,
}

/// Runs `eda export`.
pub fn run(args: Args) -> eda_core::Result<()> {
    eda_core::io::check_output_dir(&args.out)?;
    let (device, target) = super::device::conversion_target(&args.device, &args.target)?;
    let draft = eda_draft::EdaDraft::load(&args.draft, target.embedding_weight(), target.lm_head_weight(), &device)?;
    let info = target.info();
    let target_theta = target.model().config.rope_theta;
    let cfg = draft.eagle_config()?;
    let layout = match args.format {
        Format::Eagle => {
            // eagle-llm 1.2.1 builds its rotary table with base 10000 and head_dim = hidden /
            // heads whatever the config says; newer EAGLE code and vLLM read the config.
            if cfg.rope_theta != 10000.0 || cfg.head_dim != Some(cfg.hidden_size / cfg.num_attention_heads) {
                tracing::warn!(
                    rope_theta = cfg.rope_theta,
                    head_dim = ?cfg.head_dim,
                    "eagle-llm 1.2.1 (PyPI) ignores rope_theta and head_dim (it assumes 10000 and hidden/heads): its outputs for this draft will differ; EAGLE's current code and vLLM read them"
                );
            }
            draft.save_eagle(&args.out)?;
            "EAGLE-1 layout"
        }
        Format::Speculators => {
            // The speculators reference runs the layer with the verifier's rotary table.
            if cfg.rope_theta != target_theta {
                tracing::warn!(
                    draft = cfg.rope_theta,
                    target = target_theta,
                    "the draft's rope_theta differs from the target's; speculators' EagleSpeculator uses the target's rotary table"
                );
            }
            let architecture = eda_draft::speculators::Verifier::architecture_of(&info.model_type).ok_or_else(|| {
                eda_core::EdaError::InvalidConfig(format!("no speculators verifier class for model_type `{}`", info.model_type))
            })?;
            let name_or_path = args.verifier.clone().unwrap_or_else(|| args.target.display().to_string());
            let verifier = eda_draft::speculators::Verifier { name_or_path, architecture };
            draft.save_speculators(&args.out, &verifier, args.speculative_tokens)?;
            "speculators EAGLE layout"
        }
    };
    println!(
        "wrote {} ({layout} for {}: hidden {}, MLP width {}, vocabulary {})",
        args.out.display(),
        info.model_type,
        cfg.hidden_size,
        cfg.intermediate_size,
        cfg.vocab_size
    );
    Ok(())
}
