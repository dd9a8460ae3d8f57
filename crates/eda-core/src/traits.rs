//! The traits that compose eda. Each concrete crate implements one of them.

use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::data::FeatureSample;
use crate::{AttentionMask, EdaError, GenerationConfig, GenerationOutput, Result, TokenId, TokenTree};

/// Static facts about a target model that other components must agree with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    /// Architecture family (`"qwen2"`, `"llama"`, ...).
    pub model_type: String,
    /// Rows of the embedding / LM head.
    pub vocab_size: usize,
    /// Width of the hidden states returned by the model.
    pub hidden_size: usize,
    /// Maximum number of positions the model supports.
    pub max_position_embeddings: usize,
    /// End-of-sequence token ids from the checkpoint's configuration.
    pub eos_token_ids: Vec<TokenId>,
    /// Identity of the weights (for example a hash of config and tensors), recorded in manifests.
    pub identity: String,
}

/// Output of a target forward pass over `n` new positions.
#[derive(Debug, Clone)]
pub struct TargetOutput {
    /// Next-token logits, `[n, vocab_size]`.
    pub logits: Tensor<2>,
    /// Last-layer hidden states after the final norm (the LM-head input), `[n, hidden_size]`.
    /// This is HF's `hidden_states[-1]` and the feature EAGLE drafts read.
    pub hidden: Tensor<2>,
}

/// A target LLM with a KV cache: prefill, decode and tree verification.
///
/// Positions in the cache are contiguous: after [`retain_cache`](Self::retain_cache) the kept
/// rows are renumbered `0..k`, so the next token always sits at position `cache_len()`.
pub trait TargetModel {
    /// Static facts about the model.
    fn info(&self) -> &ModelInfo;

    /// Device the model's tensors live on.
    fn device(&self) -> Device;

    /// Number of positions in the KV cache.
    fn cache_len(&self) -> usize;

    /// Empties the KV cache.
    fn reset_cache(&mut self);

    /// Drops every cached position at index `len` and beyond.
    fn truncate_cache(&mut self, len: usize) -> Result<()>;

    /// Keeps only the cached rows listed in `keep` (strictly increasing), in that order.
    ///
    /// Used after tree verification to keep the committed prefix plus the accepted path.
    fn retain_cache(&mut self, keep: &[usize]) -> Result<()>;

    /// Appends `tokens` at `positions` (rotary positions) with an explicit attention mask whose
    /// `past()` must equal [`cache_len`](Self::cache_len). Every new position is added to the cache.
    fn forward_masked(&mut self, tokens: &[TokenId], positions: &[usize], mask: &AttentionMask) -> Result<TargetOutput>;

    /// Causal forward of `tokens` appended after the cache (prefill or decode).
    fn forward(&mut self, tokens: &[TokenId]) -> Result<TargetOutput> {
        let past = self.cache_len();
        let positions: Vec<usize> = (past..past + tokens.len()).collect();
        self.forward_masked(tokens, &positions, &AttentionMask::causal(past, tokens.len()))
    }

    /// Forward of a token tree appended after the cache: each node attends to the cache, its
    /// ancestors and itself, at position `cache_len() + depth`.
    fn forward_tree(&mut self, tree: &TokenTree) -> Result<TargetOutput> {
        let past = self.cache_len();
        let positions: Vec<usize> = tree.depths().iter().map(|d| past + d).collect();
        self.forward_masked(tree.tokens(), &positions, &AttentionMask::tree(past, tree))
    }

    /// Teacher-forced causal forward of independent sequences, each from position 0 as if run
    /// alone after [`reset_cache`](Self::reset_cache): one [`TargetOutput`] per sequence, in
    /// order, with `[len, ..]` rows. The KV cache is left empty.
    ///
    /// The default runs the sequences one at a time; targets with native batching (eda-models)
    /// run them together with identical results. Errors: [`EdaError::InvalidArgument`] for an
    /// empty batch or an empty sequence, [`EdaError::SequenceTooLong`] for a sequence longer than
    /// the maximum positions, plus whatever [`forward`](Self::forward) rejects.
    fn forward_batch(&mut self, seqs: &[Vec<TokenId>]) -> Result<Vec<TargetOutput>> {
        if seqs.is_empty() {
            return Err(EdaError::InvalidArgument("a batch needs at least one sequence".into()));
        }
        let max = self.info().max_position_embeddings;
        let mut out = Vec::with_capacity(seqs.len());
        for s in seqs {
            if s.len() > max {
                return Err(EdaError::SequenceTooLong { len: s.len(), max });
            }
            self.reset_cache();
            let r = self.forward(s);
            self.reset_cache();
            out.push(r?);
        }
        Ok(out)
    }

    /// The hidden states of [`forward_batch`](Self::forward_batch) only (`[len, hidden_size]` per
    /// sequence); targets may skip the LM head. Same errors and cache behaviour.
    fn hidden_batch(&mut self, seqs: &[Vec<TokenId>]) -> Result<Vec<Tensor<2>>> {
        Ok(self.forward_batch(seqs)?.into_iter().map(|o| o.hidden).collect())
    }

    /// Plain autoregressive generation for several prompts, each with its own configuration
    /// (stop tokens, length, sampling seed): output `i` equals
    /// [`generate_autoregressive`](crate::generate::generate_autoregressive) of prompt `i` with
    /// `cfgs[i]`. The KV cache is left in an unspecified state (reset it before reuse).
    ///
    /// The default generates one prompt at a time; targets with native batching decode the
    /// prompts together, each sequence leaving the batch when it finishes (see
    /// [`generate_batch_with`](crate::generate::generate_batch_with)).
    fn generate_batch(&mut self, prompts: &[Vec<TokenId>], cfgs: &[GenerationConfig]) -> Result<Vec<GenerationOutput>> {
        crate::generate::generate_each(self, prompts, cfgs)
    }

    /// The token embedding matrix, `[vocab_size, hidden_size]`.
    fn embedding_weight(&self) -> Tensor<2>;

    /// The LM head matrix, `[vocab_size, hidden_size]` (equal to the embedding when tied).
    fn lm_head_weight(&self) -> Tensor<2>;
}

/// Static facts about a draft model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DraftInfo {
    /// Vocabulary size; must equal the target's.
    pub vocab_size: usize,
    /// Width of the features the draft reads and produces.
    pub hidden_size: usize,
    /// EAGLE-style drafts read the target's feature `h_t` together with token `x_{t+1}`;
    /// plain LM drafts read tokens only (and then consume `x_0` too).
    pub uses_target_features: bool,
}

/// Output of a draft forward pass over `n` new positions.
///
/// A draft may predict over a subset of the target's vocabulary (EAGLE-3's reduced draft
/// vocabulary): `logits` then has one column per entry of `token_ids`, and every token outside
/// the subset has probability 0 under the draft. Keeping the sparse form avoids a full-vocabulary
/// scatter per drafting step; [`full_logits`](Self::full_logits) gives the dense form.
///
/// ```
/// use burn::tensor::Tensor;
/// use eda_core::DraftOutput;
/// let d = eda_core::backend::device_from_name("cpu").unwrap();
/// let out = DraftOutput::new(Tensor::<2>::from_floats([[0.5, 2.0]], &d), Tensor::zeros([1, 4], &d))
///     .with_token_ids(vec![3, 1].into());
/// assert_eq!(out.token(1), Some(1));
/// let dense = eda_core::backend::to_vec_f32(out.full_logits(5).unwrap()).unwrap();
/// assert_eq!(dense[3], 0.5);
/// assert_eq!(dense[0], f32::NEG_INFINITY);
/// ```
#[derive(Debug, Clone)]
pub struct DraftOutput {
    /// Next-token logits: `[n, vocab_size]`, or `[n, K]` when `token_ids` holds `K` ids.
    pub logits: Tensor<2>,
    /// Predicted features, `[n, hidden_size]`: fed back as input features when drafting deeper.
    pub hidden: Tensor<2>,
    /// Target token id of each logit column for a reduced-vocabulary draft (distinct ids, each
    /// below `vocab_size`); `None`: column `j` is token `j`.
    pub token_ids: Option<std::sync::Arc<[TokenId]>>,
}

impl DraftOutput {
    /// Output over the full vocabulary.
    pub fn new(logits: Tensor<2>, hidden: Tensor<2>) -> Self {
        DraftOutput { logits, hidden, token_ids: None }
    }

    /// Declares the logit columns to be the target tokens `ids` (a reduced draft vocabulary).
    pub fn with_token_ids(mut self, ids: std::sync::Arc<[TokenId]>) -> Self {
        self.token_ids = Some(ids);
        self
    }

    /// The target token of logit column `col` (`None` when the column does not exist in the
    /// mapping; without a mapping the column is the token).
    pub fn token(&self, col: usize) -> Option<TokenId> {
        match &self.token_ids {
            Some(ids) => ids.get(col).copied(),
            None => Some(col as TokenId),
        }
    }

    /// Logits over the whole target vocabulary `[n, vocab_size]`: the reduced columns scattered
    /// to their token ids, `-inf` (probability 0) everywhere else. Errors with
    /// [`EdaError::Mismatch`] / [`EdaError::InvalidArgument`] when the columns do not fit
    /// `vocab_size` or the mapping.
    pub fn full_logits(&self, vocab_size: usize) -> Result<Tensor<2>> {
        let [n, cols] = self.logits.dims();
        let Some(ids) = &self.token_ids else {
            if cols != vocab_size {
                return Err(crate::EdaError::mismatch("draft logit columns (vocabulary size)", vocab_size, cols));
            }
            return Ok(self.logits.clone());
        };
        if ids.len() != cols {
            return Err(crate::EdaError::mismatch("draft logit columns (reduced vocabulary mapping)", ids.len(), cols));
        }
        if let Some(&bad) = ids.iter().find(|&&t| t as usize >= vocab_size) {
            return Err(crate::EdaError::InvalidArgument(format!(
                "draft vocabulary maps to token {bad}, outside the vocabulary of {vocab_size}"
            )));
        }
        let device = self.logits.device();
        let idx: Vec<i64> = ids.iter().map(|&t| t as i64).collect();
        let idx = Tensor::<1, burn::tensor::Int>::from_data(burn::tensor::TensorData::new(idx, [cols]), &device);
        let base = Tensor::<2>::full([n, vocab_size], f32::NEG_INFINITY, &device);
        Ok(base.select_assign(1, idx, self.logits.clone(), burn::tensor::IndexingUpdateOp::Assign))
    }
}

/// A draft model with its own KV cache.
///
/// For an EAGLE-style draft, the input at cache position `t` is the pair (target feature `h_t`,
/// token `x_{t+1}`) and the output predicts `h_{t+1}`, hence the distribution of `x_{t+2}`.
pub trait DraftModel {
    /// Static facts about the draft.
    fn info(&self) -> DraftInfo;

    /// Number of positions in the draft's KV cache.
    fn cache_len(&self) -> usize;

    /// Empties the KV cache.
    fn reset_cache(&mut self);

    /// Drops every cached position at index `len` and beyond.
    fn truncate_cache(&mut self, len: usize) -> Result<()>;

    /// Keeps only the cached rows listed in `keep` (strictly increasing), in that order.
    fn retain_cache(&mut self, keep: &[usize]) -> Result<()>;

    /// Appends `tokens` (and, for EAGLE drafts, `features` `[n, hidden]`) at `positions` with an
    /// explicit attention mask whose `past()` equals [`cache_len`](Self::cache_len). A draft with
    /// a reduced vocabulary returns `[n, K]` logits and sets [`DraftOutput::token_ids`].
    fn forward_masked(
        &mut self,
        tokens: &[TokenId],
        features: Option<Tensor<2>>,
        positions: &[usize],
        mask: &AttentionMask,
    ) -> Result<DraftOutput>;
}

/// Where the responses of regenerated data come from; recorded with the data (the regeneration
/// manifest) and compared when a run resumes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum GeneratorRecord {
    /// The local target.
    Local,
    /// An OpenAI-compatible server.
    OpenAi {
        /// Server base URL.
        base_url: String,
        /// Served model name.
        model: String,
    },
    /// No generation (the dataset's own responses are used).
    None,
}

/// Produces responses to prompts with the (fine-tuned) target: the first half of data
/// regeneration. The second half, recording the target's hidden states over prompt + response,
/// always runs on the local target.
///
/// The local target is lent to every call, as a [`DecodingStrategy`] receives its models: a local
/// regenerator answers with it (so answers and features come from the same weights); a remote one
/// (an inference server serving the same model) does not need it.
pub trait Regenerator {
    /// Where the responses come from (recorded with the data).
    fn record(&self) -> GeneratorRecord;

    /// Generates a response (prompt excluded) for an already tokenised prompt. The target's KV
    /// cache is left in an unspecified state.
    fn regenerate(&mut self, target: &mut dyn TargetModel, prompt: &[TokenId], cfg: &GenerationConfig) -> Result<Vec<TokenId>>;

    /// Responses to several prompts, each with its own configuration, in order: response `i`
    /// equals [`regenerate`](Self::regenerate) of prompt `i` with `cfgs[i]`. The default answers
    /// one prompt at a time; [`EdaError::Mismatch`] when the lengths differ.
    fn regenerate_batch(
        &mut self,
        target: &mut dyn TargetModel,
        prompts: &[Vec<TokenId>],
        cfgs: &[GenerationConfig],
    ) -> Result<Vec<Vec<TokenId>>> {
        if prompts.len() != cfgs.len() {
            return Err(EdaError::mismatch("generation configs (one per prompt)", prompts.len(), cfgs.len()));
        }
        prompts.iter().zip(cfgs).map(|(p, c)| self.regenerate(target, p, c)).collect()
    }
}

/// A ranked subset of samples.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Selection {
    /// Indices of kept samples, best first.
    pub indices: Vec<usize>,
    /// Score of every input sample (same order as the input).
    pub scores: Vec<f64>,
}

/// Scores samples by training value; the highest scores are kept.
pub trait SampleSelector {
    /// Short name for reports (`"mahalanobis"`, `"random"`, ...).
    fn name(&self) -> &str;

    /// Value of one sample; larger is kept first.
    fn score(&self, index: usize, sample: &FeatureSample) -> Result<f64>;

    /// Scores all samples and keeps the best `fraction` (at least one sample; ties keep the
    /// earlier index, so the result is deterministic).
    fn select(&self, samples: &[FeatureSample], fraction: f64) -> Result<Selection> {
        if samples.is_empty() {
            return Err(crate::EdaError::EmptyDataset("no samples to select from".into()));
        }
        if !(fraction > 0.0 && fraction <= 1.0) {
            return Err(crate::EdaError::InvalidArgument(format!("fraction must be in (0, 1], got {fraction}")));
        }
        let scores = samples.iter().enumerate().map(|(i, s)| self.score(i, s)).collect::<Result<Vec<_>>>()?;
        if let Some(i) = scores.iter().position(|s| !s.is_finite()) {
            return Err(crate::EdaError::NonFinite(format!("score of sample {i}")));
        }
        let keep = ((samples.len() as f64 * fraction).ceil() as usize).clamp(1, samples.len());
        let mut order: Vec<usize> = (0..samples.len()).collect();
        order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
        order.truncate(keep);
        Ok(Selection { indices: order, scores })
    }
}

/// A speculative (or plain) decoding strategy over a target and, when it drafts, a draft.
///
/// Strategies that draft fail with [`EdaError::InvalidArgument`] when `draft` is `None`; plain
/// autoregressive decoding needs none (and ignores one if given), so a caller without a draft
/// passes `None` rather than a stand-in model.
pub trait DecodingStrategy {
    /// Generates a continuation of `prompt`. Implementations reset the caches of the models they
    /// use first.
    fn generate(
        &mut self,
        target: &mut dyn TargetModel,
        draft: Option<&mut dyn DraftModel>,
        prompt: &[TokenId],
        cfg: &GenerationConfig,
    ) -> Result<GenerationOutput>;
}
