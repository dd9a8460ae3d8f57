//! Writes tiny random checkpoints for smoke-testing `eda generate` / `eda eval`:
//! `<dir>/target` (Qwen2, HF layout), `<dir>/lm_draft` (1-layer Qwen2) and `<dir>/eda_draft`
//! (an untrained EDA draft for the target). Usage: `cargo run -p eda-spec --example make_tiny_checkpoints -- DIR`.

use eda_core::TargetModel;
use eda_models::{CausalLm, ModelConfig, Target};

fn main() -> eda_core::Result<()> {
    let dir = std::path::PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "tiny-checkpoints".into()));
    let device = eda_core::backend::device_from_name("cpu")?;
    let cfg = ModelConfig::qwen2(64, 32, 64, 2, 4, 2, 256);
    let lm = CausalLm::new(&cfg, &device);
    lm.save_pretrained(&cfg, &dir.join("target"))?;
    let small = ModelConfig::qwen2(64, 32, 64, 1, 4, 2, 256);
    CausalLm::new(&small, &device).save_pretrained(&small, &dir.join("lm_draft"))?;
    let target = Target::new(lm, "t".into());
    let dcfg = eda_draft::EdaDraftConfig::tiny(64, 32);
    eda_draft::EdaDraft::new(&dcfg, target.embedding_weight(), target.lm_head_weight(), &device)?.save(&dir.join("eda_draft"))?;
    println!("wrote {}", dir.display());
    Ok(())
}
