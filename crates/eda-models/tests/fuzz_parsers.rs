//! Property-based fuzzing of the model-file parsers (`config.json`, GGUF, safetensors headers):
//! arbitrary and mutated inputs give `Ok` or a typed error, never a panic or a huge allocation.
//! `PROPTEST_CASES` raises the case count (`scripts/fuzz.sh`).

use eda_models::gguf::{GgufFile, GgufValue, GgufWriter};
use eda_models::{ModelConfig, WeightSource};
use proptest::prelude::*;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(96),
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn valid_gguf() -> Vec<u8> {
    let mut w = GgufWriter::new();
    w.add_metadata("general.architecture", GgufValue::String("llama".into()));
    w.add_metadata("llama.context_length", GgufValue::U32(64));
    w.add_metadata("tokenizer.ggml.tokens", GgufValue::Array(vec![GgufValue::String("a".into()), GgufValue::String("b".into())]));
    w.add_tensor("t", &[4, 2], eda_models::gguf::quant::GgmlType::F32, vec![0u8; 32]).unwrap();
    w.to_bytes()
}

fn config_value() -> impl Strategy<Value = serde_json::Value> {
    let num = prop_oneof![
        Just(serde_json::json!(0)),
        Just(serde_json::json!(-1)),
        Just(serde_json::json!(1)),
        Just(serde_json::json!(7)),
        Just(serde_json::json!(64)),
        Just(serde_json::json!(1e300)),
        Just(serde_json::json!(u64::MAX)),
        Just(serde_json::json!(0.5)),
        Just(serde_json::json!("x")),
        Just(serde_json::json!(null)),
        Just(serde_json::json!([1, 2])),
    ];
    let keys = prop::sample::subsequence(
        vec![
            "vocab_size",
            "hidden_size",
            "intermediate_size",
            "num_hidden_layers",
            "num_attention_heads",
            "num_key_value_heads",
            "max_position_embeddings",
            "rope_theta",
            "rms_norm_eps",
            "head_dim",
            "eos_token_id",
            "bos_token_id",
            "rope_scaling",
            "tie_word_embeddings",
        ],
        0..14,
    );
    let model_type = prop::sample::select(vec!["qwen2", "llama", "gpt2", ""]);
    (keys, prop::collection::vec(num, 14), model_type).prop_map(|(keys, vals, mt)| {
        let mut m = serde_json::Map::new();
        m.insert("model_type".into(), serde_json::json!(mt));
        for (k, v) in keys.into_iter().zip(vals) {
            m.insert(k.into(), v);
        }
        serde_json::Value::Object(m)
    })
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn config_json_never_panics(v in config_value(), text in ".{0,64}") {
        let _ = ModelConfig::from_json_str(&v.to_string(), "config.json");
        let _ = ModelConfig::from_json_str(&text, "config.json");
    }

    #[test]
    fn gguf_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let mut b = b"GGUF".to_vec();
        b.extend_from_slice(&bytes);
        let _ = GgufFile::from_bytes(b, "fuzz.gguf");
        let _ = GgufFile::from_bytes(bytes, "fuzz.gguf");
    }

    #[test]
    fn mutated_gguf_never_panics(flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6), cut in any::<prop::sample::Index>()) {
        let mut b = valid_gguf();
        for (i, v) in flips {
            let k = i.index(b.len());
            b[k] = v;
        }
        if let Ok(f) = GgufFile::from_bytes(b.clone(), "fuzz.gguf") {
            for t in f.tensors().to_vec() {
                let _ = f.tensor_f32(&t.name);
            }
        }
        let n = cut.index(b.len());
        let _ = GgufFile::from_bytes(b[..n].to_vec(), "fuzz.gguf");
    }

    #[test]
    fn safetensors_headers_never_panic(header in "[{}\\[\\]\":,a-zA-Z0-9_. ]{0,120}", len_delta in -4i64..4, tail in prop::collection::vec(any::<u8>(), 0..32)) {
        let dir = tempfile::tempdir().unwrap();
        let mut b = ((header.len() as i64 + len_delta).max(0) as u64).to_le_bytes().to_vec();
        b.extend_from_slice(header.as_bytes());
        b.extend_from_slice(&tail);
        std::fs::write(dir.path().join("model.safetensors"), &b).unwrap();
        if let Ok(src) = WeightSource::open(dir.path()) {
            let _ = src.read_f32("w", &[2, 2]);
        }
    }
}

/// A GGUF header announcing 2^60 tensors or metadata entries must be refused before allocating.
#[test]
fn huge_counts_in_a_gguf_header_are_typed_errors() {
    for (tensors, kv) in [(1u64 << 60, 0u64), (0, 1 << 60)] {
        let mut b = b"GGUF".to_vec();
        b.extend_from_slice(&3u32.to_le_bytes());
        b.extend_from_slice(&tensors.to_le_bytes());
        b.extend_from_slice(&kv.to_le_bytes());
        assert!(GgufFile::from_bytes(b, "huge.gguf").is_err());
    }
}
