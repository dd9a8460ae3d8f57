//! Choosing a reduced draft vocabulary (EAGLE-3 style): the `K` target tokens the draft's LM
//! head covers.

use std::collections::HashMap;

use eda_core::data::FeatureSample;
use eda_core::{EdaError, Result, TokenId};

/// The draft vocabulary of size `k` for training data `samples`: the `always` ids (stop and
/// other special tokens, which the draft must be able to propose however rare they are) plus
/// the most frequent tokens at loss-masked positions (the tokens the draft learns to predict;
/// EAGLE-3 counts the same), ties broken by the smaller id. When the data holds fewer than `k`
/// distinct tokens the rest is filled with the smallest unused ids, so the result always has
/// exactly `k` ids. Returned in ascending order, ready for
/// [`EdaDraft::with_draft_vocab`](eda_draft::EdaDraft::with_draft_vocab).
///
/// Errors: [`EdaError::InvalidArgument`] when `k` is 0 or larger than `vocab_size`, when an
/// `always` id or a sample token is outside the vocabulary, or when there are more distinct
/// `always` ids than `k`.
///
/// ```
/// use eda_core::data::FeatureSample;
/// let s = FeatureSample::new("a", vec![5, 5, 5, 7, 7, 9, 3], vec![0.0; 7], 1, vec![0, 1, 1, 1, 1, 1, 1]).unwrap();
/// // 5 (×2 masked), 7 (×2), then 3 and 9 (×1 each: smaller id first); eos 0 always kept.
/// assert_eq!(eda_train::vocab::top_k_tokens(&[s], 4, &[0], 16).unwrap(), vec![0, 3, 5, 7]);
/// ```
pub fn top_k_tokens(samples: &[FeatureSample], k: usize, always: &[TokenId], vocab_size: usize) -> Result<Vec<TokenId>> {
    if k == 0 || k > vocab_size {
        return Err(EdaError::InvalidArgument(format!("draft vocabulary size {k} must be in 1..={vocab_size}")));
    }
    let mut chosen = vec![false; vocab_size];
    let mut n = 0;
    for &t in always {
        let slot = chosen
            .get_mut(t as usize)
            .ok_or_else(|| EdaError::InvalidArgument(format!("always-included token {t} is outside the vocabulary of {vocab_size}")))?;
        if !*slot {
            *slot = true;
            n += 1;
        }
    }
    if n > k {
        return Err(EdaError::InvalidArgument(format!("{n} always-included tokens do not fit a draft vocabulary of {k}")));
    }
    let mut counts: HashMap<TokenId, u64> = HashMap::new();
    for s in samples {
        for (&t, &m) in s.input_ids.iter().zip(&s.loss_mask) {
            if t as usize >= vocab_size {
                return Err(EdaError::InvalidArgument(format!("token {t} of sample `{}` is outside the vocabulary of {vocab_size}", s.id)));
            }
            if m != 0 {
                *counts.entry(t).or_default() += 1;
            }
        }
    }
    let mut by_freq: Vec<(TokenId, u64)> = counts.into_iter().collect();
    by_freq.sort_unstable_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    for (t, _) in by_freq {
        if n == k {
            break;
        }
        if !chosen[t as usize] {
            chosen[t as usize] = true;
            n += 1;
        }
    }
    for slot in chosen.iter_mut() {
        if n == k {
            break;
        }
        if !*slot {
            *slot = true;
            n += 1;
        }
    }
    Ok(chosen.iter().enumerate().filter(|(_, &c)| c).map(|(i, _)| i as TokenId).collect())
}

/// Fraction of the loss-masked tokens of `samples` that fall inside the draft vocabulary `ids`
/// (EAGLE-3 reports this as the "top-N token frequency ratio"; it bounds how often the target's
/// next token is proposable at all). 1.0 when there is no masked token.
///
/// ```
/// use eda_core::data::FeatureSample;
/// let s = FeatureSample::new("a", vec![1, 2, 2, 3], vec![0.0; 4], 1, vec![1, 1, 1, 1]).unwrap();
/// assert_eq!(eda_train::vocab::coverage(&[s], &[2, 3]), 0.75);
/// ```
pub fn coverage(samples: &[FeatureSample], ids: &[TokenId]) -> f64 {
    let set: std::collections::HashSet<TokenId> = ids.iter().copied().collect();
    let (mut inside, mut total) = (0u64, 0u64);
    for s in samples {
        for (t, &m) in s.input_ids.iter().zip(&s.loss_mask) {
            if m != 0 {
                total += 1;
                inside += u64::from(set.contains(t));
            }
        }
    }
    if total == 0 {
        1.0
    } else {
        inside as f64 / total as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(ids: Vec<TokenId>, mask: Vec<u8>) -> FeatureSample {
        let n = ids.len();
        FeatureSample::new("s", ids, vec![0.0; n], 1, mask).unwrap()
    }

    #[test]
    fn frequency_order_fill_and_errors() {
        let a = sample(vec![9, 9, 9, 4, 4, 6, 1], vec![1, 1, 1, 1, 1, 1, 0]);
        let b = sample(vec![4, 6, 8], vec![1, 1, 1]);
        // counts: 9×3, 4×3, 6×2, 8×1; 1 is unmasked.
        assert_eq!(top_k_tokens(&[a.clone(), b.clone()], 2, &[], 10).unwrap(), vec![4, 9]);
        assert_eq!(top_k_tokens(&[a.clone(), b.clone()], 3, &[], 10).unwrap(), vec![4, 6, 9]);
        // always-included ids take their slots first
        assert_eq!(top_k_tokens(&[a.clone(), b.clone()], 3, &[2, 2], 10).unwrap(), vec![2, 4, 9]);
        // fewer distinct tokens than k: smallest unused ids fill up
        assert_eq!(top_k_tokens(&[a.clone(), b.clone()], 6, &[], 10).unwrap(), vec![0, 1, 4, 6, 8, 9]);
        assert_eq!(top_k_tokens(&[], 10, &[], 10).unwrap(), (0..10).collect::<Vec<_>>());
        for (k, always) in [(0, vec![]), (11, vec![]), (1, vec![1, 2]), (2, vec![10])] {
            assert!(
                matches!(top_k_tokens(std::slice::from_ref(&a), k, &always, 10), Err(EdaError::InvalidArgument(_))),
                "k {k} always {always:?}"
            );
        }
        assert!(top_k_tokens(&[sample(vec![12], vec![1])], 2, &[], 10).is_err());
        assert!((coverage(&[a, b], &[4, 9]) - 6.0 / 9.0).abs() < 1e-12);
    }
}
