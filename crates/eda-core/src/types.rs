//! Plain shared types: token ids and generation settings.

use serde::{Deserialize, Serialize};

/// A token id in the target's vocabulary.
pub type TokenId = u32;

/// Settings for one generation, shared by plain and speculative decoding.
///
/// `temperature == 0.0` means greedy decoding.
///
/// ```
/// use eda_core::GenerationConfig;
/// let cfg = GenerationConfig { max_new_tokens: 16, ..GenerationConfig::greedy() };
/// assert!(cfg.is_greedy());
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenerationConfig {
    /// Maximum number of tokens to generate after the prompt.
    pub max_new_tokens: usize,
    /// Sampling temperature; `0.0` selects greedy decoding.
    pub temperature: f32,
    /// Nucleus sampling threshold in `(0, 1]`; `1.0` disables it.
    pub top_p: f32,
    /// Seed of the sampler's random number generator.
    pub seed: u64,
    /// Tokens that end generation (they are emitted, then generation stops).
    pub stop_tokens: Vec<TokenId>,
}

impl GenerationConfig {
    /// Greedy decoding of up to 128 tokens with no stop tokens.
    pub fn greedy() -> Self {
        GenerationConfig { max_new_tokens: 128, temperature: 0.0, top_p: 1.0, seed: 0, stop_tokens: vec![] }
    }

    /// Sampling at `temperature` (top-p disabled).
    pub fn sampling(temperature: f32, seed: u64) -> Self {
        GenerationConfig { temperature, seed, ..Self::greedy() }
    }

    /// Whether this configuration decodes greedily.
    pub fn is_greedy(&self) -> bool {
        self.temperature <= 0.0
    }

    /// Checks that the values are usable.
    pub fn validate(&self) -> crate::Result<()> {
        if !(self.temperature >= 0.0 && self.temperature.is_finite()) {
            return Err(crate::EdaError::InvalidArgument(format!("temperature must be finite and >= 0, got {}", self.temperature)));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(crate::EdaError::InvalidArgument(format!("top_p must be in (0, 1], got {}", self.top_p)));
        }
        Ok(())
    }
}

impl Default for GenerationConfig {
    fn default() -> Self {
        Self::greedy()
    }
}

/// The result of one generation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenerationOutput {
    /// Generated tokens (prompt excluded).
    pub tokens: Vec<TokenId>,
    /// Per-generation decoding metrics.
    pub metrics: crate::DecodeMetrics,
}
