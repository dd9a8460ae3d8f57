//! bf16 on every compiled GPU backend against f32 on the CPU (see `tests/half/mod.rs`).
#![cfg(any(feature = "wgpu", feature = "cuda"))]

mod half;

#[test]
fn bf16_logits_and_greedy_match_f32() {
    half::check(eda_core::backend::Precision::BF16);
    // Same process, so the device is still in bf16: training there is refused.
    half::check_training_is_refused(eda_core::backend::Precision::BF16);
}
