//! # eda-draft
//!
//! The EDA draft model (arXiv 2603.09527): an EAGLE-1 style draft layer whose FFN is a
//! shared/private mixture of SwiGLU experts (SP-MoE). See docs/method.md §2.
//!
//! - [`EdaDraftConfig`]: the draft's shape.
//! - [`EdaDraft`]: the module (training forward, freezing, re-initialisation, parameter counts,
//!   checkpoints in the EDA layout and export/import of the plain EAGLE layout).
//! - [`DraftSession`]: an [`EdaDraft`] with a KV cache implementing [`eda_core::DraftModel`],
//!   decoding through the [`fast`] path (contiguous weights, materialised LM head, sparse experts).
//! - Reduced draft vocabulary (EAGLE-3 style): [`EdaDraft::with_draft_vocab`], saved as `d2t`
//!   with the checkpoint.
//! - [`moe`]: routing and the load-balancing loss.

#![warn(missing_docs)]
// `usize::is_multiple_of` is newer than the workspace MSRV (1.85).
#![allow(clippy::manual_is_multiple_of)]

pub mod checkpoint;
pub mod config;
pub mod fast;
mod init;
pub mod lora;
pub mod model;
pub mod moe;
pub mod session;
pub mod speculators;

pub use config::EdaDraftConfig;
pub use model::{DraftForward, EdaDraft, FreezePlan, ParamCounts};
pub use session::DraftSession;
