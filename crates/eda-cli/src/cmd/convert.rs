//! `eda convert`: a llama.cpp GGUF model (Llama or Qwen2) → a HuggingFace checkpoint directory
//! (`config.json`, `model.safetensors`, `tokenizer.json`, `tokenizer_config.json` with the chat
//! template), loadable by eda and by transformers. Quantised weights are dequantised.

use std::path::PathBuf;

use eda_models::gguf::{convert_gguf_to_hf, HfDtype};

/// Storage dtype of the written weights.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dtype {
    /// 32-bit floats: exact for every GGUF type eda reads.
    F32,
    /// IEEE half precision (half the size; rounds F32/BF16 sources).
    F16,
    /// bfloat16 (half the size; rounds F32/F16 sources).
    Bf16,
}

/// Flags of `eda convert`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The GGUF file to convert (llama.cpp format v2/v3, architecture llama or qwen2).
    pub gguf: PathBuf,
    /// Output directory (created; existing files of the same names are replaced atomically).
    pub out_dir: PathBuf,
    /// Storage dtype of `model.safetensors`.
    #[arg(long, value_enum, default_value = "f32")]
    pub dtype: Dtype,
}

/// Runs `eda convert`.
pub fn run(args: Args) -> eda_core::Result<()> {
    let dtype = match args.dtype {
        Dtype::F32 => HfDtype::F32,
        Dtype::F16 => HfDtype::F16,
        Dtype::Bf16 => HfDtype::BF16,
    };
    let cfg = convert_gguf_to_hf(&args.gguf, &args.out_dir, dtype)?;
    println!(
        "wrote {} ({} {} layers, hidden {}, vocab {}, {})",
        args.out_dir.display(),
        cfg.model_type,
        cfg.num_hidden_layers,
        cfg.hidden_size,
        cfg.vocab_size,
        dtype.torch_name()
    );
    Ok(())
}
