//! HuggingFace `config.json` for Qwen2/Qwen2.5 and Llama checkpoints.

use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

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
    /// The architecture (`model_type`).
    pub model_type: Architecture,
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

/// The decoder families eda implements, by their HF `model_type`.
///
/// ```
/// use eda_models::config::Architecture;
/// assert_eq!("qwen2".parse::<Architecture>().unwrap(), Architecture::Qwen2);
/// assert_eq!(Architecture::Llama.to_string(), "llama");
/// assert!("gpt2".parse::<Architecture>().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Architecture {
    /// Qwen2 / Qwen2.5 (`model_type: "qwen2"`): q/k/v projections always carry a bias.
    Qwen2,
    /// Llama 2/3 (`model_type: "llama"`): q/k/v bias only with `attention_bias: true`.
    Llama,
}

impl Architecture {
    /// Every supported architecture.
    pub const ALL: [Architecture; 2] = [Architecture::Qwen2, Architecture::Llama];

    /// The HF `model_type` (also the GGUF `general.architecture`).
    pub fn as_str(self) -> &'static str {
        match self {
            Architecture::Qwen2 => "qwen2",
            Architecture::Llama => "llama",
        }
    }

    /// The HF class name written to `architectures`.
    pub fn hf_class(self) -> &'static str {
        match self {
            Architecture::Qwen2 => "Qwen2ForCausalLM",
            Architecture::Llama => "LlamaForCausalLM",
        }
    }
}

impl std::fmt::Display for Architecture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Architecture {
    type Err = EdaError;

    /// Errors with [`EdaError::InvalidArgument`]; `config.json` parsing reports
    /// [`EdaError::UnknownModelType`] with the file instead.
    fn from_str(s: &str) -> Result<Self> {
        Architecture::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| EdaError::InvalidArgument(format!("unknown architecture `{s}` (supported: qwen2, llama)")))
    }
}

impl PartialEq<&str> for Architecture {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// HF defaults of the optional `config.json` fields whose default does not depend on other
/// fields, and deserializers that read an explicit `null` as that default (HF writes `null` for
/// unset fields).
macro_rules! hf_defaults {
    ($($name:ident: $t:ty = $v:expr;)*) => {
        mod hf_default {
            $(pub(super) fn $name() -> $t { $v })*
        }
        mod null_as_default {
            use serde::{Deserialize, Deserializer};
            $(pub(super) fn $name<'de, D: Deserializer<'de>>(d: D) -> Result<$t, D::Error> {
                Ok(Option::<$t>::deserialize(d)?.unwrap_or_else(super::hf_default::$name))
            })*
        }
    };
}

hf_defaults! {
    rms_norm_eps: f64 = 1e-6;
    max_position_embeddings: usize = 2048;
    flag: bool = false;
    low_freq_factor: f64 = 1.0;
    high_freq_factor: f64 = 4.0;
    original_max_position_embeddings: usize = 8192;
}

/// Only `model_type`, read first so that an unsupported architecture is reported as such rather
/// than as a missing field of the config it does not have.
#[derive(Deserialize)]
struct ModelTypeField {
    model_type: String,
}

/// `config.json` as HF writes it (the fields eda reads; others are ignored). Defaults that depend
/// on other fields (`num_key_value_heads`, `head_dim`, `rope_theta`) are applied in
/// [`ModelConfig::from_json_str`].
#[derive(Deserialize)]
struct HfConfig {
    // Required fields, in the order a missing one is reported.
    hidden_size: usize,
    num_attention_heads: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    vocab_size: usize,
    #[serde(default)]
    num_key_value_heads: Option<usize>,
    #[serde(default)]
    head_dim: Option<usize>,
    #[serde(default = "hf_default::rms_norm_eps", deserialize_with = "null_as_default::rms_norm_eps")]
    rms_norm_eps: f64,
    #[serde(default)]
    rope_theta: Option<f64>,
    /// transformers < 5.
    #[serde(default)]
    rope_scaling: Option<HfRope>,
    /// transformers >= 5 (holds `rope_theta` too).
    #[serde(default)]
    rope_parameters: Option<HfRope>,
    #[serde(default = "hf_default::max_position_embeddings", deserialize_with = "null_as_default::max_position_embeddings")]
    max_position_embeddings: usize,
    #[serde(default = "hf_default::flag", deserialize_with = "null_as_default::flag")]
    tie_word_embeddings: bool,
    /// Llama only; Qwen2 always has q/k/v bias.
    #[serde(default = "hf_default::flag", deserialize_with = "null_as_default::flag")]
    attention_bias: bool,
    #[serde(default = "hf_default::flag", deserialize_with = "null_as_default::flag")]
    mlp_bias: bool,
    #[serde(default = "hf_default::flag", deserialize_with = "null_as_default::flag")]
    use_sliding_window: bool,
    #[serde(default)]
    hidden_act: Option<String>,
    #[serde(default, deserialize_with = "token_ids")]
    eos_token_id: Vec<TokenId>,
    #[serde(default, deserialize_with = "token_ids")]
    bos_token_id: Vec<TokenId>,
    #[serde(default)]
    torch_dtype: Option<String>,
    /// transformers >= 5 name of `torch_dtype`.
    #[serde(default)]
    dtype: Option<String>,
}

/// `rope_scaling` / `rope_parameters`.
#[derive(Deserialize)]
struct HfRope {
    #[serde(default)]
    rope_type: Option<String>,
    /// Older spelling of `rope_type`.
    #[serde(default, rename = "type")]
    legacy_type: Option<String>,
    #[serde(default)]
    factor: Option<f64>,
    #[serde(default = "hf_default::low_freq_factor", deserialize_with = "null_as_default::low_freq_factor")]
    low_freq_factor: f64,
    #[serde(default = "hf_default::high_freq_factor", deserialize_with = "null_as_default::high_freq_factor")]
    high_freq_factor: f64,
    #[serde(
        default = "hf_default::original_max_position_embeddings",
        deserialize_with = "null_as_default::original_max_position_embeddings"
    )]
    original_max_position_embeddings: usize,
    #[serde(default)]
    rope_theta: Option<f64>,
}

impl HfRope {
    fn scaling(&self, path: &Path) -> Result<Option<RopeScaling>> {
        let factor = || self.factor.ok_or_else(|| EdaError::json(path, "rope scaling needs `factor`"));
        Ok(match self.rope_type.as_deref().or(self.legacy_type.as_deref()).unwrap_or("default") {
            "default" => None,
            "linear" => Some(RopeScaling::Linear { factor: factor()? }),
            "llama3" => Some(RopeScaling::Llama3 {
                factor: factor()?,
                low_freq_factor: self.low_freq_factor,
                high_freq_factor: self.high_freq_factor,
                original_max_position_embeddings: self.original_max_position_embeddings,
            }),
            other => {
                return Err(EdaError::InvalidConfig(format!(
                    "{}: rope scaling type `{other}` is not supported (default, linear, llama3)",
                    path.display()
                )))
            }
        })
    }
}

/// `eos_token_id` / `bos_token_id`: absent, `null`, one id or a list of ids.
fn token_ids<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Vec<TokenId>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Ids {
        One(TokenId),
        Many(Vec<TokenId>),
    }
    match Option::<Ids>::deserialize(d) {
        Ok(None) => Ok(Vec::new()),
        Ok(Some(Ids::One(t))) => Ok(vec![t]),
        Ok(Some(Ids::Many(v))) => Ok(v),
        Err(_) => Err(serde::de::Error::custom("a token id field must be a token id or a list of token ids")),
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
            model_type: Architecture::Qwen2,
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
            model_type: Architecture::Llama,
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
    ///
    /// Errors: [`EdaError::Json`] (malformed document, missing or mistyped field),
    /// [`EdaError::UnknownModelType`] naming `path` and the value, [`EdaError::InvalidConfig`].
    pub fn from_json_str(text: &str, path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let tag: ModelTypeField = serde_json::from_str(text).map_err(|e| EdaError::json(path, e))?;
        let model_type: Architecture = tag
            .model_type
            .parse()
            .map_err(|_| EdaError::UnknownModelType { path: path.to_path_buf(), model_type: tag.model_type.clone() })?;
        let raw: HfConfig = serde_json::from_str(text).map_err(|e| EdaError::json(path, e))?;
        if raw.mlp_bias {
            return Err(EdaError::InvalidConfig(format!("{}: `mlp_bias: true` is not supported", path.display())));
        }
        if let Some(act) = raw.hidden_act.as_deref().filter(|&a| a != "silu") {
            return Err(EdaError::InvalidConfig(format!("{}: hidden_act `{act}` is not supported (silu only)", path.display())));
        }
        if raw.use_sliding_window {
            tracing::warn!("{}: use_sliding_window is set; eda uses full attention", path.display());
        }
        if raw.num_attention_heads == 0 {
            return Err(EdaError::InvalidConfig(format!("{}: num_attention_heads must be > 0", path.display())));
        }
        // `rope_scaling` (transformers < 5) is read before `rope_parameters` (>= 5).
        let rope = raw.rope_scaling.as_ref().or(raw.rope_parameters.as_ref());
        let cfg = ModelConfig {
            model_type,
            hidden_size: raw.hidden_size,
            intermediate_size: raw.intermediate_size,
            num_hidden_layers: raw.num_hidden_layers,
            num_attention_heads: raw.num_attention_heads,
            num_key_value_heads: raw.num_key_value_heads.unwrap_or(raw.num_attention_heads),
            head_dim: raw.head_dim.unwrap_or(raw.hidden_size / raw.num_attention_heads),
            rms_norm_eps: raw.rms_norm_eps,
            rope_theta: raw.rope_theta.or(raw.rope_parameters.as_ref().and_then(|p| p.rope_theta)).unwrap_or(10_000.0),
            rope_scaling: rope.map(|r| r.scaling(path)).transpose()?.flatten(),
            max_position_embeddings: raw.max_position_embeddings,
            vocab_size: raw.vocab_size,
            tie_word_embeddings: raw.tie_word_embeddings,
            attention_bias: match model_type {
                Architecture::Qwen2 => true,
                Architecture::Llama => raw.attention_bias,
            },
            eos_token_ids: raw.eos_token_id,
            bos_token_id: raw.bos_token_id.first().copied(),
            torch_dtype: raw.torch_dtype.or(raw.dtype),
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
        self.model_type.hf_class()
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
            "model_type": self.model_type.as_str(),
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
        if self.model_type == Architecture::Llama {
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
        assert!(matches!(e, EdaError::UnknownModelType { ref model_type, .. } if model_type == "gpt2"));
        let e = ModelConfig::from_json_str(r#"{"model_type":"llama","hidden_size":64}"#, "c.json").unwrap_err();
        assert!(e.to_string().contains("num_attention_heads"), "{e}");
        let e = ModelConfig::from_json_str("{", "c.json").unwrap_err();
        assert!(matches!(e, EdaError::Json { .. }));
        let yarn = r#"{"model_type":"llama","hidden_size":64,"intermediate_size":128,"num_hidden_layers":2,
            "num_attention_heads":4,"vocab_size":256,"rope_scaling":{"type":"yarn","factor":4.0}}"#;
        assert!(matches!(ModelConfig::from_json_str(yarn, "c").unwrap_err(), EdaError::InvalidConfig(_)));
    }

    #[test]
    fn unknown_architecture_names_the_file_and_the_value() {
        let doc = r#"{"model_type":"mistral","hidden_size":64,"intermediate_size":128,"num_hidden_layers":2,
            "num_attention_heads":4,"vocab_size":256}"#;
        let e = ModelConfig::from_json_str(doc, "ckpt/config.json").unwrap_err();
        assert!(
            matches!(e, EdaError::UnknownModelType { ref path, ref model_type } if path == Path::new("ckpt/config.json") && model_type == "mistral"),
            "{e}"
        );
        assert!(e.to_string().contains("ckpt/config.json") && e.to_string().contains("mistral"), "{e}");
        // a non-string or missing model_type is a malformed document
        for doc in [r#"{"model_type":7}"#, r#"{"hidden_size":64}"#] {
            assert!(matches!(ModelConfig::from_json_str(doc, "c.json"), Err(EdaError::Json { .. })), "{doc}");
        }
    }

    #[test]
    fn absent_and_null_fields_take_hf_defaults() {
        let min = r#"{"model_type":"llama","hidden_size":64,"intermediate_size":128,"num_hidden_layers":2,
            "num_attention_heads":4,"vocab_size":256}"#;
        let nulls = r#"{"model_type":"llama","hidden_size":64,"intermediate_size":128,"num_hidden_layers":2,
            "num_attention_heads":4,"vocab_size":256,"num_key_value_heads":null,"head_dim":null,"rms_norm_eps":null,
            "rope_theta":null,"rope_scaling":null,"max_position_embeddings":null,"tie_word_embeddings":null,
            "attention_bias":null,"mlp_bias":null,"eos_token_id":null,"bos_token_id":null,"torch_dtype":null}"#;
        for doc in [min, nulls] {
            let c = ModelConfig::from_json_str(doc, "c.json").unwrap();
            assert_eq!(c.model_type, Architecture::Llama);
            assert_eq!((c.num_key_value_heads, c.head_dim), (4, 16));
            assert_eq!((c.rms_norm_eps, c.rope_theta, c.max_position_embeddings), (1e-6, 10_000.0, 2048));
            assert!(c.rope_scaling.is_none() && !c.tie_word_embeddings && !c.attention_bias);
            assert!(c.eos_token_ids.is_empty() && c.bos_token_id.is_none() && c.torch_dtype.is_none());
        }
        // llama3 scaling defaults, `dtype` (transformers >= 5) for `torch_dtype`, bos as a list
        let doc = r#"{"model_type":"qwen2","hidden_size":64,"intermediate_size":128,"num_hidden_layers":2,
            "num_attention_heads":4,"vocab_size":256,"dtype":"bfloat16","bos_token_id":[3,4],"attention_bias":false,
            "rope_scaling":{"type":"llama3","factor":2.0}}"#;
        let c = ModelConfig::from_json_str(doc, "c.json").unwrap();
        assert_eq!(
            c.rope_scaling,
            Some(RopeScaling::Llama3 { factor: 2.0, low_freq_factor: 1.0, high_freq_factor: 4.0, original_max_position_embeddings: 8192 })
        );
        assert_eq!(c.torch_dtype.as_deref(), Some("bfloat16"));
        assert_eq!(c.bos_token_id, Some(3));
        assert!(c.attention_bias, "qwen2 always has q/k/v bias");
        let bad = r#"{"model_type":"llama","hidden_size":64,"intermediate_size":128,"num_hidden_layers":2,
            "num_attention_heads":4,"vocab_size":256,"eos_token_id":"x"}"#;
        let e = ModelConfig::from_json_str(bad, "c.json").unwrap_err();
        assert!(matches!(e, EdaError::Json { .. }) && e.to_string().contains("token id"), "{e}");
    }
}
