//! # eda-core
//!
//! The traits and shared types that compose the **eda** workspace: speculative decoding of LLMs
//! with *Efficient Draft Adaptation* (EDA, arXiv 2603.09527).
//!
//! Every concrete part of the system lives in its own crate and meets the others only through the
//! traits defined here, so each part can be swapped:
//!
//! | concept | trait | default implementation |
//! |---|---|---|
//! | target LLM (prefill, KV-cache decode, tree forward) | [`TargetModel`] | `eda-models` (Qwen2/Qwen2.5, Llama) |
//! | draft model (EAGLE-style, reads target features) | [`DraftModel`] | `eda-draft` (shared/private MoE draft) |
//! | data regeneration | [`Regenerator`] | `eda-regen` |
//! | sample selection | [`SampleSelector`] | `eda-select` (Mahalanobis) |
//! | speculative decoding strategy | [`DecodingStrategy`] | `eda-spec` (chain, EAGLE-2 tree) |
//!
//! Training has no trait here: there is one training loop, `eda_train::DraftTrainer`, and the
//! seam that varies is *what* it trains (generic over `eda_train::TrainableDraft`, the EDA draft
//! or a test stand-in). Every caller (the CLI, the demo pipeline, tests) needs the loop's own
//! options (progress, resume policy, stopping early) and nothing is generic over training loops,
//! so a `Trainer` trait would be an interface with one implementation and no user.
//!
//! Tensors are [burn](https://docs.rs/burn) 0.22 tensors: their backend is carried by their
//! [`Device`](burn::tensor::Device) (see [`backend`]), so no trait here has a backend type
//! parameter.
//!
//! ```
//! use eda_core::{AttentionMask, TokenTree};
//!
//! // A root with two children; the second child has one child of its own.
//! let tree = TokenTree::new(vec![7, 8, 9, 10], vec![None, Some(0), Some(0), Some(2)]).unwrap();
//! assert_eq!(tree.depths(), vec![0, 1, 1, 2]);
//! // Attention for verifying the tree after 5 committed tokens.
//! let mask = AttentionMask::tree(5, &tree);
//! assert!(mask.allowed(3, 5 + 2)); // node 3 sees its parent
//! assert!(!mask.allowed(3, 5 + 1)); // but not its uncle
//! ```
#![warn(missing_docs)]

pub mod backend;
pub mod data;
pub mod error;
pub mod generate;
pub mod io;
pub mod mask;
pub mod metrics;
pub mod safetensors;
pub mod sampling;
pub mod shard_files;
pub mod torch_checkpoint;
pub mod traits;
pub mod tree;
pub mod types;

pub use error::{EdaError, Result};
pub use mask::AttentionMask;
pub use metrics::{predicted_speedup, DecodeMetrics};
pub use traits::{
    DecodingStrategy, DraftInfo, DraftModel, DraftOutput, GeneratorRecord, ModelInfo, Regenerator, SampleSelector, Selection, TargetModel,
    TargetOutput,
};
pub use tree::TokenTree;
pub use types::{GenerationConfig, GenerationOutput, TokenId};
