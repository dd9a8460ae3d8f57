//! [`Target`]: a [`CausalLm`] with per-layer KV caches, implementing [`TargetModel`].

use std::path::Path;

use burn::tensor::{Device, Int, Tensor, TensorData};

use eda_core::generate::generate_batch_with;
use eda_core::{AttentionMask, EdaError, GenerationConfig, GenerationOutput, ModelInfo, Result, TargetModel, TargetOutput, TokenId};

use crate::batch::{packed_hidden, split_rows, BatchSession};
use crate::config::ModelConfig;
use crate::fast::{FastTarget, NO_FAST_DECODE_ENV};
use crate::gemv::{is_host_device, HOST_ROWS};
use crate::layers::{validate_keep, KvCache};
use crate::model::CausalLm;

/// A target LLM ready for prefill, KV-cache decoding and tree verification.
///
/// ```
/// use eda_core::TargetModel;
/// use eda_models::{CausalLm, ModelConfig, Target};
/// let device = eda_core::backend::device_from_name("cpu").unwrap();
/// let cfg = ModelConfig::llama(32, 16, 32, 1, 2, 1, 64);
/// let mut t = Target::new(CausalLm::new(&cfg, &device), "random".into());
/// let out = t.forward(&[1, 2, 3]).unwrap();
/// assert_eq!(out.logits.dims(), [3, 32]);
/// assert_eq!(t.cache_len(), 3);
/// ```
#[derive(Debug)]
pub struct Target {
    lm: CausalLm,
    caches: Vec<KvCache>,
    /// LM head as a contiguous `[hidden, vocab]` matrix (a materialised transpose of the
    /// embedding when tied: multiplying by a transposed view is much slower on the CPU).
    head: Tensor<2>,
    /// CPU decoding path for passes of at most [`HOST_ROWS`] new tokens (`None`: not the CPU,
    /// disabled, or its host copy could not be made); see [`fast_decode`](Self::fast_decode).
    fast: Option<FastTarget>,
    info: ModelInfo,
    device: Device,
}

impl Target {
    /// Wraps an in-memory model; `identity` is recorded in [`ModelInfo::identity`]. LoRA
    /// adapters, if any, are merged first (the host decoding path reads plain weights).
    pub fn new(lm: CausalLm, identity: String) -> Self {
        let lm = lm.merge_lora();
        let cfg = lm.config().clone();
        let device = lm.embed_tokens.weight.val().device();
        let info = ModelInfo {
            model_type: cfg.model_type.to_string(),
            vocab_size: cfg.vocab_size,
            hidden_size: cfg.hidden_size,
            max_position_embeddings: cfg.max_position_embeddings,
            eos_token_ids: cfg.eos_token_ids.clone(),
            identity,
        };
        let head = match &lm.lm_head {
            Some(h) => h.weight.val(),
            None => Tensor::from_data(lm.embed_tokens.weight.val().transpose().into_data(), &device),
        };
        let fast = if std::env::var_os(NO_FAST_DECODE_ENV).is_some() { None } else { build_fast(&lm, &device) };
        Target { caches: (0..cfg.num_hidden_layers).map(|_| KvCache::new()).collect(), lm, head, fast, info, device }
    }

    /// Loads a HF checkpoint directory (`config.json` + `model.safetensors` or a sharded index)
    /// onto `device`. The identity is the SHA-256 of `config.json` and the weight files.
    pub fn from_pretrained(dir: &Path, device: &Device) -> Result<Self> {
        let (_, lm, identity) = crate::loader::load_pretrained(dir, device)?;
        Ok(Self::new(lm, identity))
    }

    /// The underlying model.
    pub fn model(&self) -> &CausalLm {
        &self.lm
    }

    /// The model's configuration.
    pub fn config(&self) -> &ModelConfig {
        self.lm.config()
    }

    /// Gives the model back (the caches are dropped).
    pub fn into_model(self) -> CausalLm {
        self.lm
    }

    /// The per-layer caches (read-only).
    pub fn caches(&self) -> &[KvCache] {
        &self.caches
    }

    /// Whether forward passes of at most [`HOST_ROWS`] new tokens (decoding, chain and small
    /// tree verification) take the host decoding path: weights multiplied by the streaming
    /// kernel of [`crate::gemv`] instead of burn's GEMM, which packs every weight for every
    /// product. On by default on the CPU (NdArray) device unless the environment variable
    /// `EDA_NO_FAST_DECODE` is set when the target is built; never on other devices. Both paths
    /// give the same results up to float rounding and share the KV cache. The cost is one host
    /// copy of the weights (≈ the model's f32 size).
    pub fn fast_decode(&self) -> bool {
        self.fast.is_some()
    }

    /// Turns the host decoding path on or off and returns whether it is now on. Turning it off
    /// frees its host copy of the weights; turning it on builds that copy, and leaves it off on
    /// a non-CPU device or when the weights cannot be read back.
    ///
    /// ```
    /// use eda_models::{CausalLm, ModelConfig, Target};
    /// let device = eda_core::backend::device_from_name("cpu").unwrap();
    /// let mut t = Target::new(CausalLm::new(&ModelConfig::llama(32, 16, 32, 1, 2, 1, 64), &device), "random".into());
    /// assert!(!t.set_fast_decode(false));
    /// assert!(!t.fast_decode());
    /// assert!(t.set_fast_decode(true));
    /// ```
    pub fn set_fast_decode(&mut self, enabled: bool) -> bool {
        if !enabled {
            self.fast = None;
        } else if self.fast.is_none() {
            self.fast = build_fast(&self.lm, &self.device);
        }
        self.fast.is_some()
    }

    /// A batched decoding session (per-sequence caches, independent of this target's own
    /// cache); see [`BatchSession`].
    pub fn batch_session(&self) -> BatchSession<'_> {
        BatchSession::new(&self.lm, &self.head, self.device.clone())
    }
}

/// The host decoding path for `lm` on `device`, when that is the CPU; a failed readback only
/// loses the fast path.
fn build_fast(lm: &CausalLm, device: &Device) -> Option<FastTarget> {
    if !is_host_device(device) {
        return None;
    }
    match FastTarget::new(lm) {
        Ok(f) => {
            tracing::debug!("host decoding path: {:.0} MB of f32 weights", f.host_floats() as f64 * 4e-6);
            Some(f)
        }
        Err(e) => {
            tracing::warn!("host decoding path unavailable, every pass uses burn: {e}");
            None
        }
    }
}

impl TargetModel for Target {
    fn info(&self) -> &ModelInfo {
        &self.info
    }

    fn device(&self) -> Device {
        self.device.clone()
    }

    fn cache_len(&self) -> usize {
        self.caches.first().map(KvCache::len).unwrap_or(0)
    }

    fn reset_cache(&mut self) {
        self.caches.iter_mut().for_each(KvCache::reset);
    }

    fn truncate_cache(&mut self, len: usize) -> Result<()> {
        let cur = self.cache_len();
        if len > cur {
            return Err(EdaError::InvalidArgument(format!("cannot truncate a cache of {cur} positions to {len}")));
        }
        self.caches.iter_mut().try_for_each(|c| c.truncate(len))
    }

    fn retain_cache(&mut self, keep: &[usize]) -> Result<()> {
        validate_keep(keep, self.cache_len())?;
        self.caches.iter_mut().try_for_each(|c| c.retain(keep))
    }

    fn forward_masked(&mut self, tokens: &[TokenId], positions: &[usize], mask: &AttentionMask) -> Result<TargetOutput> {
        let n = tokens.len();
        let past = self.cache_len();
        if n == 0 {
            return Err(EdaError::InvalidArgument("forward needs at least one token".into()));
        }
        if positions.len() != n {
            return Err(EdaError::mismatch("positions (one per token)", n, positions.len()));
        }
        if mask.past() != past {
            return Err(EdaError::InvalidArgument(format!("mask covers {} cached positions but the cache holds {past}", mask.past())));
        }
        if mask.new_len() != n {
            return Err(EdaError::mismatch("attention mask rows (one per token)", n, mask.new_len()));
        }
        let cfg = self.lm.config();
        let max = cfg.max_position_embeddings;
        if let Some(&p) = positions.iter().max() {
            if p >= max {
                return Err(EdaError::SequenceTooLong { len: p + 1, max });
            }
        }
        if let Some(&t) = tokens.iter().find(|&&t| t as usize >= cfg.vocab_size) {
            return Err(EdaError::InvalidArgument(format!("token id {t} is outside the vocabulary of {}", cfg.vocab_size)));
        }
        let (vocab, hidden_size) = (cfg.vocab_size, cfg.hidden_size);
        let bias = if mask.is_causal() {
            None
        } else {
            Some(Tensor::<2>::from_data(TensorData::new(mask.to_bias(), [n, past + n]), &self.device))
        };
        if n <= HOST_ROWS {
            if let Some(fast) = &self.fast {
                let (logits, hidden) = fast.forward(&self.lm, tokens, positions, &mut self.caches, bias, &self.device)?;
                return Ok(TargetOutput { logits, hidden });
            }
        }
        let ids: Vec<i64> = tokens.iter().map(|&t| t as i64).collect();
        let ids = Tensor::<2, Int>::from_data(TensorData::new(ids, [1, n]), &self.device);
        let x = self.lm.embed(ids);
        let hidden = self.lm.forward_hidden(x, positions, Some(&mut self.caches), bias);
        let logits = hidden.clone().matmul(self.head.clone().unsqueeze::<3>());
        Ok(TargetOutput { logits: logits.reshape([n, vocab]), hidden: hidden.reshape([n, hidden_size]) })
    }

    /// Native batching: one packed forward over all sequences (see [`crate::batch`]); at most
    /// [`MAX_BATCH_SIZE`](crate::batch::MAX_BATCH_SIZE) sequences, and the `[N, vocab]` logits of
    /// all `N` tokens are materialised (use [`hidden_batch`](TargetModel::hidden_batch) for
    /// features only).
    fn forward_batch(&mut self, seqs: &[Vec<TokenId>]) -> Result<Vec<TargetOutput>> {
        self.reset_cache();
        let (hidden, lens) = packed_hidden(&self.lm, seqs, &self.device)?;
        let logits = hidden.clone().matmul(self.head.clone().unsqueeze::<3>());
        Ok(split_rows(logits, &lens)
            .into_iter()
            .zip(split_rows(hidden, &lens))
            .map(|(logits, hidden)| TargetOutput { logits, hidden })
            .collect())
    }

    /// Native batching without the LM head.
    fn hidden_batch(&mut self, seqs: &[Vec<TokenId>]) -> Result<Vec<Tensor<2>>> {
        self.reset_cache();
        let (hidden, lens) = packed_hidden(&self.lm, seqs, &self.device)?;
        Ok(split_rows(hidden, &lens))
    }

    /// Native batching through a [`BatchSession`]; the target's own cache is reset.
    fn generate_batch(&mut self, prompts: &[Vec<TokenId>], cfgs: &[GenerationConfig]) -> Result<Vec<GenerationOutput>> {
        self.reset_cache();
        let max = self.info.max_position_embeddings;
        generate_batch_with(&mut self.batch_session(), max, prompts, cfgs)
    }

    fn embedding_weight(&self) -> Tensor<2> {
        self.lm.embed_tokens.weight.val()
    }

    fn lm_head_weight(&self) -> Tensor<2> {
        self.lm.lm_head_weight()
    }
}
