//! End-to-end tests of the demo: corpora, tokenizer, the quick pipeline and its resume.

use eda_demo::corpora::Domain;
use eda_demo::{run_demo, tok, DemoConfig, DemoResults, METHODS};

#[test]
fn corpora_are_non_empty_and_have_answers() {
    for d in [Domain::General, Domain::Math, Domain::Code] {
        let records = d.records().unwrap();
        assert!(records.len() >= 100, "{} has only {} records", d.name(), records.len());
        assert!(
            records.iter().all(|r| r.reference_response.as_deref().is_some_and(|s| !s.is_empty())),
            "{} has a record without an answer",
            d.name()
        );
        let ids: std::collections::HashSet<_> = records.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids.len(), records.len(), "{} has duplicate ids", d.name());
    }
    let total = eda_demo::corpora::GENERAL_JSONL.len() + eda_demo::corpora::MATH_JSONL.len() + eda_demo::corpora::CODE_JSONL.len();
    assert!(total < 3 << 20, "embedded corpora exceed 3 MB: {total}");
}

#[test]
fn tokenizer_round_trips_and_has_chatml_specials() {
    let dir = tempfile::tempdir().unwrap();
    let t = tok::train_tokenizer(400, dir.path()).unwrap();
    assert!(dir.path().join("tokenizer_config.json").is_file());
    assert_eq!(eda_regen::ChatTemplate::detect(&dir.path().join("tokenizer_config.json")).unwrap(), eda_regen::ChatTemplate::ChatMl);
    for text in ["What is 7 * 8 + 3?", "def add(a, b):\n    return a + b\n", "Héllo, wörld — ünïcode ✓", "<|im_start|>user\nhi<|im_end|>\n"]
    {
        let ids = tok::encode(&t, text).unwrap();
        assert!(!ids.is_empty());
        assert_eq!(tok::decode(&t, &ids).unwrap(), text, "round trip of {text:?}");
    }
    let ids = tok::encode(&t, "<|im_start|>assistant\n").unwrap();
    assert_eq!(ids[0], 1, "<|im_start|> is one token with id 1");
    assert!(eda_models::tokenizer_vocab_size(&t) <= 400);
    // Deterministic: training again gives the same file.
    let dir2 = tempfile::tempdir().unwrap();
    tok::train_tokenizer(400, dir2.path()).unwrap();
    assert_eq!(std::fs::read(dir.path().join("tokenizer.json")).unwrap(), std::fs::read(dir2.path().join("tokenizer.json")).unwrap());
}

fn check_results(r: &DemoResults) {
    assert_eq!(r.format, "eda-demo-results-v1");
    assert!(r.get("base", "stage1").is_some());
    for target in ["math", "code"] {
        for m in METHODS {
            let row = r.get(target, m).unwrap_or_else(|| panic!("missing row {target}/{m}"));
            assert!(row.tau.is_finite() && row.tau >= 1.0, "{target}/{m}: tau {}", row.tau);
            assert!(row.alpha.is_finite() && (0.0..=1.0).contains(&row.alpha), "{target}/{m}: alpha {}", row.alpha);
            assert!(row.speedup.is_finite() && row.speedup > 0.0, "{target}/{m}: speedup {}", row.speedup);
            assert_eq!(row.greedy_matches, Some(row.prompts), "{target}/{m}: greedy speculative output must equal the target's");
            if m == "no-adapt" {
                assert_eq!(row.trainable_params, 0);
            } else {
                assert!(row.trainable_params > 0 && row.train_steps > 0, "{target}/{m} trained nothing");
            }
        }
        let full = r.get(target, "full-ft").unwrap();
        let eda = r.get(target, "eda").unwrap();
        let random = r.get(target, "random").unwrap();
        assert!(eda.trainable_params < full.trainable_params, "stage 2 trains fewer parameters than full retraining");
        assert_eq!(eda.train_samples, random.train_samples, "selection and random use the same budget");
        assert!(eda.train_samples < full.train_samples);
    }
}

#[test]
fn quick_pipeline_runs_end_to_end_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let mut cfg = DemoConfig::quick(&out);
    cfg.progress = false;
    let first = run_demo(&cfg).unwrap();
    check_results(&first);
    assert!(first.stages.skipped.is_empty(), "fresh run skipped {:?}", first.stages.skipped);
    for f in [
        "results.json",
        "results.md",
        "tau.svg",
        "demo_config.json",
        "targets/base/config.json",
        "targets/math/model.safetensors",
        "targets/code/tokenizer.json",
        "drafts/stage1/draft",
        "data/math/selection.json",
    ] {
        assert!(out.join(f).exists(), "missing {f}");
    }
    let svg = std::fs::read_to_string(out.join("tau.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("eda"));
    let on_disk: DemoResults = serde_json::from_slice(&std::fs::read(out.join("results.json")).unwrap()).unwrap();
    assert_eq!(on_disk.rows, first.rows);

    // Rerun: every stage is skipped and the numbers are the same.
    let second = run_demo(&cfg).unwrap();
    assert!(second.stages.ran.is_empty(), "rerun recomputed {:?}", second.stages.ran);
    assert_eq!(second.rows, first.rows);

    // Deleting one artefact reruns only what depends on it.
    std::fs::remove_file(out.join("eval/math/eda.json")).unwrap();
    let third = run_demo(&cfg).unwrap();
    assert_eq!(third.stages.ran, vec!["eval:math/eda".to_string()]);
    assert_eq!(third.get("math", "eda").unwrap().tau, first.get("math", "eda").unwrap().tau, "greedy τ is deterministic");

    // Another pooling rule redoes the selection and what was trained on it, nothing else.
    let pooled_cfg = DemoConfig { pooling: eda_select::Pooling::PoolThenDistance, ..cfg.clone() };
    let fourth = run_demo(&pooled_cfg).unwrap();
    for stage in ["select:fit-base-stats", "select:math", "eval:math/eda", "eval:code/random"] {
        assert!(fourth.stages.ran.iter().any(|s| s == stage), "{stage} not redone: ran {:?}", fourth.stages.ran);
    }
    assert!(fourth.stages.ran.iter().all(|s| !s.contains("full-ft") && !s.contains("no-adapt")), "ran {:?}", fourth.stages.ran);
    assert!(out.join("features/base_stats_sample_means.safetensors").is_file());
    assert_eq!(fourth.get("math", "full-ft").unwrap().tau, first.get("math", "full-ft").unwrap().tau);
}

/// The claims that hold at the built-in demo's scale (the README's table), asserted on the default
/// demo itself so that a regression fails CI: the stage-1 draft's τ collapses on fine-tuned
/// targets without adaptation, every adaptation recovers part of it, and stage 2 on regenerated
/// data beats stage 2 on the original answers of the same prompts. (Selection beating random and
/// stage 2 beating full retraining do not hold at this scale on both targets; see README.)
#[test]
fn default_demo_shows_the_collapse_and_the_value_of_regenerated_data() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = DemoConfig::new(dir.path());
    cfg.progress = false;
    let r = run_demo(&cfg).unwrap();
    check_results(&r);
    let base = r.get("base", "stage1").unwrap().tau;
    assert!(base > 2.5, "the stage-1 draft must work on its own target: τ {base}");
    for target in ["math", "code"] {
        let tau = |m: &str| r.get(target, m).unwrap().tau;
        assert!(tau("no-adapt") < 0.5 * base, "{target}: no collapse (τ {} vs base {base})", tau("no-adapt"));
        for m in ["full-ft", "stage2-original", "stage2-regen-all", "random", "eda"] {
            assert!(tau(m) > tau("no-adapt") + 0.1, "{target}/{m}: τ {} does not recover from {}", tau(m), tau("no-adapt"));
        }
        let (orig, regen) = (r.get(target, "stage2-original").unwrap(), r.get(target, "stage2-regen-all").unwrap());
        assert_eq!(orig.train_samples, regen.train_samples, "{target}: equal data size");
        assert_eq!(orig.train_steps, regen.train_steps, "{target}: equal training length");
        assert!(regen.tau > orig.tau, "{target}: regenerated τ {} <= original τ {}", regen.tau, orig.tau);
    }
}

#[test]
fn bad_select_fraction_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = DemoConfig::quick(dir.path());
    cfg.select_fraction = 0.0;
    assert!(run_demo(&cfg).is_err());
    assert!(!dir.path().join("results.json").exists());
}

#[test]
fn external_checkpoints_run_the_same_pipeline() {
    // Built-in quick targets play the role of real HF checkpoints given by path.
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = DemoConfig::quick(dir.path().join("builtin"));
    cfg.progress = false;
    run_demo(&cfg).unwrap();
    let targets = dir.path().join("builtin/targets");
    let corpora = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("corpora");
    let mut ext = DemoConfig::quick(dir.path().join("external"));
    ext.progress = false;
    ext.external = Some(eda_demo::ExternalModels {
        base: targets.join("base"),
        targets: vec![targets.join("math")],
        prompts: corpora.join("math.jsonl"),
        general_prompts: corpora.join("general.jsonl"),
    });
    let r = run_demo(&ext).unwrap();
    assert!(!dir.path().join("external/targets").exists(), "no built-in targets are trained in external mode");
    for m in METHODS {
        let row = r.get("math", m).unwrap_or_else(|| panic!("missing math/{m}"));
        assert!(row.tau >= 1.0 && row.tau.is_finite());
    }
    assert!(r.get("code", "eda").is_none());

    // The real-model run accepts any ChatML target: the built-in base plays SmolLM2's role.
    let mut real = eda_demo::RealConfig::quick(dir.path().join("real"));
    real.model = Some(targets.join("base"));
    real.progress = false;
    let first = eda_demo::run_real(&real).unwrap();
    assert!(first.train_samples > 0 && first.train_tokens > 0 && first.train.steps > 0);
    assert!(!first.rows.is_empty() && first.rows.len().is_multiple_of(real.chains.len() + real.trees.len()), "{:?}", first.rows);
    for row in &first.rows {
        assert!(row.prompts > 0);
        assert_eq!(row.greedy_matches, row.prompts, "{}/{}: greedy speculative output must equal the target's", row.domain, row.strategy);
        assert!(row.tau >= 1.0 && row.tau.is_finite() && (0.0..=1.0).contains(&row.alpha), "{row:?}");
        assert!(row.c > 0.0 && row.speedup > 0.0 && row.baseline_tokens_per_second > 0.0, "{row:?}");
        assert_eq!(row.predicted_speedup.is_some(), row.strategy.starts_with("chain"), "{row:?}");
    }
    for f in ["results.json", "results.md", "real_config.json", "features/train/manifest.json", "draft/draft/config.json"] {
        assert!(dir.path().join("real").join(f).exists(), "missing {f}");
    }
    // The draft has the reduced vocabulary the config asked for.
    let dcfg: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.path().join("real/draft/draft/config.json")).unwrap()).unwrap();
    assert!(dcfg["draft_vocab_size"].as_u64().is_some_and(|k| k > 0), "{dcfg}");
    // A rerun resumes: same data and draft, same greedy τ.
    let second = eda_demo::run_real(&real).unwrap();
    assert_eq!(second.train, first.train);
    assert_eq!(second.rows.iter().map(|r| r.tau).collect::<Vec<_>>(), first.rows.iter().map(|r| r.tau).collect::<Vec<_>>());
    // A missing model is a typed error, not a fetch.
    real.model = Some(dir.path().join("no-such-model.gguf"));
    assert!(eda_demo::run_real(&real).is_err());
}
