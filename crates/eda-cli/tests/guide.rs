//! Runs the workflow guide (`crates/eda-cli/README.md`) exactly as written: every `eda ...`
//! command of its `sh` blocks, in order, on the tiny fixture checkpoint standing in for both the
//! base and the fine-tuned target. The guide stays true or this test fails.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The `eda` commands of the guide's `sh` blocks, continuation lines joined.
fn guide_commands(readme: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut in_block = false;
    let mut current = String::new();
    for line in readme.lines() {
        let t = line.trim();
        if t.starts_with("```") {
            in_block = t == "```sh";
            continue;
        }
        if !in_block {
            continue;
        }
        if current.is_empty() && !t.starts_with("eda ") {
            continue;
        }
        current.push_str(t.trim_end_matches('\\').trim());
        current.push(' ');
        if !t.ends_with('\\') {
            out.push(current.trim().to_string());
            current.clear();
        }
    }
    out
}

/// Splits a command line into words: whitespace separates, double quotes group.
fn split_words(line: &str) -> Vec<String> {
    let (mut words, mut word, mut quoted) = (Vec::new(), String::new(), false);
    for c in line.chars() {
        match c {
            '"' => quoted = !quoted,
            c if c.is_whitespace() && !quoted => {
                if !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
            }
            c => word.push(c),
        }
    }
    if !word.is_empty() {
        words.push(word);
    }
    words
}

fn write_prompts(path: &Path, with_answers: bool, offset: usize) {
    let lines: Vec<String> = (0..12)
        .map(|i| {
            if with_answers {
                format!(r#"{{"prompt": "w1 w2 w{}", "response": "w5 w6 w7 w{}"}}"#, i + offset, i + 10)
            } else {
                format!(r#"{{"prompt": "w20 w{}"}}"#, i + offset)
            }
        })
        .collect();
    std::fs::write(path, lines.join("\n") + "\n").unwrap();
}

#[test]
fn the_workflow_guide_runs_as_written() {
    let crate_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(crate_dir.join("README.md")).unwrap();
    let commands = guide_commands(&readme);
    let names: Vec<&str> = commands.iter().map(|c| c.split_whitespace().nth(1).unwrap_or("")).collect();
    assert_eq!(names, ["regenerate", "train", "regenerate", "select", "train", "eval", "generate"], "{commands:#?}");

    let fixture = crate_dir.join("../../tests/fixtures/qwen2-tiny");
    let work = tempfile::tempdir().unwrap();
    write_prompts(&work.path().join("general.jsonl"), true, 3);
    write_prompts(&work.path().join("math.jsonl"), false, 30);
    write_prompts(&work.path().join("heldout.jsonl"), false, 50);
    for line in &commands {
        let mut args = split_words(line);
        args.remove(0);
        // The tiny fixture stands in for both targets; everything else runs as written.
        for a in &mut args {
            if a == "base/" || a == "tuned/" {
                *a = fixture.display().to_string();
            }
        }
        let out = Command::new(env!("CARGO_BIN_EXE_eda")).args(&args).current_dir(work.path()).env("NO_COLOR", "1").output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "`{line}` failed:\n{stderr}");
    }
    let d = work.path();
    for produced in [
        "feats/base/manifest.json",
        "s1/draft/config.json",
        "feats/math/manifest.json",
        "sel/selected.safetensors",
        "s2/draft/config.json",
        "m.json",
    ] {
        assert!(d.join(produced).exists(), "the guide promises {produced}");
    }
    let metrics: serde_json::Value = serde_json::from_slice(&std::fs::read(d.join("m.json")).unwrap()).unwrap();
    assert!(metrics.is_object(), "metrics JSON");
}
