//! [`EdaDraftConfig`]: the shape of an EDA draft.

use eda_core::{EdaError, ModelInfo, Result};
use serde::{Deserialize, Serialize};

/// Shape of an EDA draft: one EAGLE-1 decoder layer whose FFN is a shared/private
/// mixture of SwiGLU experts (docs/method.md §2.1–2.2).
///
/// The JSON form is the `config.json` written by [`EdaDraft::save`](crate::EdaDraft::save).
/// Reading is lenient so that the reference implementation's `config.json` also parses:
/// `private_intermediate_size` defaults to `intermediate_size`, `head_dim` to
/// `hidden_size / num_attention_heads`, `num_key_value_heads` to `num_attention_heads`,
/// expert counts to 4 and top-k to 1 (the reference class defaults), `rms_norm_eps` to `1e-6`,
/// `rope_theta` to `10000`; unknown fields are ignored.
///
/// ```
/// use eda_draft::EdaDraftConfig;
/// let cfg = EdaDraftConfig::tiny(32, 16);
/// cfg.validate().unwrap();
/// let json = serde_json::to_string(&cfg).unwrap();
/// assert_eq!(serde_json::from_str::<EdaDraftConfig>(&json).unwrap(), cfg);
/// ```
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(from = "RawEdaDraftConfig")]
pub struct EdaDraftConfig {
    /// Vocabulary size (rows of the target's embedding and LM head).
    pub vocab_size: usize,
    /// Feature width `d` (the target's hidden size).
    pub hidden_size: usize,
    /// Intermediate size `I` of each shared expert.
    pub intermediate_size: usize,
    /// Intermediate size `P` of each private expert.
    pub private_intermediate_size: usize,
    /// Query heads of the draft's self-attention.
    pub num_attention_heads: usize,
    /// Key/value heads (divides `num_attention_heads`).
    pub num_key_value_heads: usize,
    /// Width of one attention head.
    pub head_dim: usize,
    /// Epsilon of the post-attention RMSNorm.
    pub rms_norm_eps: f64,
    /// Rotary base θ.
    pub rope_theta: f64,
    /// Positions covered by the rotary tables.
    pub max_position_embeddings: usize,
    /// Number of shared experts `N_s` (at least 1).
    pub num_shared_experts: usize,
    /// Number of private experts `N_p`; 0 gives a plain EAGLE-1 draft (see
    /// [`EdaDraft::fold_to_eagle`](crate::EdaDraft::fold_to_eagle)).
    pub num_private_experts: usize,
    /// Experts chosen per token in the shared group, `1..=N_s`.
    pub top_k_shared: usize,
    /// Experts chosen per token in the private group, `1..=N_p` (0 when `N_p = 0`).
    pub top_k_private: usize,
    /// Size `K` of a reduced draft vocabulary (EAGLE-3 style): the LM head then covers only `K`
    /// target tokens, listed in the checkpoint's `d2t` mapping (see
    /// [`EdaDraft::with_draft_vocab`](crate::EdaDraft::with_draft_vocab)). `None` (absent from
    /// the JSON): the full target vocabulary. The embedding always covers the full vocabulary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub draft_vocab_size: Option<usize>,
}

/// Lenient on-disk form of [`EdaDraftConfig`] (optional fields get the reference defaults).
#[derive(Deserialize)]
struct RawEdaDraftConfig {
    vocab_size: usize,
    hidden_size: usize,
    intermediate_size: usize,
    private_intermediate_size: Option<usize>,
    num_attention_heads: usize,
    num_key_value_heads: Option<usize>,
    head_dim: Option<usize>,
    rms_norm_eps: Option<f64>,
    rope_theta: Option<f64>,
    max_position_embeddings: usize,
    num_shared_experts: Option<usize>,
    num_private_experts: Option<usize>,
    top_k_shared: Option<usize>,
    top_k_private: Option<usize>,
    draft_vocab_size: Option<usize>,
}

impl From<RawEdaDraftConfig> for EdaDraftConfig {
    fn from(r: RawEdaDraftConfig) -> Self {
        let num_private_experts = r.num_private_experts.unwrap_or(4);
        EdaDraftConfig {
            vocab_size: r.vocab_size,
            hidden_size: r.hidden_size,
            intermediate_size: r.intermediate_size,
            private_intermediate_size: r.private_intermediate_size.unwrap_or(r.intermediate_size),
            num_attention_heads: r.num_attention_heads,
            num_key_value_heads: r.num_key_value_heads.unwrap_or(r.num_attention_heads),
            head_dim: r.head_dim.unwrap_or(r.hidden_size.checked_div(r.num_attention_heads).unwrap_or(0)),
            rms_norm_eps: r.rms_norm_eps.unwrap_or(1e-6),
            rope_theta: r.rope_theta.unwrap_or(10000.0),
            max_position_embeddings: r.max_position_embeddings,
            num_shared_experts: r.num_shared_experts.unwrap_or(4),
            num_private_experts,
            top_k_shared: r.top_k_shared.unwrap_or(1),
            top_k_private: r.top_k_private.unwrap_or(if num_private_experts == 0 { 0 } else { 1 }),
            draft_vocab_size: r.draft_vocab_size,
        }
    }
}

impl EdaDraftConfig {
    /// The draft for a target: vocabulary, width and positions from `info`; 1 shared + 1 private
    /// expert with top-1 routing (the reference training scripts), `head_dim = hidden / heads`,
    /// `rms_norm_eps = 1e-6`, `rope_theta = 10000` (override with [`with_rope_theta`](Self::with_rope_theta)).
    ///
    /// ```
    /// use eda_core::ModelInfo;
    /// let info = ModelInfo { model_type: "qwen2".into(), vocab_size: 100, hidden_size: 32,
    ///     max_position_embeddings: 512, eos_token_ids: vec![0], identity: "t".into() };
    /// let cfg = eda_draft::EdaDraftConfig::for_target(&info, 4, 2, 64, 32);
    /// assert_eq!(cfg.head_dim, 8);
    /// cfg.check_target(&info).unwrap();
    /// ```
    pub fn for_target(
        info: &ModelInfo,
        num_attention_heads: usize,
        num_key_value_heads: usize,
        intermediate_size: usize,
        private_intermediate_size: usize,
    ) -> Self {
        EdaDraftConfig {
            vocab_size: info.vocab_size,
            hidden_size: info.hidden_size,
            intermediate_size,
            private_intermediate_size,
            num_attention_heads,
            num_key_value_heads,
            head_dim: info.hidden_size.checked_div(num_attention_heads).unwrap_or(0),
            rms_norm_eps: 1e-6,
            rope_theta: 10000.0,
            max_position_embeddings: info.max_position_embeddings,
            num_shared_experts: 1,
            num_private_experts: 1,
            top_k_shared: 1,
            top_k_private: 1,
            draft_vocab_size: None,
        }
    }

    /// A small 1+1-expert configuration for tests and examples (4 heads, 2 KV heads,
    /// `I = 2·hidden`, `P = hidden`, 256 positions).
    pub fn tiny(vocab_size: usize, hidden_size: usize) -> Self {
        EdaDraftConfig {
            vocab_size,
            hidden_size,
            intermediate_size: 2 * hidden_size,
            private_intermediate_size: hidden_size,
            num_attention_heads: 4,
            num_key_value_heads: 2,
            head_dim: hidden_size / 4,
            rms_norm_eps: 1e-6,
            rope_theta: 10000.0,
            max_position_embeddings: 256,
            num_shared_experts: 1,
            num_private_experts: 1,
            top_k_shared: 1,
            top_k_private: 1,
            draft_vocab_size: None,
        }
    }

    /// Sets the rotary base θ.
    pub fn with_rope_theta(mut self, theta: f64) -> Self {
        self.rope_theta = theta;
        self
    }

    /// Sets the number of experts and top-k of both groups.
    pub fn with_experts(mut self, num_shared: usize, top_k_shared: usize, num_private: usize, top_k_private: usize) -> Self {
        self.num_shared_experts = num_shared;
        self.top_k_shared = top_k_shared;
        self.num_private_experts = num_private;
        self.top_k_private = top_k_private;
        self
    }

    /// Checks internal consistency; errors are [`EdaError::InvalidConfig`] naming the field.
    ///
    /// ```
    /// let mut cfg = eda_draft::EdaDraftConfig::tiny(32, 16);
    /// cfg.top_k_shared = 2;
    /// assert!(cfg.validate().is_err());
    /// ```
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(EdaError::InvalidConfig(m));
        for (name, v) in [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_attention_heads", self.num_attention_heads),
            ("num_key_value_heads", self.num_key_value_heads),
            ("head_dim", self.head_dim),
            ("max_position_embeddings", self.max_position_embeddings),
            ("num_shared_experts", self.num_shared_experts),
            ("top_k_shared", self.top_k_shared),
        ] {
            if v == 0 {
                return bad(format!("draft `{name}` must be positive"));
            }
        }
        if self.num_attention_heads % self.num_key_value_heads != 0 {
            return bad(format!(
                "draft `num_key_value_heads` ({}) must divide `num_attention_heads` ({})",
                self.num_key_value_heads, self.num_attention_heads
            ));
        }
        if self.head_dim % 2 != 0 {
            return bad(format!("draft `head_dim` ({}) must be even for rotary embeddings", self.head_dim));
        }
        if self.top_k_shared > self.num_shared_experts {
            return bad(format!("draft `top_k_shared` ({}) exceeds `num_shared_experts` ({})", self.top_k_shared, self.num_shared_experts));
        }
        if self.num_private_experts == 0 {
            if self.top_k_private != 0 {
                return bad("draft `top_k_private` must be 0 when `num_private_experts` is 0".into());
            }
        } else {
            if self.private_intermediate_size == 0 {
                return bad("draft `private_intermediate_size` must be positive".into());
            }
            if self.top_k_private == 0 || self.top_k_private > self.num_private_experts {
                return bad(format!("draft `top_k_private` ({}) must be in 1..={}", self.top_k_private, self.num_private_experts));
            }
        }
        if let Some(k) = self.draft_vocab_size {
            if k == 0 || k > self.vocab_size {
                return bad(format!("draft `draft_vocab_size` ({k}) must be in 1..={}", self.vocab_size));
            }
        }
        if !(self.rms_norm_eps.is_finite() && self.rms_norm_eps > 0.0) {
            return bad(format!("draft `rms_norm_eps` must be positive, got {}", self.rms_norm_eps));
        }
        if !(self.rope_theta.is_finite() && self.rope_theta > 0.0) {
            return bad(format!("draft `rope_theta` must be positive, got {}", self.rope_theta));
        }
        Ok(())
    }

    /// Checks that the draft fits `target`: equal vocabulary and hidden size
    /// ([`EdaError::Mismatch`] otherwise).
    pub fn check_target(&self, target: &ModelInfo) -> Result<()> {
        if self.vocab_size != target.vocab_size {
            return Err(EdaError::mismatch("vocabulary size (target vs draft)", target.vocab_size, self.vocab_size));
        }
        if self.hidden_size != target.hidden_size {
            return Err(EdaError::mismatch("hidden size (target vs draft)", target.hidden_size, self.hidden_size));
        }
        Ok(())
    }

    /// Whether this is the 1 shared + 1 private, top-1 configuration that folds exactly into a
    /// plain EAGLE MLP.
    pub fn is_foldable(&self) -> bool {
        self.num_shared_experts == 1 && self.num_private_experts == 1 && self.top_k_shared == 1 && self.top_k_private == 1
    }

    /// Number of logit columns: `draft_vocab_size` when the vocabulary is reduced, else
    /// `vocab_size`.
    pub fn head_size(&self) -> usize {
        self.draft_vocab_size.unwrap_or(self.vocab_size)
    }

    /// Whether this is a plain EAGLE-1 draft (one shared expert, no private group).
    pub fn is_plain_eagle(&self) -> bool {
        self.num_shared_experts == 1 && self.num_private_experts == 0
    }
}
