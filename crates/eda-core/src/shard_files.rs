//! Which files a command reads as feature shards: every command that reads shards accepts a
//! shard file, a directory or a file-name glob, and resolves it here, so that a folder written by
//! one command (`eda regenerate`, `eda select`) can be handed to the next as it is.

use std::path::{Path, PathBuf};

use crate::data::SHARD_FORMAT;
use crate::{EdaError, Result};

/// Feature-shard files named by `spec`, sorted by path:
///
/// - a directory: its `*.safetensors` files that are feature shards. Other safetensors files
///   (the statistics `eda select` writes beside its shard, model weights) are skipped; a file
///   whose header cannot be read is kept, so that reading it reports the corruption;
/// - a path whose file name has `*` (any run) or `?` (one character): the matching files;
/// - anything else: that one file.
///
/// Errors: [`EdaError::EmptyDataset`] when nothing matches, [`EdaError::InvalidArgument`] for a
/// missing path or wildcards outside the file name, [`EdaError::Io`] for an unreadable directory.
///
/// ```
/// # let dir = tempfile::tempdir().unwrap();
/// use eda_core::data::{write_shard, FeatureDType, FeatureSample};
/// let s = FeatureSample::new("a", vec![1, 2], vec![0.5; 4], 2, vec![0, 1]).unwrap();
/// write_shard(&dir.path().join("shard-00000.safetensors"), &[s], FeatureDType::F32).unwrap();
/// std::fs::write(dir.path().join("notes.txt"), "not a shard").unwrap();
/// let files = eda_core::shard_files::shard_files(dir.path()).unwrap();
/// assert_eq!(files, vec![dir.path().join("shard-00000.safetensors")]);
/// ```
pub fn shard_files(spec: &Path) -> Result<Vec<PathBuf>> {
    let text = spec.to_string_lossy();
    let mut out = if spec.is_dir() {
        let mut out = Vec::new();
        for path in list_dir(spec)? {
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            if !name.ends_with(".safetensors") {
                continue;
            }
            match shard_format(&path) {
                Some(f) if f != SHARD_FORMAT => {
                    tracing::debug!(file = %path.display(), format = %f, "not a feature shard: skipped");
                }
                _ => out.push(path),
            }
        }
        out
    } else if text.contains(['*', '?']) {
        let dir = spec.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        if dir.to_string_lossy().contains(['*', '?']) {
            return Err(EdaError::InvalidArgument(format!("`{text}`: wildcards are only supported in the file name")));
        }
        let pattern: Vec<char> = spec.file_name().map(|f| f.to_string_lossy().chars().collect()).unwrap_or_default();
        list_dir(dir)?
            .into_iter()
            .filter(|p| {
                let name: Vec<char> = p.file_name().map(|n| n.to_string_lossy().chars().collect()).unwrap_or_default();
                wildcard(&pattern, &name)
            })
            .collect()
    } else if spec.is_file() {
        vec![spec.to_path_buf()]
    } else {
        return Err(EdaError::InvalidArgument(format!("`{text}` is neither a shard file, a directory nor a glob")));
    };
    out.sort();
    if out.is_empty() {
        return Err(EdaError::EmptyDataset(format!("no feature shards in `{text}`")));
    }
    Ok(out)
}

/// The files (not directories) in `dir`.
fn list_dir(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| EdaError::io(dir, e))? {
        let path = entry.map_err(|e| EdaError::io(dir, e))?.path();
        if path.is_file() {
            out.push(path);
        }
    }
    Ok(out)
}

/// The `format` entry of a safetensors file's metadata (empty when it has none); `None` when the
/// file cannot be opened as safetensors. The file is memory-mapped, so only the header is read.
fn shard_format(path: &Path) -> Option<String> {
    let file = crate::safetensors::SafetensorsFile::open(path).ok()?;
    Some(file.metadata().get("format").cloned().unwrap_or_default())
}

/// Matches `name` against a pattern with `*` (any run) and `?` (one character).
fn wildcard(pattern: &[char], name: &[char]) -> bool {
    match (pattern.first(), name.first()) {
        (None, None) => true,
        (Some('*'), _) => wildcard(&pattern[1..], name) || (!name.is_empty() && wildcard(pattern, &name[1..])),
        (Some('?'), Some(_)) => wildcard(&pattern[1..], &name[1..]),
        (Some(p), Some(n)) if p == n => wildcard(&pattern[1..], &name[1..]),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{write_shard, FeatureDType, FeatureSample};

    fn chars(s: &str) -> Vec<char> {
        s.chars().collect()
    }

    #[test]
    fn wildcards_match_runs_and_single_characters() {
        assert!(wildcard(&chars("shard-*.safetensors"), &chars("shard-00001.safetensors")));
        assert!(wildcard(&chars("s?"), &chars("s1")));
        assert!(!wildcard(&chars("s?"), &chars("s12")));
        assert!(!wildcard(&chars("*.safetensors"), &chars("a.json")));
        assert!(wildcard(&chars("*"), &chars("")));
    }

    #[test]
    fn a_directory_gives_its_shards_skips_other_safetensors_and_keeps_corrupt_files() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let s = FeatureSample::new("a", vec![1, 2], vec![0.5; 4], 2, vec![0, 1]).unwrap();
        write_shard(&d.join("b.safetensors"), std::slice::from_ref(&s), FeatureDType::F32).unwrap();
        write_shard(&d.join("a.safetensors"), &[s], FeatureDType::F32).unwrap();
        // Statistics beside the selected shard, as `eda select` writes them.
        let header = br#"{"__metadata__":{"format":"eda-feature-stats-v1"}}"#;
        let mut stats = (header.len() as u64).to_le_bytes().to_vec();
        stats.extend_from_slice(header);
        std::fs::write(d.join("stats.safetensors"), stats).unwrap();
        std::fs::write(d.join("broken.safetensors"), b"\x01").unwrap();
        std::fs::write(d.join("manifest.json"), b"{}").unwrap();
        let names: Vec<String> = shard_files(d).unwrap().iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
        assert_eq!(names, ["a.safetensors", "b.safetensors", "broken.safetensors"]);
        let glob: Vec<PathBuf> = shard_files(&d.join("?.safetensors")).unwrap();
        assert_eq!(glob, vec![d.join("a.safetensors"), d.join("b.safetensors")]);
        assert_eq!(shard_files(&d.join("a.safetensors")).unwrap(), vec![d.join("a.safetensors")]);
        assert!(matches!(shard_files(&d.join("none-*.safetensors")), Err(EdaError::EmptyDataset(_))));
        assert!(matches!(shard_files(&d.join("missing")), Err(EdaError::InvalidArgument(_))));
        assert!(matches!(shard_files(&d.join("*").join("x.safetensors")), Err(EdaError::InvalidArgument(_))));
        let empty = tempfile::tempdir().unwrap();
        assert!(matches!(shard_files(empty.path()), Err(EdaError::EmptyDataset(_))));
    }
}
