//! NaN or Inf in saved draft weights is refused at load time (issue 14): such a draft proposes
//! nothing useful and τ silently reads 1.00.

use burn::tensor::{Device, Tensor, TensorData};
use eda_core::backend::device_from_name;
use eda_core::EdaError;
use eda_draft::{EdaDraft, EdaDraftConfig};

const V: usize = 32;
const H: usize = 16;

fn mat(rows: usize, cols: usize, seed: u64, d: &Device) -> Tensor<2> {
    let mut s = seed.wrapping_add(1);
    let v: Vec<f32> = (0..rows * cols)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) - 0.5
        })
        .collect();
    Tensor::from_data(TensorData::new(v, [rows, cols]), d)
}

/// Rewrites `dir/model.safetensors` with element 3 of tensor `name` set to `value`.
fn poison(dir: &std::path::Path, name: &str, value: f32) {
    let path = dir.join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut owned: Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)> =
        st.tensors().into_iter().map(|(n, v)| (n.clone(), v.dtype(), v.shape().to_vec(), v.data().to_vec())).collect();
    let t = owned.iter_mut().find(|t| t.0 == name).expect("tensor present");
    t.3[12..16].copy_from_slice(&value.to_le_bytes());
    let views: Vec<(String, safetensors::tensor::TensorView)> =
        owned.iter().map(|(n, d, s, b)| (n.clone(), safetensors::tensor::TensorView::new(*d, s.clone(), b).unwrap())).collect();
    std::fs::write(&path, safetensors::serialize(views, None).unwrap()).unwrap();
}

#[test]
fn nan_or_inf_in_draft_weights_is_a_typed_error() {
    let d = device_from_name("cpu").unwrap();
    let cfg = EdaDraftConfig::tiny(V, H);
    let m = EdaDraft::new_seeded(&cfg, mat(V, H, 1, &d), mat(V, H, 2, &d), &d, 7).unwrap();
    let dir = tempfile::tempdir().unwrap();
    m.save(dir.path()).unwrap();
    assert!(EdaDraft::load(dir.path(), m.embedding(), m.lm_head(), &d).is_ok());
    for (name, value) in [("fc.weight", f32::NAN), ("layers.0.post_attention_layernorm.weight", f32::INFINITY)] {
        let bad = tempfile::tempdir().unwrap();
        m.save(bad.path()).unwrap();
        poison(bad.path(), name, value);
        match EdaDraft::load(bad.path(), m.embedding(), m.lm_head(), &d) {
            Err(EdaError::NonFinite(msg)) => assert!(msg.contains(name) && msg.contains("model.safetensors"), "{msg}"),
            other => panic!("{name}: expected NonFinite, got {:?}", other.map(|_| ())),
        }
    }
}
