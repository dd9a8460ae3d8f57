//! Chat formatting and the loss mask.
//!
//! A training sequence is `prompt ++ response`, where the prompt is the conversation rendered by a
//! [`ChatTemplate`] *with* the generation prompt (the assistant header), and the response is the
//! assistant's reply followed by the template's end-of-turn token. Spans are computed from token
//! positions, never from string splits: the prompt is tokenised on its own and the response ids
//! are appended, so the boundary is exact.
//!
//! Loss mask (docs/method.md §4.4): 0 on the system and user parts and on every role header, 1 on the
//! response tokens and on its end-of-turn token. With `start_one_early` (the reference
//! implementation's convention, kept for bit-level parity) the 1s start one position earlier, on
//! the last token of the assistant header; the very first token is 0 in all cases. The reference
//! also masks the `\n` after `<|im_end|>`; eda ends the sequence at the end-of-turn token.

use std::path::Path;
use std::str::FromStr;

use eda_core::{EdaError, Result, TokenId};
use serde::{Deserialize, Serialize};
use tokenizers::Tokenizer;

use crate::prompts::{Message, Role};

/// How conversations are rendered to text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChatTemplate {
    /// Qwen2/Qwen2.5 ChatML: `<|im_start|>{role}\n{content}<|im_end|>\n`, ending with
    /// `<|im_start|>assistant\n`; replies end with `<|im_end|>`.
    ChatMl,
    /// Llama 3: `<|begin_of_text|><|start_header_id|>{role}<|end_header_id|>\n\n{content}<|eot_id|>`,
    /// ending with the assistant header; replies end with `<|eot_id|>`.
    Llama3,
    /// No special tokens: `{system}\n\nUser: {content}\nAssistant: {reply}\n...`, ending with
    /// `Assistant: `; replies end with the model's EOS token, if it has one.
    Plain,
}

impl ChatTemplate {
    /// Short name (`chatml`, `llama3`, `plain`), as accepted by [`FromStr`].
    pub fn name(&self) -> &'static str {
        match self {
            ChatTemplate::ChatMl => "chatml",
            ChatTemplate::Llama3 => "llama3",
            ChatTemplate::Plain => "plain",
        }
    }

    /// Recognises a Jinja `chat_template` string by its special tokens; [`Plain`](Self::Plain)
    /// when it uses neither ChatML nor Llama 3 headers.
    ///
    /// ```
    /// use eda_regen::ChatTemplate;
    /// assert_eq!(ChatTemplate::from_jinja("{{'<|im_start|>' + message['role']}}"), ChatTemplate::ChatMl);
    /// assert_eq!(ChatTemplate::from_jinja("<|start_header_id|>"), ChatTemplate::Llama3);
    /// assert_eq!(ChatTemplate::from_jinja("[INST]"), ChatTemplate::Plain);
    /// ```
    pub fn from_jinja(template: &str) -> ChatTemplate {
        if template.contains("<|im_start|>") {
            ChatTemplate::ChatMl
        } else if template.contains("<|start_header_id|>") {
            ChatTemplate::Llama3
        } else {
            ChatTemplate::Plain
        }
    }

    /// Recognises the template from a tokenizer's vocabulary, for checkpoints that ship no
    /// `tokenizer_config.json`: ChatML when it has `<|im_start|>` and `<|im_end|>`, Llama 3 when
    /// it has `<|start_header_id|>` and `<|eot_id|>`, else [`Plain`](Self::Plain).
    pub fn from_tokenizer(tokenizer: &Tokenizer) -> ChatTemplate {
        let has = |t: &str| tokenizer.token_to_id(t).is_some();
        let found = if has("<|im_start|>") && has("<|im_end|>") {
            ChatTemplate::ChatMl
        } else if has("<|start_header_id|>") && has("<|eot_id|>") {
            ChatTemplate::Llama3
        } else {
            ChatTemplate::Plain
        };
        tracing::info!(template = found.name(), "no tokenizer_config.json: chat template chosen from the tokenizer's special tokens");
        found
    }

    /// Detects the template from a `tokenizer_config.json`: its `chat_template` (a string, or a
    /// list of `{name, template}` where `default` is preferred). A missing file or a missing
    /// `chat_template` gives [`Plain`](Self::Plain); an unreadable or invalid file is an error.
    pub fn detect(tokenizer_config: &Path) -> Result<ChatTemplate> {
        if !tokenizer_config.exists() {
            tracing::info!(path = %tokenizer_config.display(), "no tokenizer_config.json: using the plain chat template");
            return Ok(ChatTemplate::Plain);
        }
        let v: serde_json::Value = eda_core::io::read_json(tokenizer_config)?;
        let source = match v.get("chat_template") {
            Some(serde_json::Value::String(s)) => Some(s.clone()),
            Some(serde_json::Value::Array(list)) => {
                let named = |n: &str| list.iter().find(|t| t.get("name").and_then(|x| x.as_str()) == Some(n));
                named("default").or(list.first()).and_then(|t| t.get("template")).and_then(|t| t.as_str()).map(str::to_owned)
            }
            _ => None,
        };
        Ok(source.map(|s| ChatTemplate::from_jinja(&s)).unwrap_or(ChatTemplate::Plain))
    }

    /// The special token that closes an assistant reply (`<|im_end|>`, `<|eot_id|>`; none for plain).
    pub fn end_of_turn(&self) -> Option<&'static str> {
        match self {
            ChatTemplate::ChatMl => Some("<|im_end|>"),
            ChatTemplate::Llama3 => Some("<|eot_id|>"),
            ChatTemplate::Plain => None,
        }
    }

    /// Renders `messages` followed by the assistant header (the generation prompt).
    ///
    /// `system` is used when the conversation has no system turn of its own.
    ///
    /// ```
    /// use eda_regen::{ChatTemplate, Message, Role};
    /// let m = [Message::new(Role::User, "Hi")];
    /// assert_eq!(
    ///     ChatTemplate::ChatMl.render_prompt(&m, Some("Be brief.")),
    ///     "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    /// );
    /// assert_eq!(ChatTemplate::Plain.render_prompt(&m, None), "User: Hi\nAssistant: ");
    /// ```
    pub fn render_prompt(&self, messages: &[Message], system: Option<&str>) -> String {
        let mut turns: Vec<(Role, &str)> = Vec::with_capacity(messages.len() + 1);
        if let Some(s) = system {
            if !messages.iter().any(|m| m.role == Role::System) {
                turns.push((Role::System, s));
            }
        }
        turns.extend(messages.iter().map(|m| (m.role, m.content.as_str())));
        let mut out = String::new();
        match self {
            ChatTemplate::ChatMl => {
                for (role, content) in turns {
                    out.push_str(&format!("<|im_start|>{}\n{content}<|im_end|>\n", role_name(role)));
                }
                out.push_str("<|im_start|>assistant\n");
            }
            ChatTemplate::Llama3 => {
                out.push_str("<|begin_of_text|>");
                for (role, content) in turns {
                    out.push_str(&format!("<|start_header_id|>{}<|end_header_id|>\n\n{}<|eot_id|>", role_name(role), content.trim()));
                }
                out.push_str("<|start_header_id|>assistant<|end_header_id|>\n\n");
            }
            ChatTemplate::Plain => {
                for (role, content) in turns {
                    match role {
                        Role::System => out.push_str(&format!("{content}\n\n")),
                        Role::User => out.push_str(&format!("User: {content}\n")),
                        Role::Assistant => out.push_str(&format!("Assistant: {content}\n")),
                    }
                }
                out.push_str("Assistant: ");
            }
        }
        out
    }

    /// The id of [`end_of_turn`](Self::end_of_turn) in `tokenizer`; an error if the template
    /// needs one and the tokenizer lacks it, `None` for [`Plain`](Self::Plain).
    pub fn end_of_turn_id(&self, tokenizer: &Tokenizer) -> Result<Option<TokenId>> {
        match self.end_of_turn() {
            None => Ok(None),
            Some(tok) => tokenizer.token_to_id(tok).map(Some).ok_or_else(|| EdaError::Tokenizer {
                path: "<tokenizer>".into(),
                message: format!("the {} chat template needs the token `{tok}`, which the tokenizer does not have", self.name()),
            }),
        }
    }
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::System => "system",
        Role::User => "user",
        Role::Assistant => "assistant",
    }
}

impl FromStr for ChatTemplate {
    type Err = EdaError;

    /// Accepts `chatml` (or `qwen`, `qwen2`), `llama3` (or `llama`), `plain`.
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "chatml" | "qwen" | "qwen2" => Ok(ChatTemplate::ChatMl),
            "llama3" | "llama" | "llama-3" => Ok(ChatTemplate::Llama3),
            "plain" => Ok(ChatTemplate::Plain),
            other => Err(EdaError::InvalidArgument(format!("unknown chat template `{other}` (expected chatml, llama3 or plain)"))),
        }
    }
}

impl std::fmt::Display for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Tokenises `text` exactly as written: no BOS/EOS added, special tokens in the text recognised.
pub fn encode(tokenizer: &Tokenizer, text: &str) -> Result<Vec<TokenId>> {
    tokenizer
        .encode(text, false)
        .map(|e| e.get_ids().to_vec())
        .map_err(|e| EdaError::Tokenizer { path: "<tokenizer>".into(), message: format!("cannot encode text: {e}") })
}

/// Tokenises a plain-text document as the model reads one: with the tokenizer's own special
/// tokens added (the BOS of Llama tokenizers; nothing for Qwen2/SmolLM2).
pub fn encode_document(tokenizer: &Tokenizer, text: &str) -> Result<Vec<TokenId>> {
    tokenizer
        .encode(text, true)
        .map(|e| e.get_ids().to_vec())
        .map_err(|e| EdaError::Tokenizer { path: "<tokenizer>".into(), message: format!("cannot encode text: {e}") })
}

/// Concatenates prompt and response and builds the loss mask (see the [module docs](self)).
///
/// ```
/// let (ids, mask) = eda_regen::template::join_with_mask(&[1, 2, 3], &[7, 8], false);
/// assert_eq!(ids, vec![1, 2, 3, 7, 8]);
/// assert_eq!(mask, vec![0, 0, 0, 1, 1]);
/// let (_, early) = eda_regen::template::join_with_mask(&[1, 2, 3], &[7, 8], true);
/// assert_eq!(early, vec![0, 0, 1, 1, 1]);
/// ```
pub fn join_with_mask(prompt: &[TokenId], response: &[TokenId], start_one_early: bool) -> (Vec<TokenId>, Vec<u8>) {
    let mut ids = Vec::with_capacity(prompt.len() + response.len());
    ids.extend_from_slice(prompt);
    ids.extend_from_slice(response);
    let mut mask = vec![0u8; prompt.len()];
    mask.extend(std::iter::repeat_n(1u8, response.len()));
    if start_one_early && prompt.len() >= 2 && !response.is_empty() {
        mask[prompt.len() - 1] = 1;
    }
    (ids, mask)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A WordLevel tokenizer over `words`.
    fn word_tokenizer(words: &[&str]) -> Tokenizer {
        let vocab: serde_json::Map<String, serde_json::Value> =
            words.iter().enumerate().map(|(i, w)| (w.to_string(), serde_json::json!(i))).collect();
        let json = serde_json::json!({
            "version": "1.0", "truncation": null, "padding": null, "added_tokens": [], "normalizer": null,
            "pre_tokenizer": {"type": "Whitespace"}, "post_processor": null, "decoder": null,
            "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "<unk>"}
        });
        json.to_string().parse().expect("test tokenizer")
    }

    #[test]
    fn the_template_is_recognised_from_the_tokenizers_special_tokens() {
        let chatml = word_tokenizer(&["<unk>", "hi", "<|im_start|>", "<|im_end|>"]);
        assert_eq!(ChatTemplate::from_tokenizer(&chatml), ChatTemplate::ChatMl);
        let llama = word_tokenizer(&["<unk>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]);
        assert_eq!(ChatTemplate::from_tokenizer(&llama), ChatTemplate::Llama3);
        let half = word_tokenizer(&["<unk>", "<|im_start|>"]);
        assert_eq!(ChatTemplate::from_tokenizer(&half), ChatTemplate::Plain, "one ChatML token is not a ChatML vocabulary");
    }
}
