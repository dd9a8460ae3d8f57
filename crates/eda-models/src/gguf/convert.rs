//! llama.cpp → HuggingFace: tensor names, the q/k row permutation, and `config.json` values.

use std::collections::HashMap;

use eda_core::{EdaError, Result};

use super::reader::GgufFile;
use crate::config::{Architecture, ModelConfig, RopeScaling};

/// Architectures eda loads from GGUF (`general.architecture`).
pub const SUPPORTED_ARCHITECTURES: &[&str] = &["llama", "qwen2"];

/// Per-layer tensors: (llama.cpp suffix, HF suffix).
const LAYER_NAMES: &[(&str, &str)] = &[
    ("attn_q", "self_attn.q_proj"),
    ("attn_k", "self_attn.k_proj"),
    ("attn_v", "self_attn.v_proj"),
    ("attn_output", "self_attn.o_proj"),
    ("ffn_gate", "mlp.gate_proj"),
    ("ffn_up", "mlp.up_proj"),
    ("ffn_down", "mlp.down_proj"),
    ("attn_norm", "input_layernorm"),
    ("ffn_norm", "post_attention_layernorm"),
];

/// Whole-model tensors: (llama.cpp name, HF name).
const GLOBAL_NAMES: &[(&str, &str)] = &[("token_embd", "model.embed_tokens"), ("output_norm", "model.norm"), ("output", "lm_head")];

/// The HF name of a llama.cpp tensor (`blk.3.attn_q.bias` → `model.layers.3.self_attn.q_proj.bias`),
/// or `None` for tensors eda does not use.
///
/// ```
/// use eda_models::gguf::convert::{gguf_name, hf_name};
/// assert_eq!(hf_name("token_embd.weight").as_deref(), Some("model.embed_tokens.weight"));
/// assert_eq!(hf_name("blk.12.ffn_norm.weight").as_deref(), Some("model.layers.12.post_attention_layernorm.weight"));
/// assert_eq!(gguf_name("model.layers.0.self_attn.o_proj.weight").as_deref(), Some("blk.0.attn_output.weight"));
/// assert_eq!(hf_name("rope_freqs.weight"), None);
/// ```
pub fn hf_name(gguf: &str) -> Option<String> {
    let (stem, kind) = gguf.rsplit_once('.')?;
    if kind != "weight" && kind != "bias" {
        return None;
    }
    if let Some(rest) = stem.strip_prefix("blk.") {
        let (layer, part) = rest.split_once('.')?;
        let layer: usize = layer.parse().ok()?;
        let hf = LAYER_NAMES.iter().find(|(g, _)| *g == part)?.1;
        return Some(format!("model.layers.{layer}.{hf}.{kind}"));
    }
    GLOBAL_NAMES.iter().find(|(g, _)| *g == stem).map(|(_, h)| format!("{h}.{kind}"))
}

/// The llama.cpp name of a HF tensor (inverse of [`hf_name`]).
pub fn gguf_name(hf: &str) -> Option<String> {
    let (stem, kind) = hf.rsplit_once('.')?;
    if let Some(rest) = stem.strip_prefix("model.layers.") {
        let (layer, part) = rest.split_once('.')?;
        let layer: usize = layer.parse().ok()?;
        let g = LAYER_NAMES.iter().find(|(_, h)| *h == part)?.0;
        return Some(format!("blk.{layer}.{g}.{kind}"));
    }
    GLOBAL_NAMES.iter().find(|(_, h)| *h == stem).map(|(g, _)| format!("{g}.{kind}"))
}

/// llama.cpp's `convert_hf_to_gguf.py` reorders the rows of Llama `q_proj`/`k_proj` (weights
/// and biases) from HF's rotate-half layout to interleaved pairs:
/// `w.reshape(n_head, 2, d/2, ...).swapaxes(1, 2)`. Qwen2 is converted without it.
///
/// This applies that permutation (HF → GGUF) to `rows` rows of `cols` values each.
pub fn permute_rows(w: &[f32], n_head: usize, cols: usize) -> Vec<f32> {
    reorder_rows(w, n_head, cols, true)
}

/// Undoes [`permute_rows`] (GGUF → HF).
///
/// ```
/// use eda_models::gguf::convert::{permute_rows, unpermute_rows};
/// let w: Vec<f32> = (0..16).map(|x| x as f32).collect(); // 8 rows of 2, 2 heads of dim 4
/// let p = permute_rows(&w, 2, 2);
/// assert_eq!(&p[..8], &[0., 1., 4., 5., 2., 3., 6., 7.]);
/// assert_eq!(unpermute_rows(&p, 2, 2), w);
/// ```
pub fn unpermute_rows(w: &[f32], n_head: usize, cols: usize) -> Vec<f32> {
    reorder_rows(w, n_head, cols, false)
}

fn reorder_rows(w: &[f32], n_head: usize, cols: usize, forward: bool) -> Vec<f32> {
    let rows = w.len() / cols.max(1);
    let hd = rows / n_head.max(1);
    let half = hd / 2;
    let mut out = vec![0f32; w.len()];
    for h in 0..n_head {
        for i in 0..half {
            for j in 0..2 {
                let hf = h * hd + j * half + i;
                let gg = h * hd + 2 * i + j;
                let (dst, src) = if forward { (gg, hf) } else { (hf, gg) };
                out[dst * cols..(dst + 1) * cols].copy_from_slice(&w[src * cols..(src + 1) * cols]);
            }
        }
    }
    out
}

/// The HF-named tensors of a GGUF file, dequantised on demand (and un-permuted for Llama q/k).
pub struct GgufTensors {
    file: GgufFile,
    /// HF name → (index into `file.tensors()`, head count to un-permute with).
    map: HashMap<String, (usize, Option<usize>)>,
}

impl GgufTensors {
    /// Indexes the tensors of `file` under their HF names; `cfg` (from [`config_from_gguf`])
    /// gives the head counts for un-permuting Llama q/k. Tensors without a HF counterpart are
    /// ignored (logged).
    pub fn new(file: GgufFile, cfg: &ModelConfig) -> Self {
        let llama = cfg.model_type == Architecture::Llama;
        let mut map = HashMap::new();
        for (i, t) in file.tensors().iter().enumerate() {
            match hf_name(&t.name) {
                Some(hf) => {
                    let heads = if !llama {
                        None
                    } else if hf.contains(".self_attn.q_proj.") {
                        Some(cfg.num_attention_heads)
                    } else if hf.contains(".self_attn.k_proj.") {
                        Some(cfg.num_key_value_heads)
                    } else {
                        None
                    };
                    map.insert(hf, (i, heads));
                }
                None => tracing::debug!(tensor = %t.name, "GGUF tensor not used by eda"),
            }
        }
        GgufTensors { file, map }
    }

    /// The underlying file.
    pub fn file(&self) -> &GgufFile {
        &self.file
    }

    /// Whether a tensor with HF name `name` exists.
    pub fn contains(&self, name: &str) -> bool {
        self.map.contains_key(name)
    }

    /// The HF names of all mapped tensors, sorted.
    pub fn hf_names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.map.keys().cloned().collect();
        v.sort();
        v
    }

    /// The HF (row-major) shape of tensor `name`.
    pub fn shape(&self, name: &str) -> Option<Vec<usize>> {
        self.map.get(name).map(|&(i, _)| self.file.tensors()[i].shape())
    }

    /// Tensor `name` (HF name and layout) as f32, checking its shape against `expected`.
    pub fn read_f32(&self, name: &str, expected: &[usize]) -> Result<Vec<f32>> {
        let &(i, heads) =
            self.map.get(name).ok_or_else(|| EdaError::MissingTensor { name: name.into(), file: self.file.path().to_path_buf() })?;
        let info = &self.file.tensors()[i];
        let shape = info.shape();
        if shape != expected {
            return Err(EdaError::ShapeMismatch { name: name.into(), expected: expected.to_vec(), actual: shape });
        }
        let (_, data) = self.file.tensor_f32(&info.name)?;
        Ok(match heads {
            Some(n) => {
                let rows = shape[0];
                if n == 0 || rows % n != 0 || (rows / n) % 2 != 0 {
                    return Err(self.file.error(format!("`{}`: {rows} rows do not split into {n} heads of even size", info.name)));
                }
                unpermute_rows(&data, n, data.len() / rows)
            }
            None => data,
        })
    }
}

/// The HF configuration of a GGUF model, from its `{arch}.*` metadata and tensor shapes.
///
/// Errors ([`EdaError::Gguf`]): unsupported architecture, missing or ill-typed keys, partial
/// rotary dimensions, unsupported rope scaling (including Llama-3 `rope_freqs`);
/// [`EdaError::Mismatch`] when the vocabulary (`tokenizer.ggml.tokens`) and the embedding rows
/// differ.
pub fn config_from_gguf(f: &GgufFile) -> Result<ModelConfig> {
    let arch = f.get_str("general.architecture").ok_or_else(|| f.error("missing string `general.architecture`"))?;
    if !SUPPORTED_ARCHITECTURES.contains(&arch) {
        return Err(f.error(format!("unsupported architecture `{arch}` (supported: {})", SUPPORTED_ARCHITECTURES.join(", "))));
    }
    let key = |k: &str| format!("{arch}.{k}");
    let need = |k: &str| -> Result<usize> { Ok(f.require_u64(&key(k))? as usize) };
    let hidden = need("embedding_length")?;
    let layers = need("block_count")?;
    let ffn = need("feed_forward_length")?;
    let heads = need("attention.head_count")?;
    if heads == 0 {
        return Err(f.error(format!("`{}` must be > 0", key("attention.head_count"))));
    }
    let kv_heads = f.opt_u64(&key("attention.head_count_kv"))?.map(|v| v as usize).unwrap_or(heads);
    let head_dim = f.opt_u64(&key("attention.key_length"))?.map(|v| v as usize).unwrap_or(hidden / heads);
    if let Some(v) = f.opt_u64(&key("attention.value_length"))? {
        if v as usize != head_dim {
            return Err(f.error(format!("value head size {v} differs from key head size {head_dim}, which eda does not support")));
        }
    }
    if let Some(r) = f.opt_u64(&key("rope.dimension_count"))? {
        if r as usize != head_dim {
            return Err(f.error(format!("partial rotary embedding ({r} of {head_dim} head dimensions) is not supported")));
        }
    }
    if f.tensor("rope_freqs.weight").is_some() {
        return Err(f.error("per-frequency rope factors (`rope_freqs.weight`, Llama-3.1 rope scaling) are not supported"));
    }
    let rope_scaling = match f.get_str(&key("rope.scaling.type")) {
        None | Some("none") => match f.opt_f64(&key("rope.scale_linear"))? {
            Some(factor) if factor != 1.0 => Some(RopeScaling::Linear { factor }),
            _ => None,
        },
        Some("linear") => {
            let factor = f.opt_f64(&key("rope.scaling.factor"))?.ok_or_else(|| f.error("linear rope scaling without a factor"))?;
            (factor != 1.0).then_some(RopeScaling::Linear { factor })
        }
        Some(other) => return Err(f.error(format!("rope scaling `{other}` is not supported (none, linear)"))),
    };
    let embd = f
        .tensor("token_embd.weight")
        .ok_or_else(|| EdaError::MissingTensor { name: "token_embd.weight".into(), file: f.path().to_path_buf() })?;
    let vocab = *embd.shape().first().unwrap_or(&0);
    if let Some(tokens) = f.get("tokenizer.ggml.tokens").and_then(|v| v.as_array()) {
        if tokens.len() != vocab {
            return Err(EdaError::mismatch(
                format!("vocabulary size (tokenizer.ggml.tokens) vs embedding rows (token_embd.weight) in {}", f.path().display()),
                vocab,
                tokens.len(),
            ));
        }
    }
    let ctx = f.opt_u64(&key("context_length"))?.map(|v| v as usize).unwrap_or(2048);
    let base = match arch.parse()? {
        Architecture::Qwen2 => ModelConfig::qwen2,
        Architecture::Llama => ModelConfig::llama,
    };
    let mut cfg = base(vocab, hidden, ffn, layers, heads, kv_heads, ctx);
    cfg.head_dim = head_dim;
    cfg.rms_norm_eps = f.opt_f64(&key("attention.layer_norm_rms_epsilon"))?.unwrap_or(1e-6);
    // Both architectures default to 10000 in llama.cpp when the key is absent.
    cfg.rope_theta = f.opt_f64(&key("rope.freq_base"))?.unwrap_or(10_000.0);
    cfg.rope_scaling = rope_scaling;
    cfg.tie_word_embeddings = f.tensor("output.weight").is_none();
    cfg.attention_bias = arch == "qwen2" || f.tensor("blk.0.attn_q.bias").is_some();
    cfg.eos_token_ids = f.opt_u64("tokenizer.ggml.eos_token_id")?.map(|v| vec![v as u32]).unwrap_or_default();
    cfg.bos_token_id = f.opt_u64("tokenizer.ggml.bos_token_id")?.map(|v| v as u32);
    cfg.torch_dtype = Some("float32".into());
    cfg.validate().map_err(|e| f.error(format!("inconsistent hyper-parameters: {e}")))?;
    Ok(cfg)
}
