//! Drafts in and out of the EAGLE / speculators layouts through the `eda` command: an EAGLE draft
//! (weights only as `pytorch_model.bin`, as EAGLE releases ship) is imported and exported back to
//! the same tensors; stage 2 from an imported draft trains only `fc` and the private group; mismatched
//! or corrupt inputs are clear errors.

use std::collections::BTreeMap;
use std::path::Path;

use eda_core::safetensors::{HostTensor, SafetensorsFile};

mod common;
use common::{eda, fixture, ok};

fn tensors(path: &Path) -> BTreeMap<String, HostTensor> {
    let t = if path.extension().is_some_and(|e| e == "bin") {
        eda_core::torch_checkpoint::read(path).unwrap()
    } else {
        let f = SafetensorsFile::open(path).unwrap();
        f.names()
            .iter()
            .map(|n| {
                let t = f.tensor(n).unwrap();
                HostTensor::new(n.clone(), t.dtype, t.shape.to_vec(), t.data.to_vec())
            })
            .collect()
    };
    t.into_iter().map(|t| (t.name.clone(), t)).collect()
}

/// A stage-1 draft of the fixture, exported to the EAGLE layout: the stand-in for a draft
/// trained with EAGLE's code. Returns the work directory.
fn eagle_draft() -> tempfile::TempDir {
    let work = tempfile::tempdir().unwrap();
    let lines: Vec<String> =
        (0..8).map(|i| format!(r#"{{"prompt": "w1 w2 w{}", "response": "w5 w6 w7 w{} w8 w9"}}"#, i + 3, i + 10)).collect();
    std::fs::write(work.path().join("p.jsonl"), lines.join("\n") + "\n").unwrap();
    let t = fixture().display().to_string();
    ok(work.path(), &["features", "--target", &t, "--prompts", "p.jsonl", "--out", "feats"]);
    ok(work.path(), &["train", "--features", "feats", "--target", &t, "--out", "s1", "--steps", "3", "--batch-size", "2"]);
    ok(work.path(), &["export", "--draft", "s1/draft", "--target", &t, "--format", "eagle", "--out", "eagle"]);
    // EAGLE's releases ship only the PyTorch file.
    std::fs::remove_file(work.path().join("eagle/model.safetensors")).unwrap();
    work
}

#[test]
fn an_eagle_draft_imports_exports_back_and_adapts_without_touching_its_weights() {
    let work = eagle_draft();
    let w = work.path();
    let t = fixture().display().to_string();
    let original = tensors(&w.join("eagle/pytorch_model.bin"));
    assert!(original.contains_key("fc.weight") && original.contains_key("layers.0.mlp.down_proj.weight"), "{:?}", original.keys());

    // Plain import (no private expert) and export: the same tensors, in both files.
    ok(w, &["import-eagle", "eagle", "--target", &t, "--out", "plain", "--private-intermediate-size", "0"]);
    ok(w, &["export", "--draft", "plain", "--target", &t, "--format", "eagle", "--out", "again"]);
    assert_eq!(tensors(&w.join("again/pytorch_model.bin")), original);
    assert_eq!(tensors(&w.join("again/model.safetensors")), original);

    // Import with a fresh private expert, then stage 2 directly (no stage 1).
    let stdout = ok(w, &["import-eagle", "eagle", "--target", &t, "--out", "imported", "--private-intermediate-size", "16"]);
    assert!(stdout.contains("eda train --stage stage2 --stage1 imported"), "{stdout}");
    ok(
        w,
        &[
            "train",
            "--stage",
            "stage2",
            "--stage1",
            "imported",
            "--features",
            "feats",
            "--target",
            &t,
            "--out",
            "s2",
            "--steps",
            "3",
            "--batch-size",
            "2",
        ],
    );
    let before = tensors(&w.join("imported/model.safetensors"));
    let after = tensors(&w.join("s2/draft/model.safetensors"));
    assert_eq!(before.keys().collect::<Vec<_>>(), after.keys().collect::<Vec<_>>());
    // The default (reference) stage 2 trains `fc` and the private group; the imported
    // attention, norm and shared expert stay bit-identical.
    let (mut private_changed, mut fc_changed) = (false, false);
    for (name, b) in &before {
        if name.contains("private") {
            private_changed |= after[name] != *b;
        } else if name.starts_with("fc.") {
            fc_changed |= after[name] != *b;
        } else {
            assert_eq!(after[name], *b, "stage 2 changed the imported `{name}`");
        }
    }
    assert!(private_changed && fc_changed, "stage 2 did not train the private group and fc");
}

#[test]
fn mismatched_and_corrupt_eagle_drafts_are_clear_errors() {
    let work = eagle_draft();
    let w = work.path();
    // A target of another width (hidden 32, vocabulary 128) than the draft's (64, 256).
    let other = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/llama3-rope-tiny").display().to_string();
    let out = eda(w, &["import-eagle", "eagle", "--target", &other, "--out", "x"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("hidden size") && err.contains("mismatch"), "{err}");
    // A draft config whose vocabulary differs from the target's.
    let t = fixture().display().to_string();
    let cfg_path = w.join("eagle/config.json");
    let original_cfg = std::fs::read_to_string(&cfg_path).unwrap();
    let mut cfg: serde_json::Value = serde_json::from_str(&original_cfg).unwrap();
    cfg["vocab_size"] = serde_json::json!(300);
    std::fs::write(&cfg_path, cfg.to_string()).unwrap();
    let out = eda(w, &["import-eagle", "eagle", "--target", &t, "--out", "x"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("vocabulary size") && err.contains("300"), "{err}");
    std::fs::write(&cfg_path, original_cfg).unwrap();
    // Other formats are named, not misread: an EDA draft, a speculators checkpoint.
    let out = eda(w, &["import-eagle", "s1/draft", "--target", &t, "--out", "x"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("EDA draft, not an EAGLE draft"), "{err}");
    ok(w, &["export", "--draft", "s1/draft", "--target", &t, "--format", "speculators", "--out", "spec"]);
    let out = eda(w, &["import-eagle", "spec", "--target", &t, "--out", "x"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("speculators-format"), "{err}");
    // A truncated PyTorch file names itself.
    let bin = w.join("eagle/pytorch_model.bin");
    let bytes = std::fs::read(&bin).unwrap();
    std::fs::write(&bin, &bytes[..bytes.len() / 2]).unwrap();
    let out = eda(w, &["import-eagle", "eagle", "--target", &t, "--out", "x"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("pytorch_model.bin") && err.contains("PyTorch checkpoint"), "{err}");
    // No weights at all.
    std::fs::remove_file(&bin).unwrap();
    let out = eda(w, &["import-eagle", "eagle", "--target", &t, "--out", "x"]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("pytorch_model.bin"));
    assert!(!w.join("x/config.json").exists(), "nothing written on error");
}

#[test]
fn speculators_export_names_the_verifier() {
    let work = eagle_draft();
    let w = work.path();
    let t = fixture().display().to_string();
    let stdout = ok(
        w,
        &[
            "export",
            "--draft",
            "s1/draft",
            "--target",
            &t,
            "--format",
            "speculators",
            "--verifier",
            "org/base-model",
            "--speculative-tokens",
            "3",
            "--out",
            "spec",
        ],
    );
    assert!(stdout.contains("speculators"), "{stdout}");
    let cfg: serde_json::Value = serde_json::from_slice(&std::fs::read(w.join("spec/config.json")).unwrap()).unwrap();
    assert_eq!(cfg["speculators_config"]["verifier"]["name_or_path"], "org/base-model");
    assert_eq!(cfg["speculators_config"]["verifier"]["architectures"][0], "Qwen2ForCausalLM");
    assert_eq!(cfg["speculators_config"]["proposal_methods"][0]["speculative_tokens"], 3);
    let spec = tensors(&w.join("spec/model.safetensors"));
    let eagle = tensors(&w.join("eagle/pytorch_model.bin"));
    assert_eq!(spec["fusion_fc.weight"].data, eagle["fc.weight"].data);
    assert_eq!(spec["transformer.mlp.up_proj.weight"].data, eagle["layers.0.mlp.up_proj.weight"].data);
}
