//! Reading checkpoints into a [`CausalLm`]: HuggingFace safetensors (single file or sharded) or
//! a llama.cpp GGUF file, both behind [`WeightSource`] so that the same name and shape checks
//! apply.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use burn::nn::{Embedding, Linear};
use burn::tensor::{Device, Tensor, TensorData};
use rayon::prelude::*;
use sha2::{Digest, Sha256};

use eda_core::safetensors::{self as st, Dtype, SafetensorsFile, TensorRef};
use eda_core::{EdaError, Result};

use crate::config::ModelConfig;
use crate::layers::{Attention, Mlp, RmsNorm};
use crate::model::{param, rope_for, CausalLm, DecoderLayer};

/// The PyTorch checkpoint file read when a directory has no safetensors weights.
pub const TORCH_FILE: &str = "pytorch_model.bin";

/// The tensors of a checkpoint under their HF names, memory-mapped.
///
/// Backed by a HF directory ([`WeightSource::open`]: `model.safetensors` or a sharded
/// `model.safetensors.index.json`; F32, F16 or BF16) or by a GGUF file
/// ([`WeightSource::from_gguf`]: dequantised on demand). Tensors are read as f32. Target and
/// draft checkpoints are both read through it.
pub struct WeightSource {
    /// Where names are looked up (the single file, the index for sharded checkpoints, or the GGUF file).
    origin: PathBuf,
    files: Vec<SafetensorsFile>,
    /// Tensor name -> index into `files`.
    map: HashMap<String, usize>,
    /// Set for GGUF-backed sources (then `files` and `map` are empty).
    gguf: Option<crate::gguf::GgufTensors>,
    /// Set for a `pytorch_model.bin` source: its tensors, re-encoded as safetensors in memory
    /// (then `files` and `map` are empty).
    torch: Option<SafetensorsFile<Vec<u8>>>,
}

impl WeightSource {
    /// Opens the checkpoint in `dir`: `model.safetensors`, else the shards of
    /// `model.safetensors.index.json`, else a `pytorch_model.bin` (`torch.save` archive, read
    /// without running its pickle; see [`eda_core::torch_checkpoint`]).
    pub fn open(dir: &Path) -> Result<Self> {
        let single = dir.join("model.safetensors");
        let index = dir.join("model.safetensors.index.json");
        if single.is_file() {
            let shard = SafetensorsFile::open(&single)?;
            let map = shard.names().iter().map(|k| (k.clone(), 0)).collect();
            return Ok(WeightSource { origin: single, files: vec![shard], map, gguf: None, torch: None });
        }
        if index.is_file() {
            let v: serde_json::Value = eda_core::io::read_json(&index)?;
            let wm =
                v.get("weight_map").and_then(|w| w.as_object()).ok_or_else(|| EdaError::json(&index, "missing object `weight_map`"))?;
            let mut shard_names: Vec<String> = Vec::new();
            let mut map = HashMap::new();
            for (name, file) in wm {
                let file = file.as_str().ok_or_else(|| EdaError::json(&index, format!("weight_map[{name}] must be a file name")))?;
                if file.contains('/') || file.contains('\\') || file.contains("..") {
                    return Err(EdaError::json(&index, format!("weight_map[{name}] = `{file}` is not a plain file name")));
                }
                let idx = match shard_names.iter().position(|f| f == file) {
                    Some(i) => i,
                    None => {
                        shard_names.push(file.to_string());
                        shard_names.len() - 1
                    }
                };
                map.insert(name.clone(), idx);
            }
            let files = shard_names.iter().map(|f| SafetensorsFile::open(&dir.join(f))).collect::<Result<Vec<_>>>()?;
            return Ok(WeightSource { origin: index, files, map, gguf: None, torch: None });
        }
        let bin = dir.join(TORCH_FILE);
        if bin.is_file() {
            // PyTorch checkpoints (older HF repositories, EAGLE drafts) are small enough here to
            // re-encode once in memory; every reader below then sees one safetensors file.
            let tensors = eda_core::torch_checkpoint::read(&bin)?;
            let bytes = st::serialize(&tensors, &Default::default(), &bin)?;
            let file = SafetensorsFile::parse(bytes, &bin)?;
            return Ok(WeightSource { origin: bin, files: Vec::new(), map: HashMap::new(), gguf: None, torch: Some(file) });
        }
        if !dir.is_dir() {
            return Err(EdaError::io(dir, std::io::Error::new(std::io::ErrorKind::NotFound, "checkpoint directory not found")));
        }
        Err(EdaError::io(
            &single,
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "none of model.safetensors, model.safetensors.index.json, pytorch_model.bin found",
            ),
        ))
    }

    /// A source reading the (HF-named) tensors of a GGUF file.
    pub fn from_gguf(tensors: crate::gguf::GgufTensors) -> Self {
        let origin = tensors.file().path().to_path_buf();
        WeightSource { origin, files: Vec::new(), map: HashMap::new(), gguf: Some(tensors), torch: None }
    }

    /// Whether the checkpoint has a tensor called `name`.
    pub fn contains(&self, name: &str) -> bool {
        match (&self.gguf, &self.torch) {
            (Some(g), _) => g.contains(name),
            (None, Some(t)) => t.contains(name),
            (None, None) => self.map.contains_key(name),
        }
    }

    /// Files backing the checkpoint (in shard order; the one file for GGUF).
    pub fn files(&self) -> Vec<&Path> {
        match (&self.gguf, &self.torch) {
            (Some(g), _) => vec![g.file().path()],
            (None, Some(t)) => vec![t.path()],
            (None, None) => self.files.iter().map(|f| f.path()).collect(),
        }
    }

    /// Tensor `name` as stored (dtype, shape, bytes), for tensors that are not f32 weights (such
    /// as a draft's integer vocabulary map). [`EdaError::MissingTensor`] when absent;
    /// [`EdaError::Gguf`] for GGUF sources, whose tensors are only read as f32.
    pub fn tensor<'a>(&'a self, name: &'a str) -> Result<TensorRef<'a>> {
        if let Some(g) = &self.gguf {
            return Err(EdaError::Gguf { path: g.file().path().into(), message: format!("`{name}` can only be read as f32 weights") });
        }
        if let Some(t) = &self.torch {
            return t.tensor(name).map_err(|_| EdaError::MissingTensor { name: name.into(), file: self.origin.clone() });
        }
        let idx = *self.map.get(name).ok_or_else(|| EdaError::MissingTensor { name: name.into(), file: self.origin.clone() })?;
        self.files[idx].tensor(name)
    }

    /// Reads tensor `name` as f32, checking its shape against `expected`.
    pub fn read_f32(&self, name: &str, expected: &[usize]) -> Result<Vec<f32>> {
        if let Some(g) = &self.gguf {
            return g.read_f32(name, expected);
        }
        let t = self.tensor(name)?;
        if t.shape != expected {
            return Err(EdaError::ShapeMismatch { name: name.into(), expected: expected.to_vec(), actual: t.shape.to_vec() });
        }
        let width = match t.dtype {
            Dtype::F32 => 4,
            Dtype::F16 | Dtype::BF16 => 2,
            other => return Err(EdaError::UnsupportedDType { name: name.into(), dtype: format!("{other:?}") }),
        };
        // Decoded in parallel chunks: this is most of the load time of a large checkpoint.
        const CHUNK: usize = 1 << 16;
        let mut out = vec![0f32; t.numel()];
        if t.data.len() != out.len() * width {
            return Err(EdaError::Safetensors {
                path: self.map.get(name).map_or_else(|| self.origin.clone(), |&i| self.files[i].path().into()),
                message: format!("`{name}` holds {} bytes, expected {}", t.data.len(), out.len() * width),
            });
        }
        out.par_chunks_mut(CHUNK).zip(t.data.par_chunks(CHUNK * width)).try_for_each(|(o, b)| st::decode_into(name, t.dtype, b, o))?;
        Ok(out)
    }

    fn vec1(&self, name: &str, n: usize, device: &Device) -> Result<Tensor<1>> {
        Ok(Tensor::from_data(TensorData::new(self.read_f32(name, &[n])?, [n]), device))
    }

    fn mat(&self, name: &str, rows: usize, cols: usize, device: &Device) -> Result<Tensor<2>> {
        Ok(Tensor::from_data(TensorData::new(self.read_f32(name, &[rows, cols])?, [rows, cols]), device))
    }

    /// A burn [`Linear`] from HF `{prefix}.weight` (`[out, in]`) and optional `{prefix}.bias`.
    /// The weight is transposed on the host so that the burn tensor is contiguous.
    pub fn linear(&self, prefix: &str, d_in: usize, d_out: usize, bias: bool, device: &Device) -> Result<Linear> {
        let name = format!("{prefix}.weight");
        let w = self.read_f32(&name, &[d_out, d_in])?;
        let mut t = vec![0f32; w.len()];
        t.par_chunks_mut(d_out).enumerate().for_each(|(i, row)| {
            for (o, x) in row.iter_mut().enumerate() {
                *x = w[o * d_in + i];
            }
        });
        let weight = param(Tensor::from_data(TensorData::new(t, [d_in, d_out]), device));
        let bias = if bias { Some(param(self.vec1(&format!("{prefix}.bias"), d_out, device)?)) } else { None };
        Ok(Linear { weight, bias })
    }

    /// Feeds every byte of the checkpoint files (in shard order) into `hasher`.
    pub fn hash_into(&self, hasher: &mut Sha256) {
        if let Some(g) = &self.gguf {
            hasher.update(g.file().bytes());
        }
        for f in &self.files {
            hasher.update(f.bytes());
        }
    }
}

/// Builds a [`CausalLm`] for `cfg` from `src`, checking the name, shape and dtype of every tensor.
pub fn load_causal_lm(cfg: &ModelConfig, src: &WeightSource, device: &Device) -> Result<CausalLm> {
    cfg.validate()?;
    let (h, i) = (cfg.hidden_size, cfg.intermediate_size);
    let (nh, nkv, hd) = (cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim);
    let eps = cfg.rms_norm_eps;
    let embed = src.mat("model.embed_tokens.weight", cfg.vocab_size, h, device)?;
    let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
    for l in 0..cfg.num_hidden_layers {
        let p = format!("model.layers.{l}");
        let b = cfg.attention_bias;
        layers.push(DecoderLayer {
            input_layernorm: RmsNorm::from_weight(src.vec1(&format!("{p}.input_layernorm.weight"), h, device)?, eps),
            self_attn: Attention {
                q_proj: src.linear(&format!("{p}.self_attn.q_proj"), h, nh * hd, b, device)?,
                k_proj: src.linear(&format!("{p}.self_attn.k_proj"), h, nkv * hd, b, device)?,
                v_proj: src.linear(&format!("{p}.self_attn.v_proj"), h, nkv * hd, b, device)?,
                o_proj: src.linear(&format!("{p}.self_attn.o_proj"), nh * hd, h, false, device)?,
                lora: None,
                num_heads: nh,
                num_kv_heads: nkv,
                head_dim: hd,
            },
            post_attention_layernorm: RmsNorm::from_weight(src.vec1(&format!("{p}.post_attention_layernorm.weight"), h, device)?, eps),
            mlp: Mlp {
                gate_proj: src.linear(&format!("{p}.mlp.gate_proj"), h, i, false, device)?,
                up_proj: src.linear(&format!("{p}.mlp.up_proj"), h, i, false, device)?,
                down_proj: src.linear(&format!("{p}.mlp.down_proj"), i, h, false, device)?,
                lora: None,
            },
        });
    }
    let norm = RmsNorm::from_weight(src.vec1("model.norm.weight", h, device)?, eps);
    let lm_head = if cfg.tie_word_embeddings { None } else { Some(src.linear("lm_head", h, cfg.vocab_size, false, device)?) };
    Ok(CausalLm {
        embed_tokens: Embedding { weight: param(embed) },
        layers,
        norm,
        lm_head,
        rope: rope_for(cfg, device),
        config: cfg.clone(),
    })
}

/// The configuration of a checkpoint: `config.json` of a HF directory, or derived from the
/// metadata of a GGUF file ([`gguf::config_from_gguf`](crate::gguf::config_from_gguf)).
pub fn load_config(path: &Path) -> Result<ModelConfig> {
    if crate::gguf::is_gguf_path(path) {
        return crate::gguf::config_from_gguf(&crate::gguf::GgufFile::open(path)?);
    }
    ModelConfig::from_file(&path.join("config.json"))
}

/// Loads a checkpoint: a HF directory (`config.json` + safetensors) or a GGUF file (see
/// [`gguf::load_gguf`](crate::gguf::load_gguf)). Returns the config, the model and the checkpoint
/// identity (SHA-256, hex, of `config.json` followed by the weight files; of the file for GGUF).
pub fn load_pretrained(dir: &Path, device: &Device) -> Result<(ModelConfig, CausalLm, String)> {
    if crate::gguf::is_gguf_path(dir) {
        return crate::gguf::load_gguf(dir, device);
    }
    if dir.is_file() {
        return Err(EdaError::io(
            dir,
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "expected a HF checkpoint directory or a GGUF file"),
        ));
    }
    if !dir.is_dir() {
        return Err(EdaError::io(dir, std::io::Error::new(std::io::ErrorKind::NotFound, "checkpoint directory not found")));
    }
    let cfg_path = dir.join("config.json");
    let cfg_bytes = std::fs::read(&cfg_path).map_err(|e| EdaError::io(&cfg_path, e))?;
    let text = String::from_utf8(cfg_bytes.clone()).map_err(|e| EdaError::json(&cfg_path, e))?;
    let cfg = ModelConfig::from_json_str(&text, &cfg_path)?;
    let src = WeightSource::open(dir)?;
    let lm = load_causal_lm(&cfg, &src, device)?;
    let mut hasher = Sha256::new();
    hasher.update(&cfg_bytes);
    src.hash_into(&mut hasher);
    let identity = hasher.finalize().iter().map(|b| format!("{b:02x}")).collect::<String>();
    tracing::info!(dir = %dir.display(), model_type = %cfg.model_type, layers = cfg.num_hidden_layers, "loaded checkpoint");
    Ok((cfg, lm, identity))
}
