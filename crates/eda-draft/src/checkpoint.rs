//! Checkpoints: the EDA layout ([`EdaDraft::save`] / [`EdaDraft::load`]) and the plain EAGLE-1
//! layout ([`EdaDraft::save_eagle`] / [`EdaDraft::load_eagle`], [`EdaDraft::fold_to_eagle`]).
//!
//! Both write `config.json` and `model.safetensors` (f32, HuggingFace `[out, in]` layout) into a
//! directory. Tensor keys follow the reference code (docs/method.md §2.6):
//!
//! | key | shape |
//! |---|---|
//! | `fc.weight`, `fc.bias` | `[H, 2H]`, `[H]` |
//! | `layers.0.self_attn.{q,k,v,o}_proj.weight` | HF attention shapes, no bias |
//! | `layers.0.post_attention_layernorm.weight` | `[H]` |
//! | `layers.0.block_sparse_moe.{shared,private}_gate.weight` | `[N, H]` |
//! | `layers.0.block_sparse_moe.{shared,private}_experts.{i}.{gate,up}_proj.weight` | `[I or P, H]` |
//! | `layers.0.block_sparse_moe.{shared,private}_experts.{i}.down_proj.weight` | `[H, I or P]` |
//!
//! | `d2t` (only with a reduced draft vocabulary) | `[K]`, I64: target token id of each draft logit column |
//!
//! `d2t` holds absolute target ids (EAGLE-3's buffer of the same name stores `id - index`
//! offsets instead); `config.json` records `draft_vocab_size: K`. Loading checks that the
//! mapping has `K` entries, each below the target vocabulary and none twice.
//!
//! The EAGLE layout (SafeAILab/EAGLE `cnets1.py` `Model`) replaces the `block_sparse_moe` keys by
//! `layers.0.mlp.{gate,up,down}_proj.weight` and also stores `embed_tokens.weight`; it has no
//! reduced vocabulary, so `d2t` is not exported there.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::nn::Linear;
use burn::tensor::{Device, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use eda_core::io::{read_json, write_json};
use eda_core::safetensors::{Element, HostTensor};
use eda_core::{EdaError, Result};
use eda_models::layers::{linear_from_hf, linear_to_hf, Attention, Mlp, RmsNorm, RotaryEmbedding};
use eda_models::WeightSource;

use crate::config::EdaDraftConfig;
use crate::init;
use crate::model::{check_matrix, check_vocab_map, EdaDraft, FreezePlan};
use crate::moe::{ExpertGroup, SpMoe};

/// Name of the configuration file in a checkpoint directory.
pub const CONFIG_FILE: &str = "config.json";
/// Name of the weights file in a checkpoint directory.
pub const WEIGHTS_FILE: &str = "model.safetensors";

const MOE: &str = "layers.0.block_sparse_moe";

/// Key of the reduced-vocabulary mapping in `model.safetensors`.
pub const D2T_KEY: &str = "d2t";

fn host<const D: usize>(name: impl Into<String>, t: Tensor<D>) -> Result<HostTensor> {
    let shape = t.dims().to_vec();
    Ok(HostTensor::from_values(name, shape, &eda_core::backend::to_vec_f32(t)?))
}

fn host_ids(name: &str, ids: &[eda_core::TokenId]) -> HostTensor {
    HostTensor::from_values(name, vec![ids.len()], &ids.iter().map(|&t| t as i64).collect::<Vec<_>>())
}

fn host_linear(prefix: &str, l: &Linear, out: &mut Vec<HostTensor>) -> Result<()> {
    let (w, b) = linear_to_hf(l);
    out.push(host(format!("{prefix}.weight"), w)?);
    if let Some(b) = b {
        out.push(host(format!("{prefix}.bias"), b)?);
    }
    Ok(())
}

fn host_group(prefix: &str, gate_key: &str, g: &ExpertGroup, out: &mut Vec<HostTensor>) -> Result<()> {
    host_linear(&format!("{MOE}.{gate_key}"), &g.router, out)?;
    for (i, e) in g.experts.iter().enumerate() {
        host_mlp(&format!("{MOE}.{prefix}.{i}"), e, out)?;
    }
    Ok(())
}

fn host_mlp(prefix: &str, e: &Mlp, out: &mut Vec<HostTensor>) -> Result<()> {
    host_linear(&format!("{prefix}.gate_proj"), &e.gate_proj, out)?;
    host_linear(&format!("{prefix}.up_proj"), &e.up_proj, out)?;
    host_linear(&format!("{prefix}.down_proj"), &e.down_proj, out)
}

pub(crate) fn write_safetensors(path: &Path, tensors: &[HostTensor]) -> Result<()> {
    eda_core::safetensors::write(path, tensors, &BTreeMap::from([("format".to_string(), "pt".to_string())]))
}

/// Refuses configs of other draft formats with a message naming the format, instead of a
/// missing-tensor error further on.
fn check_eagle_format(raw: &serde_json::Value, path: &Path) -> Result<()> {
    let field = |k: &str| raw.get(k).and_then(|v| v.as_str()).unwrap_or("");
    let archs: Vec<&str> =
        raw.get("architectures").and_then(|a| a.as_array()).map(|a| a.iter().filter_map(|v| v.as_str()).collect()).unwrap_or_default();
    let refuse = |what: &str| Err(EdaError::InvalidConfig(format!("{}: {what}", path.display())));
    if field("model_type") == "eda_draft" || archs.contains(&"SPMoEModel") {
        return refuse("this is an EDA draft, not an EAGLE draft (use it directly, e.g. `eda train --stage stage2 --stage1 DIR`)");
    }
    if raw.get("speculators_model_type").is_some() {
        return refuse("this is a speculators-format checkpoint; import expects the EAGLE-1/2 layout (config.json + pytorch_model.bin or model.safetensors)");
    }
    if archs.iter().any(|a| a.contains("Eagle3")) || raw.get("draft_vocab_size").is_some() {
        return refuse("EAGLE-3 drafts (fused multi-layer features, own vocabulary) are not supported; import expects an EAGLE-1/2 draft");
    }
    if raw.get("hidden_size").is_none() || raw.get("vocab_size").is_none() {
        return refuse("not an EAGLE draft config (no `hidden_size` / `vocab_size`)");
    }
    Ok(())
}

/// The weights of a draft checkpoint, read through the targets' [`WeightSource`] plus the
/// draft's own checks (finite values, the `d2t` mapping).
struct Store {
    /// The weights file, named in errors.
    path: PathBuf,
    src: WeightSource,
}

impl Store {
    fn open(dir: &Path) -> Result<Self> {
        let src = WeightSource::open(dir)?;
        let path = src.files().first().map_or_else(|| dir.join(WEIGHTS_FILE), |p| p.to_path_buf());
        Ok(Store { path, src })
    }

    fn contains(&self, name: &str) -> bool {
        self.src.contains(name)
    }

    fn get<const D: usize>(&self, name: &str, expected: [usize; D], device: &Device) -> Result<Tensor<D>> {
        let data = self.src.read_f32(name, &expected)?;
        // A NaN/Inf weight makes every draft logit NaN: nothing is ever proposed and τ reads a
        // plausible 1.00, so corrupt weights are refused here instead of surfacing as "no gain".
        if let Some(i) = data.iter().position(|v| !v.is_finite()) {
            return Err(EdaError::NonFinite(format!("tensor `{name}` in {} (element {i} is {})", self.path.display(), data[i])));
        }
        Ok(Tensor::from_data(TensorData::new(data, expected), device))
    }

    /// The reduced-vocabulary mapping `d2t` (`[k]`, I64 or I32), checked against
    /// `vocab_size`; errors name this file.
    fn vocab_map(&self, k: usize, vocab_size: usize) -> Result<Vec<eda_core::TokenId>> {
        let view = self.src.tensor(D2T_KEY)?;
        if view.shape != [k] {
            return Err(EdaError::ShapeMismatch {
                name: format!("{D2T_KEY} in {} (draft_vocab_size {k})", self.path.display()),
                expected: vec![k],
                actual: view.shape.to_vec(),
            });
        }
        if !<i64 as Element>::accepts(view.dtype) {
            return Err(EdaError::UnsupportedDType {
                name: format!("{D2T_KEY} in {} (needs I64 or I32)", self.path.display()),
                dtype: format!("{:?}", view.dtype),
            });
        }
        let ids: Vec<i64> = view.to_vec()?;
        let malformed = |record: usize, message: String| EdaError::MalformedData { path: self.path.clone(), record, message };
        let mut out = Vec::with_capacity(k);
        for (i, &t) in ids.iter().enumerate() {
            if t < 0 || t as u64 >= vocab_size as u64 {
                return Err(malformed(
                    i,
                    format!("`{D2T_KEY}`: draft token {i} maps to target id {t}, outside the target vocabulary of {vocab_size}"),
                ));
            }
            out.push(t as eda_core::TokenId);
        }
        check_vocab_map(&out, vocab_size).map_err(|(i, m)| malformed(i, format!("`{D2T_KEY}`: {m}")))?;
        Ok(out)
    }

    fn linear(&self, prefix: &str, d_in: usize, d_out: usize, bias: bool, device: &Device) -> Result<Linear> {
        let w = self.get(&format!("{prefix}.weight"), [d_out, d_in], device)?;
        let b = if bias { Some(self.get(&format!("{prefix}.bias"), [d_out], device)?) } else { None };
        Ok(linear_from_hf(w, b))
    }

    fn mlp(&self, prefix: &str, h: usize, inter: usize, device: &Device) -> Result<Mlp> {
        Ok(Mlp {
            gate_proj: self.linear(&format!("{prefix}.gate_proj"), h, inter, false, device)?,
            up_proj: self.linear(&format!("{prefix}.up_proj"), h, inter, false, device)?,
            down_proj: self.linear(&format!("{prefix}.down_proj"), inter, h, false, device)?,
            lora: None,
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn group(&self, prefix: &str, gate_key: &str, h: usize, inter: usize, n: usize, top_k: usize, device: &Device) -> Result<ExpertGroup> {
        let router = self.linear(&format!("{MOE}.{gate_key}"), h, n, false, device)?;
        let experts = (0..n).map(|i| self.mlp(&format!("{MOE}.{prefix}.{i}"), h, inter, device)).collect::<Result<Vec<_>>>()?;
        Ok(ExpertGroup { router, experts, top_k })
    }

    fn attention(&self, cfg: &EdaDraftConfig, device: &Device) -> Result<Attention> {
        let (h, nh, nkv, hd) = (cfg.hidden_size, cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim);
        for p in ["q_proj", "k_proj", "v_proj"] {
            let key = format!("layers.0.self_attn.{p}.bias");
            if self.contains(&key) {
                return Err(EdaError::InvalidConfig(format!(
                    "{} holds `{key}`: draft attention with q/k/v bias is not supported",
                    self.path.display()
                )));
            }
        }
        Ok(Attention {
            q_proj: self.linear("layers.0.self_attn.q_proj", h, nh * hd, false, device)?,
            k_proj: self.linear("layers.0.self_attn.k_proj", h, nkv * hd, false, device)?,
            v_proj: self.linear("layers.0.self_attn.v_proj", h, nkv * hd, false, device)?,
            o_proj: self.linear("layers.0.self_attn.o_proj", nh * hd, h, false, device)?,
            lora: None,
            num_heads: nh,
            num_kv_heads: nkv,
            head_dim: hd,
        })
    }
}

/// `config.json` as written by [`EdaDraft::save`]: the config plus reference-style metadata.
#[derive(Serialize)]
struct SavedConfig<'a> {
    architectures: [&'static str; 1],
    model_type: &'static str,
    num_hidden_layers: usize,
    hidden_act: &'static str,
    #[serde(flatten)]
    config: &'a EdaDraftConfig,
}

/// `config.json` of a plain EAGLE-1 draft (LlamaForCausalLM-style, SafeAILab/EAGLE `EConfig`).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct EagleConfig {
    /// `["LlamaForCausalLM"]`.
    #[serde(default)]
    pub architectures: Vec<String>,
    /// `"llama"`.
    #[serde(default)]
    pub model_type: Option<String>,
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Feature width.
    pub hidden_size: usize,
    /// MLP intermediate size.
    pub intermediate_size: usize,
    /// Query heads.
    pub num_attention_heads: usize,
    /// Key/value heads (defaults to the query heads).
    #[serde(default)]
    pub num_key_value_heads: Option<usize>,
    /// Head width (defaults to `hidden_size / num_attention_heads`).
    #[serde(default)]
    pub head_dim: Option<usize>,
    /// Always 1 for EAGLE-1 drafts.
    #[serde(default = "one")]
    pub num_hidden_layers: usize,
    /// RMSNorm epsilon.
    #[serde(default = "default_eps")]
    pub rms_norm_eps: f64,
    /// Rotary base.
    #[serde(default = "default_theta")]
    pub rope_theta: f64,
    /// Rotary table size.
    pub max_position_embeddings: usize,
    /// `"silu"`.
    #[serde(default)]
    pub hidden_act: Option<String>,
    /// Always false.
    #[serde(default)]
    pub tie_word_embeddings: bool,
    /// Whether `fc` has a bias (EAGLE's `ea_model.py` reads `bias`, default true).
    #[serde(default = "yes")]
    pub bias: bool,
    /// q/k/v bias (unsupported when true).
    #[serde(default)]
    pub qkv_bias: Option<bool>,
    /// `"float32"`.
    #[serde(default)]
    pub torch_dtype: Option<String>,
}

fn one() -> usize {
    1
}
fn yes() -> bool {
    true
}
fn default_eps() -> f64 {
    1e-6
}
fn default_theta() -> f64 {
    10000.0
}

impl EdaDraft {
    #[allow(clippy::too_many_arguments)]
    fn assemble(
        cfg: &EdaDraftConfig,
        embedding: Tensor<2>,
        lm_head: Tensor<2>,
        fc: Linear,
        self_attn: Attention,
        norm: RmsNorm,
        moe: SpMoe,
        device: &Device,
    ) -> Result<Self> {
        // `new_seeded` builds a valid shell; replace its parameters (cheap for the sizes involved
        // compared to reading a checkpoint, and keeps the frozen-parameter logic in one place).
        let mut d = EdaDraft::new_shell(cfg, embedding, lm_head, device)?;
        d.fc = fc;
        d.self_attn = self_attn;
        d.post_attention_layernorm = norm;
        d.moe = moe;
        Ok(d)
    }

    /// A draft shell whose trainable parameters are placeholders (zero-sized work avoided by the
    /// caller replacing them).
    fn new_shell(cfg: &EdaDraftConfig, embedding: Tensor<2>, lm_head: Tensor<2>, device: &Device) -> Result<Self> {
        cfg.validate()?;
        check_matrix("embedding", &embedding, cfg)?;
        check_matrix("LM head", &lm_head, cfg)?;
        let tiny = |i: usize, o: usize| linear_from_hf(Tensor::zeros([o, i], device), None);
        let placeholder = ExpertGroup { router: tiny(1, 1), experts: Vec::new(), top_k: 0 };
        Ok(EdaDraft {
            embedding: burn::module::Param::from_tensor(embedding.to_device(device).detach()).set_require_grad(false),
            lm_head: burn::module::Param::from_tensor(lm_head.to_device(device).detach()).set_require_grad(false),
            draft_head: None,
            fc: tiny(1, 1),
            self_attn: Attention {
                q_proj: tiny(1, 1),
                k_proj: tiny(1, 1),
                v_proj: tiny(1, 1),
                o_proj: tiny(1, 1),
                lora: None,
                num_heads: cfg.num_attention_heads,
                num_kv_heads: cfg.num_key_value_heads,
                head_dim: cfg.head_dim,
            },
            post_attention_layernorm: RmsNorm::new(cfg.hidden_size, cfg.rms_norm_eps, device),
            moe: SpMoe { shared: placeholder, private: None },
            rope: RotaryEmbedding::new(cfg.head_dim, cfg.rope_theta, cfg.max_position_embeddings, device),
            config: cfg.clone(),
            frozen: FreezePlan::NONE,
            draft_vocab: None,
        })
    }

    /// The tensors of the EDA layout (docs/method.md §2.6), without embedding and LM head, plus `d2t` for
    /// a reduced vocabulary.
    fn eda_tensors(&self) -> Result<Vec<HostTensor>> {
        let mut out = Vec::new();
        self.common_tensors(&mut out)?;
        host_group("shared_experts", "shared_gate", &self.moe.shared, &mut out)?;
        if let Some(p) = &self.moe.private {
            host_group("private_experts", "private_gate", p, &mut out)?;
        }
        if let Some(ids) = self.draft_vocab() {
            out.push(host_ids(D2T_KEY, ids));
        }
        Ok(out)
    }

    fn common_tensors(&self, out: &mut Vec<HostTensor>) -> Result<()> {
        host_linear("fc", &self.fc, out)?;
        host_linear("layers.0.self_attn.q_proj", &self.self_attn.q_proj, out)?;
        host_linear("layers.0.self_attn.k_proj", &self.self_attn.k_proj, out)?;
        host_linear("layers.0.self_attn.v_proj", &self.self_attn.v_proj, out)?;
        host_linear("layers.0.self_attn.o_proj", &self.self_attn.o_proj, out)?;
        out.push(host("layers.0.post_attention_layernorm.weight", self.post_attention_layernorm.weight.val())?);
        Ok(())
    }

    /// Writes `dir/config.json` (the [`EdaDraftConfig`] plus reference metadata
    /// `architectures: ["SPMoEModel"]`, `num_hidden_layers: 1`, `hidden_act: "silu"`) and
    /// `dir/model.safetensors` (f32, EDA layout, no embedding / LM head; plus the I64 `d2t`
    /// mapping of a reduced vocabulary), each atomically. Freezing is not saved.
    pub fn save(&self, dir: &Path) -> Result<()> {
        if self.lora_params() > 0 {
            // Adapters are a training device: the saved draft holds their merged weights.
            return self.clone().merge_lora().save(dir);
        }
        std::fs::create_dir_all(dir).map_err(|e| EdaError::io(dir, e))?;
        write_safetensors(&dir.join(WEIGHTS_FILE), &self.eda_tensors()?)?;
        let cfg = SavedConfig {
            architectures: ["SPMoEModel"],
            model_type: "eda_draft",
            num_hidden_layers: 1,
            hidden_act: "silu",
            config: &self.config,
        };
        write_json(&dir.join(CONFIG_FILE), &cfg)?;
        tracing::info!(dir = %dir.display(), "saved EDA draft");
        Ok(())
    }

    /// Loads a draft written by [`save`](Self::save) around the given frozen `embedding` and
    /// `lm_head` (`[vocab, hidden]`, the full target vocabulary even for a reduced-vocabulary
    /// draft). Extra tensors (for example `embed_tokens.weight`) are ignored. All loaded
    /// parameters are trainable. A config with `draft_vocab_size: K` restores the reduced
    /// vocabulary from the `d2t` tensor.
    ///
    /// Errors: [`EdaError::Io`] (missing file), [`EdaError::Json`] (corrupt config),
    /// [`EdaError::InvalidConfig`], [`EdaError::Safetensors`] (corrupt weights),
    /// [`EdaError::MissingTensor`], [`EdaError::ShapeMismatch`] (also `d2t` of the wrong
    /// length), [`EdaError::UnsupportedDType`], [`EdaError::Mismatch`] (embedding / LM head vs
    /// config), [`EdaError::MalformedData`] naming `model.safetensors` and the entry for a `d2t`
    /// id outside the target vocabulary or listed twice.
    pub fn load(dir: &Path, embedding: Tensor<2>, lm_head: Tensor<2>, device: &Device) -> Result<Self> {
        let mut cfg: EdaDraftConfig = read_json(&dir.join(CONFIG_FILE))?;
        cfg.validate()?;
        let draft_vocab_size = cfg.draft_vocab_size.take();
        check_matrix("embedding", &embedding, &cfg)?;
        check_matrix("LM head", &lm_head, &cfg)?;
        let store = Store::open(dir)?;
        let h = cfg.hidden_size;
        let fc = store.linear("fc", 2 * h, h, true, device)?;
        let attn = store.attention(&cfg, device)?;
        let norm = RmsNorm::from_weight(store.get("layers.0.post_attention_layernorm.weight", [h], device)?, cfg.rms_norm_eps);
        let shared =
            store.group("shared_experts", "shared_gate", h, cfg.intermediate_size, cfg.num_shared_experts, cfg.top_k_shared, device)?;
        let private = if cfg.num_private_experts > 0 {
            Some(store.group(
                "private_experts",
                "private_gate",
                h,
                cfg.private_intermediate_size,
                cfg.num_private_experts,
                cfg.top_k_private,
                device,
            )?)
        } else {
            None
        };
        let vocab_map = match draft_vocab_size {
            Some(k) => Some(store.vocab_map(k, cfg.vocab_size)?),
            None => None,
        };
        let draft = Self::assemble(&cfg, embedding, lm_head, fc, attn, norm, SpMoe { shared, private }, device)?;
        match vocab_map {
            Some(ids) => draft.with_draft_vocab(ids),
            None => Ok(draft),
        }
    }

    /// Folds a 1 shared + 1 private (top-1) draft into a plain EAGLE-1 draft whose single MLP
    /// has intermediate size `I + P`: gate and up rows are concatenated, down columns too, so
    /// `mlp(m) = shared(m) + private(m)` exactly. The result has `num_private_experts = 0`. A
    /// draft that is already plain is returned unchanged.
    ///
    /// Errors with [`EdaError::InvalidConfig`] for other expert configurations (routing then
    /// depends on the input and no fixed MLP is equivalent).
    pub fn fold_to_eagle(&self) -> Result<Self> {
        if self.config.is_plain_eagle() {
            return Ok(self.clone());
        }
        if !self.config.is_foldable() {
            return Err(EdaError::InvalidConfig(format!(
                "only a 1 shared + 1 private top-1 draft folds into an EAGLE MLP (have {} shared top-{}, {} private top-{})",
                self.config.num_shared_experts, self.config.top_k_shared, self.config.num_private_experts, self.config.top_k_private
            )));
        }
        let s = &self.moe.shared.experts[0];
        let p = &self.moe.private.as_ref().expect("foldable drafts have a private group").experts[0];
        // burn layout is [in, out]: gate/up concatenate along out (dim 1), down along in (dim 0).
        let cat = |a: &Linear, b: &Linear, dim: usize| Linear {
            weight: burn::module::Param::from_tensor(Tensor::cat(vec![a.weight.val(), b.weight.val()], dim)),
            bias: None,
        };
        let mlp = Mlp {
            gate_proj: cat(&s.gate_proj, &p.gate_proj, 1),
            up_proj: cat(&s.up_proj, &p.up_proj, 1),
            down_proj: cat(&s.down_proj, &p.down_proj, 0),
            lora: None,
        };
        let mut cfg = self.config.clone();
        cfg.intermediate_size += cfg.private_intermediate_size;
        cfg.private_intermediate_size = 0;
        cfg.num_private_experts = 0;
        cfg.top_k_private = 0;
        let router = Linear { weight: burn::module::Param::from_tensor(self.moe.shared.router.weight.val()), bias: None };
        let mut d = self.clone();
        d.config = cfg;
        d.moe = SpMoe { shared: ExpertGroup { router, experts: vec![mlp], top_k: 1 }, private: None };
        Ok(d)
    }

    /// The EAGLE `config.json` of this (plain or foldable) draft.
    pub fn eagle_config(&self) -> Result<EagleConfig> {
        let cfg = self.fold_to_eagle()?.config;
        Ok(EagleConfig {
            architectures: vec!["LlamaForCausalLM".into()],
            model_type: Some("llama".into()),
            vocab_size: cfg.vocab_size,
            hidden_size: cfg.hidden_size,
            intermediate_size: cfg.intermediate_size,
            num_attention_heads: cfg.num_attention_heads,
            num_key_value_heads: Some(cfg.num_key_value_heads),
            head_dim: Some(cfg.head_dim),
            num_hidden_layers: 1,
            rms_norm_eps: cfg.rms_norm_eps,
            rope_theta: cfg.rope_theta,
            max_position_embeddings: cfg.max_position_embeddings,
            hidden_act: Some("silu".into()),
            tie_word_embeddings: false,
            bias: true,
            qkv_bias: None,
            torch_dtype: Some("float32".into()),
        })
    }

    /// Exports the draft (folded with [`fold_to_eagle`](Self::fold_to_eagle) if needed) in the
    /// SafeAILab/EAGLE-1 layout: `config.json` ([`EagleConfig`], LlamaForCausalLM-style,
    /// `bias: true`) and `model.safetensors` with `embed_tokens.weight`, `fc.{weight,bias}`,
    /// `layers.0.self_attn.{q,k,v,o}_proj.weight`, `layers.0.post_attention_layernorm.weight`,
    /// `layers.0.mlp.{gate,up,down}_proj.weight` (f32). EAGLE-1 drafts predict over the full
    /// vocabulary, so a reduced-vocabulary mapping is not exported (the weights are the same).
    ///
    /// The same tensors are also written as `pytorch_model.bin` (a `torch.save` archive), the
    /// only weights file the EAGLE authors' released code (`eagle-llm` on PyPI,
    /// `EaModel.from_pretrained`) opens.
    pub fn save_eagle(&self, dir: &Path) -> Result<()> {
        let mut out = vec![host("embed_tokens.weight", self.embedding.val())?];
        out.extend(self.eagle_tensors()?);
        std::fs::create_dir_all(dir).map_err(|e| EdaError::io(dir, e))?;
        write_safetensors(&dir.join(WEIGHTS_FILE), &out)?;
        eda_core::torch_checkpoint::write(&dir.join(eda_models::TORCH_FILE), &out)?;
        write_json(&dir.join(CONFIG_FILE), &self.eagle_config()?)?;
        tracing::info!(dir = %dir.display(), "saved EAGLE-layout draft");
        Ok(())
    }

    /// The folded draft's own weights in EAGLE-1 names (`fc.*`, `layers.0.*`), without the
    /// embedding (f32).
    pub(crate) fn eagle_tensors(&self) -> Result<Vec<HostTensor>> {
        let folded = self.fold_to_eagle()?;
        let mut out = Vec::new();
        folded.common_tensors(&mut out)?;
        host_mlp("layers.0.mlp", &folded.moe.shared.experts[0], &mut out)?;
        Ok(out)
    }

    /// Loads a plain EAGLE-1/2 checkpoint (`config.json` + `model.safetensors`, or the
    /// `pytorch_model.bin` SafeAILab/EAGLE releases ship, as written by
    /// [`save_eagle`](Self::save_eagle) or trained with EAGLE's code) as an EDA draft:
    /// `layers.0.mlp.*` becomes shared expert 0 (with a fresh 1-expert router, whose weight is
    /// exactly 1 anyway) and, when `private_intermediate_size > 0`, a freshly initialised private
    /// expert of that width is added (1 + 1, top-1; seed `seed`), so a plain EAGLE draft can seed
    /// stage 2. With `private_intermediate_size == 0` the result is a plain EAGLE draft.
    /// `embed_tokens.weight` in the file is ignored in favour of `embedding`. A missing `fc.bias`
    /// is allowed when the config says `bias: false` (it is loaded as zeros).
    ///
    /// Errors: [`EdaError::InvalidConfig`] naming the format when `config.json` belongs to
    /// another kind of draft (an EDA draft, a speculators checkpoint, EAGLE-3) or is not a draft
    /// config, and for unsupported settings (`qkv_bias`, more than one layer);
    /// [`EdaError::Mismatch`] when the draft's hidden size or vocabulary differs from
    /// `embedding` / `lm_head`; [`EdaError::TorchCheckpoint`] / [`EdaError::Safetensors`] for a
    /// corrupt weights file; [`EdaError::MissingTensor`] / [`EdaError::ShapeMismatch`] naming
    /// the tensor.
    pub fn load_eagle(
        dir: &Path,
        embedding: Tensor<2>,
        lm_head: Tensor<2>,
        private_intermediate_size: usize,
        seed: u64,
        device: &Device,
    ) -> Result<Self> {
        let path = dir.join(CONFIG_FILE);
        let raw: serde_json::Value = read_json(&path)?;
        check_eagle_format(&raw, &path)?;
        let ec: EagleConfig = serde_json::from_value(raw).map_err(|e| EdaError::json(&path, e.to_string()))?;
        if ec.qkv_bias == Some(true) {
            return Err(EdaError::InvalidConfig(format!("{}: `qkv_bias: true` is not supported for drafts", path.display())));
        }
        if ec.num_hidden_layers != 1 {
            return Err(EdaError::InvalidConfig(format!(
                "{}: EAGLE drafts have 1 layer, found num_hidden_layers = {}",
                path.display(),
                ec.num_hidden_layers
            )));
        }
        let heads = ec.num_attention_heads;
        let cfg = EdaDraftConfig {
            vocab_size: ec.vocab_size,
            hidden_size: ec.hidden_size,
            intermediate_size: ec.intermediate_size,
            private_intermediate_size,
            num_attention_heads: heads,
            num_key_value_heads: ec.num_key_value_heads.unwrap_or(heads),
            head_dim: ec.head_dim.unwrap_or(ec.hidden_size.checked_div(heads).unwrap_or(0)),
            rms_norm_eps: ec.rms_norm_eps,
            rope_theta: ec.rope_theta,
            max_position_embeddings: ec.max_position_embeddings,
            num_shared_experts: 1,
            num_private_experts: usize::from(private_intermediate_size > 0),
            top_k_shared: 1,
            top_k_private: usize::from(private_intermediate_size > 0),
            draft_vocab_size: None,
        };
        cfg.validate()?;
        check_matrix("embedding", &embedding, &cfg)?;
        check_matrix("LM head", &lm_head, &cfg)?;
        let store = Store::open(dir)?;
        let h = cfg.hidden_size;
        let fc = if ec.bias || store.contains("fc.bias") {
            store.linear("fc", 2 * h, h, true, device)?
        } else {
            let w = store.get("fc.weight", [h, 2 * h], device)?;
            linear_from_hf(w, Some(Tensor::zeros([h], device)))
        };
        let attn = store.attention(&cfg, device)?;
        let norm = RmsNorm::from_weight(store.get("layers.0.post_attention_layernorm.weight", [h], device)?, cfg.rms_norm_eps);
        let mlp = store.mlp("layers.0.mlp", h, cfg.intermediate_size, device)?;
        let router = init::linear(h, 1, false, &mut init::rng(seed, init::STREAM_SHARED), device);
        let shared = ExpertGroup { router, experts: vec![mlp], top_k: 1 };
        let private = (private_intermediate_size > 0)
            .then(|| ExpertGroup::init(h, private_intermediate_size, 1, 1, &mut init::rng(seed, init::STREAM_PRIVATE), device));
        Self::assemble(&cfg, embedding, lm_head, fc, attn, norm, SpMoe { shared, private }, device)
    }
}
