#[path = "../../eda-cli/src/cmd/train.rs"]
#[allow(dead_code)]
mod train;

use clap::Parser;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: train::Args,
}

fn write_target(dir: &std::path::Path, seed: u64) {
    let (v, h) = (32usize, 16usize);
    let cfg = eda_models::ModelConfig::qwen2(v, h, 32, 1, 4, 2, 256);
    cfg.save(&dir.join("config.json")).unwrap();
    let mut rng = eda_core::sampling::seeded_rng(seed);
    use rand::Rng;
    let mk = |rng: &mut eda_core::sampling::EdaRng| -> Vec<u8> { (0..v * h).flat_map(|_| rng.random_range(-1.0f32..1.0).to_le_bytes()).collect() };
    let (e, l) = (mk(&mut rng), mk(&mut rng));
    let views = vec![
        ("model.embed_tokens.weight", safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![v, h], &e).unwrap()),
        ("lm_head.weight", safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![v, h], &l).unwrap()),
    ];
    std::fs::write(dir.join("model.safetensors"), safetensors::serialize(views, None).unwrap()).unwrap();
}

#[test]
fn cli_stage1_then_stage2() {
    let root = tempfile::tempdir().unwrap();
    let (base, ft) = (root.path().join("base"), root.path().join("ft"));
    std::fs::create_dir_all(&base).unwrap();
    std::fs::create_dir_all(&ft).unwrap();
    write_target(&base, 1);
    write_target(&ft, 2);
    let mut rng = eda_core::sampling::seeded_rng(3);
    use rand::Rng;
    let samples: Vec<_> = (0..6)
        .map(|i| {
            let ids: Vec<u32> = (0..10).map(|_| rng.random_range(0..32)).collect();
            let hid: Vec<f32> = (0..160).map(|_| rng.random_range(-1.0..1.0)).collect();
            eda_core::data::FeatureSample::new(format!("{i}"), ids, hid, 16, vec![1; 10]).unwrap()
        })
        .collect();
    let shards = root.path().join("shards");
    eda_core::data::write_shard(&shards.join("shard-0.safetensors"), &samples, eda_core::data::FeatureDType::F32).unwrap();
    let s1 = root.path().join("s1");
    let p = |v: &std::path::Path| v.to_str().unwrap().to_string();
    let cli = Cli::try_parse_from(["x", "--features", &p(&shards), "--target", &p(&base), "--out", &p(&s1), "--steps", "3", "--batch-size", "2", "--device", "cpu"]).unwrap();
    train::run(cli.args).unwrap();
    assert!(s1.join("draft").is_dir());
    let s2 = root.path().join("s2");
    let cli = Cli::try_parse_from([
        "x", "--stage", "stage2", "--features", &p(&shards), "--target", &p(&ft), "--embedding-from", &p(&base), "--stage1", &p(&s1.join("draft")),
        "--out", &p(&s2), "--steps", "2", "--noise", "reference", "--loss-norm", "batch", "--freeze", "reference", "--device", "cpu",
    ])
    .unwrap();
    train::run(cli.args).unwrap();
    assert!(s2.join("metrics.jsonl").is_file());
}
