//! Atomic file writes: write a temporary file, fsync it, rename it over the target, fsync the
//! directory. A crash leaves either the old file or the new one, never a torn one.
//!
//! Safety of outputs: a write only ever replaces a *regular file* (or creates a new one). A
//! symlink, device node, FIFO, socket or directory at the output path is refused with
//! [`EdaError::UnsafeOutput`] before anything is written, so `--out /dev/sda` or an output that an
//! attacker replaced by a symlink never redirects the rename. Temporary files are created with
//! `create_new` (never through an existing file or symlink) and named `.NAME.PID.tmp`; the ones a
//! killed process left behind are removed by the next write of the same file and by
//! [`clean_stale_temp_files`].
//!
//! Append-only logs ([`append_durable`]) are the exception to "whole files only": each append is
//! fsynced, and their readers must tolerate a torn last record (a crash mid-append).

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
    let name = path.file_name().ok_or_else(|| EdaError::InvalidArgument(format!("{} has no file name", path.display())))?;
    check_output_file(path)?;
    fs::create_dir_all(dir).map_err(|e| EdaError::io(dir, e))?;
    let name = name.to_string_lossy();
    remove_stale_temps(dir, Some(&name));
    let tmp = dir.join(temp_name(&name, std::process::id()));
    let result = (|| {
        // `create_new` never opens through an existing file or symlink at the temporary path.
        let _ = fs::remove_file(&tmp);
        let file = fs::OpenOptions::new().write(true).create_new(true).open(&tmp)?;
        let mut w = BufWriter::new(file);
        write(&mut w)?;
        let file = w.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        drop(file);
        // Re-check just before the rename: the target may have been swapped for a symlink or a
        // device while the data was written.
        check_output_file(path).map_err(|e| std::io::Error::other(e.to_string()))?;
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

/// Checks that `path` may be (re)written by an atomic write: it does not exist, or it is a regular
/// file. Symlinks are not followed (a symlink is refused even when it points at a regular file).
///
/// ```
/// let dir = tempfile::tempdir().unwrap();
/// assert!(eda_core::io::check_output_file(&dir.path().join("new.json")).is_ok());
/// assert!(eda_core::io::check_output_file(dir.path()).is_err()); // a directory
/// ```
pub fn check_output_file(path: &Path) -> Result<()> {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(EdaError::io(path, e)),
    };
    let ft = meta.file_type();
    let reason = if ft.is_symlink() {
        "it is a symbolic link (eda never writes through links; remove it or name the real file)"
    } else if ft.is_dir() {
        "it is a directory, not a file"
    } else if ft.is_file() {
        return Ok(());
    } else {
        "it is not a regular file (device node, FIFO or socket)"
    };
    Err(EdaError::UnsafeOutput { path: path.into(), reason: reason.into() })
}

/// Checks that `dir` may be used as an output directory: it does not exist yet, or it is a real
/// directory (not a symlink to one, not a file or device).
pub fn check_output_dir(dir: &Path) -> Result<()> {
    match fs::symlink_metadata(dir) {
        Ok(m) if m.file_type().is_dir() => Ok(()),
        Ok(m) => Err(EdaError::UnsafeOutput {
            path: dir.into(),
            reason: if m.file_type().is_symlink() {
                "it is a symbolic link, not a directory eda can own".into()
            } else {
                "it exists and is not a directory".into()
            },
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(EdaError::io(dir, e)),
    }
}

fn temp_name(name: &str, pid: u32) -> String {
    format!(".{name}.{pid}.tmp")
}

/// Whether process `pid` may still be running. Without `/proc` this cannot be known, so every
/// process is assumed alive and nothing is removed.
fn process_alive(pid: u32) -> bool {
    if !Path::new("/proc/self").exists() {
        return true;
    }
    pid == std::process::id() || Path::new(&format!("/proc/{pid}")).exists()
}

/// Removes temporary files `.NAME.PID.tmp` in `dir` left by dead processes (all names, or only
/// `only`). Returns how many were removed. Failures are ignored: this is housekeeping.
fn remove_stale_temps(dir: &Path, only: Option<&str>) -> usize {
    let Ok(entries) = fs::read_dir(dir) else { return 0 };
    let mut removed = 0;
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let n = file_name.to_string_lossy();
        let Some(inner) = n.strip_prefix('.').and_then(|r| r.strip_suffix(".tmp")) else { continue };
        let Some((base, pid)) = inner.rsplit_once('.') else { continue };
        let Ok(pid) = pid.parse::<u32>() else { continue };
        if only.is_some_and(|o| o != base) || process_alive(pid) {
            continue;
        }
        // Only plain files are removed: a symlink or directory with that name is not ours.
        if entry.file_type().is_ok_and(|t| t.is_file()) && fs::remove_file(entry.path()).is_ok() {
            removed += 1;
        }
    }
    removed
}

/// Removes every temporary file (`.NAME.PID.tmp`) that a killed eda process left in `dir`; called
/// when a run starts in an output directory. Returns the number removed.
///
/// ```
/// let dir = tempfile::tempdir().unwrap();
/// // pid 0 is never a user process
/// std::fs::write(dir.path().join(".a.json.0.tmp"), b"x").unwrap();
/// std::fs::write(dir.path().join("keep.tmp"), b"x").unwrap();
/// # if std::path::Path::new("/proc/self").exists() {
/// assert_eq!(eda_core::io::clean_stale_temp_files(dir.path()), 1);
/// assert!(dir.path().join("keep.tmp").exists());
/// # }
/// ```
pub fn clean_stale_temp_files(dir: &Path) -> usize {
    let n = remove_stale_temps(dir, None);
    if n > 0 {
        tracing::info!(dir = %dir.display(), removed = n, "removed temporary files left by an interrupted run");
    }
    n
}

/// Appends `bytes` to `path` (created if missing, parent directories too) and fsyncs the file
/// before returning, so that everything appended survives a crash once this returns; a newly
/// created file also gets its directory entry fsynced. Like [`atomic_write`], only a regular file
/// is ever written ([`EdaError::UnsafeOutput`] otherwise).
///
/// A crash *during* the call can leave any prefix of `bytes` at the end of the file: callers
/// frame and checksum their records so that a reader can tell a torn tail.
///
/// ```
/// let dir = tempfile::tempdir().unwrap();
/// let p = dir.path().join("log/events.bin");
/// eda_core::io::append_durable(&p, b"ab").unwrap();
/// eda_core::io::append_durable(&p, b"cd").unwrap();
/// assert_eq!(std::fs::read(&p).unwrap(), b"abcd");
/// ```
pub fn append_durable(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    check_output_file(path)?;
    fs::create_dir_all(dir).map_err(|e| EdaError::io(dir, e))?;
    let created = !path.exists();
    let result = (|| {
        let mut file = fs::OpenOptions::new().append(true).create(true).open(path)?;
        // Re-check after opening: a symlink swapped in between would have been followed.
        if !fs::symlink_metadata(path)?.file_type().is_file() {
            return Err(std::io::Error::other("the file was replaced by something that is not a regular file"));
        }
        file.write_all(bytes)?;
        file.sync_data()?;
        if created {
            if let Ok(d) = File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(())
    })();
    result.map_err(|e| EdaError::io(path, e))
}

/// Removes the regular file `path` if it exists and fsyncs its directory; a missing file is not
/// an error, anything but a regular file is refused ([`EdaError::UnsafeOutput`]).
///
/// ```
/// let dir = tempfile::tempdir().unwrap();
/// let p = dir.path().join("x");
/// std::fs::write(&p, b"1").unwrap();
/// eda_core::io::remove_durable(&p).unwrap();
/// assert!(!p.exists());
/// eda_core::io::remove_durable(&p).unwrap(); // already gone
/// ```
pub fn remove_durable(path: &Path) -> Result<()> {
    check_output_file(path)?;
    match fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(EdaError::io(path, e)),
    }
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn append_durable_appends_and_refuses_non_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/a.log");
        append_durable(&p, b"").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"");
        append_durable(&p, b"x").unwrap();
        append_durable(&p, b"yz").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"xyz");
        assert!(matches!(append_durable(dir.path(), b"x"), Err(EdaError::UnsafeOutput { .. })));
        #[cfg(unix)]
        {
            let link = dir.path().join("link.log");
            std::os::unix::fs::symlink(&p, &link).unwrap();
            assert!(matches!(append_durable(&link, b"!"), Err(EdaError::UnsafeOutput { .. })));
            assert!(matches!(remove_durable(&link), Err(EdaError::UnsafeOutput { .. })));
            assert_eq!(fs::read(&p).unwrap(), b"xyz", "nothing written through the link");
        }
        remove_durable(&p).unwrap();
        assert!(!p.exists());
        remove_durable(&p).unwrap();
    }
}
