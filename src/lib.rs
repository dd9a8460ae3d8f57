//! # eda — speculative decoding with Efficient Draft Adaptation
//!
//! Facade crate re-exporting the eda workspace. Each part is its own crate, composed through
//! the traits of [`core`] (`eda-core`):
//!
//! | module | crate | what it does |
//! |---|---|---|
//! | [`core`] | `eda-core` | traits (`TargetModel`, `DraftModel`, `Regenerator`, `SampleSelector`, `DecodingStrategy`), errors, masks, trees, shards, metrics |
//! | [`models`] | `eda-models` | Qwen2/Qwen2.5 and Llama targets in burn, loaded from HF checkpoints |
//! | [`draft`] | `eda-draft` | the decoupled EDA draft (EAGLE layer with shared/private experts) |
//! | [`train`] | `eda-train` | stage-1 / stage-2 training loop (`DraftTrainer`) |
//! | [`spec`] | `eda-spec` | chain and EAGLE-2 tree speculative decoding, lossless verification, metrics |
//! | [`regen`] | `eda-regen` | data regeneration with the fine-tuned target |
//! | [`select`] | `eda-select` | Mahalanobis sample selection |
//! | [`demo`] | `eda-demo` | the end-to-end pipeline on built-in tiny targets |
//!
//! ```
//! use eda::core::TokenTree;
//! let chain = TokenTree::chain(vec![1, 2, 3]).unwrap();
//! assert_eq!(chain.depths(), vec![0, 1, 2]);
//! ```

pub use eda_core as core;
pub use eda_demo as demo;
pub use eda_draft as draft;
pub use eda_models as models;
pub use eda_regen as regen;
pub use eda_select as select;
pub use eda_spec as spec;
pub use eda_train as train;
