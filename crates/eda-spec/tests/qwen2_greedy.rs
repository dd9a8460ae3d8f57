//! Integration test with real (tiny, randomly initialised) Qwen2 transformers from `eda-models`:
//! greedy speculative decoding (chain and tree, with an `LmDraft`) equals greedy target decoding.

use burn::module::Param;
use burn::tensor::Tensor;
use eda_core::generate::generate_autoregressive;
use eda_core::{DecodingStrategy, GenerationConfig, TargetModel};
use eda_models::{CausalLm, ModelConfig, Target};
use eda_spec::{tau_per_cycle, ChainStrategy, LmDraft, TreeStrategy};

/// A `layers`-deep model whose extra layers are exact identities (zero output projections), so it
/// computes the same function as `shallow`: a perfect but cheaper draft for it.
fn deepen(shallow: &CausalLm, layers: usize) -> CausalLm {
    let mut deep = shallow.clone();
    let device = shallow.embed_tokens.weight.val().device();
    while deep.layers.len() < layers {
        let mut l = shallow.layers[0].clone();
        let o = l.self_attn.o_proj.weight.val().dims();
        l.self_attn.o_proj.weight = Param::from_tensor(Tensor::zeros(o, &device));
        let d = l.mlp.down_proj.weight.val().dims();
        l.mlp.down_proj.weight = Param::from_tensor(Tensor::zeros(d, &device));
        deep.layers.push(l);
    }
    deep.config.num_hidden_layers = layers;
    deep
}

#[test]
fn greedy_speculative_decoding_with_qwen2_models_is_exact() {
    let device = eda_core::backend::device_from_name("cpu").unwrap();
    let cfg = ModelConfig::qwen2(64, 32, 64, 1, 4, 2, 128);
    let shallow = CausalLm::new(&cfg, &device);
    let mut target = Target::new(deepen(&shallow, 3), "deep".into());
    let mut drafts = [
        ("good", LmDraft::new(Box::new(Target::new(shallow, "shallow".into())))),
        ("random", LmDraft::new(Box::new(Target::new(CausalLm::new(&cfg, &device), "random".into())))),
    ];
    let gen = GenerationConfig { max_new_tokens: 24, ..GenerationConfig::greedy() };
    for prompt in [vec![1u32, 2, 3], vec![10, 20, 30, 40, 50]] {
        let reference = generate_autoregressive(&mut target, &prompt, &gen).unwrap();
        assert_eq!(reference.tokens.len(), 24);
        for (name, draft) in drafts.iter_mut() {
            let name = *name;
            let chain = ChainStrategy { gamma: 3 }.generate(&mut target, Some(&mut *draft), &prompt, &gen).unwrap();
            assert_eq!(chain.tokens, reference.tokens, "chain / {name}");
            assert_eq!(target.cache_len(), prompt.len() + 24 - 1);
            let tree =
                TreeStrategy { depth: 3, top_k: 3, total_tokens: 12 }.generate(&mut target, Some(&mut *draft), &prompt, &gen).unwrap();
            assert_eq!(tree.tokens, reference.tokens, "tree / {name}");
            assert_eq!(target.cache_len(), prompt.len() + 24 - 1);
            if name == "good" {
                assert!(tau_per_cycle(&chain.metrics) > 3.0, "chain tau {}", tau_per_cycle(&chain.metrics));
                assert!(tau_per_cycle(&tree.metrics) > 2.5, "tree tau {}", tau_per_cycle(&tree.metrics));
            }
        }
    }
}

#[test]
fn greedy_speculative_decoding_with_an_eda_draft_is_exact() {
    // An (untrained) EAGLE-style EDA draft reading the target's features: exercises the
    // feature alignment (h_t, x_{t+1}) and tree expansion with parent features on a real model.
    let device = eda_core::backend::device_from_name("cpu").unwrap();
    let cfg = ModelConfig::qwen2(64, 32, 64, 2, 4, 2, 128);
    let mut target = Target::new(CausalLm::new(&cfg, &device), "target".into());
    let dcfg = eda_draft::EdaDraftConfig::tiny(64, 32);
    let model = eda_draft::EdaDraft::new(&dcfg, target.embedding_weight(), target.lm_head_weight(), &device).unwrap();
    // Full vocabulary, and a reduced draft vocabulary (EAGLE-3 style, 24 of the 64 tokens, sparse
    // logits): the target still emits tokens outside it.
    let reduced = model.clone().with_draft_vocab((0..64).filter(|t| t % 3 != 1).take(24).collect()).unwrap();
    let gen = GenerationConfig { max_new_tokens: 20, ..GenerationConfig::greedy() };
    let prompt = vec![5u32, 6, 7, 8];
    let reference = generate_autoregressive(&mut target, &prompt, &gen).unwrap();
    for (name, model) in [("full", model), ("reduced", reduced)] {
        let mut draft = eda_draft::DraftSession::new(model);
        let chain = ChainStrategy { gamma: 3 }.generate(&mut target, Some(&mut draft), &prompt, &gen).unwrap();
        assert_eq!(chain.tokens, reference.tokens, "{name}");
        let tree = TreeStrategy { depth: 3, top_k: 4, total_tokens: 16 }.generate(&mut target, Some(&mut draft), &prompt, &gen).unwrap();
        assert_eq!(tree.tokens, reference.tokens, "{name}");
        assert_eq!(target.cache_len(), prompt.len() + 20 - 1);
        // Sampling runs through the sparse draft distribution too.
        let sampled = ChainStrategy { gamma: 3 }
            .generate(
                &mut target,
                Some(&mut draft),
                &prompt,
                &GenerationConfig { max_new_tokens: 20, ..GenerationConfig::sampling(0.8, 3) },
            )
            .unwrap();
        assert_eq!(sampled.tokens.len(), 20);
    }
}
