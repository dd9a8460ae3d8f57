//! The eda side of `scripts/interop-check.sh`, which proves exported drafts against the peers'
//! own Python code (EAGLE's `eagle-llm`, vLLM's `speculators`).
//!
//! ```text
//! # a fresh 1 shared + 1 private draft for a target (random weights, private group non-zero)
//! cargo run -p eda-spec --example eagle_interop -- init TARGET_DIR DRAFT_DIR [SEED]
//! # target features, draft outputs and greedy generations for prompt ids, as JSON
//! cargo run -p eda-spec --example eagle_interop -- dump TARGET_DIR DRAFT_DIR 5,17,42,... OUT.json [MAX_NEW]
//! ```
//!
//! `dump` runs the target over the prompt, feeds the draft `(tokens[1..], features[..T-1])` (the
//! EAGLE pairing: the feature at position i with the token at i+1) and writes the features, the
//! draft's output hidden states and logits, and the greedy continuations of chain and tree
//! speculative decoding (which must equal the target's own greedy output) with the acceptance
//! length of each. Everything is f32 on the CPU.

use burn::tensor::{Int, Tensor, TensorData};
use eda_core::{DecodingStrategy, EdaError, GenerationConfig, Result, TargetModel};
use eda_draft::{DraftSession, EdaDraft, EdaDraftConfig};
use eda_models::Target;
use eda_spec::{Autoregressive, ChainStrategy, TreeStrategy};
use std::path::Path;

fn rows(t: Tensor<2>) -> Result<Vec<Vec<f32>>> {
    let [_, cols] = t.dims();
    let v = eda_core::backend::to_vec_f32(t)?;
    Ok(v.chunks(cols).map(<[f32]>::to_vec).collect())
}

fn init(target_dir: &Path, draft_dir: &Path, seed: u64) -> Result<()> {
    let device = eda_core::backend::device_from_name("cpu")?;
    let target = Target::from_pretrained(target_dir, &device)?;
    let info = target.info().clone();
    let tc = target.model().config.clone();
    let heads = tc.num_attention_heads;
    let cfg = EdaDraftConfig::for_target(&info, heads, tc.num_key_value_heads, 2 * info.hidden_size, info.hidden_size)
        .with_rope_theta(tc.rope_theta);
    let draft = EdaDraft::new_seeded(&cfg, target.embedding_weight(), target.lm_head_weight(), &device, seed)?;
    draft.save(draft_dir)?;
    println!(
        "wrote a fresh EDA draft ({} shared + {} private experts) to {}",
        cfg.num_shared_experts,
        cfg.num_private_experts,
        draft_dir.display()
    );
    Ok(())
}

fn dump(target_dir: &Path, draft_dir: &Path, ids: &[u32], out: &Path, max_new: usize) -> Result<()> {
    let device = eda_core::backend::device_from_name("cpu")?;
    let mut target = Target::from_pretrained(target_dir, &device)?;
    let draft = EdaDraft::load(draft_dir, target.embedding_weight(), target.lm_head_weight(), &device)?;
    target.reset_cache();
    let features = target.forward(ids)?.hidden;
    let t = ids.len();
    let h = draft.config().hidden_size;
    let tokens = Tensor::<2, Int>::from_data(TensorData::new(ids[1..].iter().map(|&x| x as i64).collect::<Vec<_>>(), [1, t - 1]), &device);
    let feats = features.clone().slice([0..t - 1, 0..h]).reshape([1, t - 1, h]);
    let hidden = draft.try_forward_train(tokens, feats)?.hidden.reshape([t - 1, h]);
    let logits = draft.logits(hidden.clone());

    let gen = GenerationConfig { max_new_tokens: max_new, stop_tokens: target.info().eos_token_ids.clone(), ..GenerationConfig::greedy() };
    let mut session = DraftSession::new(draft);
    let mut runs = serde_json::Map::new();
    let strategies: [(&str, Box<dyn DecodingStrategy>); 3] = [
        ("autoregressive", Box::new(Autoregressive)),
        ("chain", Box::new(ChainStrategy { gamma: 4 })),
        ("tree", Box::new(TreeStrategy { depth: 4, top_k: 4, total_tokens: 16 })),
    ];
    for (name, mut s) in strategies {
        let o = s.generate(&mut target, Some(&mut session), ids, &gen)?;
        runs.insert(name.into(), serde_json::json!({ "tokens": o.tokens, "tau": o.metrics.tau() }));
    }
    let doc = serde_json::json!({
        "prompt_ids": ids,
        "features": rows(features)?,
        "draft_hidden": rows(hidden)?,
        "draft_logits": rows(logits)?,
        "eos_token_ids": target.info().eos_token_ids,
        "generate": runs,
    });
    eda_core::io::atomic_write(out, serde_json::to_string(&doc).expect("JSON of plain values").as_bytes())?;
    println!("wrote {}", out.display());
    Ok(())
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage =
        || EdaError::InvalidArgument("usage: eagle_interop init TARGET DRAFT [SEED] | dump TARGET DRAFT IDS OUT.json [MAX_NEW]".into());
    match args.first().map(String::as_str) {
        Some("init") if args.len() >= 3 => init(args[1].as_ref(), args[2].as_ref(), args.get(3).and_then(|s| s.parse().ok()).unwrap_or(7)),
        Some("dump") if args.len() >= 5 => {
            let ids: Vec<u32> = args[3].split(',').map(|s| s.trim().parse().map_err(|_| usage())).collect::<Result<_>>()?;
            if ids.len() < 2 {
                return Err(EdaError::InvalidArgument("dump needs at least 2 prompt ids".into()));
            }
            dump(args[1].as_ref(), args[2].as_ref(), &ids, args[4].as_ref(), args.get(5).and_then(|s| s.parse().ok()).unwrap_or(24))
        }
        _ => Err(usage()),
    }
}
