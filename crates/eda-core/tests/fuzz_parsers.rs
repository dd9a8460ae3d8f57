//! Property-based fuzzing of the feature-shard and JSON parsers: arbitrary and mutated inputs must
//! give `Ok` or a typed error, never a panic. `PROPTEST_CASES` raises the case count
//! (`scripts/fuzz.sh` runs them longer); crashes found are pinned as regression tests below.

use eda_core::data::{shard_from_bytes, shard_to_bytes, FeatureDType, FeatureSample};
use proptest::prelude::*;
use std::path::Path;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(128),
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn valid_shard() -> Vec<u8> {
    let a = FeatureSample::new("a", vec![1, 2, 3], vec![0.5; 6], 2, vec![0, 1, 1]).unwrap();
    let b = FeatureSample::new("b", vec![4], vec![1.5; 2], 2, vec![1]).unwrap();
    shard_to_bytes(&[a, b], FeatureDType::BF16).unwrap()
}

/// A safetensors file with the given JSON header and `data` bytes.
fn with_header(header: &str, data: &[u8]) -> Vec<u8> {
    let mut b = (header.len() as u64).to_le_bytes().to_vec();
    b.extend_from_slice(header.as_bytes());
    b.extend_from_slice(data);
    b
}

fn tensor_json() -> impl Strategy<Value = String> {
    let dtype = prop::sample::select(vec!["U32", "U8", "U64", "F32", "BF16", "F16", "I64", "BOOL"]);
    let shape = prop::collection::vec(0usize..5, 0..3);
    (dtype, shape, 0usize..64, 0usize..64)
        .prop_map(|(d, s, a, b)| format!(r#"{{"dtype":"{d}","shape":{s:?},"data_offsets":[{},{}]}}"#, a.min(b), a.max(b)))
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = shard_from_bytes(&bytes, Path::new("fuzz.safetensors"));
    }

    #[test]
    fn mutated_shards_never_panic(flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8), cut in any::<prop::sample::Index>()) {
        let mut b = valid_shard();
        for (i, v) in flips {
            let k = i.index(b.len());
            b[k] = v;
        }
        let _ = shard_from_bytes(&b, Path::new("fuzz.safetensors"));
        let n = cut.index(b.len());
        let _ = shard_from_bytes(&b[..n], Path::new("fuzz.safetensors"));
    }

    #[test]
    fn generated_headers_never_panic(ids in tensor_json(), hid in tensor_json(), mask in tensor_json(), off in tensor_json(), meta in prop::option::of("[\\[\\]\"a-c0-9,]{0,12}")) {
        let meta = match meta {
            Some(m) => format!(r#","__metadata__":{{"format":"eda-features-v1","sample_ids":{}}}"#, serde_json::to_string(&m).unwrap()),
            None => r#","__metadata__":{"format":"eda-features-v1"}"#.to_string(),
        };
        let header = format!(r#"{{"input_ids":{ids},"hidden_states":{hid},"loss_mask":{mask},"sample_offsets":{off}{meta}}}"#);
        let _ = shard_from_bytes(&with_header(&header, &[0u8; 64]), Path::new("fuzz.safetensors"));
    }

    #[test]
    fn arbitrary_json_files_never_panic(text in ".{0,200}") {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.json");
        std::fs::write(&p, &text).unwrap();
        let _ = eda_core::io::read_json::<serde_json::Value>(&p);
        let _ = eda_core::io::read_json::<eda_core::GenerationConfig>(&p);
    }
}

/// A 0-dimensional `input_ids` tensor (the shape comes from the untrusted header) was indexed
/// `shape()[0]` and panicked; `generated_headers_never_panic` covers this class.
#[test]
fn regression_scalar_input_ids_is_a_typed_error() {
    let header = r#"{"input_ids":{"dtype":"U32","shape":[],"data_offsets":[0,4]},"hidden_states":{"dtype":"F32","shape":[1,1],"data_offsets":[4,8]},"loss_mask":{"dtype":"U8","shape":[1],"data_offsets":[8,9]},"sample_offsets":{"dtype":"U64","shape":[2],"data_offsets":[9,25]},"__metadata__":{"format":"eda-features-v1"}}"#;
    let r = shard_from_bytes(&with_header(header, &[0u8; 25]), Path::new("x.safetensors"));
    assert!(r.is_err());
}

/// Offsets that do not partition the tokens must be an error, not a slice panic.
#[test]
fn regression_offsets_out_of_range_are_typed_errors() {
    let offsets: Vec<u8> = [0u64, 9].iter().flat_map(|v| v.to_le_bytes()).collect();
    let mut data = vec![0u8; 4 + 4 + 1];
    data.extend_from_slice(&offsets);
    let header = r#"{"input_ids":{"dtype":"U32","shape":[1],"data_offsets":[0,4]},"hidden_states":{"dtype":"F32","shape":[1,1],"data_offsets":[4,8]},"loss_mask":{"dtype":"U8","shape":[1],"data_offsets":[8,9]},"sample_offsets":{"dtype":"U64","shape":[2],"data_offsets":[9,25]},"__metadata__":{"format":"eda-features-v1"}}"#;
    assert!(shard_from_bytes(&with_header(header, &data), Path::new("x.safetensors")).is_err());
}
