//! A tiny deterministic stand-in draft for trainer tests (the real `EdaDraft` is tested too).
#![allow(dead_code)]

use std::path::Path;

use burn::module::{Module, Param};
use burn::tensor::activation::silu;
use burn::tensor::{Device, Int, Tensor, TensorData};
use eda_core::data::FeatureSample;
use eda_core::sampling::seeded_rng;
use eda_train::{TrainForward, TrainableDraft};
use rand::Rng;

/// emb/lm_head frozen; fc trained; `shared` and `private` residual MLPs.
#[derive(Module, Debug)]
pub struct Toy {
    pub emb: Param<Tensor<2>>,
    pub lm_head: Param<Tensor<2>>,
    pub fc_w: Param<Tensor<2>>,
    pub fc_b: Param<Tensor<1>>,
    pub shared_w: Param<Tensor<2>>,
    pub private_w: Param<Tensor<2>>,
}

pub fn rand_vec(n: usize, scale: f32, rng: &mut eda_core::sampling::EdaRng) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-scale..scale)).collect()
}

fn t2(v: Vec<f32>, a: usize, b: usize, d: &Device) -> Tensor<2> {
    Tensor::from_data(TensorData::new(v, [a, b]), d)
}

impl Toy {
    pub fn new(vocab: usize, h: usize, seed: u64, device: &Device) -> Self {
        let mut rng = seeded_rng(seed);
        let mut head_rng = seeded_rng(1234);
        Toy {
            emb: Param::from_tensor(t2(rand_vec(vocab * h, 1.0, &mut head_rng), vocab, h, device)).set_require_grad(false),
            lm_head: Param::from_tensor(t2(rand_vec(vocab * h, 1.0, &mut head_rng), vocab, h, device)).set_require_grad(false),
            fc_w: Param::from_tensor(t2(rand_vec(2 * h * h, 0.3, &mut rng), 2 * h, h, device)),
            fc_b: Param::from_tensor(Tensor::from_data(TensorData::new(rand_vec(h, 0.1, &mut rng), [h]), device)),
            shared_w: Param::from_tensor(t2(rand_vec(h * h, 0.3, &mut rng), h, h, device)),
            private_w: Param::from_tensor(t2(rand_vec(h * h, 0.3, &mut rng), h, h, device)),
        }
    }

    /// Freezes the shared group (stage-2 analogue).
    pub fn freeze_shared(mut self) -> Self {
        self.shared_w = self.shared_w.set_require_grad(false);
        self
    }
}

impl TrainableDraft for Toy {
    fn hidden_size(&self) -> usize {
        self.emb.val().dims()[1]
    }
    fn vocab_size(&self) -> usize {
        self.emb.val().dims()[0]
    }
    fn forward_train(&self, tokens: Tensor<2, Int>, features: Tensor<3>) -> TrainForward {
        let [b, t] = tokens.dims();
        let h = self.hidden_size();
        let e = self.emb.val().select(0, tokens.reshape([b * t])).reshape([b, t, h]);
        let x = Tensor::cat(vec![e, features], 2).reshape([b * t, 2 * h]);
        let u = x.matmul(self.fc_w.val()) + self.fc_b.val().unsqueeze::<2>();
        let a = silu(u.clone());
        let out = u + a.clone().matmul(self.shared_w.val()) + a.matmul(self.private_w.val());
        let device = out.device();
        TrainForward {
            hidden: out.reshape([b, t, h]),
            aux_loss_shared: Tensor::ones([1], &device),
            aux_loss_private: Tensor::ones([1], &device),
        }
    }
    fn logits3(&self, hidden: Tensor<3>) -> Tensor<3> {
        let [b, t, h] = hidden.dims();
        let v = self.vocab_size();
        hidden.reshape([b * t, h]).matmul(self.lm_head.val().transpose()).reshape([b, t, v])
    }
    fn save_draft(&self, dir: &Path) -> eda_core::Result<()> {
        let bytes = eda_train::checkpoint::params_to_bytes(self, false)?;
        eda_core::io::atomic_write(&dir.join("toy.safetensors"), &bytes)
    }
}

/// A synthetic dataset: a fixed random "target" sequence per sample, features follow a smooth
/// deterministic dynamic so the next feature is predictable from the current one and token.
pub fn synthetic_data(n: usize, len: usize, vocab: usize, h: usize, seed: u64) -> Vec<FeatureSample> {
    let mut rng = seeded_rng(seed);
    let mix = rand_vec(h * h, 0.4, &mut seeded_rng(99));
    (0..n)
        .map(|i| {
            let ids: Vec<u32> = (0..len).map(|_| rng.random_range(0..vocab as u32)).collect();
            let mut hidden = Vec::with_capacity(len * h);
            let mut cur = rand_vec(h, 1.0, &mut rng);
            for t in 0..len {
                hidden.extend_from_slice(&cur);
                // next = tanh(M · cur + onehot-ish(token))
                let tok = ids[(t + 1).min(len - 1)] as usize;
                cur = (0..h)
                    .map(|r| ((0..h).map(|c| mix[r * h + c] * cur[c]).sum::<f32>() + if r == tok % h { 0.5 } else { 0.0 }).tanh())
                    .collect();
            }
            let mut mask = vec![1u8; len];
            mask[0] = 0;
            FeatureSample::new(format!("s{i}"), ids, hidden, h, mask).unwrap()
        })
        .collect()
}

/// All float parameters of a module by path, as host vectors.
pub fn params(m: &Toy) -> Vec<(String, Vec<f32>)> {
    let grab = |name: &str, t: Tensor<2>| (name.to_string(), eda_core::backend::to_vec_f32(t).unwrap());
    vec![
        grab("fc_w", m.fc_w.val()),
        ("fc_b".into(), eda_core::backend::to_vec_f32(m.fc_b.val()).unwrap()),
        grab("shared_w", m.shared_w.val()),
        grab("private_w", m.private_w.val()),
        grab("emb", m.emb.val()),
        grab("lm_head", m.lm_head.val()),
    ]
}

pub fn cpu() -> Device {
    eda_core::backend::device_from_name("cpu").unwrap()
}
