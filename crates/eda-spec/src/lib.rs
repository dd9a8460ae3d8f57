//! # eda-spec
//!
//! Speculative decoding over any [`TargetModel`] and
//! [`DraftModel`] (trait objects):
//!
//! - [`ChainStrategy`]: classic chain drafting with standard rejection sampling;
//! - [`TreeStrategy`]: EAGLE-2 dynamic tree drafting with lossless tree verification
//!   (docs/method.md §6.2–6.3);
//! - [`AutoStrategy`]: picks chain or tree and its size from the draft cost and acceptance
//!   measured on the device;
//! - [`Autoregressive`]: the plain target baseline (needs no draft: every strategy takes
//!   `Option<&mut dyn DraftModel>`, and the drafting ones refuse `None`);
//! - [`LmDraft`]: any small language model (same tokenizer) used as a token-only draft;
//! - [`evaluate`]: per-prompt and aggregate τ (standard and reference definitions), α,
//!   acceptance per depth, cost ratio, predicted and measured speedup against autoregressive
//!   decoding in the same process, as JSON and as a table;
//! - [`replay`]: greedy τ of a draft against a target's recorded answers and hidden states, at
//!   the cost of the draft alone (many drafts, one regeneration);
//! - [`BaselineCache`]: reuses the autoregressive baseline of an evaluation across runs with the
//!   same target, prompts, settings and device (and says so in the report).
//!
//! The examples below use the exact toy models of the workspace's dev-only test kit
//! (`eda-testkit`).
//!
//! ## Alignment and caches
//!
//! After every cycle both models' caches hold exactly the committed context:
//! the target's cache holds `prompt + emitted - 1` positions (the last emitted token is the root
//! of the next draft and not yet fed); an EAGLE draft's cache holds the same number of pairs
//! (target feature `h_t`, token `x_{t+1}`) once it has caught up, a token-only draft one more
//! (it also reads `x_0`). Accepted tokens are never recomputed by the target: after tree
//! verification only the accepted path is retained. The draft's speculative nodes are dropped
//! after drafting and the accepted positions are fed to it as committed context next cycle, with
//! the target's hidden states of those positions as features.
//!
//! ```
//! use eda_core::{backend::device_from_name, generate::generate_autoregressive, DecodingStrategy, GenerationConfig};
//! use eda_spec::TreeStrategy;
//! use eda_testkit::{ToyEagleDraft, ToyLm};
//! let device = device_from_name("cpu").unwrap();
//! let mut target = ToyLm::random(32, 128, 3.0, 1, &device);
//! let mut draft = ToyEagleDraft::for_target(&target, 1.0, 2);
//! let cfg = GenerationConfig { max_new_tokens: 30, ..GenerationConfig::greedy() };
//! let spec = TreeStrategy { depth: 3, top_k: 3, total_tokens: 12 }.generate(&mut target, Some(&mut draft), &[4, 5], &cfg).unwrap();
//! let plain = generate_autoregressive(&mut target, &[4, 5], &cfg).unwrap();
//! assert_eq!(spec.tokens, plain.tokens); // greedy speculative decoding is exact
//! ```

#![warn(missing_docs)]

mod auto;
pub mod baseline;
mod chain;
pub mod eval;
mod lm_draft;
pub mod replay;
mod session;
mod tree;

#[cfg(test)]
mod tests;

use eda_core::{DecodingStrategy, DraftModel, GenerationConfig, GenerationOutput, Result, TargetModel, TokenId};
use serde::{Deserialize, Serialize};

pub use auto::{AutoChoice, AutoStrategy, CandidateEstimate};
pub use baseline::{Baseline, BaselineCache, BaselineKey, BaselineProvenance, BaselineSource};
pub use chain::{Autoregressive, ChainStrategy};
pub use eval::{
    evaluate, evaluate_with, evaluate_with_baseline, measure_speedup, tau_per_cycle, tau_reference, verify_cycles, AggregateReport,
    EvalOptions, EvalReport, PromptReport, SpeedupMeasurement,
};
pub use lm_draft::LmDraft;
pub use session::CommitCallback;
pub use tree::{TreeStrategy, MAX_TREE_DEPTH, MAX_TREE_NODES, MAX_TREE_TOP_K};

/// A [`DecodingStrategy`] with a name, a drafting size and a streaming entry point.
pub trait SpeculativeStrategy: DecodingStrategy {
    /// Human-readable description, e.g. `tree(depth=5, top_k=10, total_tokens=60)`.
    fn name(&self) -> String;

    /// The γ used by [`eda_core::predicted_speedup`]: drafted tokens (chain) or drafted levels
    /// (tree) per cycle, 0 for autoregressive decoding.
    fn drafted_per_cycle(&self) -> usize;

    /// A report of how the strategy chose itself (the [`AutoStrategy`] probe table), if it did.
    fn choice_report(&self) -> Option<String> {
        None
    }

    /// Like [`DecodingStrategy::generate`], calling `on_commit(new_tokens, metrics)` every time
    /// tokens are committed (for live printing).
    fn generate_streaming(
        &mut self,
        target: &mut dyn TargetModel,
        draft: Option<&mut dyn DraftModel>,
        prompt: &[TokenId],
        cfg: &GenerationConfig,
        on_commit: CommitCallback<'_>,
    ) -> Result<GenerationOutput>;
}

/// Any of the strategies of this crate, selected at run time (CLI, configuration files).
///
/// ```
/// use eda_spec::{Strategy, SpeculativeStrategy};
/// let s: Strategy = serde_json::from_str(r#"{"tree":{"depth":5,"top_k":10,"total_tokens":60}}"#).unwrap();
/// assert_eq!(s.drafted_per_cycle(), 6);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Plain target decoding (needs no draft).
    Autoregressive,
    /// Chain drafting.
    Chain(ChainStrategy),
    /// EAGLE-2 dynamic tree drafting.
    Tree(TreeStrategy),
}

impl DecodingStrategy for Strategy {
    fn generate(
        &mut self,
        target: &mut dyn TargetModel,
        draft: Option<&mut dyn DraftModel>,
        prompt: &[TokenId],
        cfg: &GenerationConfig,
    ) -> Result<GenerationOutput> {
        match self {
            Strategy::Autoregressive => Autoregressive.generate(target, draft, prompt, cfg),
            Strategy::Chain(c) => c.generate(target, draft, prompt, cfg),
            Strategy::Tree(t) => t.generate(target, draft, prompt, cfg),
        }
    }
}

impl SpeculativeStrategy for Strategy {
    fn name(&self) -> String {
        match self {
            Strategy::Autoregressive => Autoregressive.name(),
            Strategy::Chain(c) => c.name(),
            Strategy::Tree(t) => t.name(),
        }
    }

    fn drafted_per_cycle(&self) -> usize {
        match self {
            Strategy::Autoregressive => 0,
            Strategy::Chain(c) => c.drafted_per_cycle(),
            Strategy::Tree(t) => t.drafted_per_cycle(),
        }
    }

    fn generate_streaming(
        &mut self,
        target: &mut dyn TargetModel,
        draft: Option<&mut dyn DraftModel>,
        prompt: &[TokenId],
        cfg: &GenerationConfig,
        on_commit: CommitCallback<'_>,
    ) -> Result<GenerationOutput> {
        match self {
            Strategy::Autoregressive => Autoregressive.generate_streaming(target, draft, prompt, cfg, on_commit),
            Strategy::Chain(c) => c.generate_streaming(target, draft, prompt, cfg, on_commit),
            Strategy::Tree(t) => t.generate_streaming(target, draft, prompt, cfg, on_commit),
        }
    }
}
