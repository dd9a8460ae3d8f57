//! `eda eval --replay`: a draft evaluated against a target's recorded greedy answers gives the
//! same outputs, τ and acceptance per depth as a live evaluation of the same prompts; recordings
//! that are not the target's greedy answers are refused.

mod common;

use common::{eda, fixture, ok};

fn metrics(path: &std::path::Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

#[test]
fn a_replay_equals_the_live_evaluation_and_refuses_what_it_cannot_replay() {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let fx = fixture();
    let fx = fx.to_str().unwrap();
    let lines: Vec<String> =
        (0..6).map(|i| format!(r#"{{"prompt": "w1 w{} w{}", "response": "w5 w6 w{}"}}"#, i + 2, i + 20, i + 7)).collect();
    std::fs::write(w.join("p.jsonl"), lines.join("\n") + "\n").unwrap();
    let sys = "You are a helpful assistant.";
    ok(w, &["regenerate", "--target", fx, "--prompts", "p.jsonl", "--out", "rec", "--max-new-tokens", "16", "--system-prompt", sys]);
    ok(w, &["train", "--features", "rec", "--target", fx, "--out", "s1", "--steps", "30", "--lr", "3e-3"]);
    for strategy in [["--strategy", "tree", "--depth", "4"], ["--strategy", "chain", "--gamma", "3"]] {
        let mut live = vec!["eval", "--target", fx, "--draft", "s1/draft", "--prompts", "p.jsonl", "--max-new-tokens", "16"];
        live.extend(["--no-baseline", "--out", "live.json"]);
        live.extend(strategy);
        ok(w, &live);
        let mut replay = vec!["eval", "--replay", "rec", "--target", fx, "--draft", "s1/draft", "--out", "replay.json"];
        replay.extend(strategy);
        let table = ok(w, &replay);
        assert!(table.contains("replayed target"), "{table}");
        let (l, r) = (metrics(&w.join("live.json")), metrics(&w.join("replay.json")));
        for i in 0..6 {
            assert_eq!(l["prompts"][i]["tokens"], r["prompts"][i]["tokens"], "{strategy:?}: prompt {i}");
            assert_eq!(l["prompts"][i]["metrics"]["accepted_per_depth"], r["prompts"][i]["metrics"]["accepted_per_depth"], "{strategy:?}");
        }
        for key in ["tau", "tau_reference", "alpha", "acceptance_per_depth"] {
            assert_eq!(l["aggregate"][key], r["aggregate"][key], "{strategy:?}: {key}");
        }
        assert_eq!(r["aggregate"]["greedy_matches"], 6);
    }

    // Not the target's own greedy answers: the dataset's answers, or another target's.
    ok(w, &["regenerate", "--mode", "original", "--target", fx, "--prompts", "p.jsonl", "--out", "orig", "--system-prompt", sys]);
    let refused = |args: &[&str], needle: &str| {
        let out = eda(w, args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains(needle), "{args:?}: {err}");
    };
    refused(
        &["eval", "--replay", "orig", "--target", fx, "--draft", "s1/draft", "--strategy", "tree", "--out", "x.json"],
        "greedy answers",
    );
    let llama = fixture().join("../llama-tiny");
    refused(
        &["eval", "--replay", "rec", "--target", llama.to_str().unwrap(), "--draft", "s1/draft", "--strategy", "tree", "--out", "x.json"],
        "recorded by another target",
    );
    refused(
        &["eval", "--replay", "rec", "--target", fx, "--draft", "s1/draft", "--strategy", "auto", "--out", "x.json"],
        "--strategy chain or tree",
    );
    refused(
        &["eval", "--replay", "rec", "--prompts", "p.jsonl", "--target", fx, "--draft", "s1/draft", "--out", "x.json"],
        "cannot be used with",
    );
}
