//! `AutoStrategy`: output equals the chosen strategy's (greedy equals autoregressive), the probe
//! reports every candidate with predictions and measurements, the choice is the fastest measured
//! candidate and is kept across calls.

use eda_core::backend::device_from_name;
use eda_core::generate::generate_autoregressive;
use eda_core::{DecodingStrategy, GenerationConfig};
use eda_spec::{AutoStrategy, ChainStrategy, SpeculativeStrategy, Strategy, TreeStrategy};
use eda_testkit::{ToyEagleDraft, ToyLm};

#[test]
fn auto_strategy_probes_chooses_fastest_and_stays_exact() {
    let device = device_from_name("cpu").unwrap();
    let mut target = ToyLm::random(48, 128, 3.0, 7, &device);
    let mut draft = ToyEagleDraft::for_target(&target, 0.3, 1);
    let cfg = GenerationConfig { max_new_tokens: 40, ..GenerationConfig::greedy() };
    let trees = vec![TreeStrategy { depth: 2, top_k: 2, total_tokens: 6 }];
    let mut auto = AutoStrategy::new(3, trees.clone(), 12);
    assert!(auto.choice().is_none());
    assert_eq!(auto.name(), "auto(undecided)");

    let prompt = [3, 9, 27];
    let out = auto.generate(&mut target, Some(&mut draft), &prompt, &cfg).unwrap();
    assert_eq!(out.tokens, generate_autoregressive(&mut target, &prompt, &cfg).unwrap().tokens);

    let choice = auto.choice().unwrap().clone();
    // Candidates: plain decoding, chains 1..=3 (all predicted), then the tree (measured only).
    let strategies: Vec<Strategy> = choice.candidates.iter().map(|c| c.strategy).collect();
    let mut expected = vec![Strategy::Autoregressive];
    expected.extend((1..=3).map(|g| Strategy::Chain(ChainStrategy { gamma: g })));
    expected.extend(trees.iter().map(|&t| Strategy::Tree(t)));
    assert_eq!(strategies, expected);
    for c in &choice.candidates[1..4] {
        assert!(c.predicted_speedup.unwrap() > 0.0, "{c:?}");
    }
    // The longest chain is always timed; at least two chains are timed in all.
    assert!(choice.candidates[3].measured_speedup.is_some());
    assert!(choice.candidates.iter().filter(|c| c.measured_speedup.is_some()).count() >= 4);
    assert_eq!(choice.acceptance_per_depth.len(), 3);
    assert!(choice.acceptance_per_depth.iter().all(|a| (0.0..=1.0).contains(a)));
    assert!(choice.draft_cost > 0.0 && choice.verify_cost > 0.0);
    let best = choice.candidates.iter().filter_map(|c| c.measured_speedup).fold(f64::NEG_INFINITY, f64::max);
    let chosen = choice.candidates.iter().find(|c| c.strategy == choice.chosen).unwrap();
    assert_eq!(chosen.measured_speedup, Some(best));
    assert_eq!(auto.drafted_per_cycle(), choice.chosen.drafted_per_cycle());
    assert!(auto.name().starts_with("auto("));
    let table = choice.to_string();
    assert!(table.contains("<- chosen") && table.contains("chain(gamma=2)"), "{table}");

    // Later calls reuse the choice (no new probe) and stay exact, with sampling too.
    let again = auto.generate(&mut target, Some(&mut draft), &[5, 6], &cfg).unwrap();
    assert_eq!(again.tokens, generate_autoregressive(&mut target, &[5, 6], &cfg).unwrap().tokens);
    assert_eq!(auto.choice().unwrap(), &choice);
    let scfg = GenerationConfig { max_new_tokens: 16, ..GenerationConfig::sampling(1.0, 3) };
    let mut chosen_strategy = choice.chosen;
    let a = auto.generate(&mut target, Some(&mut draft), &[5, 6], &scfg).unwrap();
    let b = chosen_strategy.generate(&mut target, Some(&mut draft), &[5, 6], &scfg).unwrap();
    assert_eq!(a.tokens, b.tokens);
}

#[test]
fn chain_prediction_matches_hand_computation_and_bad_settings_are_errors() {
    // a = (0.8, 0.5): expected tokens for γ = 2 are 1 + 0.8 + 0.4 = 2.2; cost 2·0.1 + v(3), with
    // v linear from 1 (n = 1) to 2 (n = 3) -> v(3) = 2.
    let s = AutoStrategy::predict_chain(&[0.8, 0.5], 2, 0.1, 2.0, 3);
    assert!((s - 2.2 / 2.2).abs() < 1e-12, "{s}");
    let s1 = AutoStrategy::predict_chain(&[0.8, 0.5], 1, 0.1, 2.0, 3);
    assert!((s1 - 1.8 / (0.1 + 1.5)).abs() < 1e-12, "{s1}");

    let device = device_from_name("cpu").unwrap();
    let mut target = ToyLm::random(16, 64, 3.0, 1, &device);
    let mut draft = ToyEagleDraft::for_target(&target, 0.0, 0);
    let cfg = GenerationConfig { max_new_tokens: 8, ..GenerationConfig::greedy() };
    for mut bad in [AutoStrategy::new(0, vec![], 16), AutoStrategy::new(2, vec![], 2)] {
        let err = bad.generate(&mut target, Some(&mut draft), &[1, 2], &cfg).unwrap_err();
        assert!(matches!(err, eda_core::EdaError::InvalidArgument(_)), "{err}");
        assert!(bad.choice().is_none());
    }
}
