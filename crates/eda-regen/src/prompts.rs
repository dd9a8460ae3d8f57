//! Prompt datasets: JSONL (`{"prompt": ...}` or `{"messages": [...]}`) and ShareGPT JSON.
//!
//! Three layouts are detected automatically:
//!
//! | layout | example |
//! |---|---|
//! | prompt JSONL | `{"id": "q1", "prompt": "What is 2+2?", "response": "4"}` (`id`, `response` optional) |
//! | chat JSONL | `{"id": "q1", "messages": [{"role": "user", "content": "Hi"}]}` |
//! | ShareGPT JSON | `[{"id": "q1", "conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"}]}]` |
//! | FastChat / MT-bench JSONL | `{"turns": ["Write a poem.", "Now make it shorter."]}` (the first turn) |
//!
//! A file whose first non-blank character is `[` is read as ShareGPT JSON (an array of
//! records); anything else is read as JSONL, one record per non-blank line, where each line may be
//! in any of the three record shapes (so ShareGPT records written one per line also work).
//!
//! A trailing assistant turn of a chat or ShareGPT conversation is taken as the *reference
//! response* (used by [`RegenMode::Original`](crate::RegenMode::Original)) and removed from the
//! prompt; everything before it, including earlier assistant turns, stays in the prompt.
//! Records without an `id` get `"<record number>"` (1-based), so ids are stable as long as the
//! file is only appended to. Duplicate ids are an error (resume relies on unique ids).

use std::collections::HashSet;
use std::path::Path;

use eda_core::{EdaError, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The speaker of one chat turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// System instructions.
    System,
    /// The user (ShareGPT `human`).
    User,
    /// The model (ShareGPT `gpt`).
    Assistant,
}

impl Role {
    /// Parses a role name: `system`; `user`/`human`; `assistant`/`gpt`/`chatgpt`/`bard`/`bing`/`model`.
    ///
    /// ```
    /// use eda_regen::Role;
    /// assert_eq!(Role::parse("human"), Some(Role::User));
    /// assert_eq!(Role::parse("gpt"), Some(Role::Assistant));
    /// assert_eq!(Role::parse("narrator"), None);
    /// ```
    pub fn parse(name: &str) -> Option<Role> {
        match name.to_ascii_lowercase().as_str() {
            "system" => Some(Role::System),
            "user" | "human" => Some(Role::User),
            "assistant" | "gpt" | "chatgpt" | "bard" | "bing" | "model" => Some(Role::Assistant),
            _ => None,
        }
    }
}

/// One chat turn.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// Who speaks.
    pub role: Role,
    /// What is said.
    pub content: String,
}

impl Message {
    /// A turn by `role`.
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        Message { role, content: content.into() }
    }
}

/// One prompt of a dataset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PromptRecord {
    /// Stable identifier (from the file, or the 1-based record number).
    pub id: String,
    /// The conversation to answer; its last turn is a user turn. Empty for a plain-text
    /// document ([`load_texts`]).
    pub messages: Vec<Message>,
    /// The dataset's own answer, if it has one (used when not regenerating); the whole text of a
    /// plain-text document.
    pub reference_response: Option<String>,
}

/// Which layout a prompts file was read as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PromptFormat {
    /// One JSON object per line.
    Jsonl,
    /// One JSON array of ShareGPT records.
    ShareGpt,
}

/// Reads and parses a prompts file (format detected from its content).
///
/// Errors: [`EdaError::Io`] when the file cannot be read, [`EdaError::EmptyDataset`] when it has
/// no records, [`EdaError::MalformedData`] naming the 1-based line (JSONL) or record (ShareGPT).
pub fn load_prompts(path: &Path) -> Result<Vec<PromptRecord>> {
    let text = std::fs::read_to_string(path).map_err(|e| EdaError::io(path, e))?;
    parse_prompts(&text, path).map(|(records, _)| records)
}

/// Parses the text of a prompts file; `path` is only used in error messages.
///
/// ```
/// use std::path::Path;
/// use eda_regen::{parse_prompts, PromptFormat, Role};
/// let text = "{\"prompt\": \"Hi\", \"response\": \"Hello\"}\n{\"id\": \"b\", \"prompt\": \"Bye\"}\n";
/// let (records, format) = parse_prompts(text, Path::new("p.jsonl")).unwrap();
/// assert_eq!(format, PromptFormat::Jsonl);
/// assert_eq!(records[0].id, "1");
/// assert_eq!(records[0].messages[0].role, Role::User);
/// assert_eq!(records[0].reference_response.as_deref(), Some("Hello"));
/// assert_eq!(records[1].id, "b");
/// ```
pub fn parse_prompts(text: &str, path: &Path) -> Result<(Vec<PromptRecord>, PromptFormat)> {
    // Editors on Windows start UTF-8 files with a byte-order mark; it is not part of the JSON.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let trimmed = text.trim_start();
    let (records, format) = if trimmed.starts_with('[') {
        let values: Vec<Value> = serde_json::from_str(trimmed).map_err(|e| EdaError::MalformedData {
            path: path.into(),
            record: 1,
            message: format!("not a JSON array of ShareGPT records: {e} (line {}, column {})", e.line(), e.column()),
        })?;
        let mut out = Vec::with_capacity(values.len());
        for (i, v) in values.iter().enumerate() {
            out.push(parse_record(v, i + 1, path)?);
        }
        (out, PromptFormat::ShareGpt)
    } else {
        let mut out = Vec::new();
        let mut record = 0usize;
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            record += 1;
            let v: Value = serde_json::from_str(line).map_err(|e| EdaError::MalformedData {
                path: path.into(),
                record: i + 1,
                message: format!("invalid JSON: {e}"),
            })?;
            let mut r = parse_record(&v, i + 1, path)?;
            if v.get("id").is_none() {
                r.id = record.to_string();
            }
            out.push(r);
        }
        (out, PromptFormat::Jsonl)
    };
    check_records(&records, path, "prompts")?;
    Ok((records, format))
}

/// Reads plain-text documents for teacher-forced features ([`RegenMode::Text`](crate::RegenMode::Text)):
/// a JSONL file of `{"text": ...}` records (`id` optional, as in [`parse_prompts`]; the layout of
/// most corpus dumps), or a directory whose regular files (recursively, sorted by path, hidden
/// ones skipped) are one document each, with the relative path as id. Files that are not UTF-8
/// text are skipped with a warning. Each record has no messages and the text as its
/// `reference_response`.
///
/// Errors: [`EdaError::Io`], [`EdaError::EmptyDataset`] when there is no document,
/// [`EdaError::MalformedData`] for a line that is not a JSON object with a non-empty string
/// `text`, or a duplicate id.
pub fn load_texts(path: &Path) -> Result<Vec<PromptRecord>> {
    let records = if path.is_dir() {
        let mut files = Vec::new();
        collect_files(path, &mut files)?;
        files.sort();
        let mut out = Vec::new();
        for f in files {
            let bytes = std::fs::read(&f).map_err(|e| EdaError::io(&f, e))?;
            match String::from_utf8(bytes) {
                Ok(text) if !text.trim().is_empty() => {
                    let id = f.strip_prefix(path).unwrap_or(&f).to_string_lossy().replace('\\', "/");
                    out.push(PromptRecord { id, messages: vec![], reference_response: Some(text) });
                }
                Ok(_) => tracing::warn!(file = %f.display(), "skipping an empty file"),
                Err(_) => tracing::warn!(file = %f.display(), "skipping a file that is not UTF-8 text"),
            }
        }
        out
    } else {
        let text = std::fs::read_to_string(path).map_err(|e| EdaError::io(path, e))?;
        let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
        let mut out = Vec::new();
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let bad = |m: String| EdaError::MalformedData { path: path.into(), record: i + 1, message: m };
            let v: Value = serde_json::from_str(line).map_err(|e| bad(format!("invalid JSON: {e}")))?;
            let body = match v.get("text") {
                Some(Value::String(s)) if !s.trim().is_empty() => s.clone(),
                Some(Value::String(_)) => return Err(bad("`text` is empty".into())),
                _ => return Err(bad("a plain-text record needs a string `text` (`{\"text\": ...}`)".into())),
            };
            let id = match v.get("id") {
                None => (out.len() + 1).to_string(),
                Some(Value::String(s)) => s.clone(),
                Some(Value::Number(x)) => x.to_string(),
                Some(other) => return Err(bad(format!("`id` must be a string or a number, got {other}"))),
            };
            out.push(PromptRecord { id, messages: vec![], reference_response: Some(body) });
        }
        out
    };
    check_records(&records, path, "text documents")?;
    Ok(records)
}

/// Refuses a dataset without records ([`EdaError::EmptyDataset`], naming `what` it lacks) or with
/// a repeated id ([`EdaError::MalformedData`]): resume relies on unique ids.
fn check_records(records: &[PromptRecord], path: &Path, what: &str) -> Result<()> {
    if records.is_empty() {
        return Err(EdaError::EmptyDataset(format!("no {what} in {}", path.display())));
    }
    let mut seen = HashSet::new();
    for (i, r) in records.iter().enumerate() {
        if !seen.insert(r.id.as_str()) {
            return Err(EdaError::MalformedData { path: path.into(), record: i + 1, message: format!("duplicate id `{}`", r.id) });
        }
    }
    Ok(())
}

/// Regular files under `dir`, recursively, without hidden entries (`.git`, editor files).
fn collect_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) -> Result<()> {
    for entry in std::fs::read_dir(dir).map_err(|e| EdaError::io(dir, e))? {
        let entry = entry.map_err(|e| EdaError::io(dir, e))?;
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let path = entry.path();
        let kind = entry.file_type().map_err(|e| EdaError::io(&path, e))?;
        if kind.is_dir() {
            collect_files(&path, out)?;
        } else if kind.is_file() {
            out.push(path);
        }
    }
    Ok(())
}

/// Parses one record (any of the three shapes); `n` is its 1-based line or record number.
fn parse_record(v: &Value, n: usize, path: &Path) -> Result<PromptRecord> {
    let bad = |m: String| EdaError::MalformedData { path: path.into(), record: n, message: m };
    let obj = v.as_object().ok_or_else(|| bad("record is not a JSON object".into()))?;
    let id = match obj.get("id") {
        None => n.to_string(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(x)) => x.to_string(),
        Some(other) => return Err(bad(format!("`id` must be a string or a number, got {other}"))),
    };
    let str_field = |key: &str| -> Result<Option<String>> {
        match obj.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(bad(format!("`{key}` must be a string"))),
        }
    };
    let mut messages = Vec::new();
    if let Some(p) = str_field("prompt")? {
        if let Some(s) = str_field("system")? {
            messages.push(Message::new(Role::System, s));
        }
        messages.push(Message::new(Role::User, p));
        let reference_response = str_field("response")?;
        return finish(id, messages, reference_response, &bad);
    }
    if let Some(t) = obj.get("turns") {
        // MT-bench's later turns follow the model's own earlier answers, which a prompt file
        // cannot hold: the first turn is the prompt.
        let first = t.get(0).and_then(Value::as_str).ok_or_else(|| bad("`turns` must be an array of strings".into()))?;
        return finish(id, vec![Message::new(Role::User, first)], None, &bad);
    }
    let (turns, role_key, text_key) = if let Some(m) = obj.get("messages") {
        (m, "role", "content")
    } else if let Some(c) = obj.get("conversations") {
        (c, "from", "value")
    } else {
        return Err(bad("record has none of `prompt`, `messages`, `conversations`, `turns`".into()));
    };
    let turns = turns
        .as_array()
        .ok_or_else(|| bad(format!("`{}` must be an array", if role_key == "role" { "messages" } else { "conversations" })))?;
    for (t, turn) in turns.iter().enumerate() {
        let role_name =
            turn.get(role_key).and_then(Value::as_str).ok_or_else(|| bad(format!("turn {} has no string `{role_key}`", t + 1)))?;
        let role = Role::parse(role_name).ok_or_else(|| bad(format!("turn {} has unknown role `{role_name}`", t + 1)))?;
        let content =
            turn.get(text_key).and_then(Value::as_str).ok_or_else(|| bad(format!("turn {} has no string `{text_key}`", t + 1)))?;
        messages.push(Message::new(role, content));
    }
    // ShareGPT dumps sometimes start with a model turn; like EAGLE, drop leading assistant turns.
    while messages.first().is_some_and(|m| m.role == Role::Assistant) {
        messages.remove(0);
    }
    let reference_response =
        if messages.last().is_some_and(|m| m.role == Role::Assistant) { messages.pop().map(|m| m.content) } else { None };
    finish(id, messages, reference_response, &bad)
}

fn finish(
    id: String,
    messages: Vec<Message>,
    reference_response: Option<String>,
    bad: &dyn Fn(String) -> EdaError,
) -> Result<PromptRecord> {
    match messages.last() {
        Some(m) if m.role == Role::User => Ok(PromptRecord { id, messages, reference_response }),
        Some(_) => Err(bad("the conversation must end with a user turn (optionally followed by one assistant turn)".into())),
        None => Err(bad("the conversation has no user turn".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts_come_from_jsonl_or_a_directory_and_bad_ones_are_typed_errors() {
        let dir = tempfile::tempdir().unwrap();
        let jsonl = dir.path().join("t.jsonl");
        std::fs::write(&jsonl, "{\"text\": \"fn main() {}\"}\n\n{\"id\": \"b\", \"text\": \"x = 1\"}\n").unwrap();
        let r = load_texts(&jsonl).unwrap();
        assert_eq!((r[0].id.as_str(), r[1].id.as_str()), ("1", "b"));
        assert!(r[0].messages.is_empty());
        assert_eq!(r[1].reference_response.as_deref(), Some("x = 1"));
        for bad in ["{\"prompt\": \"hi\"}", "{\"text\": \"  \"}", "not json", "{\"text\": \"a\", \"id\": []}"] {
            std::fs::write(&jsonl, bad).unwrap();
            assert!(matches!(load_texts(&jsonl), Err(EdaError::MalformedData { record: 1, .. })), "{bad}");
        }
        std::fs::write(&jsonl, "{\"id\": \"a\", \"text\": \"x\"}\n{\"id\": \"a\", \"text\": \"y\"}\n").unwrap();
        assert!(matches!(load_texts(&jsonl), Err(EdaError::MalformedData { record: 2, .. })), "duplicate id");
        let corpus = dir.path().join("corpus");
        std::fs::create_dir_all(corpus.join("src")).unwrap();
        std::fs::write(corpus.join("src/b.rs"), "fn b() {}").unwrap();
        std::fs::write(corpus.join("a.py"), "def a(): pass").unwrap();
        std::fs::write(corpus.join("blob.bin"), [0xff, 0xfe, 0x00]).unwrap();
        std::fs::write(corpus.join(".hidden"), "secret").unwrap();
        let ids: Vec<String> = load_texts(&corpus).unwrap().into_iter().map(|r| r.id).collect();
        assert_eq!(ids, ["a.py", "src/b.rs"]);
        let empty = dir.path().join("empty");
        std::fs::create_dir(&empty).unwrap();
        assert!(matches!(load_texts(&empty), Err(EdaError::EmptyDataset(_))));
    }

    #[test]
    fn fastchat_turns_give_their_first_turn_and_bad_turns_are_typed_errors() {
        let text = "{\"question_id\": 81, \"turns\": [\"Write a poem.\", \"Shorter.\"]}\n{\"turns\": [\"Q2\"]}\n";
        let (r, f) = parse_prompts(text, Path::new("mt.jsonl")).unwrap();
        assert_eq!(f, PromptFormat::Jsonl);
        assert_eq!(r[0].messages, vec![Message::new(Role::User, "Write a poem.")]);
        assert_eq!((r[0].id.as_str(), r[1].id.as_str()), ("1", "2"));
        assert_eq!(r[1].reference_response, None);
        for bad in ["{\"turns\": []}", "{\"turns\": [3]}", "{\"turns\": \"Q\"}"] {
            let e = parse_prompts(bad, Path::new("mt.jsonl")).unwrap_err();
            assert!(matches!(e, EdaError::MalformedData { record: 1, .. }), "{bad}: {e}");
        }
    }
}
