//! Atomic file writes: write a temporary file, fsync it, rename it over the target, fsync the
//! directory. A crash leaves either the old file or the new one, never a torn one.

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::Path;

use crate::{EdaError, Result};

/// Atomically writes `bytes` to `path` (parent directories are created).
///
/// ```
/// let dir = tempfile::tempdir().unwrap();
/// let p = dir.path().join("a/b.txt");
/// eda_core::io::atomic_write(&p, b"hello").unwrap();
/// assert_eq!(std::fs::read(&p).unwrap(), b"hello");
/// ```
pub fn atomic_write(path: &Path, bytes: &[u8]) -> Result<()> {
    atomic_write_with(path, |w| w.write_all(bytes))
}

/// Atomically writes whatever `write` produces to `path`.
pub fn atomic_write_with(path: &Path, write: impl FnOnce(&mut BufWriter<File>) -> std::io::Result<()>) -> Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(|e| EdaError::io(dir, e))?;
    let name = path.file_name().ok_or_else(|| EdaError::InvalidArgument(format!("{} has no file name", path.display())))?;
    let tmp = dir.join(format!(".{}.{}.tmp", name.to_string_lossy(), std::process::id()));
    let result = (|| {
        let file = File::create(&tmp)?;
        let mut w = BufWriter::new(file);
        write(&mut w)?;
        let file = w.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        drop(file);
        fs::rename(&tmp, path)?;
        // Persist the rename itself; not all platforms allow opening directories.
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    result.map_err(|e| {
        let _ = fs::remove_file(&tmp);
        EdaError::io(path, e)
    })
}

/// Atomically writes `value` as pretty JSON.
pub fn write_json<T: serde::Serialize>(path: &Path, value: &T) -> Result<()> {
    let bytes = serde_json::to_vec_pretty(value).map_err(|e| EdaError::json(path, e))?;
    atomic_write(path, &bytes)
}

/// Reads a JSON file into `T`, with errors naming the file.
pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let bytes = fs::read(path).map_err(|e| EdaError::io(path, e))?;
    serde_json::from_slice(&bytes).map_err(|e| EdaError::json(path, e))
}
