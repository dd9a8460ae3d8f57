//! A HF `tokenizers::Tokenizer` rebuilt from a GGUF vocabulary (`tokenizer.ggml.*`).
//!
//! Supported: byte-level BPE (`tokenizer.ggml.model = "gpt2"`) with the pre-tokenizers of
//! llama.cpp's `tokenizer.ggml.pre` types `gpt-2`, `smollm`/`starcoder`, `qwen2` and
//! `llama-bpe`. Each is written as the `tokenizer.json` of the original HF model family spells it
//! (e.g. SmolLM2: `Sequence[Digits(individual), ByteLevel(use_regex)]`); the regexes are the ones
//! llama.cpp's `llama-vocab.cpp` uses for the same types. SentencePiece vocabularies
//! (`"llama"`) are rejected with a typed error.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use serde_json::{json, Map, Value};

use eda_core::{EdaError, Result};

use super::reader::GgufFile;

/// `tokenizer.ggml.token_type` of control tokens (`<|im_start|>`): special added tokens.
const TOKEN_CONTROL: i64 = 3;
/// `tokenizer.ggml.token_type` of user-defined tokens: added tokens that are not special.
const TOKEN_USER_DEFINED: i64 = 4;

/// The GPT-2 / Qwen2 split: `'s`… contractions, letters, single digits, punctuation, spaces.
const QWEN2_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// The Llama-3 split: as Qwen2 but digits in groups of up to three.
const LLAMA3_SPLIT: &str =
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// `tokenizer.ggml.pre` values eda understands.
pub const SUPPORTED_PRE_TOKENIZERS: &[&str] =
    &["gpt-2", "smollm", "starcoder", "qwen2", "deepseek-r1-qwen", "llama-bpe", "llama3", "llama-v3"];

/// How a pre-tokenizer type is written in `tokenizer.json`.
struct PreTokenizer {
    normalizer: Value,
    pre_tokenizer: Value,
    ignore_merges: bool,
}

fn byte_level(use_regex: bool, trim_offsets: bool) -> Value {
    json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": trim_offsets, "use_regex": use_regex})
}

fn split_then_bytes(regex: &str, trim_offsets: bool) -> Value {
    json!({"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated", "invert": false},
        byte_level(false, trim_offsets),
    ]})
}

fn pre_tokenizer_for(pre: &str) -> Option<PreTokenizer> {
    Some(match pre {
        // GPT-2's own regex, applied by ByteLevel itself.
        "gpt-2" => PreTokenizer { normalizer: Value::Null, pre_tokenizer: byte_level(true, true), ignore_merges: false },
        // llama.cpp: `\p{N}` then the GPT-2 regex; HF SmolLM2 / StarCoder: individual digits, then ByteLevel.
        "smollm" | "starcoder" => PreTokenizer {
            normalizer: Value::Null,
            pre_tokenizer: json!({"type": "Sequence", "pretokenizers": [
                {"type": "Digits", "individual_digits": true},
                byte_level(true, true),
            ]}),
            ignore_merges: false,
        },
        // HF Qwen2 normalises to NFC first (llama.cpp does not; it only matters for
        // non-NFC input).
        "qwen2" | "deepseek-r1-qwen" => {
            PreTokenizer { normalizer: json!({"type": "NFC"}), pre_tokenizer: split_then_bytes(QWEN2_SPLIT, false), ignore_merges: false }
        }
        // Llama 3 looks whole words up in the vocabulary before merging (llama.cpp
        // `ignore_merges`, HF `"ignore_merges": true`).
        "llama-bpe" | "llama3" | "llama-v3" => {
            PreTokenizer { normalizer: Value::Null, pre_tokenizer: split_then_bytes(LLAMA3_SPLIT, true), ignore_merges: true }
        }
        _ => return None,
    })
}

/// GPT-2's byte → printable character table (`bytes_to_unicode`).
fn byte_alphabet() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut extra = 0u32;
    for b in 0..256u32 {
        let printable = (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
        table[b as usize] = if printable {
            char::from_u32(b).unwrap_or('\0')
        } else {
            extra += 1;
            char::from_u32(255 + extra).unwrap_or('\0')
        };
    }
    table
}

/// The `tokenizer.json` document for the vocabulary of `f` (see the module docs).
///
/// Errors: [`EdaError::Tokenizer`] for a missing or unsupported vocabulary (SentencePiece,
/// unknown pre-tokenizer, malformed merges), naming the file.
pub fn tokenizer_json(f: &GgufFile) -> Result<Value> {
    let path = f.path();
    let err = |m: String| EdaError::Tokenizer { path: path.to_path_buf(), message: m };
    let model = f.get_str("tokenizer.ggml.model").ok_or_else(|| err("no vocabulary: missing `tokenizer.ggml.model`".into()))?;
    if model != "gpt2" {
        return Err(err(format!(
            "tokenizer model `{model}` is not supported (only byte-level BPE, `gpt2`; SentencePiece `llama` vocabularies are not)"
        )));
    }
    let pre_name = f.get_str("tokenizer.ggml.pre").unwrap_or("default");
    let pre = pre_tokenizer_for(pre_name)
        .ok_or_else(|| err(format!("pre-tokenizer `{pre_name}` is not supported (supported: {})", SUPPORTED_PRE_TOKENIZERS.join(", "))))?;
    let tokens = f.opt_str_array("tokenizer.ggml.tokens")?.ok_or_else(|| err("missing `tokenizer.ggml.tokens`".into()))?;
    let merges = f.opt_str_array("tokenizer.ggml.merges")?.ok_or_else(|| err("missing `tokenizer.ggml.merges`".into()))?;
    let types: Vec<i64> = match f.get("tokenizer.ggml.token_type") {
        None => vec![1; tokens.len()],
        Some(v) => v
            .as_array()
            .and_then(|a| a.iter().map(|x| x.as_i64()).collect::<Option<Vec<_>>>())
            .filter(|t| t.len() == tokens.len())
            .ok_or_else(|| err(format!("`tokenizer.ggml.token_type` must be {} integers", tokens.len())))?,
    };

    // Normal tokens are spelled in the byte alphabet; llama.cpp stores some added tokens as raw
    // text, so those are re-spelled (as transformers does). Added tokens keep their raw text,
    // which is what they match in the input.
    let alphabet = byte_alphabet();
    let in_alphabet: HashSet<char> = alphabet.iter().copied().collect();
    let mut vocab = Map::new();
    let mut added = Vec::new();
    for (id, (&tok, &ty)) in tokens.iter().zip(&types).enumerate() {
        let is_added = ty == TOKEN_CONTROL || ty == TOKEN_USER_DEFINED;
        let spelled = if is_added || tok.chars().all(|c| in_alphabet.contains(&c)) {
            tok.to_string()
        } else {
            tok.bytes().map(|b| alphabet[b as usize]).collect()
        };
        if vocab.contains_key(&spelled) {
            tracing::warn!(file = %path.display(), token = %spelled, id, "duplicate token in GGUF vocabulary; keeping the first id");
            continue;
        }
        vocab.insert(spelled.clone(), json!(id));
        if is_added {
            added.push(json!({
                "id": id, "content": spelled, "single_word": false, "lstrip": false, "rstrip": false,
                "normalized": false, "special": ty == TOKEN_CONTROL,
            }));
        }
    }
    let merges = merges
        .iter()
        .enumerate()
        .map(|(i, m)| {
            m.split_once(' ')
                .map(|(a, b)| json!([a, b]))
                .ok_or_else(|| err(format!("merge #{i} `{m}` is not two tokens separated by a space")))
        })
        .collect::<Result<Vec<_>>>()?;

    // (text, id) of a special token named by an id key.
    let special = |key: &str| -> Result<Option<(String, u64)>> {
        Ok(f.opt_u64(key)?.and_then(|id| tokens.get(id as usize).map(|s| (s.to_string(), id))))
    };
    let add_bos = f.opt_bool("tokenizer.ggml.add_bos_token")?.unwrap_or(false);
    let add_eos = f.opt_bool("tokenizer.ggml.add_eos_token")?.unwrap_or(false);
    let bos = if add_bos { special("tokenizer.ggml.bos_token_id")? } else { None };
    let eos = if add_eos { special("tokenizer.ggml.eos_token_id")? } else { None };
    let post_processor = post_processor(bos, eos);

    Ok(json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": pre.normalizer,
        "pre_tokenizer": pre.pre_tokenizer,
        "post_processor": post_processor,
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {
            "type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
            "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
            "ignore_merges": pre.ignore_merges, "vocab": vocab, "merges": merges,
        },
    }))
}

/// `ByteLevel` offsets handling, plus a `TemplateProcessing` when the file asks for BOS/EOS to
/// be added (`tokenizer.ggml.add_bos_token` / `add_eos_token`); tokens are `(text, id)`.
fn post_processor(bos: Option<(String, u64)>, eos: Option<(String, u64)>) -> Value {
    let offsets = json!({"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": false, "use_regex": true});
    if bos.is_none() && eos.is_none() {
        return offsets;
    }
    let mut specials = Map::new();
    for (text, id) in [&bos, &eos].into_iter().flatten() {
        specials.insert(text.clone(), json!({"id": text, "ids": [id], "tokens": [text]}));
    }
    let wrap = |seq: &str, type_id: u32| -> Vec<Value> {
        let mut v = Vec::new();
        if let Some((b, _)) = &bos {
            v.push(json!({"SpecialToken": {"id": b, "type_id": type_id}}));
        }
        v.push(json!({"Sequence": {"id": seq, "type_id": type_id}}));
        if let Some((e, _)) = &eos {
            v.push(json!({"SpecialToken": {"id": e, "type_id": type_id}}));
        }
        v
    };
    let single = wrap("A", 0);
    let mut pair = single.clone();
    pair.extend(wrap("B", 1));
    json!({"type": "Sequence", "processors": [
        offsets,
        {"type": "TemplateProcessing", "single": single, "pair": pair, "special_tokens": specials},
    ]})
}

/// The tokenizer of a GGUF file (see [`tokenizer_json`]), checked against the embedding: the
/// vocabulary must have exactly one entry per `token_embd.weight` row.
///
/// Errors: [`EdaError::Io`]/[`EdaError::Gguf`] for the file itself, [`EdaError::Tokenizer`]
/// for an unsupported or malformed vocabulary, [`EdaError::Mismatch`] when the vocabulary size
/// differs from the embedding rows.
pub fn tokenizer_from_gguf(f: &GgufFile) -> Result<tokenizers::Tokenizer> {
    let doc = tokenizer_json(f)?;
    let n_tokens = doc["model"]["vocab"].as_object().map(|v| v.len()).unwrap_or(0);
    let tok: tokenizers::Tokenizer = doc
        .to_string()
        .parse()
        .map_err(|e| EdaError::Tokenizer { path: f.path().to_path_buf(), message: format!("vocabulary does not form a tokenizer: {e}") })?;
    if let Some(embd) = f.tensor("token_embd.weight") {
        let rows = embd.shape()[0];
        let size = crate::tokenizer::tokenizer_vocab_size(&tok);
        if size != rows {
            return Err(EdaError::mismatch(
                format!(
                    "tokenizer vocabulary ({n_tokens} distinct tokens) vs embedding rows (token_embd.weight) in {}",
                    f.path().display()
                ),
                rows,
                size,
            ));
        }
    }
    Ok(tok)
}

/// Opens `path` and builds its tokenizer ([`tokenizer_from_gguf`]).
pub fn load_tokenizer_from_gguf(path: &Path) -> Result<tokenizers::Tokenizer> {
    tokenizer_from_gguf(&GgufFile::open(path)?)
}

/// `tokenizer_config.json` for a converted checkpoint: special tokens, BOS/EOS flags and the
/// chat template (`tokenizer.chat_template`).
pub fn tokenizer_config_json(f: &GgufFile, max_length: usize) -> Result<Value> {
    let tokens = f.opt_str_array("tokenizer.ggml.tokens")?.unwrap_or_default();
    let text = |key: &str| -> Result<Value> {
        Ok(f.opt_u64(key)?.and_then(|id| tokens.get(id as usize)).map(|s| json!(s)).unwrap_or(Value::Null))
    };
    let mut m: HashMap<&str, Value> = HashMap::new();
    m.insert("tokenizer_class", json!("PreTrainedTokenizerFast"));
    m.insert("bos_token", text("tokenizer.ggml.bos_token_id")?);
    m.insert("eos_token", text("tokenizer.ggml.eos_token_id")?);
    m.insert("unk_token", text("tokenizer.ggml.unknown_token_id")?);
    m.insert("pad_token", text("tokenizer.ggml.padding_token_id")?);
    m.insert("add_bos_token", json!(f.opt_bool("tokenizer.ggml.add_bos_token")?.unwrap_or(false)));
    m.insert("add_eos_token", json!(f.opt_bool("tokenizer.ggml.add_eos_token")?.unwrap_or(false)));
    m.insert("clean_up_tokenization_spaces", json!(false));
    m.insert("model_max_length", json!(max_length));
    if let Some(t) = f.get_str("tokenizer.chat_template") {
        m.insert("chat_template", json!(t));
    }
    Ok(json!(m))
}
