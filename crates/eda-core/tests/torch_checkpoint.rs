//! eda's PyTorch-checkpoint reader against a file written by `torch.save` itself
//! (`tests/fixtures/make_torch_fixture.py`): dtypes, a transposed view, two views sharing one
//! storage at different offsets, a 0-d tensor; and eda's own archives read back the same way.

use std::path::PathBuf;

use eda_core::safetensors::{decode, Dtype};
use eda_core::torch_checkpoint;

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/torch-bin")
}

fn values(t: &eda_core::safetensors::HostTensor) -> Vec<f64> {
    match t.dtype {
        Dtype::I64 => decode::<i64>(&t.name, t.dtype, &t.data).unwrap().into_iter().map(|v| v as f64).collect(),
        _ => decode::<f32>(&t.name, t.dtype, &t.data).unwrap().into_iter().map(f64::from).collect(),
    }
}

#[test]
fn reads_what_torch_save_wrote() {
    let expected: serde_json::Value = serde_json::from_slice(&std::fs::read(fixture().join("expected.json")).unwrap()).unwrap();
    let got = torch_checkpoint::read(&fixture().join("pytorch_model.bin")).unwrap();
    let want = expected["tensors"].as_array().unwrap();
    assert_eq!(got.len(), want.len());
    for (t, w) in got.iter().zip(want) {
        assert_eq!(t.name, w["name"].as_str().unwrap());
        let dtype = match w["dtype"].as_str().unwrap() {
            "float32" => Dtype::F32,
            "float16" => Dtype::F16,
            "bfloat16" => Dtype::BF16,
            "int64" => Dtype::I64,
            other => panic!("fixture dtype {other}"),
        };
        assert_eq!(t.dtype, dtype, "{}", t.name);
        let shape: Vec<usize> = w["shape"].as_array().unwrap().iter().map(|d| d.as_u64().unwrap() as usize).collect();
        assert_eq!(t.shape, shape, "{}", t.name);
        let vals: Vec<f64> = w["values"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
        assert_eq!(values(t), vals, "{}", t.name);
    }
}

#[test]
fn eda_archives_round_trip_what_torch_save_wrote() {
    let theirs = torch_checkpoint::read(&fixture().join("pytorch_model.bin")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("pytorch_model.bin");
    torch_checkpoint::write(&p, &theirs).unwrap();
    assert_eq!(torch_checkpoint::read(&p).unwrap(), theirs);
}
