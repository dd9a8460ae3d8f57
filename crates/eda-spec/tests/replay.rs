//! A replayed target gives the same greedy decode, τ and acceptance per depth as the live target
//! it recorded, for chain and tree drafting, with EOS-terminated and length-cut answers, on the
//! exact toy models and on a real (tiny) Qwen2 with an EDA draft.

use eda_core::backend::{device_from_name, to_vec_f32};
use eda_core::data::FeatureSample;
use eda_core::generate::generate_autoregressive;
use eda_core::{DraftModel, EdaError, GenerationConfig, TargetModel, TokenId};
use eda_spec::replay::{evaluate_replay, Recording, ReplayTarget};
use eda_spec::{evaluate_with, ChainStrategy, EvalOptions, EvalReport, SpeculativeStrategy, TreeStrategy};
use eda_testkit::{ToyEagleDraft, ToyLm};

/// Records `target`'s greedy answer to each prompt and the hidden states of prompt + answer
/// (teacher-forced, as `eda regenerate` stores them).
fn record(target: &mut dyn TargetModel, prompts: &[Vec<TokenId>], cfg: &GenerationConfig) -> Vec<Recording> {
    prompts
        .iter()
        .map(|p| {
            let answer = generate_autoregressive(target, p, cfg).unwrap().tokens;
            let all: Vec<TokenId> = p.iter().chain(&answer).copied().collect();
            target.reset_cache();
            let hidden = to_vec_f32(target.forward(&all).unwrap().hidden).unwrap();
            target.reset_cache();
            Recording::new(p.clone(), answer, hidden, target.info().hidden_size).unwrap()
        })
        .collect()
}

/// Live evaluation (no baseline) and replay of the same prompts, compared counter by counter.
fn assert_replay_equals_live(
    target: &mut dyn TargetModel,
    draft: &mut dyn DraftModel,
    strategy: &mut dyn SpeculativeStrategy,
    prompts: &[Vec<TokenId>],
    cfg: &GenerationConfig,
    what: &str,
) -> EvalReport {
    let live = evaluate_with(target, Some(draft), strategy, prompts, cfg, &EvalOptions { warmup: 0, baseline: false }).unwrap();
    let recordings = record(target, prompts, cfg);
    let mut replay = ReplayTarget::new(target.info().clone(), target.embedding_weight(), target.lm_head_weight(), recordings).unwrap();
    let replayed = evaluate_replay(&mut replay, draft, strategy, cfg).unwrap();
    assert_eq!(replayed.aggregate.greedy_matches, Some(prompts.len()), "{what}");
    for (l, r) in live.prompts.iter().zip(&replayed.prompts) {
        assert_eq!(l.tokens, r.tokens, "{what}: prompt {}", l.index);
        let (lm, rm) = (&l.metrics, &r.metrics);
        assert_eq!(
            (lm.new_tokens, lm.target_forwards, lm.draft_forwards, &lm.proposed_per_depth, &lm.accepted_per_depth),
            (rm.new_tokens, rm.target_forwards, rm.draft_forwards, &rm.proposed_per_depth, &rm.accepted_per_depth),
            "{what}: prompt {}",
            l.index
        );
    }
    assert_eq!(live.aggregate.tau, replayed.aggregate.tau, "{what}");
    assert_eq!(live.aggregate.tau_reference, replayed.aggregate.tau_reference, "{what}");
    assert_eq!(replayed.aggregate.speedup, 0.0, "no timing in a replay");
    replayed
}

fn strategies() -> Vec<(&'static str, Box<dyn SpeculativeStrategy>)> {
    vec![("chain", Box::new(ChainStrategy { gamma: 4 })), ("tree", Box::new(TreeStrategy { depth: 4, top_k: 3, total_tokens: 12 }))]
}

#[test]
fn replay_matches_the_live_toy_target_for_chains_and_trees() {
    let device = device_from_name("cpu").unwrap();
    let prompts: Vec<Vec<TokenId>> = vec![vec![1, 2], vec![7], vec![3, 9, 4, 4]];
    // Without stop tokens every answer is cut by the length; with one, some end at the stop token.
    for eos in [vec![], vec![5]] {
        let mut target = ToyLm::random(24, 256, 2.5, 3, &device).with_eos_tokens(eos.clone());
        let cfg = GenerationConfig { max_new_tokens: 40, stop_tokens: eos.clone(), ..GenerationConfig::greedy() };
        for noise in [0.5, 2.0] {
            let mut draft = ToyEagleDraft::for_target(&target, noise, 7);
            for (name, mut s) in strategies() {
                let what = format!("{name}, noise {noise}, eos {eos:?}");
                let r = assert_replay_equals_live(&mut target, &mut draft, s.as_mut(), &prompts, &cfg, &what);
                assert!(r.aggregate.tau > 1.0, "{what}: the draft must be accepted sometimes (τ {})", r.aggregate.tau);
                if !eos.is_empty() {
                    assert!(r.prompts.iter().any(|p| p.tokens.len() < 40), "{what}: no answer ended at the stop token");
                }
            }
        }
    }
}

#[test]
fn replay_matches_a_live_qwen2_target_with_an_eda_draft() {
    use eda_models::{CausalLm, ModelConfig, Target};
    let device = device_from_name("cpu").unwrap();
    let cfg = ModelConfig::qwen2(64, 32, 64, 2, 4, 2, 128);
    let mut target = Target::new(CausalLm::new(&cfg, &device), "target".into());
    let dcfg = eda_draft::EdaDraftConfig::tiny(64, 32);
    let model = eda_draft::EdaDraft::new(&dcfg, target.embedding_weight(), target.lm_head_weight(), &device).unwrap();
    let mut draft = eda_draft::DraftSession::new(model);
    let gen = GenerationConfig { max_new_tokens: 24, ..GenerationConfig::greedy() };
    let prompts: Vec<Vec<TokenId>> = vec![vec![5, 6, 7, 8], vec![40, 2]];
    for (name, mut s) in strategies() {
        assert_replay_equals_live(&mut target, &mut draft, s.as_mut(), &prompts, &gen, name);
    }
}

#[test]
fn recordings_from_samples_and_bad_input() {
    let device = device_from_name("cpu").unwrap();
    let mut target = ToyLm::random(16, 64, 2.5, 1, &device);
    let h = target.info().hidden_size;
    // A regenerated sample: prompt [1, 2, 3], answer [4, 5]; mask started one token early.
    let sample = FeatureSample::new("s", vec![1, 2, 3, 4, 5], vec![0.0; 5 * h], h, vec![0, 0, 1, 1, 1]).unwrap();
    let r = Recording::from_sample(&sample, true).unwrap();
    assert_eq!((r.prompt(), r.answer()), (&[1u32, 2, 3][..], &[4u32, 5][..]));
    let r = Recording::from_sample(&sample, false).unwrap();
    assert_eq!((r.prompt(), r.answer()), (&[1u32, 2][..], &[3u32, 4, 5][..]));
    let no_answer = FeatureSample::new("n", vec![1, 2], vec![0.0; 2 * h], h, vec![0, 0]).unwrap();
    assert!(matches!(Recording::from_sample(&no_answer, true), Err(EdaError::EmptyDataset(_))));
    assert!(matches!(Recording::new(vec![1], vec![2], vec![0.0; 3], h), Err(EdaError::Mismatch { .. })));

    let info = target.info().clone();
    let (emb, head) = (target.embedding_weight(), target.lm_head_weight());
    assert!(matches!(ReplayTarget::new(info.clone(), emb.clone(), head.clone(), vec![]), Err(EdaError::EmptyDataset(_))));
    let outside = Recording::new(vec![1], vec![99], vec![0.0; 2 * h], h).unwrap();
    assert!(matches!(ReplayTarget::new(info.clone(), emb.clone(), head.clone(), vec![outside]), Err(EdaError::Mismatch { .. })));

    let cfg = GenerationConfig { max_new_tokens: 8, ..GenerationConfig::greedy() };
    let recs = record(&mut target, &[vec![1, 2]], &cfg);
    let mut replay = ReplayTarget::new(info.clone(), emb.clone(), head.clone(), recs.clone()).unwrap();
    // A prompt nobody recorded.
    assert!(matches!(replay.forward(&[9, 9]), Err(EdaError::InvalidArgument(_))));
    let mut draft = ToyEagleDraft::for_target(&target, 1.0, 2);
    let sampling = GenerationConfig::sampling(1.0, 0);
    assert!(matches!(
        evaluate_replay(&mut replay, &mut draft, &mut ChainStrategy { gamma: 2 }, &sampling),
        Err(EdaError::InvalidArgument(_))
    ));
    // A stop token inside the recorded answer ends the decode there, and the report counts the
    // answer up to it.
    let stop_at = recs[0].answer()[2];
    let first = recs[0].answer().iter().position(|&t| t == stop_at).unwrap();
    let stop = GenerationConfig { stop_tokens: vec![stop_at], ..cfg.clone() };
    let r = evaluate_replay(&mut replay, &mut draft, &mut ChainStrategy { gamma: 2 }, &stop).unwrap();
    assert_eq!(r.prompts[0].tokens, recs[0].answer()[..=first].to_vec());
}
