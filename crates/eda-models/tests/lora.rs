//! LoRA adapters on a real checkpoint (qwen2-tiny, with q/k/v biases): identity at init, only
//! adapters get gradients, every forward path applies them, merging keeps the function, and the
//! merged checkpoint saves, reloads and decodes like the adapted model.

use std::path::PathBuf;

use burn::module::{Module, Param};
use burn::tensor::{Distribution, Int, Tensor, TensorData};
use eda_core::backend::{device_from_name, to_vec_f32};
use eda_core::{TargetModel, TokenId};
use eda_models::{load_pretrained, CausalLm, LoraModule, LoraSpec, Target};

fn fixture() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/qwen2-tiny"))
}

fn tokens(lm: &CausalLm, n: usize) -> Vec<TokenId> {
    let v = lm.config().vocab_size as u32;
    (0..n as u32).map(|i| (i * 31 + 7) % v).collect()
}

fn logits(lm: &CausalLm, ids: &[TokenId]) -> Vec<f32> {
    let device = lm.embed_tokens.weight.val().device();
    let t = Tensor::<2, Int>::from_data(TensorData::new(ids.iter().map(|&x| x as i64).collect(), [1, ids.len()]), &device);
    to_vec_f32(lm.forward_train(t).0).unwrap()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// Gives every adapter a non-zero `B` so that it changes the model.
fn perturb(mut lm: CausalLm) -> CausalLm {
    let device = lm.embed_tokens.weight.val().device();
    let kick = |a: &mut Option<eda_models::LoraAdapter>| {
        if let Some(a) = a {
            let dims = a.b.val().dims();
            a.b = Param::from_tensor(Tensor::random(dims, Distribution::Normal(0.0, 0.05), &device));
        }
    };
    for layer in &mut lm.layers {
        let att = layer.self_attn.lora.as_mut().unwrap();
        [&mut att.q, &mut att.k, &mut att.v, &mut att.o].into_iter().for_each(kick);
        let mlp = layer.mlp.lora.as_mut().unwrap();
        [&mut mlp.gate, &mut mlp.up, &mut mlp.down].into_iter().for_each(kick);
    }
    lm
}

#[test]
fn fresh_adapters_change_nothing_and_count_right() {
    let device = device_from_name("cpu").unwrap();
    let (cfg, base, _) = load_pretrained(&fixture(), &device).unwrap();
    let ids = tokens(&base, 12);
    let before = logits(&base, &ids);
    let spec = LoraSpec { rank: 4, alpha: 8.0, modules: vec![LoraModule::Q, LoraModule::V, LoraModule::Down] };
    let adapted = base.add_lora(&spec, 3).unwrap();
    assert_eq!(logits(&adapted, &ids), before, "B = 0 at init: the adapted model is the base model");
    let (h, i) = (cfg.hidden_size, cfg.intermediate_size);
    let (q, kv) = (cfg.num_attention_heads * cfg.head_dim, cfg.num_key_value_heads * cfg.head_dim);
    let per_layer = 4 * (h + q) + 4 * (h + kv) + 4 * (i + h);
    assert_eq!(adapted.lora_params(), cfg.num_hidden_layers * per_layer);
    // A second set is refused; bad specs are typed errors.
    assert!(adapted.add_lora(&spec, 0).is_err());
    let (_, base, _) = load_pretrained(&fixture(), &device).unwrap();
    for bad in [LoraSpec { rank: 0, ..spec.clone() }, LoraSpec { alpha: f64::NAN, ..spec.clone() }, LoraSpec { modules: vec![], ..spec }] {
        assert!(matches!(base.clone().add_lora(&bad, 0), Err(eda_core::EdaError::InvalidConfig(_))));
    }
}

#[test]
fn only_adapters_receive_gradients() {
    let device = device_from_name("cpu").unwrap();
    let ad = device.clone().autodiff();
    let (_, base, _) = load_pretrained(&fixture(), &device).unwrap();
    let lm = perturb(base.fork(&ad).add_lora(&LoraSpec::default(), 1).unwrap()).train();
    let ids = tokens(&lm, 10);
    let t = Tensor::<2, Int>::from_data(TensorData::new(ids.iter().map(|&x| x as i64).collect(), [1, ids.len()]), &ad);
    let grads = lm.forward_train(t).0.square().mean().backward();
    let l0 = &lm.layers[0];
    assert!(l0.self_attn.q_proj.weight.val().grad(&grads).is_none(), "frozen base weight got a gradient");
    assert!(lm.embed_tokens.weight.val().grad(&grads).is_none(), "frozen embedding got a gradient");
    let lora = l0.self_attn.lora.as_ref().unwrap().q.as_ref().unwrap();
    let ga = to_vec_f32(lora.a.val().grad(&grads).expect("adapter A has a gradient")).unwrap();
    let gb = to_vec_f32(lora.b.val().grad(&grads).expect("adapter B has a gradient")).unwrap();
    assert!(ga.iter().any(|&g| g != 0.0) && gb.iter().any(|&g| g != 0.0));
}

#[test]
fn merging_keeps_the_function_on_every_path_and_saves_a_checkpoint() {
    let device = device_from_name("cpu").unwrap();
    let (cfg, base, _) = load_pretrained(&fixture(), &device).unwrap();
    let ids = tokens(&base, 12);
    let base_logits = logits(&base, &ids);
    let adapted = perturb(base.add_lora(&LoraSpec::default(), 2).unwrap());
    let adapted_logits = logits(&adapted, &ids);
    assert!(max_diff(&adapted_logits, &base_logits) > 1e-3, "the perturbed adapters must change the model");

    // The packed-batch path applies the adapters too.
    let x = adapted.embed(Tensor::<2, Int>::from_data(TensorData::new(ids.iter().map(|&x| x as i64).collect(), [1, ids.len()]), &device));
    let packed = to_vec_f32(adapted.logits(adapted.forward_hidden_varlen(x, &[ids.len()], None))).unwrap();
    assert!(max_diff(&packed, &adapted_logits) < 1e-5, "varlen path ignores adapters");

    // Unmerged adapters cannot be saved (they would be dropped silently).
    let dir = tempfile::tempdir().unwrap();
    assert!(adapted.save_pretrained(&cfg, dir.path()).is_err());

    let merged = adapted.clone().merge_lora();
    assert_eq!(merged.lora_params(), 0);
    let d = max_diff(&logits(&merged, &ids), &adapted_logits);
    assert!(d < 1e-4, "merged model differs from the adapted one by {d}");

    // Saved, reloaded, decoded through the Target (its CPU host path reads plain weights).
    merged.save_pretrained(&cfg, dir.path()).unwrap();
    let mut target = Target::from_pretrained(dir.path(), &device).unwrap();
    let out = to_vec_f32(target.forward(&ids).unwrap().logits).unwrap();
    let d = max_diff(&out, &adapted_logits);
    assert!(d < 1e-4, "reloaded target differs by {d}");
    // A Target built from the unmerged model merges first.
    let mut direct = Target::new(adapted, String::new());
    let d = max_diff(&to_vec_f32(direct.forward(&ids).unwrap().logits).unwrap(), &adapted_logits);
    assert!(d < 1e-4, "Target::new of an adapted model differs by {d}");
}
