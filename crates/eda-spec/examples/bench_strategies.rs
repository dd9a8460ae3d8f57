//! Side-by-side CPU throughput of autoregressive, chain and tree decoding on tiny random models.
//!
//! ```text
//! cargo run -p eda-spec --example bench_strategies [-- --max-new-tokens 64 --layers 8]
//! # on a GPU build: EDA_DEVICE=wgpu (or cuda), larger shapes, JSON for scripts/gpu-check.sh
//! EDA_DEVICE=cuda cargo run --release --features eda-core/cuda -p eda-spec --example bench_strategies \
//!     -- --hidden 1024 --vocab 32000 --layers 16 --json strategies.json
//! ```
//!
//! Targets are random Qwen2 models from `eda-models`. Two drafts are used:
//! * `shallow`: a 1-layer model whose `L`-layer target is the same network padded with identity
//!   layers (zero output projections), so the draft is *perfect* and `L` times cheaper: an upper
//!   bound on τ for a given cost ratio;
//! * `random`: an unrelated 1-layer random model: τ ≈ 1, the worst case (pure overhead).
//!
//! Every speedup is measured in this process against autoregressive decoding on the same prompts
//! (one warm-up run each). Greedy decoding; outputs are checked against the baseline.

use burn::module::Param;
use burn::tensor::Tensor;
use eda_core::{GenerationConfig, Result};
use eda_models::{CausalLm, ModelConfig, Target};
use eda_spec::{evaluate, ChainStrategy, LmDraft, SpeculativeStrategy, Strategy, TreeStrategy};

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

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn main() -> Result<()> {
    // EDA_DEVICE picks the backend (cpu by default; wgpu/cuda when compiled in).
    let device = match std::env::var("EDA_DEVICE") {
        Ok(_) => eda_core::backend::default_device()?,
        Err(_) => eda_core::backend::device_from_name("cpu")?,
    };
    let max_new = arg("--max-new-tokens", 48);
    let layers = arg("--layers", 8);
    let (hidden, vocab) = (arg("--hidden", 256), arg("--vocab", 1024));
    let cfg = ModelConfig::qwen2(vocab, hidden, 2 * hidden, 1, 8, 4, 1024);
    let shallow = CausalLm::new(&cfg, &device);
    let mut target = Target::new(deepen(&shallow, layers), "deep".into());
    let mut drafts = [
        ("shallow", LmDraft::new(Box::new(Target::new(shallow, "shallow".into())))),
        ("random", LmDraft::new(Box::new(Target::new(CausalLm::new(&cfg, &device), "random".into())))),
    ];
    let prompts: Vec<Vec<u32>> = (0..4u32).map(|i| (0..16).map(|j| (i * 97 + j * 13) % vocab as u32).collect()).collect();
    let gen = GenerationConfig { max_new_tokens: max_new, ..GenerationConfig::greedy() };
    let strategies = [
        Strategy::Chain(ChainStrategy { gamma: 4 }),
        Strategy::Tree(TreeStrategy { depth: 4, top_k: 4, total_tokens: 16 }),
        Strategy::Tree(TreeStrategy { depth: 5, top_k: 10, total_tokens: 60 }),
    ];
    println!("target: qwen2 {layers} layers (hidden {hidden}, vocab {vocab}); drafts: 1 layer; {} prompts x {max_new} tokens, greedy, {device:?}", prompts.len());
    let mut rows = Vec::new();
    println!(
        "{:<8} {:<40} {:>6} {:>7} {:>6} {:>6} {:>9} {:>9} {:>8} {:>6}",
        "draft", "strategy", "tau", "tau_ref", "alpha", "c", "tok/s", "AR tok/s", "speedup", "exact"
    );
    for (name, draft) in drafts.iter_mut() {
        for mut s in strategies {
            let r = evaluate(&mut target, Some(&mut *draft), &mut s, &prompts, &gen)?;
            let a = &r.aggregate;
            println!(
                "{name:<8} {:<40} {:>6.2} {:>7} {:>6.3} {:>6.3} {:>9.1} {:>9.1} {:>8.2} {:>6}",
                s.name(),
                a.tau,
                a.tau_reference.map(|t| format!("{t:.2}")).unwrap_or_else(|| "-".into()),
                a.alpha,
                a.cost_ratio,
                a.tokens_per_second,
                a.baseline_tokens_per_second,
                a.speedup,
                format!("{}/{}", a.greedy_matches.unwrap_or(0), a.prompts)
            );
            rows.push(serde_json::json!({
                "draft": name, "strategy": s.name(), "tau": a.tau, "alpha": a.alpha, "cost_ratio": a.cost_ratio,
                "tokens_per_s": a.tokens_per_second, "autoregressive_tokens_per_s": a.baseline_tokens_per_second,
                "speedup": a.speedup, "greedy_matches": a.greedy_matches, "prompts": a.prompts,
            }));
        }
    }
    if let Some(i) = std::env::args().position(|a| a == "--json") {
        let path = std::env::args().nth(i + 1).ok_or_else(|| eda_core::EdaError::InvalidArgument("--json needs a file".into()))?;
        let report = serde_json::json!({"device": format!("{device:?}"), "layers": layers, "hidden": hidden, "vocab": vocab,
            "max_new_tokens": max_new, "rows": rows});
        eda_core::io::write_json(std::path::Path::new(&path), &report)?;
        println!("wrote {path}");
    }
    Ok(())
}
