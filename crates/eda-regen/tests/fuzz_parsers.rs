//! Property-based fuzzing of the prompt (JSONL / ShareGPT) and manifest parsers: arbitrary and
//! mutated inputs give `Ok` or a typed error, never a panic. `PROPTEST_CASES` raises the count.

use std::path::Path;

use eda_regen::{parse_prompts, Manifest};
use proptest::prelude::*;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(128),
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// JSON-ish records built from the keys the parser looks at, with values of every JSON type.
fn record() -> impl Strategy<Value = String> {
    let value = prop_oneof![
        Just("\"hi\"".to_string()),
        Just("\"\"".to_string()),
        Just("7".to_string()),
        Just("null".to_string()),
        Just("[]".to_string()),
        Just("{}".to_string()),
        Just(r#"[{"role":"user","content":"u"}]"#.to_string()),
        Just(r#"[{"from":"human","value":"h"},{"from":"gpt","value":"g"}]"#.to_string()),
        Just(r#"[{"role":"assistant","content":"a"}]"#.to_string()),
        Just(r#"[{"from":"system"}]"#.to_string()),
        Just(r#"["x"]"#.to_string()),
    ];
    let keys = prop::sample::subsequence(
        vec!["id", "prompt", "response", "system", "messages", "conversations", "turns", "instruction", "output"],
        0..5,
    );
    (keys, prop::collection::vec(value, 5)).prop_map(|(k, v)| {
        let fields: Vec<String> = k.iter().zip(v).map(|(k, v)| format!("\"{k}\":{v}")).collect();
        format!("{{{}}}", fields.join(","))
    })
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,200}") {
        let _ = parse_prompts(&text, Path::new("fuzz.jsonl"));
        let _ = parse_prompts(&format!("\u{feff}{text}"), Path::new("fuzz.jsonl"));
    }

    #[test]
    fn structured_records_never_panic(lines in prop::collection::vec(record(), 1..6), bom in any::<bool>(), array in any::<bool>()) {
        let text = if array { format!("[{}]", lines.join(",")) } else { lines.join("\n") };
        let text = if bom { format!("\u{feff}{text}") } else { text };
        if let Ok((records, _)) = parse_prompts(&text, Path::new("fuzz.jsonl")) {
            prop_assert!(!records.is_empty());
            // Ids are unique after parsing.
            let mut ids: Vec<&str> = records.iter().map(|r| r.id.as_str()).collect();
            ids.sort_unstable();
            ids.dedup();
            prop_assert_eq!(ids.len(), records.len());
        }
    }

    #[test]
    fn manifests_never_panic(text in "[{}\\[\\]\":,a-z0-9_. -]{0,160}") {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("manifest.json");
        std::fs::write(&p, &text).unwrap();
        let _ = Manifest::load(&p);
    }
}
