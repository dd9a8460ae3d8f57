//! Training the built-in targets: a small Qwen2-architecture base LM on general data, then
//! fine-tuned copies on the math and code corpora (next-token cross-entropy, AdamW, on the
//! autodiff version of the device).

use std::path::Path;
use std::time::Instant;

use burn::module::Module;
use burn::tensor::activation::log_softmax;
use burn::tensor::{Device, Int, Tensor, TensorData};
use eda_core::{EdaError, Result, TokenId};
use eda_models::{CausalLm, ModelConfig};
use eda_regen::{ChatTemplate, PromptRecord};
use rand::Rng;
use serde::{Deserialize, Serialize};
use tokenizers::Tokenizer;

use crate::tok::encode;

/// Hyper-parameters of one LM training run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LmTrainSettings {
    /// Optimiser steps.
    pub steps: usize,
    /// Sequences per step.
    pub batch_size: usize,
    /// Tokens per training sequence.
    pub seq_len: usize,
    /// Peak learning rate (linear warmup over 5% of the steps, then cosine to 10%).
    pub lr: f64,
    /// Seed of the window sampling (and of the initialisation for a fresh model).
    pub seed: u64,
}

/// Summary of an LM training run (written as `train_lm.json` next to the weights).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LmTrainReport {
    /// Steps taken.
    pub steps: usize,
    /// Mean loss over the first 10% of the steps.
    pub initial_loss: f64,
    /// Mean loss over the last 10% of the steps.
    pub final_loss: f64,
    /// Wall-clock seconds.
    pub seconds: f64,
}

/// The ChatML text of one record with its reference answer:
/// `<|im_start|>user\n{prompt}<|im_end|>\n<|im_start|>assistant\n{response}<|im_end|>\n`.
pub fn chatml_text(record: &PromptRecord) -> String {
    let mut s = ChatTemplate::ChatMl.render_prompt(&record.messages, None);
    s.push_str(record.reference_response.as_deref().unwrap_or(""));
    s.push_str("<|im_end|>\n");
    s
}

/// Tokenises every record as ChatML and concatenates them into one stream; returns the stream
/// and the offset where each record starts.
pub fn token_stream(records: &[PromptRecord], tok: &Tokenizer) -> Result<(Vec<TokenId>, Vec<usize>)> {
    let mut stream = Vec::new();
    let mut starts = Vec::with_capacity(records.len());
    for r in records {
        starts.push(stream.len());
        stream.extend(encode(tok, &chatml_text(r))?);
    }
    Ok((stream, starts))
}

/// Linear warmup over 5 % of the steps, then cosine decay to 10 % of `peak` (the trainer's
/// schedule).
fn lr_at(step: usize, total: usize, peak: f64) -> f64 {
    let schedule = eda_train::ScheduleConfig {
        lr: peak,
        min_lr: 0.1 * peak,
        warmup_steps: (total / 20).max(1),
        warmup: eda_train::WarmupShape::Linear,
        decay: eda_train::DecayShape::Cosine,
        decay_total_steps: None,
    };
    schedule.lr_at(step, total)
}

/// Trains `model` (on a plain device; it is moved to `device.autodiff()` for training) on
/// windows of `stream` that start at record boundaries, and returns the trained model on the
/// plain device plus a report.
pub fn train_lm(
    model: CausalLm,
    stream: &[TokenId],
    starts: &[usize],
    s: &LmTrainSettings,
    device: &Device,
    label: &str,
    progress: bool,
) -> Result<(CausalLm, LmTrainReport)> {
    let t = s.seq_len;
    if stream.len() < t + 2 || starts.is_empty() {
        return Err(EdaError::EmptyDataset(format!(
            "{label}: token stream of {} tokens is shorter than one window of {}",
            stream.len(),
            t + 1
        )));
    }
    if s.steps == 0 || s.batch_size == 0 {
        return Err(EdaError::InvalidArgument(format!("{label}: steps and batch_size must be >= 1")));
    }
    let start = Instant::now();
    let ad = device.clone().autodiff();
    let mut model = model.fork(&ad).train();
    let mut optim = eda_train::optim::AdamW::new(eda_train::AdamWParams { beta1: 0.9, beta2: 0.98, eps: 1e-8, weight_decay: 0.01 });
    let mut grads = eda_train::optim::GradAccumulator::new();
    let mut rng = eda_core::sampling::seeded_rng(s.seed ^ 0x5eed_1a4e);
    let pb = crate::progress_bar(s.steps as u64, label, progress);
    let mut losses = Vec::with_capacity(s.steps);
    for step in 0..s.steps {
        let mut inp: Vec<i64> = Vec::with_capacity(s.batch_size * t);
        let mut tgt: Vec<i64> = Vec::with_capacity(s.batch_size * t);
        for _ in 0..s.batch_size {
            // Half the windows start at a record boundary (so the model sees prompts from their
            // first token), half anywhere (so long records are covered to their end).
            let mut a =
                if rng.random_bool(0.5) { starts[rng.random_range(0..starts.len())] } else { rng.random_range(0..stream.len() - t - 1) };
            if a + t + 1 > stream.len() {
                a = stream.len() - t - 1;
            }
            inp.extend(stream[a..a + t].iter().map(|&x| x as i64));
            tgt.extend(stream[a + 1..a + t + 1].iter().map(|&x| x as i64));
        }
        let x = Tensor::<2, Int>::from_data(TensorData::new(inp, [s.batch_size, t]), &ad);
        let y = Tensor::<2, Int>::from_data(TensorData::new(tgt, [s.batch_size * t, 1]), &ad);
        let (logits, _) = model.forward_train(x);
        let v = logits.dims()[2];
        let logp = log_softmax(logits.reshape([s.batch_size * t, v]), 1);
        let loss = logp.gather(1, y).mean().neg();
        let loss_val = eda_core::backend::to_vec_f32(loss.clone().detach())?[0] as f64;
        if !loss_val.is_finite() {
            return Err(EdaError::NonFinite(format!("{label}: training loss at step {step}")));
        }
        losses.push(loss_val);
        grads.add(&model, loss.backward());
        grads.clip(1.0)?;
        model = optim.step(lr_at(step, s.steps, s.lr), model, &mut grads);
        pb.inc(1);
        pb.set_message(format!("loss {loss_val:.3}"));
        if step % 100 == 0 || step + 1 == s.steps {
            tracing::info!(label, step, loss = loss_val, seconds = start.elapsed().as_secs_f64(), "lm training");
        }
    }
    pb.finish_and_clear();
    let k = (s.steps / 10).max(1);
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let report = LmTrainReport {
        steps: s.steps,
        initial_loss: mean(&losses[..k]),
        final_loss: mean(&losses[losses.len() - k..]),
        seconds: start.elapsed().as_secs_f64(),
    };
    tracing::info!(label, initial_loss = report.initial_loss, final_loss = report.final_loss, seconds = report.seconds, "trained LM");
    Ok((model.valid(), report))
}

/// Writes a trained model as a HF checkpoint directory (config.json, model.safetensors, the
/// tokenizer files copied from `tokenizer_dir`, and `train_lm.json`).
pub fn save_target(model: &CausalLm, cfg: &ModelConfig, tokenizer_dir: &Path, report: &LmTrainReport, dir: &Path) -> Result<()> {
    for f in ["tokenizer.json", "tokenizer_config.json"] {
        let bytes = std::fs::read(tokenizer_dir.join(f)).map_err(|e| EdaError::io(tokenizer_dir.join(f), e))?;
        eda_core::io::atomic_write(&dir.join(f), &bytes)?;
    }
    eda_core::io::write_json(&dir.join("train_lm.json"), report)?;
    // model.safetensors + config.json last: their presence marks the checkpoint complete.
    model.save_pretrained(cfg, dir)
}

/// Whether `dir` holds a complete demo target checkpoint.
pub fn target_exists(dir: &Path) -> bool {
    ["config.json", "model.safetensors", "tokenizer.json", "train_lm.json"].iter().all(|f| dir.join(f).is_file())
}
