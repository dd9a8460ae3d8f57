//! The shared demo tokenizer: a small byte-level BPE trained on the embedded corpora.

use std::path::Path;

use eda_core::{EdaError, Result, TokenId};
use tokenizers::models::bpe::{BpeTrainerBuilder, BPE};
use tokenizers::models::TrainerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{AddedToken, Tokenizer};

use crate::corpora::Domain;

/// Special tokens, in id order: `<|endoftext|>` = 0, `<|im_start|>` = 1, `<|im_end|>` = 2.
pub const SPECIAL_TOKENS: [&str; 3] = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"];

/// A ChatML Jinja template (as in Qwen2 `tokenizer_config.json`), so that
/// [`eda_regen::ChatTemplate::detect`] recognises ChatML.
pub const CHATML_TEMPLATE: &str = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

/// The texts the tokenizer is trained on: every prompt and response of every corpus.
fn training_texts() -> Result<Vec<String>> {
    let mut texts = Vec::new();
    for d in [Domain::General, Domain::Math, Domain::Code] {
        for r in d.records()? {
            for m in &r.messages {
                texts.push(m.content.clone());
            }
            if let Some(resp) = r.reference_response {
                texts.push(resp);
            }
        }
    }
    Ok(texts)
}

/// Trains a byte-level BPE with `vocab_size` entries (special tokens and the 256 byte symbols
/// included) on the embedded corpora, and writes `tokenizer.json` and a `tokenizer_config.json`
/// with a ChatML `chat_template` into `dir`. Deterministic for a given `vocab_size`.
pub fn train_tokenizer(vocab_size: usize, dir: &Path) -> Result<Tokenizer> {
    if vocab_size < 256 + SPECIAL_TOKENS.len() + 1 {
        return Err(EdaError::InvalidArgument(format!("tokenizer vocab_size must exceed 259 (bytes + specials), got {vocab_size}")));
    }
    let path = dir.join("tokenizer.json");
    let tok_err = |e: tokenizers::Error| EdaError::Tokenizer { path: path.clone(), message: e.to_string() };
    let mut tokenizer = Tokenizer::new(BPE::default());
    tokenizer.with_pre_tokenizer(Some(ByteLevel::new(false, true, true)));
    tokenizer.with_decoder(Some(ByteLevel::default()));
    let specials: Vec<AddedToken> = SPECIAL_TOKENS.iter().map(|s| AddedToken::from(*s, true)).collect();
    let mut trainer: TrainerWrapper = BpeTrainerBuilder::new()
        .vocab_size(vocab_size)
        .min_frequency(2)
        .show_progress(false)
        .special_tokens(specials)
        .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
        .build()
        .into();
    let texts = training_texts()?;
    tokenizer.train(&mut trainer, texts.iter()).map_err(tok_err)?;
    std::fs::create_dir_all(dir).map_err(|e| EdaError::io(dir, e))?;
    let json = tokenizer.to_string(true).map_err(tok_err)?;
    eda_core::io::atomic_write(&path, json.as_bytes())?;
    let config = serde_json::json!({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": null,
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
        "model_max_length": 4096,
        "chat_template": CHATML_TEMPLATE,
    });
    eda_core::io::write_json(&dir.join("tokenizer_config.json"), &config)?;
    for (i, s) in SPECIAL_TOKENS.iter().enumerate() {
        if tokenizer.token_to_id(s) != Some(i as u32) {
            return Err(EdaError::Tokenizer { path, message: format!("special token {s} did not get id {i}") });
        }
    }
    Ok(tokenizer)
}

/// Loads `dir/tokenizer.json`, training it first when absent.
pub fn load_or_train(vocab_size: usize, dir: &Path) -> Result<Tokenizer> {
    let path = dir.join("tokenizer.json");
    if path.is_file() && dir.join("tokenizer_config.json").is_file() {
        return Tokenizer::from_file(&path).map_err(|e| EdaError::Tokenizer { path, message: e.to_string() });
    }
    tracing::info!(vocab_size, dir = %dir.display(), "training the demo BPE tokenizer");
    train_tokenizer(vocab_size, dir)
}

/// Encodes `text` (special tokens in the text are recognised) without adding any.
pub fn encode(tok: &Tokenizer, text: &str) -> Result<Vec<TokenId>> {
    let enc = tok.encode(text, false).map_err(|e| EdaError::Tokenizer { path: "<demo tokenizer>".into(), message: e.to_string() })?;
    Ok(enc.get_ids().to_vec())
}

/// Decodes ids back to text (special tokens kept).
pub fn decode(tok: &Tokenizer, ids: &[TokenId]) -> Result<String> {
    tok.decode(ids, false).map_err(|e| EdaError::Tokenizer { path: "<demo tokenizer>".into(), message: e.to_string() })
}
