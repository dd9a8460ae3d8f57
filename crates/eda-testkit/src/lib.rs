//! # eda-testkit
//!
//! The test kit of the eda workspace: a **dev-only** crate (`publish = false`) that the tests,
//! doc examples and benchmarks of the other crates use, never their libraries.
//!
//! - [`toy`]: tiny, exact models: [`ToyLm`], a second-order Markov [`TargetModel`] whose next-token
//!   distributions are known exactly ([`ToyLm::next_logits`]) and whose KV-cache bookkeeping is
//!   checked on every call; [`ToyEagleDraft`], an EAGLE-style draft for it (perfect at zero
//!   noise); [`ReducedDraft`], any draft restricted to a subset of the vocabulary;
//! - [`stats`]: Pearson chi-square statistics with pooling of sparse cells, critical values, and
//!   the exact joint distribution of a target's first sampled tokens, for the tests that check
//!   sampled outputs against a target's distribution.
//!
//! The kit depends on `eda-core` only, so crates whose tests use it (as a dev-dependency) never
//! see a second copy of their own types.
//!
//! [`TargetModel`]: eda_core::TargetModel

#![warn(missing_docs)]

pub mod stats;
pub mod toy;

pub use stats::{chi2_critical_001, exact_joint, pearson, pearson_map, ChiSquare};
pub use toy::{ReducedDraft, ToyEagleDraft, ToyLm};
