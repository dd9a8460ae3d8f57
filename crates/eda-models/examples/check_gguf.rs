//! Runs eda on a GGUF file for `check_gguf.py` (the comparison with transformers):
//!
//! ```sh
//! cargo run --release -p eda-models --example check_gguf -- MODEL.gguf IN.json OUT.json
//! ```
//!
//! `IN.json`: `{"texts": [...], "prompt": "...", "new_tokens": 32}`. `OUT.json`: the token ids of
//! every text (no special tokens added), the prompt's ids, the logits at every prompt position,
//! the greedy continuation, the derived config and timings.

use std::path::PathBuf;
use std::time::Instant;

use eda_core::generate::generate_autoregressive;
use eda_core::{EdaError, GenerationConfig, Result, TargetModel};
use serde_json::json;

fn main() -> Result<()> {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let [model, input, output] = args.as_slice() else {
        return Err(EdaError::InvalidArgument("usage: check_gguf MODEL.gguf IN.json OUT.json".into()));
    };
    let inp: serde_json::Value = eda_core::io::read_json(input)?;
    let device = eda_core::backend::device_from_name("cpu")?;
    let t0 = Instant::now();
    let mut target = eda_models::Target::from_pretrained(model, &device)?;
    let load_s = t0.elapsed().as_secs_f64();
    let tok = eda_models::load_tokenizer_for(model, target.info().vocab_size)?;
    let enc = |s: &str| -> Result<Vec<u32>> {
        tok.encode(s, false).map(|e| e.get_ids().to_vec()).map_err(|e| EdaError::Tokenizer { path: model.clone(), message: e.to_string() })
    };
    let texts: Vec<&str> = inp["texts"].as_array().into_iter().flatten().filter_map(|v| v.as_str()).collect();
    let ids = texts.iter().map(|s| enc(s)).collect::<Result<Vec<_>>>()?;
    let prompt = enc(inp["prompt"].as_str().unwrap_or("Hello"))?;
    let t1 = Instant::now();
    let out = target.forward(&prompt)?;
    let forward_s = t1.elapsed().as_secs_f64();
    let logits = eda_core::backend::to_vec_f32(out.logits)?;
    let vocab = target.info().vocab_size;
    let rows: Vec<&[f32]> = logits.chunks(vocab).collect();
    target.reset_cache();
    let n = inp["new_tokens"].as_u64().unwrap_or(32) as usize;
    // Greedy without stop tokens, as the reference is generated.
    let cfg = GenerationConfig { max_new_tokens: n, ..GenerationConfig::greedy() };
    let t2 = Instant::now();
    let gen = generate_autoregressive(&mut target, &prompt, &cfg)?;
    let gen_s = t2.elapsed().as_secs_f64();
    let report = json!({
        "ids": ids,
        "prompt_ids": prompt,
        "logits": rows,
        "greedy": gen.tokens,
        "greedy_text": tok.decode(&gen.tokens, false).unwrap_or_default(),
        "config": target.config().to_json(),
        "identity": target.info().identity,
        "seconds": {"load": load_s, "prefill": forward_s, "generate": gen_s},
    });
    eda_core::io::write_json(output, &report)
}
