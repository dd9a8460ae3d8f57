//! Export in the [speculators](https://github.com/vllm-project/speculators) format, the layout
//! vLLM reads for EAGLE-1/2/HASS drafts (`speculators_model_type: "eagle"`).
//!
//! A speculators EAGLE draft is the EAGLE-1 network under other names: `fusion_fc` is EAGLE's
//! `fc` (on `[token embedding ; verifier feature]`), `transformer` is the one Llama decoder layer
//! whose input norm is an identity (`layernorms: false`), and the embedding, rotary table and LM
//! head come from the verifier named in the config. So an EDA draft exports exactly when it folds
//! into EAGLE-1 (see [`EdaDraft::fold_to_eagle`]).

use std::path::Path;

use serde::Serialize;

use eda_core::io::write_json;
use eda_core::{EdaError, Result};

use crate::checkpoint::{write_safetensors, CONFIG_FILE, WEIGHTS_FILE};
use crate::EdaDraft;

/// The `speculators` package release whose `EagleSpeculator` the export was checked against.
pub const SPECULATORS_VERSION: &str = "0.3.0";

/// The verifier (target) a speculators checkpoint names: where to load it from and its class.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verifier {
    /// A local directory or a hub id (`HuggingFaceTB/SmolLM2-135M-Instruct`).
    pub name_or_path: String,
    /// HF architecture, for example `LlamaForCausalLM` or `Qwen2ForCausalLM`.
    pub architecture: String,
}

impl Verifier {
    /// The HF causal-LM class of an eda `model_type` (`llama`, `qwen2`); `None` for others.
    ///
    /// ```
    /// assert_eq!(eda_draft::speculators::Verifier::architecture_of("qwen2").as_deref(), Some("Qwen2ForCausalLM"));
    /// ```
    pub fn architecture_of(model_type: &str) -> Option<String> {
        match model_type {
            "llama" => Some("LlamaForCausalLM".into()),
            "qwen2" => Some("Qwen2ForCausalLM".into()),
            _ => None,
        }
    }
}

#[derive(Serialize)]
struct LayerConfig {
    model_type: &'static str,
    architectures: [&'static str; 1],
    vocab_size: usize,
    hidden_size: usize,
    intermediate_size: usize,
    num_attention_heads: usize,
    num_key_value_heads: usize,
    head_dim: usize,
    num_hidden_layers: usize,
    rms_norm_eps: f64,
    rope_theta: f64,
    max_position_embeddings: usize,
    hidden_act: &'static str,
    attention_bias: bool,
    mlp_bias: bool,
    tie_word_embeddings: bool,
    torch_dtype: &'static str,
}

#[derive(Serialize)]
struct Proposal {
    proposal_type: &'static str,
    speculative_tokens: usize,
    verifier_accept_k: usize,
    accept_tolerance: f64,
}

#[derive(Serialize)]
struct VerifierConfig<'a> {
    name_or_path: &'a str,
    architectures: [&'a str; 1],
}

#[derive(Serialize)]
struct AlgorithmConfig<'a> {
    algorithm: &'static str,
    proposal_methods: [Proposal; 1],
    default_proposal_method: &'static str,
    verifier: VerifierConfig<'a>,
}

#[derive(Serialize)]
struct SpeculatorsConfig<'a> {
    architectures: [&'static str; 2],
    speculators_model_type: &'static str,
    speculators_version: &'static str,
    transformer_layer_architecture: &'static str,
    transformer_layer_config: LayerConfig,
    layernorms: bool,
    fusion_bias: bool,
    speculators_config: AlgorithmConfig<'a>,
    torch_dtype: &'static str,
}

/// Tensor names of the EAGLE-1 layout → the speculators layout.
fn rename(eagle_name: &str) -> String {
    if let Some(rest) = eagle_name.strip_prefix("fc.") {
        format!("fusion_fc.{rest}")
    } else if let Some(rest) = eagle_name.strip_prefix("layers.0.") {
        format!("transformer.{rest}")
    } else {
        eagle_name.to_string()
    }
}

impl EdaDraft {
    /// Writes the draft (folded into one MLP when it has a private group) as a speculators
    /// `EagleSpeculator` checkpoint: `config.json` (`speculators_model_type: "eagle"`, a Llama
    /// `transformer_layer_config`, `layernorms: false`, `fusion_bias: true`, a greedy proposal of
    /// `speculative_tokens` tokens, the `verifier`) and `model.safetensors` with `fusion_fc.*`
    /// and `transformer.*` (f32; embedding and LM head are the verifier's). Each file atomically.
    ///
    /// Errors: [`EdaError::InvalidConfig`] for an expert layout that does not fold, or a reduced
    /// draft vocabulary (the format predicts over the verifier's whole vocabulary);
    /// [`EdaError::InvalidArgument`] for `speculative_tokens == 0`; I/O errors naming the file.
    pub fn save_speculators(&self, dir: &Path, verifier: &Verifier, speculative_tokens: usize) -> Result<()> {
        if speculative_tokens == 0 {
            return Err(EdaError::InvalidArgument("speculative_tokens must be at least 1".into()));
        }
        if self.draft_vocab().is_some() {
            return Err(EdaError::InvalidConfig(
                "a reduced draft vocabulary has no place in the speculators EAGLE-1 format (it predicts over the whole vocabulary)".into(),
            ));
        }
        let tensors: Vec<_> = self
            .eagle_tensors()?
            .into_iter()
            .map(|mut t| {
                t.name = rename(&t.name);
                t
            })
            .collect();
        let c = self.fold_to_eagle()?.config().clone();
        let config = SpeculatorsConfig {
            architectures: ["EagleSpeculator", "LlamaDecoderLayer"],
            speculators_model_type: "eagle",
            speculators_version: SPECULATORS_VERSION,
            transformer_layer_architecture: "LlamaDecoderLayer",
            transformer_layer_config: LayerConfig {
                model_type: "llama",
                architectures: ["LlamaForCausalLM"],
                vocab_size: c.vocab_size,
                hidden_size: c.hidden_size,
                intermediate_size: c.intermediate_size,
                num_attention_heads: c.num_attention_heads,
                num_key_value_heads: c.num_key_value_heads,
                head_dim: c.head_dim,
                num_hidden_layers: 1,
                rms_norm_eps: c.rms_norm_eps,
                rope_theta: c.rope_theta,
                max_position_embeddings: c.max_position_embeddings,
                hidden_act: "silu",
                attention_bias: false,
                mlp_bias: false,
                tie_word_embeddings: false,
                torch_dtype: "float32",
            },
            layernorms: false,
            fusion_bias: true,
            speculators_config: AlgorithmConfig {
                algorithm: "eagle",
                proposal_methods: [Proposal { proposal_type: "greedy", speculative_tokens, verifier_accept_k: 1, accept_tolerance: 0.0 }],
                default_proposal_method: "greedy",
                verifier: VerifierConfig { name_or_path: &verifier.name_or_path, architectures: [&verifier.architecture] },
            },
            torch_dtype: "float32",
        };
        std::fs::create_dir_all(dir).map_err(|e| EdaError::io(dir, e))?;
        write_safetensors(&dir.join(WEIGHTS_FILE), &tensors)?;
        write_json(&dir.join(CONFIG_FILE), &config)?;
        tracing::info!(dir = %dir.display(), "saved speculators-format draft");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::EdaDraftConfig;
    use eda_core::safetensors::SafetensorsFile;

    fn draft(cfg: &EdaDraftConfig) -> EdaDraft {
        let device = eda_core::backend::device_from_name("cpu").unwrap();
        let e = burn::tensor::Tensor::random([cfg.vocab_size, cfg.hidden_size], burn::tensor::Distribution::Default, &device);
        EdaDraft::new_seeded(cfg, e.clone(), e, &device, 3).unwrap()
    }

    #[test]
    fn export_renames_the_eagle_tensors_and_describes_the_verifier() {
        let d = draft(&EdaDraftConfig::tiny(40, 16));
        let dir = tempfile::tempdir().unwrap();
        let v = Verifier { name_or_path: "HuggingFaceTB/SmolLM2-135M-Instruct".into(), architecture: "LlamaForCausalLM".into() };
        d.save_speculators(dir.path(), &v, 4).unwrap();
        d.save_eagle(&dir.path().join("eagle")).unwrap();
        let spec = SafetensorsFile::open(&dir.path().join(WEIGHTS_FILE)).unwrap();
        let eagle = SafetensorsFile::open(&dir.path().join("eagle").join(WEIGHTS_FILE)).unwrap();
        // Same weights under the other names; nothing of the verifier's is duplicated.
        assert_eq!(spec.names().len() + 1, eagle.names().len(), "{:?}", spec.names());
        for name in eagle.names().iter().filter(|n| *n != "embed_tokens.weight") {
            let a = eagle.tensor(name).unwrap();
            let renamed = rename(name);
            let b = spec.tensor(&renamed).unwrap();
            assert_eq!((a.shape, a.data), (b.shape, b.data), "{name}");
        }
        assert!(spec.contains("fusion_fc.bias") && spec.contains("transformer.mlp.down_proj.weight"));
        let cfg: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.path().join(CONFIG_FILE)).unwrap()).unwrap();
        assert_eq!(cfg["speculators_model_type"], "eagle");
        assert_eq!(cfg["speculators_config"]["verifier"]["name_or_path"], "HuggingFaceTB/SmolLM2-135M-Instruct");
        assert_eq!(cfg["speculators_config"]["proposal_methods"][0]["speculative_tokens"], 4);
        // The folded MLP: shared width + private width.
        assert_eq!(cfg["transformer_layer_config"]["intermediate_size"], 32 + 16);
    }

    #[test]
    fn unfoldable_drafts_and_zero_tokens_are_refused() {
        let v = Verifier { name_or_path: "t".into(), architecture: "LlamaForCausalLM".into() };
        let dir = tempfile::tempdir().unwrap();
        let d = draft(&EdaDraftConfig::tiny(40, 16).with_experts(2, 1, 2, 1));
        assert!(matches!(d.save_speculators(dir.path(), &v, 4), Err(EdaError::InvalidConfig(_))));
        let d = draft(&EdaDraftConfig::tiny(40, 16));
        assert!(matches!(d.save_speculators(dir.path(), &v, 0), Err(EdaError::InvalidArgument(_))));
        assert!(!dir.path().join(CONFIG_FILE).exists(), "nothing written on error");
    }
}
