//! Batched passes equal batch-1 passes: teacher-forced logits/hidden states, greedy and sampled
//! generation; bad batches are typed errors.

use std::path::PathBuf;

use eda_core::backend::{device_from_name, to_vec_f32};
use eda_core::generate::{generate_autoregressive, BatchDecoder};
use eda_core::sampling::argmax;
use eda_core::{EdaError, GenerationConfig, TargetModel, TokenId};
use eda_models::{Target, MAX_BATCH_SIZE};

const FIXTURES: [&str; 3] = ["qwen2-tiny", "llama-tiny", "llama3-rope-tiny"];

fn load(name: &str) -> Target {
    let dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures")).join(name);
    Target::from_pretrained(&dir, &device_from_name("cpu").unwrap()).unwrap()
}

/// Deterministic pseudo-random token sequences of the given lengths.
fn sequences(lens: &[usize], vocab: usize, salt: u64) -> Vec<Vec<TokenId>> {
    let mut state = 0x9e37_79b9_7f4a_7c15u64 ^ salt;
    lens.iter()
        .map(|&l| {
            (0..l)
                .map(|_| {
                    state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    ((state >> 33) % vocab as u64) as TokenId
                })
                .collect()
        })
        .collect()
}

fn max_abs(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

#[test]
fn teacher_forced_batch_equals_batch_one() {
    for name in FIXTURES {
        let mut t = load(name);
        let vocab = t.info().vocab_size;
        let seqs = sequences(&[7, 1, 23, 3, 12], vocab, 1);
        // Something in the cache must not leak into the batch.
        t.forward(&[1, 2, 3]).unwrap();
        let batch = t.forward_batch(&seqs).unwrap();
        assert_eq!(t.cache_len(), 0, "{name}: forward_batch leaves the cache empty");
        let hidden_only = t.hidden_batch(&seqs).unwrap();
        assert_eq!(batch.len(), seqs.len());
        for (i, s) in seqs.iter().enumerate() {
            t.reset_cache();
            let one = t.forward(s).unwrap();
            assert_eq!(batch[i].logits.dims(), [s.len(), vocab]);
            let (bl, ol) = (to_vec_f32(batch[i].logits.clone()).unwrap(), to_vec_f32(one.logits).unwrap());
            let (bh, oh) = (to_vec_f32(batch[i].hidden.clone()).unwrap(), to_vec_f32(one.hidden).unwrap());
            assert!(max_abs(&bl, &ol) <= 1e-5, "{name} seq {i}: logits differ by {}", max_abs(&bl, &ol));
            assert!(max_abs(&bh, &oh) <= 1e-5, "{name} seq {i}: hidden differ by {}", max_abs(&bh, &oh));
            for (rb, ro) in bl.chunks(vocab).zip(ol.chunks(vocab)) {
                assert_eq!(argmax(rb), argmax(ro), "{name} seq {i}: greedy token differs");
            }
            assert_eq!(to_vec_f32(hidden_only[i].clone()).unwrap(), bh, "{name} seq {i}: hidden_batch != forward_batch");
        }
    }
}

/// Reference outputs of batch-1 generation.
fn one_by_one(t: &mut Target, prompts: &[Vec<TokenId>], cfgs: &[GenerationConfig]) -> Vec<Vec<TokenId>> {
    prompts.iter().zip(cfgs).map(|(p, c)| generate_autoregressive(t, p, c).unwrap().tokens).collect()
}

#[test]
fn greedy_batch_generation_equals_batch_one_with_early_stops() {
    for name in FIXTURES {
        let mut t = load(name);
        let vocab = t.info().vocab_size;
        let max_pos = t.info().max_position_embeddings;
        let mut prompts = sequences(&[5, 1, 9, 3], vocab, 2);
        // One prompt close to the maximum positions: it must stop there, as alone.
        prompts.push(sequences(&[max_pos - 3], vocab, 3).remove(0));
        let base = GenerationConfig { max_new_tokens: 12, ..GenerationConfig::greedy() };
        let free = one_by_one(&mut t, &prompts, &vec![base.clone(); prompts.len()]);
        // Stop tokens taken from the free runs make sequences 0 and 2 end early, at different steps.
        let mut cfgs = vec![base.clone(); prompts.len()];
        cfgs[0].stop_tokens = vec![free[0][2]];
        cfgs[2].stop_tokens = vec![free[2][5], free[2][6]];
        cfgs[3].max_new_tokens = 4;
        let reference = one_by_one(&mut t, &prompts, &cfgs);
        assert!(reference[0].len() <= 3 && reference[2].len() <= 7, "{name}: stops should trigger early");
        assert_eq!(reference[4].len(), 3, "{name}: the long prompt stops at max positions");
        let batch = t.generate_batch(&prompts, &cfgs).unwrap();
        for (i, (b, r)) in batch.iter().zip(&reference).enumerate() {
            assert_eq!(&b.tokens, r, "{name}: prompt {i}");
            assert_eq!(b.metrics.new_tokens, r.len());
        }
        // The metrics count target passes per sequence as batch 1 does.
        let alone = generate_autoregressive(&mut t, &prompts[2], &cfgs[2]).unwrap();
        assert_eq!(batch[2].metrics.target_forwards, alone.metrics.target_forwards);
    }
}

#[test]
fn sampled_batch_generation_equals_batch_one() {
    let mut t = load("qwen2-tiny");
    let prompts = sequences(&[4, 11, 2, 6], t.info().vocab_size, 4);
    let cfgs: Vec<GenerationConfig> = (0..prompts.len())
        .map(|i| GenerationConfig {
            max_new_tokens: 10,
            top_p: if i == 1 { 0.9 } else { 1.0 },
            ..GenerationConfig::sampling(1.3, 1000 + i as u64)
        })
        .collect();
    let reference = one_by_one(&mut t, &prompts, &cfgs);
    let batch = t.generate_batch(&prompts, &cfgs).unwrap();
    assert_eq!(batch.iter().map(|o| o.tokens.clone()).collect::<Vec<_>>(), reference);
    // Different seeds give different continuations (the seeds really are per prompt).
    let same_seed: Vec<GenerationConfig> = cfgs.iter().map(|c| GenerationConfig { seed: 7, ..c.clone() }).collect();
    assert_ne!(t.generate_batch(&prompts, &same_seed).unwrap()[0].tokens, batch[0].tokens);
}

#[test]
fn batch_of_one_and_duplicates() {
    let mut t = load("llama-tiny");
    let p = sequences(&[6], t.info().vocab_size, 5).remove(0);
    let cfg = GenerationConfig { max_new_tokens: 8, ..GenerationConfig::greedy() };
    let alone = generate_autoregressive(&mut t, &p, &cfg).unwrap().tokens;
    assert_eq!(t.generate_batch(std::slice::from_ref(&p), std::slice::from_ref(&cfg)).unwrap()[0].tokens, alone);
    let twice = t.generate_batch(&[p.clone(), p], &[cfg.clone(), cfg]).unwrap();
    assert_eq!((&twice[0].tokens, &twice[1].tokens), (&alone, &alone));
}

#[test]
fn bad_batches_are_typed_errors() {
    let mut t = load("qwen2-tiny");
    let max = t.info().max_position_embeddings;
    let ok = vec![1u32, 2, 3];
    let g = GenerationConfig::greedy();
    for run in [0, 1] {
        let call = |t: &mut Target, seqs: &[Vec<TokenId>]| -> EdaError {
            if run == 0 {
                t.forward_batch(seqs).unwrap_err()
            } else {
                t.generate_batch(seqs, &vec![GenerationConfig::greedy(); seqs.len()]).unwrap_err()
            }
        };
        assert!(matches!(call(&mut t, &[]), EdaError::InvalidArgument(_)));
        assert!(matches!(call(&mut t, &[ok.clone(), vec![]]), EdaError::InvalidArgument(_)));
        let e = call(&mut t, &[ok.clone(), vec![1; max + 1]]);
        assert!(matches!(e, EdaError::SequenceTooLong { len, max: m } if len == max + 1 && m == max), "{e}");
        let e = call(&mut t, &vec![vec![1]; MAX_BATCH_SIZE + 1]);
        assert!(matches!(&e, EdaError::InvalidArgument(m) if m.contains("exceeds")), "{e}");
        assert!(matches!(call(&mut t, &[ok.clone(), vec![1000]]), EdaError::InvalidArgument(_)));
    }
    assert!(matches!(t.hidden_batch(&[]).unwrap_err(), EdaError::InvalidArgument(_)));
    let e = t.generate_batch(&[ok.clone(), ok.clone()], std::slice::from_ref(&g)).unwrap_err();
    assert!(matches!(e, EdaError::Mismatch { .. }), "{e}");
    let e = t.generate_batch(std::slice::from_ref(&ok), &[GenerationConfig { top_p: 0.0, ..g }]).unwrap_err();
    assert!(matches!(e, EdaError::InvalidArgument(_)), "{e}");

    // A session rejects steps that do not follow its live sequences, and changes nothing then.
    let mut s = t.batch_session();
    s.prefill(&[&ok, &[5], &[6, 7]]).unwrap();
    assert!(matches!(s.step(&[], &[]).unwrap_err(), EdaError::InvalidArgument(_)));
    assert!(matches!(s.step(&[2, 0], &[1, 1]).unwrap_err(), EdaError::InvalidArgument(_)));
    assert!(matches!(s.step(&[3], &[1]).unwrap_err(), EdaError::InvalidArgument(_)));
    assert!(matches!(s.step(&[0, 1], &[1]).unwrap_err(), EdaError::InvalidArgument(_)));
    assert!(matches!(s.step(&[0], &[1000]).unwrap_err(), EdaError::InvalidArgument(_)));
    assert_eq!(s.cache_lens(), vec![3, 1, 2]);
    s.step(&[0, 2], &[1, 1]).unwrap();
    assert_eq!((s.live(), s.cache_lens()), (&[0, 2][..], vec![4, 3]));
    assert!(matches!(s.step(&[1], &[1]).unwrap_err(), EdaError::InvalidArgument(_)), "a finished sequence cannot come back");
    let mut full = t.batch_session();
    full.prefill(&[&vec![1; max]]).unwrap();
    assert!(matches!(full.step(&[0], &[1]).unwrap_err(), EdaError::SequenceTooLong { .. }));
}
