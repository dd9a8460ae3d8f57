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
    assert_eq!(
        names,
        ["features", "features", "train", "regenerate", "select", "train", "eval", "regenerate", "eval", "generate", "export"],
        "{commands:#?}"
    );

    let fixture = crate_dir.join("../../tests/fixtures/qwen2-tiny");
    let work = tempfile::tempdir().unwrap();
    write_prompts(&work.path().join("general.jsonl"), true, 3);
    write_prompts(&work.path().join("math.jsonl"), false, 30);
    write_prompts(&work.path().join("heldout.jsonl"), false, 50);
    let corpus = work.path().join("corpus");
    std::fs::create_dir(&corpus).unwrap();
    std::fs::write(corpus.join("a.txt"), "w1 w2 w3 w4 w5 w6").unwrap();
    std::fs::write(corpus.join("b.txt"), "w7 w8 w9 w10").unwrap();
    let run = |line: &str| {
        let mut args = split_words(line);
        args.remove(0);
        // The tiny fixture stands in for both targets; everything else runs as written.
        for a in &mut args {
            if a == "base/" || a == "tuned/" {
                *a = fixture.display().to_string();
            }
        }
        let out = Command::new(env!("CARGO_BIN_EXE_eda"))
            .args(&args)
            .current_dir(work.path())
            .env("NO_COLOR", "1")
            // Saved baselines go to the test's directory, not the user's cache.
            .env("EDA_CACHE_DIR", work.path().join("cache"))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "`{line}` failed:\n{stderr}");
        if args[0] == "eval" && !args.contains(&"--replay".to_string()) {
            // The draft's recorded chat format renders the prompts, with no flag asking for it.
            assert!(stderr.contains("chat prompt, as recorded with the draft"), "{stderr}");
        }
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    for line in &commands {
        run(line);
    }
    let d = work.path();
    for produced in [
        "feats/base/manifest.json",
        "feats/code/manifest.json",
        "s1/draft/config.json",
        "s1/draft/chat_format.json",
        "sel/chat_format.json",
        "s2/draft/chat_format.json",
        "feats/math/manifest.json",
        "sel/selected.safetensors",
        "s2/draft/config.json",
        "m.json",
        "m-replay.json",
        "eagle/config.json",
        "eagle/model.safetensors",
    ] {
        assert!(d.join(produced).exists(), "the guide promises {produced}");
    }
    let recorded: serde_json::Value = serde_json::from_slice(&std::fs::read(d.join("s2/draft/chat_format.json")).unwrap()).unwrap();
    assert_eq!(recorded["system_prompt"], "You are a helpful assistant.", "the regenerate step's system prompt travels to the draft");
    assert_eq!(recorded["template"], "chatml", "detected from the tokenizer's special tokens");
    let code: serde_json::Value = serde_json::from_slice(&std::fs::read(d.join("feats/code/manifest.json")).unwrap()).unwrap();
    assert_eq!((code["samples"].as_u64(), code["settings"]["mode"].as_str()), (Some(2), Some("text")), "both documents featurised");
    let metrics = || -> serde_json::Value { serde_json::from_slice(&std::fs::read(d.join("m.json")).unwrap()).unwrap() };
    assert_eq!(metrics()["baseline"]["source"], "measured");
    // As the guide says, evaluating again reuses the autoregressive baseline, and says so.
    let eval = commands.iter().find(|c| c.starts_with("eda eval")).unwrap();
    let table = run(eval);
    assert_eq!(metrics()["baseline"]["source"], "cached");
    assert!(table.contains("autoregressive baseline reused from"), "{table}");
    // The replay reproduced every recorded answer of the held-out prompts.
    let replay: serde_json::Value = serde_json::from_slice(&std::fs::read(d.join("m-replay.json")).unwrap()).unwrap();
    assert_eq!(replay["aggregate"]["greedy_matches"], 12, "{}", replay["aggregate"]);
    // The selection's drift baseline is scored on held-out base samples.
    let sel: serde_json::Value = serde_json::from_slice(&std::fs::read(d.join("sel/selection.json")).unwrap()).unwrap();
    assert_eq!(sel["drift"]["base_samples"]["held_out"], true, "{}", sel["drift"]);
}
