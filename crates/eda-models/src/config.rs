//! HuggingFace `config.json` for Qwen2/Qwen2.5 and Llama checkpoints.

use std::path::Path;

use serde_json::{json, Map, Value};

use eda_core::{EdaError, Result, TokenId};

use crate::layers::AttentionConfig;

/// Rotary-embedding frequency scaling (`rope_scaling` / `rope_parameters` in `config.json`).
#[derive(Debug, Clone, PartialEq)]
pub enum RopeScaling {
    /// `rope_type: "linear"`: every inverse frequency is divided by `factor`.
    Linear {
        /// Scaling factor.
        factor: f64,
    },
    /// `rope_type: "llama3"` (Llama 3.1+): low frequencies are scaled, high ones kept, the band
    /// in between interpolated.
    Llama3 {
        /// Scaling factor.
        factor: f64,
        /// Wavelength threshold factor for low frequencies.
        low_freq_factor: f64,
        /// Wavelength threshold factor for high frequencies.
        high_freq_factor: f64,
        /// Context length the model was pre-trained with.
        original_max_position_embeddings: usize,
    },
}

impl RopeScaling {
    /// Applies the rule to base inverse frequencies.
    pub fn apply(&self, inv_freq: &[f64]) -> Vec<f64> {
        match *self {
            RopeScaling::Linear { factor } => inv_freq.iter().map(|f| f / factor).collect(),
            RopeScaling::Llama3 { factor, low_freq_factor, high_freq_factor, original_max_position_embeddings } => {
                let old = original_max_position_embeddings as f64;
                let low_wavelen = old / low_freq_factor;
                let high_wavelen = old / high_freq_factor;
                inv_freq
                    .iter()
                    .map(|&f| {
                        let wavelen = 2.0 * std::f64::consts::PI / f;
                        if wavelen < high_wavelen {
                            f
                        } else if wavelen > low_wavelen {
                            f / factor
                        } else {
                            let smooth = (old / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor);
                            (1.0 - smooth) * f / factor + smooth * f
                        }
                    })
                    .collect()
            }
        }
    }

    fn to_json(&self, theta: f64) -> Value {
        match *self {
            RopeScaling::Linear { factor } => json!({"rope_type": "linear", "factor": factor, "rope_theta": theta}),
            RopeScaling::Llama3 { factor, low_freq_factor, high_freq_factor, original_max_position_embeddings } => json!({
                "rope_type": "llama3",
                "factor": factor,
                "low_freq_factor": low_freq_factor,
                "high_freq_factor": high_freq_factor,
                "original_max_position_embeddings": original_max_position_embeddings,
                "rope_theta": theta,
            }),
        }
    }
}

/// Architecture hyper-parameters of a Qwen2 or Llama causal LM, as in HF `config.json`.
///
/// ```
/// use eda_models::ModelConfig;
/// let cfg = ModelConfig::qwen2(256, 64, 128, 2, 4, 2, 256);
/// let back = ModelConfig::from_json_str(&cfg.to_json_string(), "mem").unwrap();
/// assert_eq!(cfg, back);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    /// `"qwen2"` or `"llama"`.
    pub model_type: String,
    /// Model width.
    pub hidden_size: usize,
    /// MLP inner width.
    pub intermediate_size: usize,
    /// Number of decoder layers.
    pub num_hidden_layers: usize,
    /// Query heads.
    pub num_attention_heads: usize,
    /// Key/value heads (defaults to `num_attention_heads`).
    pub num_key_value_heads: usize,
    /// Width of one head (defaults to `hidden_size / num_attention_heads`).
    pub head_dim: usize,
    /// RMSNorm epsilon.
    pub rms_norm_eps: f64,
    /// Rotary base (default 10000).
    pub rope_theta: f64,
    /// Optional rotary frequency scaling.
    pub rope_scaling: Option<RopeScaling>,
    /// Maximum number of positions.
    pub max_position_embeddings: usize,
    /// Embedding rows.
    pub vocab_size: usize,
    /// Whether the LM head shares the embedding matrix.
    pub tie_word_embeddings: bool,
    /// Whether q/k/v projections carry a bias (always true for Qwen2; `attention_bias` for Llama).
    pub attention_bias: bool,
    /// End-of-sequence token ids (`eos_token_id`, an integer or a list).
    pub eos_token_ids: Vec<TokenId>,
    /// Beginning-of-sequence token id.
    pub bos_token_id: Option<TokenId>,
    /// Stored dtype (`torch_dtype` / `dtype`), informational.
    pub torch_dtype: Option<String>,
}

fn get_usize(obj: &Map<String, Value>, key: &str, path: &Path) -> Result<Option<usize>> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .map(|x| Some(x as usize))
            .ok_or_else(|| EdaError::json(path, format!("field `{key}` must be a non-negative integer, got {v}"))),
    }
}

fn need_usize(obj: &Map<String, Value>, key: &str, path: &Path) -> Result<usize> {
    get_usize(obj, key, path)?.ok_or_else(|| EdaError::json(path, format!("missing required field `{key}`")))
}

fn get_f64(obj: &Map<String, Value>, key: &str, path: &Path) -> Result<Option<f64>> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v.as_f64().map(Some).ok_or_else(|| EdaError::json(path, format!("field `{key}` must be a number, got {v}"))),
    }
}

fn get_bool(obj: &Map<String, Value>, key: &str, path: &Path) -> Result<Option<bool>> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v.as_bool().map(Some).ok_or_else(|| EdaError::json(path, format!("field `{key}` must be a boolean, got {v}"))),
    }
}

fn token_ids(v: Option<&Value>, key: &str, path: &Path) -> Result<Vec<TokenId>> {
    let bad = || EdaError::json(path, format!("field `{key}` must be a token id or a list of token ids"));
    match v {
        None | Some(Value::Null) => Ok(vec![]),
        Some(Value::Number(n)) => Ok(vec![n.as_u64().and_then(|x| u32::try_from(x).ok()).ok_or_else(bad)?]),
        Some(Value::Array(a)) => a.iter().map(|x| x.as_u64().and_then(|x| u32::try_from(x).ok()).ok_or_else(bad)).collect(),
        Some(_) => Err(bad()),
    }
}

impl ModelConfig {
    /// A Qwen2 configuration (q/k/v bias, untied head, rope_theta 1e6, eps 1e-6, eos 0) for tests
    /// and the demo.
    pub fn qwen2(
        vocab_size: usize,
        hidden_size: usize,
        intermediate_size: usize,
        num_hidden_layers: usize,
        num_attention_heads: usize,
        num_key_value_heads: usize,
        max_position_embeddings: usize,
    ) -> Self {
        ModelConfig {
            model_type: "qwen2".into(),
            hidden_size,
            intermediate_size,
            num_hidden_layers,
            num_attention_heads,
            num_key_value_heads,
            head_dim: hidden_size / num_attention_heads.max(1),
            rms_norm_eps: 1e-6,
            rope_theta: 1_000_000.0,
            rope_scaling: None,
            max_position_embeddings,
            vocab_size,
            tie_word_embeddings: false,
            attention_bias: true,
            eos_token_ids: vec![0],
            bos_token_id: None,
            torch_dtype: Some("float32".into()),
        }
    }

    /// A Llama configuration (no bias, tied head, rope_theta 1e4, eps 1e-6, eos 0).
    pub fn llama(
        vocab_size: usize,
        hidden_size: usize,
        intermediate_size: usize,
        num_hidden_layers: usize,
        num_attention_heads: usize,
        num_key_value_heads: usize,
        max_position_embeddings: usize,
    ) -> Self {
        ModelConfig {
            model_type: "llama".into(),
            rope_theta: 10_000.0,
            tie_word_embeddings: true,
            attention_bias: false,
            ..Self::qwen2(
                vocab_size,
                hidden_size,
                intermediate_size,
                num_hidden_layers,
                num_attention_heads,
                num_key_value_heads,
                max_position_embeddings,
            )
        }
    }

    /// Reads and validates `config.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| EdaError::io(path, e))?;
        Self::from_json_str(&text, path)
    }

    /// Parses and validates a `config.json` document; `path` is used in error messages.
    pub fn from_json_str(text: &str, path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let v: Value = serde_json::from_str(text).map_err(|e| EdaError::json(path, e))?;
        let obj = v.as_object().ok_or_else(|| EdaError::json(path, "top level must be an object"))?;
        let model_type = obj
            .get("model_type")
            .and_then(Value::as_str)
            .ok_or_else(|| EdaError::json(path, "missing string field `model_type`"))?
            .to_string();
        let attention_bias = match model_type.as_str() {
            "qwen2" => true,
            "llama" => get_bool(obj, "attention_bias", path)?.unwrap_or(false),
            other => return Err(EdaError::UnknownModelType(other.to_string())),
        };
        if get_bool(obj, "mlp_bias", path)?.unwrap_or(false) {
            return Err(EdaError::InvalidConfig(format!("{}: `mlp_bias: true` is not supported", path.display())));
        }
        if let Some(act) = obj.get("hidden_act").and_then(Value::as_str) {
            if act != "silu" {
                return Err(EdaError::InvalidConfig(format!("{}: hidden_act `{act}` is not supported (silu only)", path.display())));
            }
        }
        if get_bool(obj, "use_sliding_window", path)?.unwrap_or(false) {
            tracing::warn!("{}: use_sliding_window is set; eda uses full attention", path.display());
        }
        let hidden_size = need_usize(obj, "hidden_size", path)?;
        let num_attention_heads = need_usize(obj, "num_attention_heads", path)?;
        let num_key_value_heads = get_usize(obj, "num_key_value_heads", path)?.unwrap_or(num_attention_heads);
        if num_attention_heads == 0 {
            return Err(EdaError::InvalidConfig(format!("{}: num_attention_heads must be > 0", path.display())));
        }
        let head_dim = get_usize(obj, "head_dim", path)?.unwrap_or(hidden_size / num_attention_heads);

        // transformers >= 5 writes `rope_parameters`; older versions `rope_theta` + `rope_scaling`.
        let rope_params = obj.get("rope_parameters").and_then(Value::as_object);
        let rope_theta = get_f64(obj, "rope_theta", path)?
            .or(rope_params.map(|p| get_f64(p, "rope_theta", path)).transpose()?.flatten())
            .unwrap_or(10_000.0);
        let scaling_obj = match obj.get("rope_scaling") {
            Some(Value::Object(m)) => Some(m),
            Some(Value::Null) | None => rope_params,
            Some(other) => return Err(EdaError::json(path, format!("`rope_scaling` must be an object or null, got {other}"))),
        };
        let rope_scaling = match scaling_obj {
            None => None,
            Some(m) => {
                let kind = m.get("rope_type").or(m.get("type")).and_then(Value::as_str).unwrap_or("default");
                let factor = || get_f64(m, "factor", path)?.ok_or_else(|| EdaError::json(path, "rope scaling needs `factor`"));
                match kind {
                    "default" => None,
                    "linear" => Some(RopeScaling::Linear { factor: factor()? }),
                    "llama3" => Some(RopeScaling::Llama3 {
                        factor: factor()?,
                        low_freq_factor: get_f64(m, "low_freq_factor", path)?.unwrap_or(1.0),
                        high_freq_factor: get_f64(m, "high_freq_factor", path)?.unwrap_or(4.0),
                        original_max_position_embeddings: get_usize(m, "original_max_position_embeddings", path)?.unwrap_or(8192),
                    }),
                    other => {
                        return Err(EdaError::InvalidConfig(format!(
                            "{}: rope scaling type `{other}` is not supported (default, linear, llama3)",
                            path.display()
                        )))
                    }
                }
            }
        };
        let bos = token_ids(obj.get("bos_token_id"), "bos_token_id", path)?;
        let cfg = ModelConfig {
            hidden_size,
            intermediate_size: need_usize(obj, "intermediate_size", path)?,
            num_hidden_layers: need_usize(obj, "num_hidden_layers", path)?,
            num_attention_heads,
            num_key_value_heads,
            head_dim,
            rms_norm_eps: get_f64(obj, "rms_norm_eps", path)?.unwrap_or(1e-6),
            rope_theta,
            rope_scaling,
            max_position_embeddings: get_usize(obj, "max_position_embeddings", path)?.unwrap_or(2048),
            vocab_size: need_usize(obj, "vocab_size", path)?,
            tie_word_embeddings: get_bool(obj, "tie_word_embeddings", path)?.unwrap_or(false),
            attention_bias,
            eos_token_ids: token_ids(obj.get("eos_token_id"), "eos_token_id", path)?,
            bos_token_id: bos.first().copied(),
            torch_dtype: obj.get("torch_dtype").or(obj.get("dtype")).and_then(Value::as_str).map(str::to_string),
            model_type,
        };
        cfg.validate().map_err(|e| match e {
            EdaError::InvalidConfig(m) => EdaError::InvalidConfig(format!("{}: {m}", path.display())),
            e => e,
        })?;
        Ok(cfg)
    }

    /// Checks internal consistency (non-zero sizes, divisible heads, even head_dim).
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(EdaError::InvalidConfig(m));
        if self.model_type != "qwen2" && self.model_type != "llama" {
            return Err(EdaError::UnknownModelType(self.model_type.clone()));
        }
        for (name, v) in [
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("num_key_value_heads", self.num_key_value_heads),
            ("head_dim", self.head_dim),
            ("vocab_size", self.vocab_size),
            ("max_position_embeddings", self.max_position_embeddings),
        ] {
            if v == 0 {
                return bad(format!("{name} must be > 0"));
            }
        }
        if self.num_attention_heads % self.num_key_value_heads != 0 {
            return bad(format!(
                "num_key_value_heads ({}) must divide num_attention_heads ({})",
                self.num_key_value_heads, self.num_attention_heads
            ));
        }
        if self.head_dim % 2 != 0 {
            return bad(format!("head_dim ({}) must be even for rotary embeddings", self.head_dim));
        }
        if !(self.rms_norm_eps > 0.0 && self.rope_theta > 0.0) {
            return bad("rms_norm_eps and rope_theta must be > 0".into());
        }
        Ok(())
    }

    /// The attention shape of every layer.
    pub fn attention_config(&self) -> AttentionConfig {
        AttentionConfig {
            hidden_size: self.hidden_size,
            num_heads: self.num_attention_heads,
            num_kv_heads: self.num_key_value_heads,
            head_dim: self.head_dim,
            bias: self.attention_bias,
        }
    }

    /// Rotary inverse frequencies after scaling (`head_dim / 2` values).
    pub fn inv_freq(&self) -> Vec<f64> {
        // HF computes `arange(0, dim, 2).float() / dim` then `base ** x` in f32.
        let base: Vec<f64> = (0..self.head_dim / 2)
            .map(|i| {
                let e = ((2 * i) as f32) / (self.head_dim as f32);
                1.0 / (self.rope_theta as f32).powf(e) as f64
            })
            .collect();
        match &self.rope_scaling {
            Some(s) => s.apply(&base),
            None => base,
        }
    }

    /// HF architecture name written to `architectures`.
    pub fn architecture(&self) -> &'static str {
        if self.model_type == "qwen2" {
            "Qwen2ForCausalLM"
        } else {
            "LlamaForCausalLM"
        }
    }

    /// The configuration as an HF `config.json` value (loadable by `transformers`).
    pub fn to_json(&self) -> Value {
        let eos = match self.eos_token_ids.as_slice() {
            [] => Value::Null,
            [one] => json!(one),
            many => json!(many),
        };
        let rope_parameters = match &self.rope_scaling {
            None => json!({"rope_type": "default", "rope_theta": self.rope_theta}),
            Some(s) => s.to_json(self.rope_theta),
        };
        let mut v = json!({
            "architectures": [self.architecture()],
            "model_type": self.model_type,
            "hidden_act": "silu",
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "head_dim": self.head_dim,
            "rms_norm_eps": self.rms_norm_eps,
            "rope_theta": self.rope_theta,
            "rope_parameters": rope_parameters,
            "rope_scaling": match &self.rope_scaling { None => Value::Null, Some(s) => s.to_json(self.rope_theta) },
            "max_position_embeddings": self.max_position_embeddings,
            "vocab_size": self.vocab_size,
            "tie_word_embeddings": self.tie_word_embeddings,
            "eos_token_id": eos,
            "bos_token_id": self.bos_token_id,
            "torch_dtype": self.torch_dtype,
            "attention_dropout": 0.0,
            "initializer_range": crate::layers::INIT_STD,
            "use_cache": true,
        });
        if self.model_type == "llama" {
            v["attention_bias"] = json!(self.attention_bias);
            v["mlp_bias"] = json!(false);
        } else {
            v["use_sliding_window"] = json!(false);
        }
        v
    }

    /// [`to_json`](Self::to_json) as pretty text.
    pub fn to_json_string(&self) -> String {
        serde_json::to_string_pretty(&self.to_json()).unwrap_or_default()
    }

    /// Atomically writes `config.json` to `path`.
    pub fn save(&self, path: &Path) -> Result<()> {
        eda_core::io::atomic_write(path, self.to_json_string().as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_hf5_and_legacy_rope() {
        let legacy = r#"{"model_type":"llama","hidden_size":64,"intermediate_size":128,"num_hidden_layers":2,
            "num_attention_heads":4,"vocab_size":256,"rope_theta":500000.0,"eos_token_id":[1,2],
            "rope_scaling":{"rope_type":"llama3","factor":8.0,"low_freq_factor":1.0,"high_freq_factor":4.0,"original_max_position_embeddings":8192}}"#;
        let c = ModelConfig::from_json_str(legacy, "x").unwrap();
        assert_eq!(c.num_key_value_heads, 4);
        assert_eq!(c.head_dim, 16);
        assert_eq!(c.eos_token_ids, vec![1, 2]);
        assert_eq!(c.rope_theta, 500000.0);
        assert!(matches!(c.rope_scaling, Some(RopeScaling::Llama3 { .. })));
        let f = c.inv_freq();
        assert_eq!(f.len(), 8);
        assert!(f[7] < 1.0 / 500000f64.powf(14.0 / 16.0));
        let back = ModelConfig::from_json_str(&c.to_json_string(), "y").unwrap();
        assert_eq!(back, c);

        let hf5 = r#"{"model_type":"qwen2","hidden_size":64,"intermediate_size":128,"num_hidden_layers":2,
            "num_attention_heads":4,"num_key_value_heads":2,"vocab_size":256,"eos_token_id":2,
            "rope_parameters":{"rope_theta":1000000.0,"rope_type":"default"}}"#;
        let c = ModelConfig::from_json_str(hf5, "z").unwrap();
        assert_eq!(c.rope_theta, 1e6);
        assert!(c.rope_scaling.is_none() && c.attention_bias);
    }

    #[test]
    fn rejects_bad_configs() {
        let e = ModelConfig::from_json_str(r#"{"model_type":"gpt2"}"#, "c.json").unwrap_err();
        assert!(matches!(e, EdaError::UnknownModelType(ref t) if t == "gpt2"));
        let e = ModelConfig::from_json_str(r#"{"model_type":"llama","hidden_size":64}"#, "c.json").unwrap_err();
        assert!(e.to_string().contains("num_attention_heads"), "{e}");
        let e = ModelConfig::from_json_str("{", "c.json").unwrap_err();
        assert!(matches!(e, EdaError::Json { .. }));
        let yarn = r#"{"model_type":"llama","hidden_size":64,"intermediate_size":128,"num_hidden_layers":2,
            "num_attention_heads":4,"vocab_size":256,"rope_scaling":{"type":"yarn","factor":4.0}}"#;
        assert!(matches!(ModelConfig::from_json_str(yarn, "c").unwrap_err(), EdaError::InvalidConfig(_)));
    }
}
