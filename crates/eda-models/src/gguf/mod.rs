//! llama.cpp GGUF input: Llama and Qwen2 models (F32/F16/BF16 and Q8_0/Q4_0/Q4_1/Q5_0/Q5_1/
//! Q4_K/Q5_K/Q6_K weights, dequantised to f32) and their byte-level BPE tokenizers.
//!
//! * [`reader`]: the file format (header, metadata of every value type, tensor infos), fully
//!   bounds-checked;
//! * [`quant`]: ggml block types, parallel dequantisation, reference quantisers;
//! * [`convert`]: llama.cpp → HF tensor names, the Llama q/k row permutation, `config.json`;
//! * [`tokenizer`](mod@tokenizer): `tokenizer.json` rebuilt from `tokenizer.ggml.*`;
//! * [`writer`]: a small GGUF writer (tests, tools);
//! * [`hf_export`]: GGUF → HF checkpoint directory (`eda convert`).
//!
//! [`Target::from_pretrained`](crate::Target::from_pretrained) and
//! [`load_pretrained`](crate::load_pretrained) accept a `.gguf` file wherever they accept a HF
//! directory; [`load_tokenizer_for`](crate::load_tokenizer_for) picks the matching tokenizer.
//!
//! ```no_run
//! let device = eda_core::backend::device_from_name("cpu")?;
//! let path = std::path::Path::new("SmolLM2-135M-Instruct.Q4_1.gguf");
//! let target = eda_models::Target::from_pretrained(path, &device)?;
//! let tokenizer = eda_models::gguf::load_tokenizer_from_gguf(path)?;
//! # Ok::<(), eda_core::EdaError>(())
//! ```

pub mod convert;
pub mod hf_export;
pub mod quant;
pub mod reader;
pub mod tokenizer;
pub mod writer;

use std::path::Path;

use burn::tensor::Device;
use sha2::{Digest, Sha256};

use eda_core::Result;

use crate::config::ModelConfig;
use crate::loader::{load_causal_lm, WeightSource};
use crate::model::CausalLm;

pub use convert::{config_from_gguf, GgufTensors};
pub use hf_export::{convert_gguf_to_hf, HfDtype};
pub use reader::{GgufFile, GgufTensorInfo, GgufValue};
pub use tokenizer::{load_tokenizer_from_gguf, tokenizer_from_gguf};
pub use writer::GgufWriter;

/// Whether `path` should be read as a GGUF file: a regular file starting with the GGUF magic,
/// or a path ending in `.gguf` that is not a directory (so that a missing or corrupt file gets a
/// GGUF error naming it). HF checkpoints are directories.
pub fn is_gguf_path(path: &Path) -> bool {
    if path.is_dir() {
        return false;
    }
    if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("gguf")) {
        return true;
    }
    let mut magic = [0u8; 4];
    std::fs::File::open(path).and_then(|mut f| std::io::Read::read_exact(&mut f, &mut magic)).is_ok() && magic == reader::GGUF_MAGIC
}

/// The chat template stored in a GGUF file (`tokenizer.chat_template`), if any.
pub fn chat_template(path: &Path) -> Result<Option<String>> {
    Ok(GgufFile::open(path)?.get_str("tokenizer.chat_template").map(str::to_string))
}

/// Loads a Llama/Qwen2 model from a GGUF file: returns the derived config, the model (f32) and
/// the identity (SHA-256 of the file's bytes, hex).
pub fn load_gguf(path: &Path, device: &Device) -> Result<(ModelConfig, CausalLm, String)> {
    let file = GgufFile::open(path)?;
    let cfg = config_from_gguf(&file)?;
    let identity = hex_sha256(file.bytes());
    let src = WeightSource::from_gguf(GgufTensors::new(file, &cfg));
    let lm = load_causal_lm(&cfg, &src, device)?;
    tracing::info!(file = %path.display(), model_type = %cfg.model_type, layers = cfg.num_hidden_layers, "loaded GGUF model");
    Ok((cfg, lm, identity))
}

fn hex_sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}
