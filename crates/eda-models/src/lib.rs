//! # eda-models
//!
//! Qwen2/Qwen2.5 and Llama target models implemented with burn 0.22, loaded from HuggingFace
//! checkpoints (`config.json` + safetensors, single or sharded, F32/F16/BF16) and exposed
//! through [`eda_core::TargetModel`].
//!
//! * [`layers`]: transformer building blocks (RMSNorm, rotary embedding, GQA attention with a
//!   KV cache, SwiGLU MLP) that the draft models reuse;
//! * [`ModelConfig`]: HF `config.json`;
//! * [`CausalLm`]: the model itself (training forward, `save_pretrained`);
//! * [`lora`]: LoRA adapters on the projections, for fine-tuning a target and merging it back;
//! * [`Target`]: the [`TargetModel`](eda_core::TargetModel) implementation with KV caches
//!   (on the CPU, passes of a few tokens run the host decoding path built on [`gemv`]);
//! * [`gemv`]: the streaming matrix–vector kernel of the CPU decoding paths (target and draft);
//! * [`batch`]: batched passes (packed sequences, per-sequence caches) for feature extraction
//!   and regeneration;
//! * [`load_tokenizer`]: `tokenizer.json` checked against the embedding;
//! * [`gguf`]: llama.cpp GGUF files (Llama, Qwen2; quantised weights dequantised to f32) and
//!   their tokenizers, accepted wherever a HF directory is ([`load_tokenizer_for`]).
//!
//! ```no_run
//! use eda_core::{generate::generate_autoregressive, GenerationConfig};
//! let device = eda_core::backend::device_from_name("cpu")?;
//! let mut target = eda_models::Target::from_pretrained("Qwen2.5-0.5B-Instruct".as_ref(), &device)?;
//! let out = generate_autoregressive(&mut target, &[9707, 11], &GenerationConfig::greedy())?;
//! # Ok::<(), eda_core::EdaError>(())
//! ```

#![warn(missing_docs)]
// `is_multiple_of` is newer than the workspace MSRV (1.85).
#![allow(unknown_lints, clippy::manual_is_multiple_of)]

pub mod batch;
pub mod config;
mod fast;
pub mod gemv;
pub mod gguf;
pub mod layers;
pub mod loader;
pub mod lora;
pub mod memory;
pub mod model;
pub mod target;
pub mod tokenizer;

pub use batch::{BatchSession, MAX_BATCH_SIZE};
pub use config::{Architecture, ModelConfig, RopeScaling};
pub use loader::{load_causal_lm, load_config, load_pretrained, WeightSource, TORCH_FILE};
pub use lora::{LoraAdapter, LoraModule, LoraSpec};
pub use model::{CausalLm, DecoderLayer};
pub use target::Target;
pub use tokenizer::{load_tokenizer, load_tokenizer_for, tokenizer_vocab_size};
