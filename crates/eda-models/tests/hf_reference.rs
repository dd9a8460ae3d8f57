//! Numerical agreement with HuggingFace transformers and KV-cache semantics.
//!
//! Fixtures are produced by `tests/fixtures/make_fixtures.py` (torch + transformers) and committed.

use std::path::PathBuf;

use burn::tensor::{Device, Int, Tensor, TensorData};
use eda_core::backend::{device_from_name, to_vec_f32};
use eda_core::generate::generate_autoregressive;
use eda_core::{AttentionMask, GenerationConfig, TargetModel, TokenId, TokenTree};
use eda_models::{CausalLm, ModelConfig, Target};

fn fixtures() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures"))
}

fn dev() -> Device {
    device_from_name("cpu").unwrap()
}

struct Reference {
    input_ids: Vec<TokenId>,
    logits: Vec<f32>,
    hidden: Vec<f32>,
    greedy: Vec<TokenId>,
}

fn reference(name: &str) -> Reference {
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join(name).join("reference.json")).unwrap()).unwrap();
    let flat = |k: &str| -> Vec<f32> {
        v[k].as_array().unwrap().iter().flat_map(|r| r.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32)).collect()
    };
    let ids = |k: &str| -> Vec<TokenId> { v[k].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as TokenId).collect() };
    Reference { input_ids: ids("input_ids"), logits: flat("logits"), hidden: flat("hidden"), greedy: ids("greedy") }
}

fn max_abs(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

fn load(name: &str) -> Target {
    Target::from_pretrained(&fixtures().join(name), &dev()).unwrap()
}

fn check_against_hf(name: &str) {
    check_dir_against_hf(name, &fixtures().join(name));
}

/// `dir` holds the checkpoint of fixture `name` (possibly in another file format).
fn check_dir_against_hf(name: &str, dir: &std::path::Path) {
    let r = reference(name);
    let mut t = Target::from_pretrained(dir, &dev()).unwrap();
    assert_eq!(t.info().identity.len(), 64);
    let out = t.forward(&r.input_ids).unwrap();
    let logits = to_vec_f32(out.logits).unwrap();
    let hidden = to_vec_f32(out.hidden).unwrap();
    let el = max_abs(&logits, &r.logits);
    let eh = max_abs(&hidden, &r.hidden);
    assert!(el <= 1e-3, "{name}: max abs logit error {el}");
    assert!(eh <= 1e-3, "{name}: max abs hidden error {eh}");
    let cfg = GenerationConfig { max_new_tokens: r.greedy.len(), ..GenerationConfig::greedy() };
    let g = generate_autoregressive(&mut t, &r.input_ids, &cfg).unwrap();
    assert_eq!(g.tokens, r.greedy, "{name}: greedy continuation differs from HF");
    eprintln!("{name}: logits err {el:.2e}, hidden err {eh:.2e}, greedy identical ({} tokens)", g.tokens.len());
}

#[test]
fn qwen2_matches_hf() {
    check_against_hf("qwen2-tiny");
}

#[test]
fn llama_sharded_tied_matches_hf() {
    let t = load("llama-tiny");
    assert!(t.model().lm_head.is_none(), "tied checkpoint must share the embedding");
    check_against_hf("llama-tiny");
}

#[test]
fn bf16_checkpoint_loads_and_matches() {
    check_against_hf("qwen2-tiny-bf16");
}

#[test]
fn pytorch_bin_checkpoint_loads_and_matches() {
    // The same weights as a `pytorch_model.bin` (older HF repositories ship only that).
    let dir = tempfile::tempdir().unwrap();
    let src = fixtures().join("qwen2-tiny");
    for f in ["config.json", "tokenizer.json"] {
        std::fs::copy(src.join(f), dir.path().join(f)).unwrap();
    }
    let st = eda_core::safetensors::SafetensorsFile::open(&src.join("model.safetensors")).unwrap();
    let tensors: Vec<_> = st
        .names()
        .iter()
        .map(|n| {
            let t = st.tensor(n).unwrap();
            eda_core::safetensors::HostTensor::new(n.clone(), t.dtype, t.shape.to_vec(), t.data.to_vec())
        })
        .collect();
    eda_core::torch_checkpoint::write(&dir.path().join(eda_models::TORCH_FILE), &tensors).unwrap();
    check_dir_against_hf("qwen2-tiny", dir.path());
}

fn last_row(t: Tensor<2>) -> Vec<f32> {
    let [n, _] = t.dims();
    to_vec_f32(t.narrow(0, n - 1, 1)).unwrap()
}

#[test]
fn incremental_decode_equals_full_recompute() {
    let r = reference("qwen2-tiny");
    let mut t = load("qwen2-tiny");
    let full = to_vec_f32(t.forward(&r.input_ids).unwrap().logits).unwrap();
    t.reset_cache();
    let mut rows = to_vec_f32(t.forward(&r.input_ids[..5]).unwrap().logits).unwrap();
    for &tok in &r.input_ids[5..] {
        rows.extend(to_vec_f32(t.forward(&[tok]).unwrap().logits).unwrap());
    }
    assert_eq!(t.cache_len(), r.input_ids.len());
    assert!(max_abs(&full, &rows) < 1e-4);
}

#[test]
fn truncate_then_redecode_equals_fresh() {
    let r = reference("llama-tiny");
    let mut t = load("llama-tiny");
    t.forward(&r.input_ids).unwrap();
    t.truncate_cache(7).unwrap();
    assert_eq!(t.cache_len(), 7);
    let other = [3, 4, 5];
    let a = to_vec_f32(t.forward(&other).unwrap().logits).unwrap();
    t.reset_cache();
    let mut seq = r.input_ids[..7].to_vec();
    seq.extend(other);
    let b = to_vec_f32(t.forward(&seq).unwrap().logits.narrow(0, 7, 3)).unwrap();
    assert!(max_abs(&a, &b) < 1e-4);
    assert!(t.truncate_cache(100).is_err());
}

fn sample_tree() -> TokenTree {
    //        0(10)
    //      /   |    \
    //   1(20) 2(30) 3(40)
    //    |      |  \
    //   4(21) 5(31) 6(32)
    //           |
    //          7(33)
    TokenTree::new(vec![10, 20, 30, 40, 21, 31, 32, 33], vec![None, Some(0), Some(0), Some(0), Some(1), Some(2), Some(2), Some(5)]).unwrap()
}

#[test]
fn tree_logits_equal_chain_of_each_path() {
    let r = reference("qwen2-tiny");
    let prompt = &r.input_ids[..6];
    let tree = sample_tree();
    let mut t = load("qwen2-tiny");
    t.forward(prompt).unwrap();
    let out = t.forward_tree(&tree).unwrap();
    assert_eq!(t.cache_len(), prompt.len() + tree.len());
    let [n, v] = out.logits.dims();
    assert_eq!(n, tree.len());
    let tree_logits = to_vec_f32(out.logits).unwrap();
    let tree_hidden = to_vec_f32(out.hidden).unwrap();
    let h = t.config().hidden_size;
    let mut fresh = load("qwen2-tiny");
    for node in 0..tree.len() {
        fresh.reset_cache();
        let mut seq = prompt.to_vec();
        seq.extend(tree.path_to(node).iter().map(|&i| tree.tokens()[i]));
        let o = fresh.forward(&seq).unwrap();
        let want = last_row(o.logits);
        let want_h = last_row(o.hidden);
        let e = max_abs(&tree_logits[node * v..(node + 1) * v], &want);
        assert!(e < 1e-4, "node {node}: tree vs chain logit error {e}");
        assert!(max_abs(&tree_hidden[node * h..(node + 1) * h], &want_h) < 1e-4);
    }
}

#[test]
fn retain_after_tree_equals_decoding_accepted_path() {
    let r = reference("llama-tiny");
    let prompt = &r.input_ids[..6];
    let tree = sample_tree();
    let mut t = load("llama-tiny");
    t.forward(prompt).unwrap();
    t.forward_tree(&tree).unwrap();
    let path = tree.path_to(7); // 0 -> 2 -> 5 -> 7
    let mut keep: Vec<usize> = (0..prompt.len()).collect();
    keep.extend(path.iter().map(|&i| prompt.len() + i));
    t.retain_cache(&keep).unwrap();
    assert_eq!(t.cache_len(), prompt.len() + path.len());
    let next = [99, 100];
    let a = to_vec_f32(t.forward(&next).unwrap().logits).unwrap();

    let mut fresh = load("llama-tiny");
    let mut seq = prompt.to_vec();
    seq.extend(path.iter().map(|&i| tree.tokens()[i]));
    let base = seq.len();
    seq.extend(next);
    let b = to_vec_f32(fresh.forward(&seq).unwrap().logits.narrow(0, base, 2)).unwrap();
    assert!(max_abs(&a, &b) < 1e-4);

    assert!(t.retain_cache(&[2, 1]).is_err());
    assert!(t.retain_cache(&[0, 1000]).is_err());
}

#[test]
fn forward_train_batch_equals_target_forward() {
    let r = reference("qwen2-tiny");
    let t = load("qwen2-tiny");
    let lm = t.model();
    let ids: Vec<i64> = r.input_ids.iter().chain(r.input_ids.iter().rev()).map(|&x| x as i64).collect();
    let n = r.input_ids.len();
    let tokens = Tensor::<2, Int>::from_data(TensorData::new(ids, [2, n]), &dev());
    let (logits, hidden) = lm.forward_train(tokens);
    assert_eq!(hidden.dims(), [2, n, 64]);
    let first = to_vec_f32(logits.narrow(0, 0, 1)).unwrap();
    assert!(max_abs(&first, &r.logits) < 1e-3);
}

#[test]
fn masked_forward_validates_arguments() {
    let mut t = load("qwen2-tiny");
    t.forward(&[1, 2, 3]).unwrap();
    let e = t.forward_masked(&[4], &[3], &AttentionMask::causal(2, 1)).unwrap_err();
    assert!(matches!(e, eda_core::EdaError::InvalidArgument(_)), "{e}");
    let e = t.forward_masked(&[4], &[256], &AttentionMask::causal(3, 1)).unwrap_err();
    assert!(matches!(e, eda_core::EdaError::SequenceTooLong { len: 257, max: 256 }), "{e}");
    let e = t.forward(&[1000]).unwrap_err();
    assert!(matches!(e, eda_core::EdaError::InvalidArgument(_)), "{e}");
    assert!(t.forward(&[]).is_err());
    // Failed calls leave the cache untouched.
    assert_eq!(t.cache_len(), 3);
}

#[test]
fn save_pretrained_roundtrip() {
    let dir = tempfile::tempdir().unwrap();
    // A fixture re-saved by eda still matches HF.
    let t = load("qwen2-tiny");
    let cfg = t.config().clone();
    t.model().save_pretrained(&cfg, dir.path()).unwrap();
    let r = reference("qwen2-tiny");
    let mut back = Target::from_pretrained(dir.path(), &dev()).unwrap();
    let logits = to_vec_f32(back.forward(&r.input_ids).unwrap().logits).unwrap();
    assert!(max_abs(&logits, &r.logits) < 1e-3);
    assert_eq!(back.config(), &cfg);

    // A random tied Llama roundtrips exactly.
    let cfg = ModelConfig::llama(64, 32, 48, 2, 4, 2, 64);
    let lm = CausalLm::new(&cfg, &dev());
    let d2 = dir.path().join("llama");
    lm.save_pretrained(&cfg, &d2).unwrap();
    let mut a = Target::new(lm, "x".into());
    let mut b = Target::from_pretrained(&d2, &dev()).unwrap();
    let la = to_vec_f32(a.forward(&[1, 2, 3, 4]).unwrap().logits).unwrap();
    let lb = to_vec_f32(b.forward(&[1, 2, 3, 4]).unwrap().logits).unwrap();
    assert_eq!(la, lb);
    // Saving with a config of another shape is refused.
    let wrong = ModelConfig::llama(64, 32, 48, 3, 4, 2, 64);
    assert!(b.model().save_pretrained(&wrong, &d2).is_err());
}

#[test]
fn llama3_rope_scaling_matches_hf() {
    let name = "llama3-rope-tiny";
    let r = reference(name);
    let mut t = load(name);
    assert!(matches!(t.config().rope_scaling, Some(eda_models::RopeScaling::Llama3 { .. })));
    let out = t.forward(&r.input_ids).unwrap();
    let el = max_abs(&to_vec_f32(out.logits).unwrap(), &r.logits);
    let eh = max_abs(&to_vec_f32(out.hidden).unwrap(), &r.hidden);
    assert!(el <= 1e-3 && eh <= 1e-3, "{name}: logit error {el}, hidden error {eh}");
    // HF generates past max_position_embeddings; eda stops there (64 - 48 = 16 tokens).
    let cfg = GenerationConfig { max_new_tokens: r.greedy.len(), ..GenerationConfig::greedy() };
    let g = generate_autoregressive(&mut t, &r.input_ids, &cfg).unwrap();
    assert_eq!(g.tokens.len(), 64 - r.input_ids.len());
    assert_eq!(g.tokens[..], r.greedy[..g.tokens.len()]);
}
