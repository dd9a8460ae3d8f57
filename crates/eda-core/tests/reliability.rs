//! Output safety, temporary-file cleanup and dataset integrity checks (issue 14).

use eda_core::data::{ensure_unique_ids, read_shards, write_shard, FeatureDType, FeatureSample};
use eda_core::io::{atomic_write, check_output_dir, clean_stale_temp_files};
use eda_core::EdaError;

fn sample(id: &str) -> FeatureSample {
    FeatureSample::new(id, vec![1, 2], vec![0.5; 4], 2, vec![0, 1]).unwrap()
}

#[cfg(unix)]
#[test]
fn atomic_write_refuses_a_symlink_and_keeps_its_target() {
    let dir = tempfile::tempdir().unwrap();
    let victim = dir.path().join("victim.txt");
    std::fs::write(&victim, b"precious").unwrap();
    let link = dir.path().join("out.json");
    std::os::unix::fs::symlink(&victim, &link).unwrap();
    let err = atomic_write(&link, b"new").unwrap_err();
    assert!(matches!(err, EdaError::UnsafeOutput { .. }), "{err}");
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink(), "the link itself is left alone");
}

#[cfg(unix)]
#[test]
fn atomic_write_refuses_device_nodes_and_directories() {
    let dev = std::path::Path::new("/dev/null");
    if dev.exists() {
        assert!(matches!(atomic_write(dev, b"x"), Err(EdaError::UnsafeOutput { .. })));
    }
    let dir = tempfile::tempdir().unwrap();
    let sub = dir.path().join("sub");
    std::fs::create_dir(&sub).unwrap();
    std::fs::write(sub.join("inside"), b"kept").unwrap();
    assert!(matches!(atomic_write(&sub, b"x"), Err(EdaError::UnsafeOutput { .. })));
    assert_eq!(std::fs::read(sub.join("inside")).unwrap(), b"kept");
    // Regular files are replaced as before.
    let f = dir.path().join("f.txt");
    atomic_write(&f, b"one").unwrap();
    atomic_write(&f, b"two").unwrap();
    assert_eq!(std::fs::read(&f).unwrap(), b"two");
    // Output directories: a symlink or a file is refused, a real directory is fine.
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(&sub, &link).unwrap();
    assert!(matches!(check_output_dir(&link), Err(EdaError::UnsafeOutput { .. })));
    assert!(matches!(check_output_dir(&f), Err(EdaError::UnsafeOutput { .. })));
    assert!(check_output_dir(&sub).is_ok());
    assert!(check_output_dir(&dir.path().join("new")).is_ok());
}

#[test]
fn temporary_files_of_dead_processes_are_cleaned() {
    if !std::path::Path::new("/proc/self").exists() {
        return; // liveness of a pid is unknown without /proc: nothing is removed by design
    }
    let dir = tempfile::tempdir().unwrap();
    // pid 0 is never a user process: a temp file a killed run left behind.
    let stale = dir.path().join(".out.json.0.tmp");
    std::fs::write(&stale, b"torn").unwrap();
    let other_stale = dir.path().join(".other.bin.0.tmp");
    std::fs::write(&other_stale, b"torn").unwrap();
    let live = dir.path().join(format!(".out.json.{}.tmp.keep", std::process::id()));
    std::fs::write(&live, b"not a temp name").unwrap();
    atomic_write(&dir.path().join("out.json"), b"{}").unwrap();
    assert!(!stale.exists(), "the next write of out.json removes its stale temp file");
    assert!(other_stale.exists(), "a write only cleans its own file's temps");
    assert_eq!(clean_stale_temp_files(dir.path()), 1);
    assert!(!other_stale.exists());
    assert!(live.exists());
}

#[test]
fn duplicate_sample_ids_are_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.safetensors");
    let b = dir.path().join("b.safetensors");
    write_shard(&a, &[sample("x"), sample("y")], FeatureDType::F32).unwrap();
    write_shard(&b, &[sample("z")], FeatureDType::F32).unwrap();
    assert_eq!(read_shards(&[a.clone(), b.clone()]).unwrap().len(), 3);
    // The same shard given twice.
    match read_shards(&[a.clone(), b, a.clone()]) {
        Err(EdaError::DuplicateId { id, first, second }) => {
            assert_eq!(id, "x");
            assert!(first.ends_with("a.safetensors") && second.ends_with("a.safetensors"));
        }
        other => panic!("expected DuplicateId, got {other:?}"),
    }
    assert!(matches!(ensure_unique_ids(&[sample("q"), sample("r"), sample("q")], |i| i.to_string()), Err(EdaError::DuplicateId { .. })));
}
