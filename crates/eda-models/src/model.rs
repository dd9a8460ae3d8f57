//! The decoder-only causal LM shared by Qwen2 and Llama.

use std::collections::BTreeMap;

use burn::module::{Module, Param};
use burn::nn::{Embedding, Initializer, Linear};
use burn::tensor::{Device, Int, Tensor};

use eda_core::safetensors::HostTensor;
use eda_core::{EdaError, Result};

use crate::config::ModelConfig;
use crate::layers::{Attention, KvCache, Mlp, RmsNorm, RotaryEmbedding, INIT_STD};

/// One pre-norm decoder block: `x + attn(norm(x))`, then `x + mlp(norm(x))`.
#[derive(Module, Debug)]
pub struct DecoderLayer {
    /// Norm before attention (HF `input_layernorm`).
    pub input_layernorm: RmsNorm,
    /// Self-attention (HF `self_attn`).
    pub self_attn: Attention,
    /// Norm before the MLP (HF `post_attention_layernorm`).
    pub post_attention_layernorm: RmsNorm,
    /// SwiGLU MLP (HF `mlp`).
    pub mlp: Mlp,
}

impl DecoderLayer {
    /// Randomly initialised block for `cfg`.
    pub fn new(cfg: &ModelConfig, device: &Device) -> Self {
        DecoderLayer {
            input_layernorm: RmsNorm::new(cfg.hidden_size, cfg.rms_norm_eps, device),
            self_attn: Attention::new(&cfg.attention_config(), device),
            post_attention_layernorm: RmsNorm::new(cfg.hidden_size, cfg.rms_norm_eps, device),
            mlp: Mlp::new(cfg.hidden_size, cfg.intermediate_size, device),
        }
    }

    /// Applies the block to `x` (`[B, T, hidden]`); see [`Attention::forward`] for the rest.
    pub fn forward(
        &self,
        x: Tensor<3>,
        rope: &RotaryEmbedding,
        positions: &[usize],
        cache: Option<&mut KvCache>,
        mask_bias: Option<Tensor<2>>,
    ) -> Tensor<3> {
        let h = self.self_attn.forward(self.input_layernorm.forward(x.clone()), rope, positions, cache, mask_bias);
        let x = x + h;
        let h = self.mlp.forward(self.post_attention_layernorm.forward(x.clone()));
        x + h
    }

    /// Applies the block to a packed batch of sequences; see [`Attention::forward_varlen`].
    pub fn forward_varlen(
        &self,
        x: Tensor<3>,
        rope: &RotaryEmbedding,
        lens: &[usize],
        caches: Option<&mut [KvCache]>,
        biases: &[Option<Tensor<2>>],
    ) -> Tensor<3> {
        let h = self.self_attn.forward_varlen(self.input_layernorm.forward(x.clone()), rope, lens, caches, biases);
        let x = x + h;
        let h = self.mlp.forward(self.post_attention_layernorm.forward(x.clone()));
        x + h
    }
}

/// A Qwen2/Llama causal language model (HF `*ForCausalLM`).
///
/// ```
/// use burn::tensor::{Int, Tensor, TensorData};
/// use eda_models::{CausalLm, ModelConfig};
/// let device = eda_core::backend::device_from_name("cpu").unwrap();
/// let cfg = ModelConfig::qwen2(32, 16, 32, 1, 2, 1, 64);
/// let lm = CausalLm::new(&cfg, &device);
/// let tokens = Tensor::<2, Int>::from_data(TensorData::new(vec![1i64, 2, 3], [1, 3]), &device);
/// let (logits, hidden) = lm.forward_train(tokens);
/// assert_eq!(logits.dims(), [1, 3, 32]);
/// assert_eq!(hidden.dims(), [1, 3, 16]);
/// ```
#[derive(Module, Debug)]
pub struct CausalLm {
    /// Token embedding, `[vocab, hidden]` (HF `model.embed_tokens`).
    pub embed_tokens: Embedding,
    /// Decoder blocks (HF `model.layers`).
    pub layers: Vec<DecoderLayer>,
    /// Final norm (HF `model.norm`).
    pub norm: RmsNorm,
    /// LM head (HF `lm_head`); `None` when tied to the embedding.
    pub lm_head: Option<Linear>,
    /// Rotary tables (constants).
    pub rope: RotaryEmbedding,
    /// The architecture this model was built for.
    #[module(skip)]
    pub config: ModelConfig,
}

impl CausalLm {
    /// A randomly initialised model (normal, std [`INIT_STD`]; unit norms; zero biases).
    pub fn new(cfg: &ModelConfig, device: &Device) -> Self {
        let init = Initializer::Normal { mean: 0.0, std: INIT_STD };
        let embed_tokens = Embedding { weight: init.init([cfg.vocab_size, cfg.hidden_size], device) };
        let lm_head =
            (!cfg.tie_word_embeddings).then(|| Linear { weight: init.init([cfg.hidden_size, cfg.vocab_size], device), bias: None });
        CausalLm {
            embed_tokens,
            layers: (0..cfg.num_hidden_layers).map(|_| DecoderLayer::new(cfg, device)).collect(),
            norm: RmsNorm::new(cfg.hidden_size, cfg.rms_norm_eps, device),
            lm_head,
            rope: rope_for(cfg, device),
            config: cfg.clone(),
        }
    }

    /// The architecture of this model.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// Embeds `[B, T]` token ids into `[B, T, hidden]`.
    pub fn embed(&self, tokens: Tensor<2, Int>) -> Tensor<3> {
        self.embed_tokens.forward(tokens)
    }

    /// LM-head logits for final-norm hidden states `[..., hidden]`.
    pub fn logits<const D: usize>(&self, hidden: Tensor<D>) -> Tensor<D> {
        match &self.lm_head {
            Some(head) => head.forward(hidden),
            None => hidden.matmul(self.embed_tokens.weight.val().transpose().unsqueeze()),
        }
    }

    /// Runs the decoder stack on embeddings `x` (`[B, T, hidden]`) and returns the final-norm
    /// hidden states. `caches` (one per layer) are appended in place when given.
    ///
    /// # Panics
    /// On inconsistent shapes or when `caches` has the wrong length.
    pub fn forward_hidden(
        &self,
        x: Tensor<3>,
        positions: &[usize],
        mut caches: Option<&mut [KvCache]>,
        mask_bias: Option<Tensor<2>>,
    ) -> Tensor<3> {
        if let Some(c) = caches.as_deref() {
            assert_eq!(c.len(), self.layers.len(), "one KV cache per layer");
        }
        // Build the causal bias once for all layers (decode of one token needs none).
        let [_, t, _] = x.dims();
        let mask_bias = match mask_bias {
            None if t > 1 => {
                let past = caches.as_deref().and_then(|c| c.first()).map(KvCache::len).unwrap_or(0);
                Some(crate::layers::causal_bias(past, t, &x.device()))
            }
            m => m,
        };
        let mut x = x;
        for (i, layer) in self.layers.iter().enumerate() {
            let cache = caches.as_deref_mut().map(|c| &mut c[i]);
            x = layer.forward(x, &self.rope, positions, cache, mask_bias.clone());
        }
        self.norm.forward(x)
    }

    /// Runs the decoder stack on a *packed* batch of independent sequences and returns the
    /// final-norm hidden states `[1, N, hidden]`: `x` is `[1, N, hidden]`, the embeddings of
    /// `lens[0]` tokens of sequence 0, then `lens[1]` of sequence 1, and so on. With `caches`
    /// (indexed `[layer][sequence]`), sequence `i` continues its own caches, which are appended
    /// in place; without, every sequence starts at position 0. Each sequence attends causally
    /// to itself only, so its rows equal a batch-1 [`forward_hidden`](Self::forward_hidden) of
    /// that sequence (see [`Attention::forward_varlen`]).
    ///
    /// # Panics
    /// On inconsistent shapes, or when `caches` does not hold one cache per layer and sequence.
    pub fn forward_hidden_varlen(&self, x: Tensor<3>, lens: &[usize], mut caches: Option<&mut [Vec<KvCache>]>) -> Tensor<3> {
        let pasts: Vec<usize> = match caches.as_deref() {
            Some(c) => {
                assert_eq!(c.len(), self.layers.len(), "one set of KV caches per layer");
                assert!(c.iter().all(|l| l.len() == lens.len()), "one KV cache per sequence in every layer");
                c.first().map(|l| l.iter().map(KvCache::len).collect()).unwrap_or_else(|| vec![0; lens.len()])
            }
            None => vec![0; lens.len()],
        };
        // Build the causal biases once for all layers, as `forward_hidden` does.
        let biases = crate::layers::varlen_biases(&pasts, lens, &x.device());
        let mut x = x;
        for (i, layer) in self.layers.iter().enumerate() {
            let cache = caches.as_deref_mut().map(|c| c[i].as_mut_slice());
            x = layer.forward_varlen(x, &self.rope, lens, cache, &biases);
        }
        self.norm.forward(x)
    }

    /// Causal forward of a `[B, T]` batch without a cache (training): returns logits
    /// `[B, T, vocab]` and final-norm hidden states `[B, T, hidden]` (HF `hidden_states[-1]`).
    ///
    /// # Panics
    /// If `T` exceeds `max_position_embeddings`.
    pub fn forward_train(&self, tokens: Tensor<2, Int>) -> (Tensor<3>, Tensor<3>) {
        let [_, t] = tokens.dims();
        let positions: Vec<usize> = (0..t).collect();
        let hidden = self.forward_hidden(self.embed(tokens), &positions, None, None);
        (self.logits(hidden.clone()), hidden)
    }

    /// The LM head as a HF-layout `[vocab, hidden]` matrix (the embedding when tied).
    pub fn lm_head_weight(&self) -> Tensor<2> {
        match &self.lm_head {
            Some(h) => h.weight.val().transpose(),
            None => self.embed_tokens.weight.val(),
        }
    }

    /// Every tensor under its HF name with its HF layout (`[out, in]` for linear weights);
    /// vectors (norm weights, biases) are returned as `[1, n]` rows.
    pub fn hf_tensors(&self) -> Vec<(String, Tensor<2>)> {
        fn vec1(t: Tensor<1>) -> Tensor<2> {
            t.unsqueeze()
        }
        let mut out: Vec<(String, Tensor<2>)> = vec![("model.embed_tokens.weight".into(), self.embed_tokens.weight.val())];
        for (i, l) in self.layers.iter().enumerate() {
            let p = format!("model.layers.{i}");
            out.push((format!("{p}.input_layernorm.weight"), vec1(l.input_layernorm.weight.val())));
            out.push((format!("{p}.post_attention_layernorm.weight"), vec1(l.post_attention_layernorm.weight.val())));
            for (name, lin) in [
                ("self_attn.q_proj", &l.self_attn.q_proj),
                ("self_attn.k_proj", &l.self_attn.k_proj),
                ("self_attn.v_proj", &l.self_attn.v_proj),
                ("self_attn.o_proj", &l.self_attn.o_proj),
                ("mlp.gate_proj", &l.mlp.gate_proj),
                ("mlp.up_proj", &l.mlp.up_proj),
                ("mlp.down_proj", &l.mlp.down_proj),
            ] {
                let (w, b) = crate::layers::linear_to_hf(lin);
                out.push((format!("{p}.{name}.weight"), w));
                if let Some(b) = b {
                    out.push((format!("{p}.{name}.bias"), vec1(b)));
                }
            }
        }
        out.push(("model.norm.weight".into(), vec1(self.norm.weight.val())));
        if let Some(h) = &self.lm_head {
            out.push(("lm_head.weight".into(), h.weight.val().transpose()));
        }
        out
    }

    /// Writes `config.json` and `model.safetensors` (f32, HF tensor names) into `dir`, atomically.
    /// The result loads with [`Target::from_pretrained`](crate::Target::from_pretrained) and with
    /// HF `AutoModelForCausalLM.from_pretrained`.
    ///
    /// `cfg` must describe this model (same shapes); it is what gets written to `config.json`.
    /// A model with LoRA adapters must be merged first ([`merge_lora`](Self::merge_lora)).
    pub fn save_pretrained(&self, cfg: &ModelConfig, dir: &std::path::Path) -> Result<()> {
        cfg.validate()?;
        if self.lora_params() > 0 {
            // The HF layout has no place for them: saving would silently drop the fine-tuning.
            return Err(EdaError::InvalidArgument("the model has unmerged LoRA adapters; call merge_lora before save_pretrained".into()));
        }
        let mine = &self.config;
        for (what, a, b) in [
            ("vocab_size", mine.vocab_size, cfg.vocab_size),
            ("hidden_size", mine.hidden_size, cfg.hidden_size),
            ("intermediate_size", mine.intermediate_size, cfg.intermediate_size),
            ("num_hidden_layers", mine.num_hidden_layers, cfg.num_hidden_layers),
            ("num_attention_heads", mine.num_attention_heads, cfg.num_attention_heads),
            ("num_key_value_heads", mine.num_key_value_heads, cfg.num_key_value_heads),
            ("head_dim", mine.head_dim, cfg.head_dim),
        ] {
            if a != b {
                return Err(EdaError::mismatch(format!("{what} (model vs config to save)"), a, b));
            }
        }
        if mine.tie_word_embeddings != cfg.tie_word_embeddings || mine.attention_bias != cfg.attention_bias {
            return Err(EdaError::InvalidConfig(
                "tie_word_embeddings/attention_bias differ between the model and the config to save".into(),
            ));
        }
        let mut cfg = cfg.clone();
        cfg.torch_dtype = Some("float32".into());
        let tensors = self.hf_tensors();
        let mut host = Vec::with_capacity(tensors.len());
        for (name, t) in tensors {
            let squeeze = name.ends_with("norm.weight") || name.ends_with(".bias");
            let dims = t.dims();
            let shape = if squeeze { vec![dims[1]] } else { dims.to_vec() };
            host.push(HostTensor::from_values(name, shape, &eda_core::backend::to_vec_f32(t)?));
        }
        let meta = BTreeMap::from([("format".to_string(), "pt".to_string())]);
        eda_core::safetensors::write(&dir.join("model.safetensors"), &host, &meta)?;
        cfg.save(&dir.join("config.json"))
    }
}

/// The rotary tables for `cfg` (with its rope scaling).
pub fn rope_for(cfg: &ModelConfig, device: &Device) -> RotaryEmbedding {
    RotaryEmbedding::from_inv_freq(&cfg.inv_freq(), cfg.head_dim, cfg.max_position_embeddings, device)
}

/// Wraps a tensor as a trainable parameter.
pub(crate) fn param<const D: usize>(t: Tensor<D>) -> Param<Tensor<D>> {
    Param::from_tensor(t)
}
