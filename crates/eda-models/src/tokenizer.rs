//! Loading HF `tokenizer.json` files and checking them against a model.

use std::path::Path;

use eda_core::{EdaError, Result};

/// Loads a HF `tokenizer.json` and checks that every token id (added tokens included) has a
/// row in an embedding of `embedding_rows` rows.
///
/// Errors: [`EdaError::Io`] when the file is missing, [`EdaError::Tokenizer`] when it cannot be
/// parsed, [`EdaError::Mismatch`] when the vocabulary is larger than the embedding.
pub fn load_tokenizer(path: &Path, embedding_rows: usize) -> Result<tokenizers::Tokenizer> {
    if !path.is_file() {
        return Err(EdaError::io(path, std::io::Error::new(std::io::ErrorKind::NotFound, "tokenizer file not found")));
    }
    let tok =
        tokenizers::Tokenizer::from_file(path).map_err(|e| EdaError::Tokenizer { path: path.to_path_buf(), message: e.to_string() })?;
    let size = tokenizer_vocab_size(&tok);
    if size > embedding_rows {
        return Err(EdaError::mismatch(
            format!("tokenizer vocabulary of {} (with added tokens) vs embedding rows", path.display()),
            embedding_rows,
            size,
        ));
    }
    Ok(tok)
}

/// Number of ids a tokenizer can produce: `max id + 1` over the vocabulary and added tokens.
pub fn tokenizer_vocab_size(tok: &tokenizers::Tokenizer) -> usize {
    let max_id = tok.get_vocab(true).values().copied().max().map(|m| m as usize + 1).unwrap_or(0);
    max_id.max(tok.get_vocab_size(true))
}

/// The tokenizer that goes with a checkpoint or tokenizer path, checked against
/// `embedding_rows`: the vocabulary of a GGUF file
/// ([`gguf::tokenizer_from_gguf`](crate::gguf::tokenizer_from_gguf), which must also match the
/// file's own embedding exactly), a `tokenizer.json` file, or `tokenizer.json` inside a HF
/// directory (both as by [`load_tokenizer`]).
pub fn load_tokenizer_for(path: &Path, embedding_rows: usize) -> Result<tokenizers::Tokenizer> {
    if !crate::gguf::is_gguf_path(path) {
        let file = if path.is_dir() { path.join("tokenizer.json") } else { path.to_path_buf() };
        return load_tokenizer(&file, embedding_rows);
    }
    let tok = crate::gguf::load_tokenizer_from_gguf(path)?;
    let size = tokenizer_vocab_size(&tok);
    if size > embedding_rows {
        return Err(EdaError::mismatch(format!("tokenizer vocabulary of {} vs embedding rows", path.display()), embedding_rows, size));
    }
    Ok(tok)
}
