//! `eda finetune` end to end on the tiny Qwen2 fixture: the merged model is an ordinary
//! checkpoint that the other commands load, held-out perplexity falls, an interrupted run
//! resumes to the same weights, and bad inputs are clear errors.

use std::path::Path;

mod common;
use common::{eda, fixture, ok};

/// Prompts whose answers follow a pattern the fixture does not know.
fn write_prompts(path: &Path, range: std::ops::Range<usize>) {
    let lines: Vec<String> =
        range.map(|i| format!(r#"{{"prompt": "w1 w{}", "response": "w5 w6 w{} w8 w9 w5 w6"}}"#, i % 7 + 2, i % 3 + 10)).collect();
    std::fs::write(path, lines.join("\n") + "\n").unwrap();
}

fn report(dir: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(dir.join("finetune_report.json")).unwrap()).unwrap()
}

#[test]
fn finetune_merges_into_a_checkpoint_that_learned_the_domain() {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    write_prompts(&w.join("train.jsonl"), 0..24);
    write_prompts(&w.join("eval.jsonl"), 100..108);
    let t = fixture().display().to_string();
    let common = ["--target", &t, "--prompts", "train.jsonl", "--eval", "eval.jsonl", "--steps", "30", "--lr", "1e-2"];
    let common =
        [&common[..], &["--batch-size", "4", "--rank", "4", "--modules", "q_proj,v,gate,down", "--checkpoint-every", "10"]].concat();
    let stdout = ok(w, &[&["finetune", "--out", "ft"], &common[..]].concat());
    assert!(stdout.contains("30 steps (0 resumed)"), "{stdout}");
    let r = report(&w.join("ft"));
    let (before, after) = (r["eval_before"]["nll"].as_f64().unwrap(), r["eval_after"]["nll"].as_f64().unwrap());
    assert!(after < 0.7 * before, "held-out NLL {before} -> {after}");
    assert_eq!(r["train"]["steps"], 30);
    assert!(r["train"]["trainable_params"].as_u64().unwrap() > 0);
    // The merged model is a checkpoint like any other: tokenizer, chat format, features work.
    for f in ["config.json", "model.safetensors", "tokenizer.json", "chat_format.json"] {
        assert!(w.join("ft/model").join(f).is_file(), "missing {f}");
    }
    ok(w, &["features", "--target", "ft/model", "--prompts", "eval.jsonl", "--out", "feats"]);

    // Killed after its first checkpoint (simulated by deleting the later ones): the rerun
    // resumes there and ends with the same weights.
    let full = std::fs::read(w.join("ft/model/model.safetensors")).unwrap();
    let stdout = ok(w, &[&["finetune", "--out", "ft2"], &common[..]].concat());
    assert!(stdout.contains("(0 resumed)"));
    std::fs::remove_dir_all(w.join("ft2/checkpoints/step-00000030")).unwrap();
    std::fs::remove_dir_all(w.join("ft2/model")).unwrap();
    let stdout = ok(w, &[&["finetune", "--out", "ft2"], &common[..]].concat());
    assert!(stdout.contains("30 steps (20 resumed)"), "{stdout}");
    assert_eq!(std::fs::read(w.join("ft2/model/model.safetensors")).unwrap(), full, "resumed run differs");
}

#[test]
fn finetune_rejects_bad_input_with_clear_errors() {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    write_prompts(&w.join("train.jsonl"), 0..4);
    std::fs::write(w.join("no-answers.jsonl"), "{\"prompt\": \"w1 w2\"}\n").unwrap();
    let t = fixture().display().to_string();
    let err = |args: &[&str]| {
        let out = eda(w, args);
        assert!(!out.status.success(), "eda {args:?} should fail");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let e = err(&["finetune", "--target", &t, "--prompts", "no-answers.jsonl", "--out", "a"]);
    assert!(e.contains("no record with an answer"), "{e}");
    let e = err(&["finetune", "--target", &t, "--prompts", "train.jsonl", "--out", "b", "--modules", "lm_head"]);
    assert!(e.contains("unknown LoRA module"), "{e}");
    let e = err(&["finetune", "--target", &t, "--prompts", "train.jsonl", "--out", "c", "--rank", "0"]);
    assert!(e.contains("rank"), "{e}");
    let e = err(&["finetune", "--target", "missing-dir", "--prompts", "train.jsonl", "--out", "d"]);
    assert!(e.contains("missing-dir"), "{e}");
    let e = err(&["finetune", "--target", "model.gguf", "--prompts", "train.jsonl", "--out", "e"]);
    assert!(e.contains("eda convert"), "{e}");
    // Resuming with other settings is refused.
    ok(w, &["finetune", "--target", &t, "--prompts", "train.jsonl", "--out", "f", "--steps", "2"]);
    let e = err(&["finetune", "--target", &t, "--prompts", "train.jsonl", "--out", "f", "--steps", "2", "--lr", "1e-3"]);
    assert!(e.contains("other fine-tuning settings"), "{e}");
}
