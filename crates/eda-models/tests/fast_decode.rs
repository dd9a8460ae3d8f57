//! The CPU host decoding path of `Target` (passes of at most `HOST_ROWS` new tokens) against the
//! burn path on the same weights: decode, a 5-token chain, a tree, cache edits in between.

use std::path::PathBuf;

use eda_core::backend::{device_from_name, to_vec_f32};
use eda_core::{AttentionMask, TargetModel, TargetOutput, TokenId, TokenTree};
use eda_models::gemv::HOST_ROWS;
use eda_models::Target;

fn load(name: &str) -> Target {
    let dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures")).join(name);
    Target::from_pretrained(&dir, &device_from_name("cpu").unwrap()).unwrap()
}

fn argmax(row: &[f32]) -> usize {
    row.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map(|(i, _)| i).unwrap()
}

/// Logits and hidden states within 1e-4, and the same argmax in every row.
fn assert_close(fast: TargetOutput, burn: TargetOutput, what: &str) {
    assert_eq!(fast.logits.dims(), burn.logits.dims(), "{what}: logits shape");
    assert_eq!(fast.hidden.dims(), burn.hidden.dims(), "{what}: hidden shape");
    let [_, vocab] = fast.logits.dims();
    let (fl, bl) = (to_vec_f32(fast.logits).unwrap(), to_vec_f32(burn.logits).unwrap());
    let (fh, bh) = (to_vec_f32(fast.hidden).unwrap(), to_vec_f32(burn.hidden).unwrap());
    let max = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
    let (el, eh) = (max(&fl, &bl), max(&fh, &bh));
    assert!(el < 1e-4, "{what}: logits differ by {el}");
    assert!(eh < 1e-4, "{what}: hidden states differ by {eh}");
    for (r, (a, b)) in fl.chunks_exact(vocab).zip(bl.chunks_exact(vocab)).enumerate() {
        assert_eq!(argmax(a), argmax(b), "{what}: argmax of row {r}");
    }
}

fn sample_tree() -> TokenTree {
    // 0 -> {1, 2, 3}; 1 -> 4; 2 -> {5, 6}; 5 -> 7.
    TokenTree::new(vec![10, 20, 30, 40, 21, 31, 32, 33], vec![None, Some(0), Some(0), Some(0), Some(1), Some(2), Some(2), Some(5)]).unwrap()
}

fn fast_equals_burn(name: &str) {
    let mut fast = load(name);
    let mut burn = load(name);
    // On by default on the CPU (unless EDA_NO_FAST_DECODE is set); force it either way.
    assert!(fast.set_fast_decode(true), "{name}: the CPU target has a host path");
    assert!(!burn.set_fast_decode(false));
    let vocab = fast.info().vocab_size as u32;
    let prompt: Vec<TokenId> = (0..20u32).map(|i| (i * 37 + 11) % vocab).collect();
    assert!(prompt.len() > HOST_ROWS);

    // Prefill on burn in both (more than HOST_ROWS rows), then the host path on a burn-filled cache.
    assert_close(fast.forward(&prompt).unwrap(), burn.forward(&prompt).unwrap(), "prefill");
    assert_close(fast.forward(&[5]).unwrap(), burn.forward(&[5]).unwrap(), "decode");
    let chain = [7, 8, 9, 10, 11];
    assert_close(fast.forward(&chain).unwrap(), burn.forward(&chain).unwrap(), "5-token chain");

    // Tree verification (non-contiguous positions, tree mask), keep one path, decode after it.
    let tree = sample_tree();
    let past = fast.cache_len();
    assert_close(fast.forward_tree(&tree).unwrap(), burn.forward_tree(&tree).unwrap(), "tree");
    assert_eq!(fast.cache_len(), past + tree.len());
    let mut keep: Vec<usize> = (0..past).collect();
    keep.extend(tree.path_to(7).iter().map(|&i| past + i));
    fast.retain_cache(&keep).unwrap();
    burn.retain_cache(&keep).unwrap();
    assert_close(fast.forward(&[3]).unwrap(), burn.forward(&[3]).unwrap(), "decode after retain");

    // An explicit non-causal mask (every new row sees only the cache and itself).
    let p = fast.cache_len();
    let mask = AttentionMask::from_fn(p, 3, |i, j| j < p || j == p + i);
    let run = |t: &mut Target| t.forward_masked(&[4, 5, 6], &[p, p, p], &mask).unwrap();
    assert_close(run(&mut fast), run(&mut burn), "custom mask");

    // Truncate, then a short prompt from an empty cache goes through the host path entirely.
    fast.truncate_cache(10).unwrap();
    burn.truncate_cache(10).unwrap();
    assert_close(fast.forward(&[1, 2]).unwrap(), burn.forward(&[1, 2]).unwrap(), "after truncate");
    fast.reset_cache();
    burn.reset_cache();
    assert_close(fast.forward(&prompt[..HOST_ROWS]).unwrap(), burn.forward(&prompt[..HOST_ROWS]).unwrap(), "short prefill");
    assert_eq!(fast.cache_len(), HOST_ROWS);

    // Errors are unchanged: validation happens before either path.
    assert!(fast.forward(&[vocab]).is_err());
    assert_eq!(fast.cache_len(), HOST_ROWS);
}

#[test]
fn qwen2_host_path_equals_burn_path() {
    // Qwen2: q/k/v biases, untied head.
    fast_equals_burn("qwen2-tiny");
}

#[test]
fn llama_host_path_equals_burn_path() {
    // Llama: no biases, tied embeddings.
    fast_equals_burn("llama-tiny");
}

#[test]
fn fast_decode_toggles() {
    let mut t = load("llama-tiny");
    assert!(!t.set_fast_decode(false));
    assert!(!t.fast_decode());
    assert!(t.set_fast_decode(true));
    assert!(t.fast_decode());
}
