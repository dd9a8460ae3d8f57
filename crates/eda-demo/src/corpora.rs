//! The embedded demo corpora (see `corpora/README.md` for sources and licences).
//!
//! Each corpus is prompt JSONL (`{"id", "prompt", "response"}`), parsed with
//! [`eda_regen::parse_prompts`] into [`PromptRecord`]s whose `reference_response` is the
//! corpus answer (the "original data").

use std::path::Path;

use eda_core::{EdaError, Result};
use eda_regen::{parse_prompts, PromptRecord};
use serde::{Deserialize, Serialize};

/// General-domain chit-chat and trivia (chatterbot-corpus, BSD-3-Clause).
pub const GENERAL_JSONL: &str = include_str!("../corpora/general.jsonl");
/// GSM-style arithmetic word problems with worked answers (generated for this project).
pub const MATH_JSONL: &str = include_str!("../corpora/math.jsonl");
/// Code completion: HumanEval (MIT) and documented `itertools` functions (MIT).
pub const CODE_JSONL: &str = include_str!("../corpora/code.jsonl");

/// A data domain of the demo.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Domain {
    /// General conversation: the base target's domain.
    General,
    /// Arithmetic word problems: the first fine-tuned target.
    Math,
    /// Code completion: the second fine-tuned target.
    Code,
}

impl Domain {
    /// The two fine-tuning domains, in report order.
    pub const FINE_TUNED: [Domain; 2] = [Domain::Math, Domain::Code];

    /// Lower-case name (`general`, `math`, `code`).
    pub fn name(&self) -> &'static str {
        match self {
            Domain::General => "general",
            Domain::Math => "math",
            Domain::Code => "code",
        }
    }

    /// The embedded JSONL text of this domain.
    pub fn jsonl(&self) -> &'static str {
        match self {
            Domain::General => GENERAL_JSONL,
            Domain::Math => MATH_JSONL,
            Domain::Code => CODE_JSONL,
        }
    }

    /// The parsed records of this domain (every record has a reference response).
    ///
    /// ```
    /// use eda_demo::corpora::Domain;
    /// let math = Domain::Math.records().unwrap();
    /// assert!(math.len() > 100);
    /// assert!(math[0].reference_response.is_some());
    /// ```
    pub fn records(&self) -> Result<Vec<PromptRecord>> {
        let name = format!("<embedded {}.jsonl>", self.name());
        let (records, _) = parse_prompts(self.jsonl(), Path::new(&name))?;
        if records.is_empty() {
            return Err(EdaError::EmptyDataset(name));
        }
        Ok(records)
    }
}

/// Deterministically shuffles `records` with `seed` and splits off the first `n_eval` as a
/// held-out evaluation set: returns `(train, eval)`.
pub fn split(records: &[PromptRecord], n_eval: usize, seed: u64) -> (Vec<PromptRecord>, Vec<PromptRecord>) {
    use rand::seq::SliceRandom;
    let mut rng = eda_core::sampling::seeded_rng(seed);
    let mut v = records.to_vec();
    v.shuffle(&mut rng);
    let n_eval = n_eval.min(v.len() / 2);
    let train = v.split_off(n_eval);
    (train, v)
}
