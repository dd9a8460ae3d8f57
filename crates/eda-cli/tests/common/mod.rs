//! Helpers shared by the integration tests that run the `eda` binary.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The tiny Qwen2 checkpoint with a ChatML tokenizer (`tests/fixtures/qwen2-tiny`).
pub fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/qwen2-tiny")
}

/// Runs `eda args` in `work` (no colour in the logs).
pub fn eda(work: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_eda")).args(args).current_dir(work).env("NO_COLOR", "1").output().unwrap()
}

/// Runs `eda args` in `work`, asserts success and returns stdout.
pub fn ok(work: &Path, args: &[&str]) -> String {
    let out = eda(work, args);
    assert!(out.status.success(), "eda {args:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}
