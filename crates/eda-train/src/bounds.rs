//! Memory check of a training micro-batch before anything is allocated.
//!
//! The estimate is a *lower bound*: the host copies of one padded micro-batch (input features,
//! noisy features, regression targets) and the two `[B, T, V]` logit tensors the loss needs (draft
//! and target distribution). Activations saved for the backward pass come on top. A run whose
//! lower bound already exceeds the memory available would die in the allocator minutes in (or
//! swap the machine to a halt), so it is refused up front with an error naming the flags.

use eda_core::{EdaError, Result};

/// Lower bound, in bytes, of the memory one micro-batch of `batch` sequences padded to `len`
/// tokens needs for a draft with `hidden` features and `vocab` logits (f32).
///
/// ```
/// // 4 × 2048 tokens of a 576-wide, 49 152-token draft: at least 3.3 GB.
/// assert_eq!(eda_train::bounds::micro_batch_bytes(4, 2048, 576, 49_152), 3_277_848_576);
/// ```
pub fn micro_batch_bytes(batch: usize, len: usize, hidden: usize, vocab: usize) -> u128 {
    let tokens = batch as u128 * len as u128;
    tokens * 4 * (3 * hidden as u128 + 2 * vocab as u128)
}

/// Memory available to this process on the host (Linux `MemAvailable`), if known.
pub fn host_available_bytes() -> Option<u128> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u128 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Refuses a micro-batch whose lower-bound memory exceeds `available` bytes.
///
/// ```
/// use eda_train::bounds::check_micro_batch;
/// assert!(check_micro_batch(2, 16, 8, 32, Some(1 << 30)).is_ok());
/// assert!(check_micro_batch(1 << 20, 1 << 12, 4096, 150_000, Some(64 << 30)).is_err());
/// ```
pub fn check_micro_batch(batch: usize, len: usize, hidden: usize, vocab: usize, available: Option<u128>) -> Result<()> {
    let need = micro_batch_bytes(batch, len, hidden, vocab);
    match available {
        Some(avail) if need > avail => Err(EdaError::ResourceLimit {
            what: "--batch-size × --max-len (tokens per micro-batch)".into(),
            value: batch as u128 * len as u128,
            bound: avail / (4 * (3 * hidden as u128 + 2 * vocab as u128)).max(1),
            why: format!(
                "one micro-batch needs at least {:.1} GiB (features and [B, T, {vocab}] logits), {:.1} GiB is available",
                need as f64 / (1u64 << 30) as f64,
                avail as f64 / (1u64 << 30) as f64
            ),
        }),
        _ => Ok(()),
    }
}
