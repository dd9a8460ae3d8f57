//! Unit tests: exactness (greedy), distribution (sampling, chi-square), stop conditions, caches,
//! errors. They live inside the crate so they can drive the deliberately broken verifier.

use std::collections::HashMap;

use burn::tensor::Device;
use eda_core::generate::generate_autoregressive;
use eda_core::{DecodingStrategy, DraftModel, EdaError, GenerationConfig, GenerationOutput, TargetModel, TokenId};

use crate::session::Verify;
use eda_testkit::{exact_joint, pearson_map, ReducedDraft, ToyEagleDraft, ToyLm};

use crate::{evaluate, tau_per_cycle, Autoregressive, ChainStrategy, EvalReport, LmDraft, Strategy, TreeStrategy};

fn device() -> Device {
    eda_core::backend::device_from_name("cpu").unwrap()
}

fn greedy(n: usize) -> GenerationConfig {
    GenerationConfig { max_new_tokens: n, ..GenerationConfig::greedy() }
}

/// Runs a strategy with an explicit verification mode.
fn run(
    strategy: &Strategy,
    target: &mut dyn TargetModel,
    draft: &mut dyn DraftModel,
    prompt: &[TokenId],
    cfg: &GenerationConfig,
    mode: Verify,
) -> eda_core::Result<GenerationOutput> {
    match strategy {
        Strategy::Chain(c) => c.run(target, draft, prompt, cfg, mode, None),
        Strategy::Tree(t) => t.run(target, draft, prompt, cfg, mode, None),
        Strategy::Autoregressive => Autoregressive.generate(target, Some(draft), prompt, cfg),
    }
}

/// The cache invariant: the target caches exactly the committed sequence minus its last token.
fn assert_cache_invariant(target: &ToyLm, prompt: &[TokenId], out: &GenerationOutput) {
    let mut seq = prompt.to_vec();
    seq.extend_from_slice(&out.tokens);
    if out.tokens.is_empty() {
        return;
    }
    assert_eq!(target.cache_len(), prompt.len() + out.tokens.len() - 1, "target cache length");
    assert_eq!(target.cached_tokens(), seq[..seq.len() - 1].to_vec(), "target cache contents");
}

fn strategies() -> Vec<Strategy> {
    vec![
        Strategy::Chain(ChainStrategy { gamma: 1 }),
        Strategy::Chain(ChainStrategy { gamma: 4 }),
        Strategy::Tree(TreeStrategy { depth: 0, top_k: 2, total_tokens: 2 }),
        Strategy::Tree(TreeStrategy { depth: 3, top_k: 3, total_tokens: 10 }),
        Strategy::Tree(TreeStrategy { depth: 5, top_k: 4, total_tokens: 25 }),
    ]
}

/// Every third token and a few more: a reduced draft vocabulary of a 32-token toy model.
fn reduced_ids() -> Vec<TokenId> {
    (0..32).filter(|t| t % 3 == 0 || *t == 7).collect()
}

/// (name, draft, is_perfect)
fn drafts(target: &ToyLm) -> Vec<(&'static str, Box<dyn DraftModel>, bool)> {
    let d = device();
    let reduced = |inner: Box<dyn DraftModel>| Box::new(ReducedDraft::new(inner, reduced_ids()).unwrap()) as Box<dyn DraftModel>;
    vec![
        ("lm-same", Box::new(LmDraft::new(Box::new(target.clone()))) as Box<dyn DraftModel>, true),
        ("eagle-perfect", Box::new(ToyEagleDraft::for_target(target, 0.0, 1)), true),
        ("lm-random", Box::new(LmDraft::new(Box::new(ToyLm::random(32, 256, 3.0, 999, &d)))), false),
        ("eagle-random", Box::new(ToyEagleDraft::for_target(target, 8.0, 2)), false),
        ("lm-wrong-domain", Box::new(LmDraft::new(Box::new(target.perturbed(2.0, 5)))), false),
        ("eagle-wrong-domain", Box::new(ToyEagleDraft::for_target(target, 1.5, 3)), false),
        // Reduced vocabularies: the target's tokens outside them are never proposed.
        ("lm-same-reduced-vocab", reduced(Box::new(LmDraft::new(Box::new(target.clone())))), false),
        ("eagle-perfect-reduced-vocab", reduced(Box::new(ToyEagleDraft::for_target(target, 0.0, 1))), false),
    ]
}

#[test]
fn greedy_speculative_equals_greedy_target() {
    let mut target = ToyLm::random(32, 256, 3.0, 1, &device());
    let prompts: Vec<Vec<TokenId>> = vec![vec![1], vec![3, 4, 5], vec![7, 0, 31, 2, 9]];
    let cfg = greedy(40);
    for prompt in &prompts {
        let reference = generate_autoregressive(&mut target, prompt, &cfg).unwrap();
        assert_eq!(reference.tokens.len(), 40);
        for (name, mut draft, perfect) in drafts(&target) {
            for strategy in strategies() {
                let out = run(&strategy, &mut target, draft.as_mut(), prompt, &cfg, Verify::Lossless).unwrap();
                assert_eq!(out.tokens, reference.tokens, "{name} / {strategy:?} / prompt {prompt:?}");
                assert_cache_invariant(&target, prompt, &out);
                let tau = tau_per_cycle(&out.metrics);
                assert!(tau >= 1.0, "{name} / {strategy:?}: tau {tau}");
                if perfect {
                    // A perfect draft is always accepted: a chain commits gamma + 1 tokens per cycle;
                    // a small tree may rerank deep nodes away, so only ask for a clear gain there.
                    let full = (crate::SpeculativeStrategy::drafted_per_cycle(&strategy) + 1) as f64;
                    let want = (0.8 * full).min(2.5);
                    assert!(tau > want, "{name} / {strategy:?}: tau {tau} <= {want}");
                    assert!((out.metrics.alpha() - 1.0).abs() < 1e-12, "{name}: alpha {}", out.metrics.alpha());
                }
            }
        }
    }
}

#[test]
fn autoregressive_strategy_matches_core_and_has_tau_one() {
    let mut target = ToyLm::random(16, 64, 2.0, 4, &device());
    let mut draft = LmDraft::new(Box::new(target.clone()));
    for cfg in [greedy(12), GenerationConfig { max_new_tokens: 12, ..GenerationConfig::sampling(1.0, 9) }] {
        let a = Autoregressive.generate(&mut target, None, &[2, 3], &cfg).unwrap();
        let b = generate_autoregressive(&mut target, &[2, 3], &cfg).unwrap();
        assert_eq!(a.tokens, b.tokens);
        assert_eq!(tau_per_cycle(&a.metrics), 1.0);
        assert_eq!(a.metrics.target_forwards, 12);
        // A draft, if given, is ignored; streaming commits every token once, in order.
        let with_draft = Strategy::Autoregressive.generate(&mut target, Some(&mut draft), &[2, 3], &cfg).unwrap();
        assert_eq!(with_draft.tokens, b.tokens);
        let mut streamed: Vec<TokenId> = Vec::new();
        let mut last_forwards = 0;
        let out = crate::SpeculativeStrategy::generate_streaming(&mut Autoregressive, &mut target, None, &[2, 3], &cfg, &mut |new, m| {
            assert_eq!(new.len(), 1);
            streamed.extend_from_slice(new);
            assert_eq!(m.new_tokens, streamed.len());
            last_forwards = m.target_forwards;
        })
        .unwrap();
        assert_eq!(streamed, b.tokens);
        assert_eq!(out.tokens, b.tokens);
        assert_eq!(last_forwards, 12);
    }
}

#[test]
fn stop_tokens_are_emitted_then_generation_stops() {
    let mut target = ToyLm::random(32, 256, 3.0, 1, &device());
    let prompt = vec![3, 4, 5];
    let free = generate_autoregressive(&mut target, &prompt, &greedy(30)).unwrap().tokens;
    // Stop at a token first seen in the middle of the output.
    let stop = free[12];
    let first = free.iter().position(|&t| t == stop).unwrap();
    let cfg = GenerationConfig { stop_tokens: vec![stop], ..greedy(30) };
    let reference = generate_autoregressive(&mut target, &prompt, &cfg).unwrap();
    assert_eq!(reference.tokens, free[..=first].to_vec());
    for (name, mut draft, _) in drafts(&target) {
        for strategy in strategies() {
            let out = run(&strategy, &mut target, draft.as_mut(), &prompt, &cfg, Verify::Lossless).unwrap();
            assert_eq!(out.tokens, reference.tokens, "{name} / {strategy:?}");
            assert_cache_invariant(&target, &prompt, &out);
        }
    }
    // Sampling: the output ends at the first stop token.
    let mut draft = LmDraft::new(Box::new(target.perturbed(1.0, 3)));
    for seed in 0..20 {
        let cfg = GenerationConfig { max_new_tokens: 60, stop_tokens: vec![1, 2], ..GenerationConfig::sampling(1.0, seed) };
        for strategy in strategies() {
            let out = run(&strategy, &mut target, &mut draft, &prompt, &cfg, Verify::Lossless).unwrap();
            let pos = out.tokens.iter().position(|t| cfg.stop_tokens.contains(t));
            match pos {
                Some(p) => assert_eq!(p + 1, out.tokens.len(), "tokens after a stop token: {:?}", out.tokens),
                None => assert_eq!(out.tokens.len(), 60),
            }
            assert_cache_invariant(&target, &prompt, &out);
        }
    }
}

#[test]
fn max_new_tokens_and_max_positions_are_honoured() {
    let mut target = ToyLm::random(32, 256, 3.0, 1, &device());
    let prompt = vec![1, 2];
    for (name, mut draft, _) in drafts(&target) {
        for strategy in strategies() {
            for n in [1, 2, 3, 5, 8] {
                for cfg in [greedy(n), GenerationConfig { max_new_tokens: n, ..GenerationConfig::sampling(1.0, n as u64) }] {
                    let out = run(&strategy, &mut target, draft.as_mut(), &prompt, &cfg, Verify::Lossless).unwrap();
                    assert_eq!(out.tokens.len(), n, "{name} / {strategy:?}");
                    assert_eq!(out.metrics.new_tokens, n);
                    assert_cache_invariant(&target, &prompt, &out);
                }
            }
            let out = run(&strategy, &mut target, draft.as_mut(), &prompt, &greedy(0), Verify::Lossless).unwrap();
            assert!(out.tokens.is_empty());
        }
    }
    // Position limit: prompt (2) + 7 generated = 9 positions.
    let mut small = target.clone().with_max_positions(9);
    let reference = generate_autoregressive(&mut small, &prompt, &greedy(40)).unwrap();
    assert_eq!(reference.tokens.len(), 7);
    for (name, mut draft, _) in drafts(&target) {
        for strategy in strategies() {
            let out = run(&strategy, &mut small, draft.as_mut(), &prompt, &greedy(40), Verify::Lossless).unwrap();
            assert_eq!(out.tokens, reference.tokens, "{name} / {strategy:?}");
            assert_cache_invariant(&small, &prompt, &out);
            let long = vec![1; 10];
            let err = run(&strategy, &mut small, draft.as_mut(), &long, &greedy(4), Verify::Lossless).unwrap_err();
            assert!(matches!(err, EdaError::SequenceTooLong { len: 10, max: 9 }), "{err}");
            let full = run(&strategy, &mut small, draft.as_mut(), &[1; 9], &greedy(4), Verify::Lossless).unwrap();
            assert!(full.tokens.is_empty());
        }
    }
}

#[test]
fn invalid_arguments_are_typed_errors() {
    let d = device();
    let mut target = ToyLm::random(16, 64, 2.0, 1, &d);
    let mut draft = LmDraft::new(Box::new(target.clone()));
    let cfg = greedy(4);
    let bad = [
        Strategy::Chain(ChainStrategy { gamma: 0 }),
        Strategy::Tree(TreeStrategy { depth: 2, top_k: 0, total_tokens: 8 }),
        Strategy::Tree(TreeStrategy { depth: 2, top_k: 2, total_tokens: 0 }),
        Strategy::Tree(TreeStrategy { depth: 2, top_k: 2, total_tokens: 1 }),
    ];
    for s in bad {
        let e = run(&s, &mut target, &mut draft, &[1], &cfg, Verify::Lossless).unwrap_err();
        assert!(matches!(e, EdaError::InvalidArgument(_)), "{s:?}: {e}");
    }
    for s in strategies() {
        let e = run(&s, &mut target, &mut draft, &[], &cfg, Verify::Lossless).unwrap_err();
        assert!(matches!(e, EdaError::InvalidArgument(_)), "{e}");
        let mut other_vocab = LmDraft::new(Box::new(ToyLm::random(17, 64, 2.0, 1, &d)));
        let e = run(&s, &mut target, &mut other_vocab, &[1], &cfg, Verify::Lossless).unwrap_err();
        assert!(matches!(e, EdaError::Mismatch { expected: 16, found: 17, .. }), "{e}");
        let e = run(&s, &mut target, &mut draft, &[1, 99], &cfg, Verify::Lossless).unwrap_err();
        assert!(matches!(e, EdaError::InvalidArgument(_)), "{e}");
        let bad_cfg = GenerationConfig { top_p: 0.0, ..GenerationConfig::sampling(1.0, 0) };
        assert!(run(&s, &mut target, &mut draft, &[1], &bad_cfg, Verify::Lossless).is_err());
        // Drafting strategies need a draft: a typed error, not a stand-in model.
        let e = s.clone().generate(&mut target, None, &[1], &cfg).unwrap_err();
        assert!(matches!(&e, EdaError::InvalidArgument(m) if m.contains("needs a draft")), "{s:?}: {e}");
    }
    let e = crate::AutoStrategy::default().generate(&mut target, None, &[1], &cfg).unwrap_err();
    assert!(matches!(&e, EdaError::InvalidArgument(m) if m.contains("needs a draft")), "{e}");
}

// ---------------------------------------------------------------------------------------------
// Distribution tests.

/// Chi-square statistic and critical value of the first 3 emitted tokens over `n` seeds (joint
/// distribution; every token of long generations is checked by [`long_run_fit`]).
fn distribution_test(strategy: &Strategy, temperature: f32, top_p: f32, mode: Verify, n: usize) -> (f64, f64) {
    distribution_test_with(strategy, temperature, top_p, mode, n, None)
}

/// [`distribution_test`] with an optional reduced draft vocabulary (the target still puts mass on
/// the other tokens, which only the verifier can emit; the test also checks that it does).
fn distribution_test_with(
    strategy: &Strategy,
    temperature: f32,
    top_p: f32,
    mode: Verify,
    n: usize,
    draft_vocab: Option<Vec<TokenId>>,
) -> (f64, f64) {
    let d = device();
    let mut target = ToyLm::random(5, 64, 2.0, 21, &d);
    let inner: Box<dyn DraftModel> = Box::new(LmDraft::new(Box::new(target.perturbed(2.0, 8))));
    let mut draft: Box<dyn DraftModel> = match &draft_vocab {
        Some(ids) => Box::new(ReducedDraft::new(inner, ids.clone()).unwrap()),
        None => inner,
    };
    let prompt = vec![1, 3];
    let base = GenerationConfig { max_new_tokens: 4, temperature, top_p, seed: 0, stop_tokens: vec![] };
    let expected = exact_joint(&mut target, &prompt, &base, 3).unwrap();
    let mut observed: HashMap<Vec<TokenId>, usize> = HashMap::new();
    let mut accepted_any = 0;
    for seed in 0..n as u64 {
        let cfg = GenerationConfig { seed: seed * 7919 + 1, ..base.clone() };
        let out = run(strategy, &mut target, draft.as_mut(), &prompt, &cfg, mode).unwrap();
        assert_eq!(out.tokens.len(), 4);
        accepted_any += out.metrics.accepted_per_depth.iter().sum::<usize>();
        *observed.entry(out.tokens[..3].to_vec()).or_default() += 1;
    }
    // The test is only meaningful if drafts are accepted sometimes (and rejected sometimes).
    assert!(accepted_any > n / 10, "{strategy:?}: too few accepted drafts ({accepted_any})");
    if let Some(ids) = &draft_vocab {
        // Tokens the draft can never propose must still come out (from the residual or the bonus).
        let outside = observed.iter().filter(|(k, _)| k.iter().any(|t| !ids.contains(t))).map(|(_, &c)| c).sum::<usize>();
        assert!(outside > n / 20, "{strategy:?}: tokens outside the draft vocabulary were (almost) never emitted ({outside})");
    }
    let fit = pearson_map(&observed, &expected);
    eprintln!(
        "{strategy:?} T={temperature} top_p={top_p} {mode:?}: chi2 {:.1} (df {}, critical {:.1}), accepted drafts {accepted_any}",
        fit.statistic,
        fit.df,
        fit.critical_001()
    );
    (fit.statistic, fit.critical_001())
}

const SAMPLES: usize = 6000;

fn sampling_strategies() -> Vec<Strategy> {
    vec![Strategy::Chain(ChainStrategy { gamma: 2 }), Strategy::Tree(TreeStrategy { depth: 2, top_k: 2, total_tokens: 6 })]
}

#[test]
fn sampling_at_temperature_one_matches_target_distribution() {
    for s in sampling_strategies() {
        let (stat, crit) = distribution_test(&s, 1.0, 1.0, Verify::Lossless, SAMPLES);
        assert!(stat < crit, "{s:?}: chi2 {stat:.1} >= critical {crit:.1}");
    }
}

#[test]
fn sampling_with_temperature_and_top_p_matches_target_distribution() {
    for s in sampling_strategies() {
        let (stat, crit) = distribution_test(&s, 0.7, 0.9, Verify::Lossless, SAMPLES);
        assert!(stat < crit, "{s:?}: chi2 {stat:.1} >= critical {crit:.1}");
    }
}

/// The toy target's tokens 1 and 4 carry real probability but are not in this draft vocabulary.
const REDUCED_5: [TokenId; 3] = [0, 2, 3];

#[test]
fn sampling_with_a_reduced_draft_vocabulary_matches_target_distribution() {
    for s in sampling_strategies() {
        for (t, p) in [(1.0, 1.0), (0.7, 0.9)] {
            let (stat, crit) = distribution_test_with(&s, t, p, Verify::Lossless, SAMPLES, Some(REDUCED_5.to_vec()));
            assert!(stat < crit, "{s:?} T={t} top_p={p}: chi2 {stat:.1} >= critical {crit:.1}");
        }
    }
}

#[test]
fn broken_verifier_fails_the_distribution_test() {
    for s in sampling_strategies() {
        let (stat, crit) = distribution_test(&s, 1.0, 1.0, Verify::AcceptAll, SAMPLES);
        assert!(stat >= crit, "{s:?}: a verifier accepting every drafted token passed (chi2 {stat:.1} < {crit:.1})");
        let (stat, crit) = distribution_test_with(&s, 1.0, 1.0, Verify::AcceptAll, SAMPLES, Some(REDUCED_5.to_vec()));
        assert!(
            stat >= crit,
            "{s:?} (reduced draft vocabulary): a verifier accepting every drafted token passed (chi2 {stat:.1} < {crit:.1})"
        );
    }
}

#[test]
fn evaluate_reports_tau_speedup_and_roundtrips_json() {
    let d = device();
    let mut target = ToyLm::random(32, 256, 3.0, 1, &d);
    let mut draft = ToyEagleDraft::for_target(&target, 1.0, 4);
    let prompts = vec![vec![1, 2], vec![5], vec![9, 9, 9]];
    let mut strategy = TreeStrategy { depth: 3, top_k: 3, total_tokens: 12 };
    let report = evaluate(&mut target, Some(&mut draft), &mut strategy, &prompts, &greedy(24)).unwrap();
    assert_eq!(report.prompts.len(), 3);
    assert_eq!(report.aggregate.greedy_matches, Some(3));
    assert!(report.aggregate.tau > 1.0);
    assert!(report.aggregate.speedup > 0.0);
    assert!(report.aggregate.tau_reference.unwrap() >= report.aggregate.tau * 0.99);
    assert_eq!(report.aggregate.new_tokens, 72);
    let json = serde_json::to_string(&report).unwrap();
    let back: EvalReport = serde_json::from_str(&json).unwrap();
    assert_eq!(back.aggregate.new_tokens, 72);
    let table = report.to_string();
    assert!(table.contains("tau_ref") && table.contains("all"), "{table}");
    let dir = tempfile::tempdir().unwrap();
    report.write_json(&dir.path().join("m.json")).unwrap();
    assert!(evaluate(&mut target, Some(&mut draft), &mut strategy, &[], &greedy(4)).is_err());
}

#[test]
fn plain_decoding_reports_no_reference_tau() {
    let mut target = ToyLm::random(16, 64, 2.0, 4, &device());
    let mut draft = LmDraft::new(Box::new(target.clone()));
    let prompts = vec![vec![1, 2], vec![3]];
    let opts = crate::EvalOptions { baseline: false, ..Default::default() };
    let r = crate::evaluate_with(&mut target, None, &mut Autoregressive, &prompts, &greedy(12), &opts).unwrap();
    // The formula alone gives (n-1)/(n-2) ≈ 1.1 for plain decoding: a "gain" that is not one.
    assert!(crate::tau_reference(&r.prompts[0].metrics).unwrap() > 1.05);
    assert!(r.prompts.iter().all(|p| p.tau_reference.is_none()));
    assert_eq!(r.aggregate.tau_reference, None);
    assert_eq!(r.aggregate.tau, 1.0);
    let json = serde_json::to_value(&r).unwrap();
    assert!(json["aggregate"]["tau_reference"].is_null() && json["prompts"][0]["tau_reference"].is_null());
    let all = r.to_string().lines().find(|l| l.trim_start().starts_with("all")).unwrap().to_string();
    assert_eq!(all.split_whitespace().nth(3), Some("-"), "{all}");
    // A draft handed to plain decoding changes nothing; a drafting strategy reports it.
    let r = crate::evaluate_with(&mut target, Some(&mut draft), &mut Autoregressive, &prompts, &greedy(12), &opts).unwrap();
    assert_eq!(r.aggregate.tau_reference, None);
    let r = crate::evaluate_with(&mut target, Some(&mut draft), &mut ChainStrategy { gamma: 2 }, &prompts, &greedy(12), &opts).unwrap();
    assert!(r.aggregate.tau_reference.is_some() && r.prompts.iter().all(|p| p.tau_reference.is_some()));
}

#[test]
fn oversized_trees_are_refused_before_any_allocation() {
    let d = device();
    let mut target = ToyLm::random(16, 64, 2.0, 1, &d);
    let mut draft = LmDraft::new(Box::new(target.clone()));
    let cfg = greedy(4);
    let cases = [
        (TreeStrategy { depth: 5, top_k: 1_000_000, total_tokens: 60 }, "--top-k", 16u128),
        (TreeStrategy { depth: 5, top_k: 17, total_tokens: 60 }, "--top-k", 16),
        (TreeStrategy { depth: 5, top_k: 4, total_tokens: 100_000 }, "--total-tokens", 1024),
        (TreeStrategy { depth: 1_000, top_k: 4, total_tokens: 8 }, "--depth", 64),
    ];
    for (tree, flag, want) in cases {
        let start = std::time::Instant::now();
        match run(&Strategy::Tree(tree), &mut target, &mut draft, &[1], &cfg, Verify::Lossless) {
            Err(EdaError::ResourceLimit { what, bound, .. }) => {
                assert!(what.starts_with(flag), "{tree:?}: {what}");
                assert_eq!(bound, want, "{tree:?}");
            }
            other => panic!("{tree:?}: expected ResourceLimit, got {other:?}"),
        }
        assert!(start.elapsed().as_secs_f64() < 5.0, "the bound is checked before drafting");
    }
    // top_k at its bound still decodes.
    let ok = TreeStrategy { depth: 2, top_k: 16, total_tokens: 24 };
    assert!(run(&Strategy::Tree(ok), &mut target, &mut draft, &[1], &cfg, Verify::Lossless).is_ok());
}

// ---------------------------------------------------------------------------------------------
// Every emitted token over many verification cycles.
//
// The toy target is a second-order Markov chain: the distribution of the token at position t is
// known exactly from (x_{t-2}, x_{t-1}) ([`ToyLm::next_logits`]). A lossless decoder's output is
// that Markov chain, so over many long generations the transitions out of each context follow
// the target's own conditional distribution; the Pearson statistics of the contexts add up to
// one chi-square (Anderson–Goodman). Two fits are tested:
//
// - `all`: every emitted token (prefill token, accepted drafts, residual draws, bonus tokens);
// - `from_p`: only the tokens that the verifier draws from the target's `p` at a node: after a
//   fully accepted chain, at a tree node without children (a leaf of the drafted tree), plus the
//   prefill / plain steps. Whether a token is one of them depends only on the randomness before
//   it, so given its context it must follow `p` exactly; a bug in that branch, diluted in `all`,
//   stands out here. The class is read from the running metrics: a cycle that ended on a rejected
//   proposal adds one to `proposed - accepted`, a cycle that ended from `p` adds nothing.

/// What a long-generation distribution test measured.
#[derive(Debug)]
struct LongRunFit {
    all: eda_testkit::ChiSquare,
    from_p: eda_testkit::ChiSquare,
    tokens: usize,
    cycles: usize,
    /// Bonus tokens from `p` after at least one accepted draft (full chain acceptance or a leaf
    /// below the root).
    bonus_after_acceptance: usize,
    /// Cycles that ended on a rejection (token from the residual).
    residual: usize,
}

impl LongRunFit {
    fn rejects(&self) -> bool {
        self.all.rejects_at_001() || self.from_p.rejects_at_001()
    }
}

/// The target's exact conditional distribution after (`a`, `b`) under `cfg`. At temperature 1
/// without top-p it is a softmax in f64 written out here, independent of the samplers under test;
/// otherwise the target's sampling distribution (`probabilities`) of its exact logits.
fn exact_next(target: &ToyLm, a: TokenId, b: TokenId, cfg: &GenerationConfig) -> Vec<f64> {
    let logits = target.next_logits(Some(a), b).expect("tokens inside the vocabulary");
    if cfg.temperature != 1.0 || cfg.top_p < 1.0 {
        return eda_core::sampling::probabilities(&logits, cfg).unwrap().iter().map(|&p| p as f64).collect();
    }
    let max = logits.iter().fold(f64::NEG_INFINITY, |m, &l| m.max(l as f64));
    let e: Vec<f64> = logits.iter().map(|&l| (l as f64 - max).exp()).collect();
    let z: f64 = e.iter().sum();
    e.iter().map(|x| x / z).collect()
}

/// Generates `runs` sequences of `len` tokens at `temperature` / `top_p` with `strategy`
/// verified by `mode` and fits every emitted token against the target's conditional
/// distributions.
fn long_run_fit(strategy: &Strategy, mode: Verify, temperature: f32, top_p: f32, runs: usize, len: usize) -> LongRunFit {
    let d = device();
    let vocab = 5;
    let mut target = ToyLm::random(vocab, 1024, 2.0, 21, &d);
    let mut draft = LmDraft::new(Box::new(target.perturbed(1.0, 8)));
    let prompt: Vec<TokenId> = vec![1, 3];
    // counts[context][next], context = x_{t-2} * vocab + x_{t-1}.
    let mut all = vec![vec![0usize; vocab]; vocab * vocab];
    let mut from_p = vec![vec![0usize; vocab]; vocab * vocab];
    let (mut tokens, mut cycles, mut bonus_after_acceptance, mut residual) = (0, 0, 0, 0);
    for run_index in 0..runs as u64 {
        let cfg = GenerationConfig { max_new_tokens: len, top_p, ..GenerationConfig::sampling(temperature, run_index * 7919 + 3) };
        // (tokens of the commit, last token drawn from p)
        let mut commits: Vec<(Vec<TokenId>, bool)> = Vec::new();
        let mut rejections_before = 0usize;
        let mut on_commit = |new: &[TokenId], m: &eda_core::DecodeMetrics| {
            let rejections = m.proposed_per_depth.iter().sum::<usize>() - m.accepted_per_depth.iter().sum::<usize>();
            commits.push((new.to_vec(), rejections == rejections_before));
            rejections_before = rejections;
        };
        let out = match strategy {
            Strategy::Chain(c) => c.run(&mut target, &mut draft, &prompt, &cfg, mode, Some(&mut on_commit)),
            Strategy::Tree(t) => t.run(&mut target, &mut draft, &prompt, &cfg, mode, Some(&mut on_commit)),
            Strategy::Autoregressive => unreachable!("drafting strategies only"),
        }
        .unwrap();
        assert_eq!(out.tokens.len(), len);
        assert_eq!(commits.iter().flat_map(|c| c.0.clone()).collect::<Vec<_>>(), out.tokens, "commits are the output");
        let mut seq = prompt.clone();
        for (i, (new, last_from_p)) in commits.iter().enumerate() {
            if i > 0 {
                cycles += 1;
                match (last_from_p, new.len()) {
                    (true, n) if n >= 2 => bonus_after_acceptance += 1,
                    (false, _) => residual += 1,
                    _ => {}
                }
            }
            for (j, &t) in new.iter().enumerate() {
                let ctx = seq[seq.len() - 2] as usize * vocab + seq[seq.len() - 1] as usize;
                all[ctx][t as usize] += 1;
                if j + 1 == new.len() && *last_from_p {
                    from_p[ctx][t as usize] += 1;
                }
                seq.push(t);
                tokens += 1;
            }
        }
    }
    let base = GenerationConfig { top_p, ..GenerationConfig::sampling(temperature, 0) };
    let fit = |counts: &[Vec<usize>]| {
        let mut chi = eda_testkit::ChiSquare::default();
        for (ctx, row) in counts.iter().enumerate() {
            let p = exact_next(&target, (ctx / vocab) as TokenId, (ctx % vocab) as TokenId, &base);
            chi += eda_testkit::pearson(row.iter().copied().zip(p));
        }
        chi
    };
    let result = LongRunFit { all: fit(&all), from_p: fit(&from_p), tokens, cycles, bonus_after_acceptance, residual };
    eprintln!(
        "{strategy:?} T={temperature} top_p={top_p} {mode:?}: all tokens chi2 {:.1} (df {}, critical {:.1}); from p chi2 {:.1} (df {}, critical {:.1}); {} tokens, {} cycles, {} bonus tokens after acceptance, {} residual draws",
        result.all.statistic,
        result.all.df,
        result.all.critical_001(),
        result.from_p.statistic,
        result.from_p.df,
        result.from_p.critical_001(),
        result.tokens,
        result.cycles,
        result.bonus_after_acceptance,
        result.residual
    );
    result
}

const LONG_RUNS: usize = 400;
const LONG_LEN: usize = 60;

#[test]
fn every_emitted_token_over_many_cycles_follows_the_target() {
    for s in sampling_strategies() {
        for (t, p) in [(1.0, 1.0), (0.7, 0.9)] {
            let fit = long_run_fit(&s, Verify::Lossless, t, p, LONG_RUNS, LONG_LEN);
            assert_eq!(fit.tokens, LONG_RUNS * LONG_LEN);
            // Many cycles per generation, and both the bonus and the residual branch well exercised.
            assert!(fit.cycles >= 10 * LONG_RUNS, "{s:?}: only {} cycles", fit.cycles);
            assert!(fit.bonus_after_acceptance >= 1000, "{s:?}: {} bonus tokens after acceptance", fit.bonus_after_acceptance);
            assert!(fit.residual >= 500, "{s:?}: {} residual draws", fit.residual);
            assert!(fit.all.df >= 15 && fit.from_p.df >= 10, "{s:?}: too few cells ({} / {})", fit.all.df, fit.from_p.df);
            assert!(!fit.rejects(), "{s:?} T={t} top_p={p}: {fit:?}");
        }
    }
}

#[test]
fn broken_bonus_tokens_fail_the_every_token_test() {
    for s in sampling_strategies() {
        for bug in [Verify::BonusArgmax, Verify::BonusFromParent] {
            let fit = long_run_fit(&s, bug, 1.0, 1.0, LONG_RUNS, LONG_LEN);
            assert!(fit.rejects(), "{s:?} with {bug:?} passed: {fit:?}");
            // The bonus-token fit rejects it on its own.
            assert!(fit.from_p.rejects_at_001(), "{s:?} with {bug:?}: {fit:?}");
        }
    }
}
