//! Training throughput of a stage-1 `EdaDraft` on the default device.
//!
//! ```sh
//! cargo run --release -p eda-train --example train_throughput -- [VOCAB] [HIDDEN] [STEPS]
//! EDA_DEVICE=cuda cargo run --release --features eda-core/cuda -p eda-train --example train_throughput -- 152064 3584 8
//! ```

use burn::tensor::{Tensor, TensorData};
use eda_core::data::FeatureSample;
use eda_core::sampling::seeded_rng;
use eda_draft::EdaDraftConfig;
use eda_train::{stage1_draft, DraftTrainer, TrainConfig};
use rand::Rng;

fn main() -> eda_core::Result<()> {
    let args: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let (v, h, steps) = (*args.first().unwrap_or(&2048), *args.get(1).unwrap_or(&256), *args.get(2).unwrap_or(&8));
    let (batch, len) = (4usize, 128usize);
    let device = eda_core::backend::default_device()?;
    let mut rng = seeded_rng(5);
    let mut rand_vec = |n: usize, s: f32| -> Vec<f32> { (0..n).map(|_| rng.random_range(-s..s)).collect() };
    let data: Vec<FeatureSample> = (0..16)
        .map(|i| {
            let ids = (0..len).map(|t| ((t * 31 + i * 7) % v) as u32).collect();
            let mut mask = vec![1u8; len];
            mask[0] = 0;
            FeatureSample::new(format!("s{i}"), ids, rand_vec(len * h, 1.0), h, mask)
        })
        .collect::<eda_core::Result<_>>()?;
    let emb = Tensor::<2>::from_data(TensorData::new(rand_vec(v * h, 0.1), [v, h]), &device);
    let head = Tensor::<2>::from_data(TensorData::new(rand_vec(v * h, 0.1), [v, h]), &device);
    let cfg =
        TrainConfig { steps: Some(steps), batch_size: batch, max_len: len, checkpoint_every: 0, log_every: 0, ..TrainConfig::default() };
    let draft = stage1_draft(&EdaDraftConfig::tiny(v, h), emb, head, &cfg, &device)?;
    let dir = tempfile::tempdir().map_err(|e| eda_core::EdaError::io("tempdir", e))?;
    let mut trainer = DraftTrainer::new(cfg, draft, &device, dir.path())?.progress(false);
    let r = trainer.train(&data)?;
    println!(
        "EdaDraft V={v} H={h} B={batch} T={len}: {} tokens in {:.2} s = {:.0} tokens/s",
        r.tokens,
        r.seconds,
        r.tokens as f64 / r.seconds
    );
    Ok(())
}
