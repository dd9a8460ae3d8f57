//! GGUF → HF checkpoint directory (`config.json`, `model.safetensors`, `tokenizer.json`,
//! `tokenizer_config.json`), loadable by eda and by transformers.

use std::collections::BTreeMap;
use std::path::Path;

use eda_core::safetensors::{Dtype, HostTensor};
use eda_core::{EdaError, Result};

use super::convert::{config_from_gguf, GgufTensors};
use super::reader::GgufFile;
use super::tokenizer::{tokenizer_config_json, tokenizer_json};
use crate::config::ModelConfig;

/// Storage dtype of the exported safetensors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HfDtype {
    /// 32-bit float: exact for every GGUF type eda reads.
    #[default]
    F32,
    /// IEEE half (round to nearest even).
    F16,
    /// bfloat16 (round to nearest even).
    BF16,
}

impl HfDtype {
    /// The `torch_dtype` written to `config.json`.
    pub fn torch_name(self) -> &'static str {
        match self {
            HfDtype::F32 => "float32",
            HfDtype::F16 => "float16",
            HfDtype::BF16 => "bfloat16",
        }
    }

    fn safetensors(self) -> Dtype {
        match self {
            HfDtype::F32 => Dtype::F32,
            HfDtype::F16 => Dtype::F16,
            HfDtype::BF16 => Dtype::BF16,
        }
    }
}

/// Every tensor a [`CausalLm`](crate::CausalLm) for `cfg` has, with its HF name and shape.
pub fn expected_tensors(cfg: &ModelConfig) -> Vec<(String, Vec<usize>)> {
    let (h, i, v) = (cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size);
    let (q, kv) = (cfg.num_attention_heads * cfg.head_dim, cfg.num_key_value_heads * cfg.head_dim);
    let mut out = vec![("model.embed_tokens.weight".to_string(), vec![v, h])];
    for l in 0..cfg.num_hidden_layers {
        let p = format!("model.layers.{l}");
        out.push((format!("{p}.input_layernorm.weight"), vec![h]));
        out.push((format!("{p}.post_attention_layernorm.weight"), vec![h]));
        for (name, rows, cols, bias) in [
            ("self_attn.q_proj", q, h, cfg.attention_bias),
            ("self_attn.k_proj", kv, h, cfg.attention_bias),
            ("self_attn.v_proj", kv, h, cfg.attention_bias),
            ("self_attn.o_proj", h, q, false),
            ("mlp.gate_proj", i, h, false),
            ("mlp.up_proj", i, h, false),
            ("mlp.down_proj", h, i, false),
        ] {
            out.push((format!("{p}.{name}.weight"), vec![rows, cols]));
            if bias {
                out.push((format!("{p}.{name}.bias"), vec![rows]));
            }
        }
    }
    out.push(("model.norm.weight".into(), vec![h]));
    if !cfg.tie_word_embeddings {
        out.push(("lm_head.weight".into(), vec![v, h]));
    }
    out
}

/// Converts the GGUF model at `gguf` into a HF checkpoint directory `out_dir` (created; files
/// written atomically) with weights stored as `dtype`. Returns the written configuration.
///
/// Errors as [`load_gguf`](super::load_gguf) and
/// [`tokenizer_from_gguf`](super::tokenizer_from_gguf) (the vocabulary must be supported).
pub fn convert_gguf_to_hf(gguf: &Path, out_dir: &Path, dtype: HfDtype) -> Result<ModelConfig> {
    let file = GgufFile::open(gguf)?;
    let mut cfg = config_from_gguf(&file)?;
    // Build (and so validate) the tokenizer before writing anything.
    let tok_doc = tokenizer_json(&file)?;
    super::tokenizer::tokenizer_from_gguf(&file)?;
    let tok_cfg = tokenizer_config_json(&file, cfg.max_position_embeddings)?;
    let tensors = GgufTensors::new(file, &cfg);
    let mut host = Vec::new();
    for (name, shape) in expected_tensors(&cfg) {
        let data = tensors.read_f32(&name, &shape)?;
        host.push(HostTensor::from_f32_as(name, shape, &data, dtype.safetensors())?);
    }
    let meta = BTreeMap::from([("format".to_string(), "pt".to_string())]);
    eda_core::safetensors::write(&out_dir.join("model.safetensors"), &host, &meta)?;
    cfg.torch_dtype = Some(dtype.torch_name().into());
    cfg.save(&out_dir.join("config.json"))?;
    let pretty = |v: &serde_json::Value, p: &Path| serde_json::to_vec_pretty(v).map_err(|e| EdaError::json(p, e));
    let tok_path = out_dir.join("tokenizer.json");
    eda_core::io::atomic_write(&tok_path, &pretty(&tok_doc, &tok_path)?)?;
    let tc_path = out_dir.join("tokenizer_config.json");
    eda_core::io::atomic_write(&tc_path, &pretty(&tok_cfg, &tc_path)?)?;
    tracing::info!(from = %gguf.display(), to = %out_dir.display(), dtype = dtype.torch_name(), "converted GGUF to a HF checkpoint");
    Ok(cfg)
}
