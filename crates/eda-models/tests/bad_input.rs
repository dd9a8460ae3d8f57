//! Bad checkpoints and tokenizers produce typed errors that name the file or tensor.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use eda_core::backend::device_from_name;
use eda_core::EdaError;
use eda_models::{load_tokenizer, Target};
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};

fn fixtures() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures"))
}

fn load(dir: &Path) -> Result<Target, EdaError> {
    Target::from_pretrained(dir, &device_from_name("cpu").unwrap())
}

/// Copies qwen2-tiny's config into `dir` and writes a safetensors file whose tensors are the
/// fixture's, transformed by `edit(name, dtype, shape, bytes)` (returning `None` drops one).
fn rewrite(dir: &Path, edit: impl Fn(&str, Dtype, Vec<usize>, Vec<u8>) -> Option<(Dtype, Vec<usize>, Vec<u8>)>) {
    let src = fixtures().join("qwen2-tiny");
    std::fs::copy(src.join("config.json"), dir.join("config.json")).unwrap();
    let bytes = std::fs::read(src.join("model.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut owned = Vec::new();
    for (name, view) in st.tensors() {
        if let Some(t) = edit(&name, view.dtype(), view.shape().to_vec(), view.data().to_vec()) {
            owned.push((name, t));
        }
    }
    let views: Vec<(String, TensorView)> =
        owned.iter().map(|(n, (d, s, b))| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap())).collect();
    let out = safetensors::tensor::serialize(views, Some(HashMap::from([("format".into(), "pt".into())]))).unwrap();
    std::fs::write(dir.join("model.safetensors"), out).unwrap();
}

#[test]
fn missing_directory_is_io_error() {
    let e = load(Path::new("/definitely/not/here")).unwrap_err();
    assert!(matches!(e, EdaError::Io { ref path, .. } if path.ends_with("here")), "{e}");
}

#[test]
fn missing_weights_file_is_io_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(fixtures().join("qwen2-tiny/config.json"), dir.path().join("config.json")).unwrap();
    let e = load(dir.path()).unwrap_err();
    assert!(matches!(e, EdaError::Io { ref path, .. } if path.ends_with("model.safetensors")), "{e}");
}

#[test]
fn missing_config_is_io_error() {
    let dir = tempfile::tempdir().unwrap();
    let e = load(dir.path()).unwrap_err();
    assert!(matches!(e, EdaError::Io { ref path, .. } if path.ends_with("config.json")), "{e}");
}

#[test]
fn missing_shard_is_io_error() {
    let dir = tempfile::tempdir().unwrap();
    let src = fixtures().join("llama-tiny");
    for f in ["config.json", "model.safetensors.index.json", "model-00001-of-00002.safetensors"] {
        std::fs::copy(src.join(f), dir.path().join(f)).unwrap();
    }
    let e = load(dir.path()).unwrap_err();
    assert!(matches!(e, EdaError::Io { ref path, .. } if path.ends_with("model-00002-of-00002.safetensors")), "{e}");
}

#[test]
fn corrupt_header_is_safetensors_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(fixtures().join("qwen2-tiny/config.json"), dir.path().join("config.json")).unwrap();
    let mut bytes = std::fs::read(fixtures().join("qwen2-tiny/model.safetensors")).unwrap();
    bytes[8..24].copy_from_slice(b"this is garbage!");
    std::fs::write(dir.path().join("model.safetensors"), &bytes).unwrap();
    let e = load(dir.path()).unwrap_err();
    assert!(matches!(e, EdaError::Safetensors { ref path, .. } if path.ends_with("model.safetensors")), "{e}");
    // A file shorter than its declared header.
    std::fs::write(dir.path().join("model.safetensors"), [255u8, 255, 0, 0, 0, 0, 0, 0, b'{']).unwrap();
    assert!(matches!(load(dir.path()).unwrap_err(), EdaError::Safetensors { .. }));
}

#[test]
fn missing_tensor_is_named() {
    let dir = tempfile::tempdir().unwrap();
    rewrite(dir.path(), |n, d, s, b| (n != "model.layers.1.self_attn.k_proj.bias").then_some((d, s, b)));
    let e = load(dir.path()).unwrap_err();
    assert!(
        matches!(e, EdaError::MissingTensor { ref name, ref file } if name == "model.layers.1.self_attn.k_proj.bias" && file.ends_with("model.safetensors")),
        "{e}"
    );
    assert!(e.to_string().contains("k_proj.bias"));
}

#[test]
fn missing_untied_lm_head_is_named() {
    let dir = tempfile::tempdir().unwrap();
    rewrite(dir.path(), |n, d, s, b| (n != "lm_head.weight").then_some((d, s, b)));
    let e = load(dir.path()).unwrap_err();
    assert!(matches!(e, EdaError::MissingTensor { ref name, .. } if name == "lm_head.weight"), "{e}");
}

#[test]
fn wrong_shape_is_named() {
    let dir = tempfile::tempdir().unwrap();
    rewrite(
        dir.path(),
        |n, d, s, b| {
            if n == "model.norm.weight" {
                Some((d, vec![s[0] / 2], b[..b.len() / 2].to_vec()))
            } else {
                Some((d, s, b))
            }
        },
    );
    let e = load(dir.path()).unwrap_err();
    assert!(
        matches!(e, EdaError::ShapeMismatch { ref name, ref expected, ref actual } if name == "model.norm.weight" && expected == &vec![64] && actual == &vec![32]),
        "{e}"
    );
}

#[test]
fn unsupported_dtype_is_named() {
    let dir = tempfile::tempdir().unwrap();
    rewrite(dir.path(), |n, d, s, b| if n == "model.norm.weight" { Some((Dtype::I32, s, b)) } else { Some((d, s, b)) });
    let e = load(dir.path()).unwrap_err();
    assert!(matches!(e, EdaError::UnsupportedDType { ref name, .. } if name == "model.norm.weight"), "{e}");
}

#[test]
fn unknown_model_type() {
    let dir = tempfile::tempdir().unwrap();
    rewrite(dir.path(), |_, d, s, b| Some((d, s, b)));
    let cfg = std::fs::read_to_string(dir.path().join("config.json")).unwrap().replace("\"qwen2\"", "\"mamba\"");
    std::fs::write(dir.path().join("config.json"), cfg).unwrap();
    let e = load(dir.path()).unwrap_err();
    assert!(
        matches!(e, EdaError::UnknownModelType { ref model_type, ref path } if model_type == "mamba" && path.ends_with("config.json")),
        "{e}"
    );
}

#[test]
fn malformed_config_names_file() {
    let dir = tempfile::tempdir().unwrap();
    rewrite(dir.path(), |_, d, s, b| Some((d, s, b)));
    std::fs::write(dir.path().join("config.json"), "{\"model_type\": \"llama\", \"hidden_size\": \"big\"}").unwrap();
    let e = load(dir.path()).unwrap_err();
    assert!(matches!(e, EdaError::Json { ref path, .. } if path.ends_with("config.json")), "{e}");
}

#[test]
fn tokenizer_checks() {
    let dir = fixtures().join("qwen2-tiny");
    let tok = load_tokenizer(&dir.join("tokenizer.json"), 256).unwrap();
    let enc = tok.encode("w1 w2 zzz", false).unwrap();
    assert_eq!(enc.get_ids(), &[4, 5, 0]);
    let e = load_tokenizer(&dir.join("tokenizer-too-big.json"), 256).unwrap_err();
    assert!(matches!(e, EdaError::Mismatch { expected: 256, found: 300, .. }), "{e}");
    assert!(e.to_string().contains("tokenizer-too-big.json"));
    let e = load_tokenizer(&dir.join("nope.json"), 256).unwrap_err();
    assert!(matches!(e, EdaError::Io { .. }), "{e}");
    let e = load_tokenizer(&dir.join("config.json"), 256).unwrap_err();
    assert!(matches!(e, EdaError::Tokenizer { .. }), "{e}");
}
