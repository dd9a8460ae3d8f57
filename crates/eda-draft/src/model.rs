//! [`EdaDraft`]: the EAGLE-1 style draft layer with an SP-MoE FFN.

use std::sync::Arc;

use burn::module::{Module, Param};
use burn::nn::Linear;
use burn::tensor::{Device, Int, Tensor, TensorData};

use eda_core::{EdaError, Result, TokenId};
use eda_models::layers::{Attention, RmsNorm, RotaryEmbedding};

use crate::config::EdaDraftConfig;
use crate::init;
use crate::moe::{load_balancing_loss, ExpertGroup, SpMoe};

/// Output of [`EdaDraft::forward_train`].
#[derive(Debug, Clone)]
pub struct DraftForward {
    /// Predicted next features `ĥ_{t+1}`, `[B, T, hidden]`.
    pub hidden: Tensor<3>,
    /// Load-balancing loss of the shared router over all `B·T` tokens, shape `[1]`.
    pub aux_loss_shared: Tensor<1>,
    /// Load-balancing loss of the private router, shape `[1]` (0 without a private group).
    pub aux_loss_private: Tensor<1>,
}

/// Which parameter groups are frozen (no gradient). Embedding and LM head are always frozen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FreezePlan {
    /// Freeze the input projection `fc`.
    pub fc: bool,
    /// Freeze self-attention and the post-attention RMSNorm.
    pub attention: bool,
    /// Freeze the shared experts and the shared router.
    pub shared_experts: bool,
}

impl FreezePlan {
    /// Nothing frozen besides embedding and LM head (stage 1).
    pub const NONE: FreezePlan = FreezePlan { fc: false, attention: false, shared_experts: false };
    /// The whole shared group frozen: fc, attention, norm, shared experts and router
    /// ([`EdaDraft::freeze_shared`]); only the private group trains.
    pub const SHARED: FreezePlan = FreezePlan { fc: true, attention: true, shared_experts: true };
    /// What the reference stage-2 script freezes (`--freeze_attention`, shared experts): `fc`
    /// stays trainable (docs/method.md §2.5).
    pub const REFERENCE_STAGE2: FreezePlan = FreezePlan { fc: false, attention: true, shared_experts: true };
}

/// Parameter counts (scalars) of a draft, by group.
///
/// ```
/// use eda_draft::{EdaDraftConfig, FreezePlan, ParamCounts};
/// // Qwen2.5-7B sizes of docs/method.md §2.4: 462,436,352 draft parameters without the embedding.
/// let mut cfg = EdaDraftConfig::tiny(152064, 3584);
/// cfg.intermediate_size = 18944; cfg.private_intermediate_size = 18944;
/// cfg.num_attention_heads = 28; cfg.num_key_value_heads = 4; cfg.head_dim = 128;
/// let c = ParamCounts::for_config(&cfg, FreezePlan::REFERENCE_STAGE2);
/// assert_eq!(c.draft(), 462_436_352);
/// assert_eq!(c.trainable, 229_383_168);
/// assert_eq!(c.embedding, 544_997_376);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ParamCounts {
    /// Shared group: fc (weight + bias), attention, post-attention norm, shared experts and
    /// shared router.
    pub shared: usize,
    /// Private group: private experts and private router.
    pub private: usize,
    /// Frozen copies of the target's embedding and LM head.
    pub frozen: usize,
    /// The embedding alone (part of `frozen`).
    pub embedding: usize,
    /// Parameters that currently receive gradients.
    pub trainable: usize,
}

impl ParamCounts {
    /// Counts for `cfg` with the given freezing, without building the model.
    pub fn for_config(cfg: &EdaDraftConfig, plan: FreezePlan) -> Self {
        let h = cfg.hidden_size;
        let fc = 2 * h * h + h;
        let attn = h * cfg.num_attention_heads * cfg.head_dim * 2 + h * cfg.num_key_value_heads * cfg.head_dim * 2;
        let norm = h;
        let shared_experts = cfg.num_shared_experts * (3 * h * cfg.intermediate_size + h);
        let private = cfg.num_private_experts * (3 * h * cfg.private_intermediate_size + h);
        let embedding = cfg.vocab_size * h;
        let mut trainable = private;
        if !plan.fc {
            trainable += fc;
        }
        if !plan.attention {
            trainable += attn + norm;
        }
        if !plan.shared_experts {
            trainable += shared_experts;
        }
        ParamCounts { shared: fc + attn + norm + shared_experts, private, frozen: 2 * embedding, embedding, trainable }
    }

    /// Draft parameters without embedding and LM head (`shared + private`).
    pub fn draft(&self) -> usize {
        self.shared + self.private
    }

    /// Every parameter including the frozen embedding and LM head.
    pub fn total(&self) -> usize {
        self.shared + self.private + self.frozen
    }

    /// Trainable fraction of the draft without embedding and LM head.
    pub fn trainable_ratio(&self) -> f64 {
        self.trainable as f64 / self.draft().max(1) as f64
    }

    /// Trainable fraction of the draft including its frozen embedding (the reference script's
    /// printout; docs/method.md §2.4 "ratio incl. emb").
    pub fn trainable_ratio_with_embedding(&self) -> f64 {
        self.trainable as f64 / (self.draft() + self.embedding).max(1) as f64
    }
}

/// The EDA draft: `x = fc(cat[embed(x_{t+1}), h_t])`, one decoder layer without input norm
/// (EAGLE-1 layer 0), self-attention with RoPE and residual, post-attention RMSNorm, SP-MoE FFN
/// with residual. The output predicts the next target feature `h_{t+1}`; logits come from the
/// target's frozen LM head applied directly ([`logits`](Self::logits)).
///
/// The embedding and LM head are frozen copies of the target's (`[vocab, hidden]`) and are not
/// saved with the draft.
///
/// With a reduced draft vocabulary ([`with_draft_vocab`](Self::with_draft_vocab), EAGLE-3
/// style) the logits cover only `K` target tokens: the head is the `K` rows of the target's LM
/// head named by the `d2t` mapping (saved with the checkpoint), which makes both the drafting
/// step and the training loss cheaper. The embedding stays full-vocabulary because the draft
/// reads target tokens.
///
/// ```
/// use burn::tensor::{Int, Tensor, TensorData};
/// use eda_draft::{EdaDraft, EdaDraftConfig};
/// let d = eda_core::backend::device_from_name("cpu").unwrap();
/// let cfg = EdaDraftConfig::tiny(32, 16);
/// let emb = Tensor::<2>::random([32, 16], burn::tensor::Distribution::Normal(0.0, 1.0), &d);
/// let draft = EdaDraft::new(&cfg, emb.clone(), emb, &d).unwrap();
/// let tokens = Tensor::<2, Int>::from_data(TensorData::new(vec![1i64, 2, 3], [1, 3]), &d);
/// let out = draft.forward_train(tokens, Tensor::<3>::zeros([1, 3, 16], &d));
/// assert_eq!(draft.logits(out.hidden).dims(), [1, 3, 32]);
/// ```
#[derive(Module, Debug)]
pub struct EdaDraft {
    /// Frozen token embedding `[vocab, hidden]`.
    pub(crate) embedding: Param<Tensor<2>>,
    /// Frozen LM head `[vocab, hidden]`.
    pub(crate) lm_head: Param<Tensor<2>>,
    /// Frozen rows `d2t` of `lm_head`, `[K, hidden]`, for a reduced draft vocabulary
    /// (materialised once so that neither training nor decoding gathers them per step).
    pub(crate) draft_head: Option<Param<Tensor<2>>>,
    /// Input projection `2·hidden -> hidden` with bias.
    pub(crate) fc: Linear,
    /// Self-attention (no q/k/v bias).
    pub(crate) self_attn: Attention,
    /// Post-attention RMSNorm.
    pub(crate) post_attention_layernorm: RmsNorm,
    /// SP-MoE FFN.
    pub(crate) moe: SpMoe,
    /// Rotary tables (constants).
    pub(crate) rope: RotaryEmbedding,
    /// Shape.
    #[module(skip)]
    pub(crate) config: EdaDraftConfig,
    /// Current freezing.
    #[module(skip)]
    pub(crate) frozen: FreezePlan,
    /// Reduced vocabulary: target token id of each draft logit column (`d2t`).
    #[module(skip)]
    pub(crate) draft_vocab: Option<Arc<[TokenId]>>,
}

fn frozen_param(t: Tensor<2>, device: &Device) -> Param<Tensor<2>> {
    Param::from_tensor(t.to_device(device).detach()).set_require_grad(false)
}

pub(crate) fn check_matrix(what: &str, t: &Tensor<2>, cfg: &EdaDraftConfig) -> Result<()> {
    let [v, h] = t.dims();
    if h != cfg.hidden_size {
        return Err(EdaError::mismatch(format!("hidden size ({what} vs draft config)"), cfg.hidden_size, h));
    }
    if v != cfg.vocab_size {
        return Err(EdaError::mismatch(format!("vocabulary size ({what} vs draft config)"), cfg.vocab_size, v));
    }
    Ok(())
}

/// Checks a draft-vocabulary mapping: non-empty, every id below `vocab_size`, no id twice.
/// Returns the index of the first offending entry and what is wrong.
pub(crate) fn check_vocab_map(ids: &[TokenId], vocab_size: usize) -> std::result::Result<(), (usize, String)> {
    if ids.is_empty() {
        return Err((0, "the draft vocabulary mapping is empty".into()));
    }
    if ids.len() > vocab_size {
        return Err((vocab_size, format!("the draft vocabulary mapping has {} ids for a target vocabulary of {vocab_size}", ids.len())));
    }
    let mut seen = vec![false; vocab_size];
    for (i, &t) in ids.iter().enumerate() {
        let Some(slot) = seen.get_mut(t as usize) else {
            return Err((i, format!("draft token {i} maps to target id {t}, outside the target vocabulary of {vocab_size}")));
        };
        if *slot {
            return Err((
                i,
                format!("draft token {i} maps to target id {t}, which an earlier draft token already maps to (ids must be unique)"),
            ));
        }
        *slot = true;
    }
    Ok(())
}

impl EdaDraft {
    /// A freshly initialised draft (PyTorch default init, seed 0) around the target's
    /// `embedding` and `lm_head` (`[vocab, hidden]` each, frozen).
    ///
    /// Errors: [`EdaError::InvalidConfig`] for a bad config, [`EdaError::Mismatch`] when a matrix
    /// does not match the config's vocabulary or hidden size.
    pub fn new(cfg: &EdaDraftConfig, embedding: Tensor<2>, lm_head: Tensor<2>, device: &Device) -> Result<Self> {
        Self::new_seeded(cfg, embedding, lm_head, device, 0)
    }

    /// Like [`new`](Self::new) with an explicit seed (deterministic on every backend).
    ///
    /// A config with `draft_vocab_size` set is rejected ([`EdaError::InvalidConfig`]): build the
    /// full-vocabulary draft and call [`with_draft_vocab`](Self::with_draft_vocab) with the
    /// mapping.
    pub fn new_seeded(cfg: &EdaDraftConfig, embedding: Tensor<2>, lm_head: Tensor<2>, device: &Device, seed: u64) -> Result<Self> {
        cfg.validate()?;
        if let Some(k) = cfg.draft_vocab_size {
            return Err(EdaError::InvalidConfig(format!(
                "`draft_vocab_size: {k}` needs its token mapping: build the draft without it and call `with_draft_vocab(ids)`"
            )));
        }
        check_matrix("embedding", &embedding, cfg)?;
        check_matrix("LM head", &lm_head, cfg)?;
        let h = cfg.hidden_size;
        let fc = init::linear(2 * h, h, true, &mut init::rng(seed, init::STREAM_FC), device);
        let mut r = init::rng(seed, init::STREAM_ATTN);
        let (nh, nkv, hd) = (cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim);
        let self_attn = Attention {
            q_proj: init::linear(h, nh * hd, false, &mut r, device),
            k_proj: init::linear(h, nkv * hd, false, &mut r, device),
            v_proj: init::linear(h, nkv * hd, false, &mut r, device),
            o_proj: init::linear(nh * hd, h, false, &mut r, device),
            lora: None,
            num_heads: nh,
            num_kv_heads: nkv,
            head_dim: hd,
        };
        let shared = ExpertGroup::init(
            h,
            cfg.intermediate_size,
            cfg.num_shared_experts,
            cfg.top_k_shared,
            &mut init::rng(seed, init::STREAM_SHARED),
            device,
        );
        let private = Self::init_private(cfg, seed, device);
        Ok(EdaDraft {
            embedding: frozen_param(embedding, device),
            lm_head: frozen_param(lm_head, device),
            draft_head: None,
            fc,
            self_attn,
            post_attention_layernorm: RmsNorm::new(h, cfg.rms_norm_eps, device),
            moe: SpMoe { shared, private },
            rope: RotaryEmbedding::new(hd, cfg.rope_theta, cfg.max_position_embeddings, device),
            config: cfg.clone(),
            frozen: FreezePlan::NONE,
            draft_vocab: None,
        })
    }

    /// Restricts the draft's LM head to the target tokens `ids` (EAGLE-3's reduced draft
    /// vocabulary, `d2t`: draft logit column `j` is target token `ids[j]`), replacing any earlier
    /// restriction. Sets `config.draft_vocab_size = Some(ids.len())`. Typically `ids` are the
    /// most frequent target tokens of the training data plus the stop tokens
    /// (`eda_train::vocab::top_k_tokens`); the order is free, ascending is conventional.
    ///
    /// Errors: [`EdaError::InvalidArgument`] for an empty mapping, an id outside the target
    /// vocabulary or an id listed twice.
    ///
    /// ```
    /// use burn::tensor::{Distribution, Tensor};
    /// use eda_draft::{EdaDraft, EdaDraftConfig};
    /// let d = eda_core::backend::device_from_name("cpu").unwrap();
    /// let emb = Tensor::<2>::random([32, 16], Distribution::Normal(0.0, 1.0), &d);
    /// let draft = EdaDraft::new(&EdaDraftConfig::tiny(32, 16), emb.clone(), emb, &d).unwrap()
    ///     .with_draft_vocab(vec![0, 2, 5, 31]).unwrap();
    /// assert_eq!(draft.config().draft_vocab_size, Some(4));
    /// assert_eq!(draft.logits(Tensor::<2>::zeros([3, 16], &d)).dims(), [3, 4]);
    /// assert_eq!(draft.target_logits(Tensor::<2>::zeros([3, 16], &d)).dims(), [3, 32]);
    /// assert!(draft.clone().with_draft_vocab(vec![1, 1]).is_err());
    /// ```
    pub fn with_draft_vocab(mut self, ids: Vec<TokenId>) -> Result<Self> {
        check_vocab_map(&ids, self.config.vocab_size).map_err(|(_, m)| EdaError::InvalidArgument(m))?;
        let k = ids.len();
        let device = self.lm_head.val().device();
        let idx = Tensor::<1, Int>::from_data(TensorData::new(ids.iter().map(|&t| t as i64).collect::<Vec<_>>(), [k]), &device);
        self.draft_head = Some(frozen_param(self.lm_head.val().select(0, idx), &device));
        self.config.draft_vocab_size = Some(k);
        self.draft_vocab = Some(ids.into());
        Ok(self)
    }

    /// The reduced draft vocabulary (`d2t`: target token id of each logit column), `None` for a
    /// full-vocabulary draft.
    pub fn draft_vocab(&self) -> Option<&[TokenId]> {
        self.draft_vocab.as_deref()
    }

    /// The reduced draft vocabulary as a shared slice (what [`DraftSession`](crate::DraftSession)
    /// puts into [`eda_core::DraftOutput::token_ids`]).
    pub fn draft_vocab_arc(&self) -> Option<Arc<[TokenId]>> {
        self.draft_vocab.clone()
    }

    fn init_private(cfg: &EdaDraftConfig, seed: u64, device: &Device) -> Option<ExpertGroup> {
        (cfg.num_private_experts > 0).then(|| {
            ExpertGroup::init(
                cfg.hidden_size,
                cfg.private_intermediate_size,
                cfg.num_private_experts,
                cfg.top_k_private,
                &mut init::rng(seed, init::STREAM_PRIVATE),
                device,
            )
        })
    }

    /// The draft's shape.
    pub fn config(&self) -> &EdaDraftConfig {
        &self.config
    }

    /// Which groups are currently frozen.
    pub fn freeze_plan(&self) -> FreezePlan {
        self.frozen
    }

    /// Static facts for [`eda_core::DraftModel`] users.
    pub fn info(&self) -> eda_core::DraftInfo {
        eda_core::DraftInfo { vocab_size: self.config.vocab_size, hidden_size: self.config.hidden_size, uses_target_features: true }
    }

    /// Device of the draft's parameters.
    pub fn device(&self) -> Device {
        self.fc.weight.val().device()
    }

    /// The frozen embedding `[vocab, hidden]`.
    pub fn embedding(&self) -> Tensor<2> {
        self.embedding.val()
    }

    /// The frozen LM head `[vocab, hidden]`.
    pub fn lm_head(&self) -> Tensor<2> {
        self.lm_head.val()
    }

    /// The input projection.
    pub fn fc(&self) -> &Linear {
        &self.fc
    }

    /// The self-attention block.
    pub fn attention(&self) -> &Attention {
        &self.self_attn
    }

    /// The post-attention norm.
    pub fn post_attention_layernorm(&self) -> &RmsNorm {
        &self.post_attention_layernorm
    }

    /// The SP-MoE FFN.
    pub fn moe(&self) -> &SpMoe {
        &self.moe
    }

    /// Checks the inputs of [`forward_train`](Self::forward_train).
    pub fn check_train_inputs(&self, tokens: &Tensor<2, Int>, features: &Tensor<3>) -> Result<()> {
        let [b, t] = tokens.dims();
        let [fb, ft, fh] = features.dims();
        if fh != self.config.hidden_size {
            return Err(EdaError::mismatch("feature width (features vs draft hidden size)", self.config.hidden_size, fh));
        }
        if fb != b {
            return Err(EdaError::mismatch("batch size (features vs tokens)", b, fb));
        }
        if ft != t {
            return Err(EdaError::mismatch("sequence length (features vs tokens)", t, ft));
        }
        if t > self.config.max_position_embeddings {
            return Err(EdaError::SequenceTooLong { len: t, max: self.config.max_position_embeddings });
        }
        Ok(())
    }

    /// Training forward: `tokens` `[B, T]` are `x_{t+1}`, `features` `[B, T, hidden]` are the
    /// target's `h_t`. Causal attention over positions `0..T`, no cache.
    ///
    /// # Panics
    /// On inconsistent shapes or `T > max_position_embeddings`; use
    /// [`try_forward_train`](Self::try_forward_train) for a checked call.
    pub fn forward_train(&self, tokens: Tensor<2, Int>, features: Tensor<3>) -> DraftForward {
        let [b, t] = tokens.dims();
        let positions: Vec<usize> = (0..t).collect();
        let a = self.pre_ffn(tokens, features, &positions, None, None);
        let h = self.config.hidden_size;
        let flat = a.clone().reshape([b * t, h]);
        let moe = self.moe.forward(self.post_attention_layernorm.forward(flat));
        let hidden = a + moe.output.reshape([b, t, h]);
        let aux_loss_shared = load_balancing_loss(moe.shared_logits, self.config.top_k_shared);
        let aux_loss_private = match moe.private_logits {
            Some(l) => load_balancing_loss(l, self.config.top_k_private),
            None => Tensor::zeros([1], &hidden.device()),
        };
        DraftForward { hidden, aux_loss_shared, aux_loss_private }
    }

    /// [`forward_train`](Self::forward_train) with shape checks returning typed errors.
    pub fn try_forward_train(&self, tokens: Tensor<2, Int>, features: Tensor<3>) -> Result<DraftForward> {
        self.check_train_inputs(&tokens, &features)?;
        Ok(self.forward_train(tokens, features))
    }

    /// Everything up to (and including) the attention residual: `a = u + attn(u)`, `[B, T, H]`.
    pub(crate) fn pre_ffn(
        &self,
        tokens: Tensor<2, Int>,
        features: Tensor<3>,
        positions: &[usize],
        cache: Option<&mut eda_models::layers::KvCache>,
        mask_bias: Option<Tensor<2>>,
    ) -> Tensor<3> {
        let e = burn::tensor::module::embedding(self.embedding.val(), tokens);
        let u = self.fc.forward(Tensor::cat(vec![e, features], 2));
        let attn = self.self_attn.forward(u.clone(), &self.rope, positions, cache, mask_bias);
        u + attn
    }

    /// Draft logits of features: `[..., hidden] -> [..., K]` through the frozen LM head rows of
    /// the draft vocabulary (`K = vocab` without a reduced vocabulary; column `j` is then token
    /// `j`, else token [`draft_vocab`](Self::draft_vocab)`[j]`). The features are
    /// post-final-norm (as in EAGLE-1 and HF `hidden_states[-1]`), so no norm is applied.
    ///
    /// This multiplies by a transposed view of the head, which is fine for training batches; the
    /// one-token decoding path of [`DraftSession`](crate::DraftSession) uses a materialised
    /// `[hidden, K]` head instead.
    pub fn logits<const D: usize>(&self, hidden: Tensor<D>) -> Tensor<D> {
        let head = match &self.draft_head {
            Some(h) => h.val(),
            None => self.lm_head.val(),
        };
        burn::tensor::module::linear(hidden, head.transpose(), None)
    }

    /// Logits over the whole target vocabulary through the frozen LM head, `[..., hidden] ->
    /// [..., vocab]` (equal to [`logits`](Self::logits) without a reduced vocabulary). Training
    /// uses it for the target's distribution.
    pub fn target_logits<const D: usize>(&self, hidden: Tensor<D>) -> Tensor<D> {
        burn::tensor::module::linear(hidden, self.lm_head.val().transpose(), None)
    }

    /// Freezes `plan`'s groups (their parameters stop requiring gradients); groups already
    /// frozen stay frozen.
    pub fn freeze(mut self, plan: FreezePlan) -> Self {
        if plan.fc {
            self.fc = self.fc.no_grad();
        }
        if plan.attention {
            self.self_attn = self.self_attn.no_grad();
            self.post_attention_layernorm = self.post_attention_layernorm.no_grad();
        }
        if plan.shared_experts {
            self.moe.shared = self.moe.shared.no_grad();
        }
        self.frozen = FreezePlan {
            fc: self.frozen.fc || plan.fc,
            attention: self.frozen.attention || plan.attention,
            shared_experts: self.frozen.shared_experts || plan.shared_experts,
        };
        self
    }

    /// Freezes the whole shared group (fc, attention, norm, shared experts and router), leaving
    /// only the private group trainable. See [`FreezePlan::REFERENCE_STAGE2`] for the reference
    /// script's choice, which keeps `fc` trainable.
    pub fn freeze_shared(self) -> Self {
        self.freeze(FreezePlan::SHARED)
    }

    /// Replaces the private experts and router by freshly initialised ones (PyTorch default
    /// init from `seed`), as the reference stage-2 loader does. The new parameters are trainable.
    pub fn reinit_private(mut self, seed: u64) -> Self {
        let device = self.device();
        self.moe.private = Self::init_private(&self.config, seed, &device);
        self
    }

    /// Uses `lm_head` (`[vocab, hidden]`, frozen) from now on, e.g. the fine-tuned target's head
    /// in stage 2 (a reduced draft vocabulary keeps its mapping and takes the new rows).
    pub fn replace_lm_head(mut self, lm_head: Tensor<2>) -> Result<Self> {
        check_matrix("LM head", &lm_head, &self.config)?;
        let device = self.device();
        self.lm_head = frozen_param(lm_head, &device);
        if let Some(ids) = self.draft_vocab.take() {
            // Re-derive the reduced head from the new rows.
            self = self.with_draft_vocab(ids.to_vec())?;
        }
        Ok(self)
    }

    /// Uses `embedding` (`[vocab, hidden]`, frozen) from now on.
    pub fn replace_embedding(mut self, embedding: Tensor<2>) -> Result<Self> {
        check_matrix("embedding", &embedding, &self.config)?;
        let device = self.device();
        self.embedding = frozen_param(embedding, &device);
        Ok(self)
    }

    /// Parameter counts by group, with `trainable` reflecting the current freezing.
    pub fn param_counts(&self) -> ParamCounts {
        let mut counts = ParamCounts::for_config(&self.config, self.frozen);
        // With LoRA adapters only the adapters train (`add_lora` froze everything else).
        let lora = self.lora_params();
        if lora > 0 {
            counts.trainable = lora;
        }
        counts
    }
}
