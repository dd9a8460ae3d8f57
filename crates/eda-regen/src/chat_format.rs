//! The chat rendering a dataset was made with, carried from data to draft to decoding.
//!
//! A draft learns the target's hidden states on prompts rendered one way (template and system
//! prompt); decoding prompts rendered another way lowers τ without any error. So the rendering is
//! decided once, at `eda regenerate` / `eda features` time, and travels with the data:
//!
//! | step | where the [`ChatFormat`] is read | where it is written |
//! |---|---|---|
//! | regenerate / features | the flags | `manifest.json` (its `settings`) |
//! | select | the folders of its `--shards` | `chat_format.json` in its output folder |
//! | train | the `--features` folders (stage 2 falls back to the stage-1 draft) | `chat_format.json` in the draft folder |
//! | eval / generate | the draft folder | (used to render prompts unless overridden) |

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use eda_core::Result;
use serde::{Deserialize, Serialize};

use crate::pipeline::{Manifest, RegenMode, MANIFEST_FILE};
use crate::template::ChatTemplate;

/// File name of a recorded [`ChatFormat`] (in `eda select` outputs and draft folders).
pub const CHAT_FORMAT_FILE: &str = "chat_format.json";

/// How the prompts of a dataset were rendered: chat template and default system prompt.
///
/// ```
/// use eda_regen::{ChatFormat, ChatTemplate};
/// let dir = tempfile::tempdir().unwrap();
/// assert_eq!(ChatFormat::read(dir.path()).unwrap(), None);
/// let f = ChatFormat { template: ChatTemplate::ChatMl, system_prompt: Some("Be brief.".into()) };
/// f.write(dir.path()).unwrap();
/// assert_eq!(ChatFormat::read(dir.path()).unwrap(), Some(f));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatFormat {
    /// Chat template.
    pub template: ChatTemplate,
    /// System prompt added to conversations without one (`None`: no system turn was added).
    pub system_prompt: Option<String>,
}

impl std::fmt::Display for ChatFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.system_prompt {
            Some(s) => write!(f, "template {}, system prompt {s:?}", self.template),
            None => write!(f, "template {}, no system prompt", self.template),
        }
    }
}

impl ChatFormat {
    /// Writes `dir/chat_format.json` (atomically).
    pub fn write(&self, dir: &Path) -> Result<()> {
        eda_core::io::write_json(&dir.join(CHAT_FORMAT_FILE), self)
    }

    /// The format recorded in `dir`: its `chat_format.json`, else the settings of its
    /// regeneration `manifest.json`; `None` when it has neither, or when the data is plain text
    /// ([`RegenMode::Text`], no chat rendering). An unreadable or invalid file is an error.
    pub fn read(dir: &Path) -> Result<Option<ChatFormat>> {
        let file = dir.join(CHAT_FORMAT_FILE);
        if file.exists() {
            return eda_core::io::read_json(&file).map(Some);
        }
        let manifest = dir.join(MANIFEST_FILE);
        if manifest.exists() {
            let m = Manifest::load(&manifest)?;
            if m.settings.mode == RegenMode::Text {
                return Ok(None);
            }
            return Ok(Some(ChatFormat { template: m.settings.template, system_prompt: m.settings.system_prompt }));
        }
        Ok(None)
    }

    /// The one format shared by the folders holding the shard files `shards` (as resolved by
    /// [`eda_core::shard_files`]). `None`, with a warning, when they recorded different formats;
    /// folders that recorded none are ignored (with a note).
    pub fn of_shards(shards: &[PathBuf]) -> Result<Option<ChatFormat>> {
        let dirs: BTreeSet<PathBuf> = shards.iter().map(|f| f.parent().map(Path::to_path_buf).unwrap_or_default()).collect();
        let mut found: Vec<(PathBuf, ChatFormat)> = Vec::new();
        for d in dirs {
            match ChatFormat::read(if d.as_os_str().is_empty() { Path::new(".") } else { &d })? {
                Some(f) => found.push((d, f)),
                None => tracing::info!(dir = %d.display(), "no chat format recorded with these shards"),
            }
        }
        let Some((_, first)) = found.first() else { return Ok(None) };
        if found.iter().any(|(_, f)| f != first) {
            let list: Vec<String> = found.iter().map(|(d, f)| format!("{}: {f}", d.display())).collect();
            tracing::warn!(formats = %list.join("; "), "the inputs were rendered with different chat formats; none is recorded");
            return Ok(None);
        }
        Ok(Some(first.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs_agreeing_give_their_format_and_disagreeing_give_none() {
        let root = tempfile::tempdir().unwrap();
        let (a, b) = (root.path().join("a"), root.path().join("b"));
        for d in [&a, &b] {
            std::fs::create_dir(d).unwrap();
            let s = eda_core::data::FeatureSample {
                id: d.display().to_string(),
                input_ids: vec![1, 2],
                hidden: vec![0.0; 4],
                hidden_size: 2,
                loss_mask: vec![0, 1],
            };
            eda_core::data::write_shard(&d.join("shard-00000.safetensors"), &[s], eda_core::data::FeatureDType::F32).unwrap();
        }
        let chatml = ChatFormat { template: ChatTemplate::ChatMl, system_prompt: None };
        chatml.write(&a).unwrap();
        let shards = [a.join("shard-00000.safetensors"), b.join("shard-00000.safetensors")];
        assert_eq!(ChatFormat::of_shards(&shards).unwrap(), Some(chatml.clone()), "b recorded nothing");
        chatml.write(&b).unwrap();
        assert_eq!(ChatFormat::of_shards(&shards).unwrap(), Some(chatml.clone()));
        ChatFormat { system_prompt: Some("x".into()), ..chatml }.write(&b).unwrap();
        assert_eq!(ChatFormat::of_shards(&shards).unwrap(), None, "different system prompts");
        std::fs::write(root.path().join(CHAT_FORMAT_FILE), "{").unwrap();
        assert!(ChatFormat::read(root.path()).is_err(), "a corrupt file is an error, not silently ignored");
    }
}
