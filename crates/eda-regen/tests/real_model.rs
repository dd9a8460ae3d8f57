//! Regeneration with a real (tiny, randomly initialised) `eda_models::Target`.

mod common;

use burn::tensor::Tensor;
use common::tokenizer;
use eda_core::backend::to_vec_f32;
use eda_core::data::read_shard;
use eda_core::generate::generate_autoregressive;
use eda_core::{GenerationConfig, TargetModel};
use eda_models::{CausalLm, ModelConfig, Target};
use eda_regen::template::encode;
use eda_regen::*;

#[test]
fn features_of_a_real_target_match_incremental_decoding() {
    let device = eda_core::backend::device_from_name("cpu").unwrap();
    let mut target =
        Target::new(CausalLm::new(&ModelConfig::qwen2(common::VOCAB.len(), 16, 32, 2, 2, 1, 64), &device), "tiny-random".into());
    let tok = tokenizer();
    let text = "{\"id\": \"a\", \"prompt\": \"what is two plus two\"}\n{\"id\": \"b\", \"prompt\": \"hello world\"}\n";
    let (recs, _) = parse_prompts(text, std::path::Path::new("t.jsonl")).unwrap();
    let cfg = RegenConfig {
        system_prompt: Some("be brief".into()),
        generation: GenerationConfig { max_new_tokens: 5, ..GenerationConfig::greedy() },
        start_one_early: false,
        ..RegenConfig::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let s = regenerate_dataset(&mut target, &tok, &recs, &cfg, &mut LocalRegenerator, dir.path()).unwrap();
    assert_eq!(s.new_samples, 2);
    assert_eq!(s.manifest.settings.target.identity, "tiny-random");
    let samples = read_shard(&dir.path().join(&s.manifest.shards[0].file)).unwrap();
    let stops = s.manifest.settings.generation.stop_tokens.clone();
    for (rec, sample) in recs.iter().zip(&samples) {
        let prompt = encode(&tok, &ChatTemplate::ChatMl.render_prompt(&rec.messages, Some("be brief"))).unwrap();
        let gen = GenerationConfig { max_new_tokens: 5, stop_tokens: stops.clone(), ..GenerationConfig::greedy() };
        let response = generate_autoregressive(&mut target, &prompt, &gen).unwrap().tokens;
        assert_eq!(&sample.input_ids[prompt.len()..], &response[..]);
        // Hidden states from prefill + one-token KV-cache steps agree with the teacher-forced pass.
        target.reset_cache();
        let mut rows = vec![target.forward(&prompt).unwrap().hidden];
        for &t in &response[..response.len() - 1] {
            rows.push(target.forward(&[t]).unwrap().hidden);
        }
        rows.push(target.forward(&[*response.last().unwrap()]).unwrap().hidden);
        let incremental = to_vec_f32(Tensor::cat(rows, 0)).unwrap();
        assert_eq!(incremental.len(), sample.hidden.len());
        let max_diff = incremental.iter().zip(&sample.hidden).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(max_diff < 1e-4, "max |diff| = {max_diff}");
    }
}
