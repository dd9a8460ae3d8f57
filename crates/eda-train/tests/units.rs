//! Unit-level checks: batching, loss pieces, schedule, AdamW arithmetic, checkpoint round trip.

mod common;

use burn::module::{Module, Param};
use burn::tensor::{Tensor, TensorData};
use common::cpu;
use eda_core::data::FeatureSample;
use eda_core::sampling::seeded_rng;
use eda_train::batch::build_batch;
use eda_train::batch::DeviceBatch;
use eda_train::checkpoint::{load_params, param_values, params_to_bytes};
use eda_train::loss::{compute_loss, smooth_l1};
use eda_train::optim::{AdamW, GradAccumulator};
use eda_train::{AdamWParams, LossConfig, LossNorm, NoiseConfig, ScheduleConfig, TrainForward, TrainableDraft};

#[test]
fn batch_truncates_pads_and_shifts() {
    let a = FeatureSample::new("a", vec![1, 2, 3, 4, 5], (0..5).map(|x| x as f32).collect(), 1, vec![0, 1, 1, 1, 1]).unwrap();
    let b = FeatureSample::new("b", vec![9, 8], vec![10.0, 11.0], 1, vec![1, 1]).unwrap();
    let hb = build_batch(&[&a, &b], 4, NoiseConfig::None, &mut seeded_rng(0)).unwrap();
    assert_eq!((hb.batch, hb.len, hb.real_tokens), (2, 4, 6));
    assert_eq!(hb.tokens, vec![2, 3, 4, 0, 8, 0, 0, 0]);
    assert_eq!(hb.features, vec![0.0, 1.0, 2.0, 3.0, 10.0, 11.0, 0.0, 0.0]);
    assert_eq!(hb.target, vec![1.0, 2.0, 3.0, 0.0, 11.0, 0.0, 0.0, 0.0]);
    assert_eq!(hb.mask, vec![0.0, 1.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0]);
    assert_eq!(hb.masked_tokens(), 3);
}

#[test]
fn noise_is_bounded_and_reference_scales_with_length() {
    let s = FeatureSample::new("a", vec![1; 64], vec![0.0; 64 * 4], 4, vec![1; 64]).unwrap();
    let u = build_batch(&[&s], 64, NoiseConfig::Uniform { amplitude: 0.1 }, &mut seeded_rng(1)).unwrap();
    let max = u.features.iter().fold(0f32, |m, v| m.max(v.abs()));
    assert!(max <= 0.1 && max > 0.05, "{max}");
    // (U-0.5)·0.2·512/64 → |ε| ≤ 0.8
    let r = build_batch(&[&s], 64, NoiseConfig::ReferenceScaled { std: 0.2 }, &mut seeded_rng(1)).unwrap();
    let max = r.features.iter().fold(0f32, |m, v| m.max(v.abs()));
    assert!(max <= 0.8 && max > 0.4, "{max}");
    // targets are never noised
    assert!(r.target.iter().all(|&v| v == 0.0));
}

#[test]
fn smooth_l1_matches_definition() {
    let z = Tensor::<1>::from_floats([-3.0, -0.5, 0.0, 0.25, 1.0, 2.0], &cpu());
    let got = eda_core::backend::to_vec_f32(smooth_l1(z)).unwrap();
    assert_eq!(got, vec![2.5, 0.125, 0.0, 0.03125, 0.5, 1.5]);
}

#[test]
fn reference_schedule_shape() {
    let s = ScheduleConfig::reference();
    assert_eq!(s.lr_at(0, 5000), 0.0);
    assert!((s.lr_at(999, 5000) - 2e-4 * (1000f64).ln() / (2000f64).ln()).abs() < 1e-15);
    assert!((s.lr_at(2000, 5000) - 2e-4).abs() < 1e-15);
    assert!((s.lr_at(401_000, 5000) - 1e-4).abs() < 1e-12);
}

#[derive(Module, Debug)]
struct One {
    w: Param<Tensor<1>>,
    frozen: Param<Tensor<1>>,
}

#[test]
fn adamw_matches_hand_computation_and_skips_frozen() {
    let ad = cpu().autodiff();
    let m = One {
        w: Param::from_tensor(Tensor::<1>::from_floats([1.0, -2.0], &cpu())),
        frozen: Param::from_tensor(Tensor::<1>::from_floats([5.0], &cpu())).set_require_grad(false),
    }
    .fork(&ad)
    .train();
    let p = AdamWParams { beta1: 0.9, beta2: 0.95, eps: 1e-8, weight_decay: 0.1 };
    let mut opt = AdamW::new(p.clone());
    let mut w = [1.0f64, -2.0];
    let (mut mm, mut vv) = ([0.0f64; 2], [0.0f64; 2]);
    let mut model = m;
    for t in 1..=3 {
        // loss = sum(w^2 * c) + frozen → grad 2cw
        let c = t as f64;
        let loss = (model.w.val().square() * c).sum() + model.frozen.val().sum();
        let mut acc = GradAccumulator::new();
        acc.add(&model, loss.backward());
        assert_eq!(acc.len(), 1, "frozen parameter has no gradient");
        model = opt.step(0.01, model, &mut acc);
        for i in 0..2 {
            let g = 2.0 * c * w[i];
            w[i] *= 1.0 - 0.01 * 0.1;
            mm[i] = 0.9 * mm[i] + 0.1 * g;
            vv[i] = 0.95 * vv[i] + 0.05 * g * g;
            let (bc1, bc2) = (1.0 - 0.9f64.powi(t), 1.0 - 0.95f64.powi(t));
            w[i] -= 0.01 / bc1 * mm[i] / ((vv[i] / bc2).sqrt() + 1e-8);
        }
    }
    let got = eda_core::backend::to_vec_f32(model.w.val()).unwrap();
    for i in 0..2 {
        assert!((got[i] as f64 - w[i]).abs() < 1e-5, "{got:?} vs {w:?}");
    }
    assert_eq!(eda_core::backend::to_vec_f32(model.frozen.val()).unwrap(), vec![5.0]);
    assert_eq!(opt.step_count(), 3);
    // Optimiser state round-trips exactly, down to the bytes (metadata is written in key order).
    let bytes = opt.to_bytes().unwrap();
    let back = AdamW::from_bytes(p, &bytes, &cpu(), std::path::Path::new("mem")).unwrap();
    assert_eq!(back.to_bytes().unwrap(), bytes);
    assert_eq!(safetensors_contents(&back.to_bytes().unwrap()), safetensors_contents(&bytes));
}

type Contents = (Vec<(String, String)>, Vec<(String, Vec<usize>, Vec<u8>)>);

/// Metadata (sorted) and every tensor (sorted by name) of a safetensors buffer.
fn safetensors_contents(bytes: &[u8]) -> Contents {
    let (_, meta) = safetensors::SafeTensors::read_metadata(bytes).unwrap();
    let mut info: Vec<(String, String)> = meta.metadata().clone().unwrap_or_default().into_iter().collect();
    info.sort();
    let st = safetensors::SafeTensors::deserialize(bytes).unwrap();
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> =
        st.tensors().into_iter().map(|(n, v)| (n, v.shape().to_vec(), v.data().to_vec())).collect();
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(!tensors.is_empty(), "optimizer state has tensors");
    (info, tensors)
}

#[test]
fn global_norm_clipping() {
    let ad = cpu().autodiff();
    let m = One {
        w: Param::from_tensor(Tensor::<1>::from_floats([3.0, 4.0], &cpu())),
        frozen: Param::from_tensor(Tensor::<1>::from_floats([0.0], &cpu())).set_require_grad(false),
    }
    .fork(&ad)
    .train();
    // grad of sum(w^2)/2 is w = (3, 4): norm 5
    let mut acc = GradAccumulator::new();
    acc.add(&m, (m.w.val().square() * 0.5).sum().backward());
    let norm = acc.clip(0.5).unwrap();
    assert!((norm - 5.0).abs() < 1e-6);
    assert!((acc.global_norm().unwrap() - 0.5).abs() < 1e-5);
}

#[test]
fn params_round_trip_and_missing_tensor_error() {
    let m = One {
        w: Param::from_tensor(Tensor::<1>::from_data(TensorData::new(vec![1.5f32, 2.5], [2]), &cpu())),
        frozen: Param::from_tensor(Tensor::<1>::from_floats([7.0], &cpu())).set_require_grad(false),
    }
    .fork(&cpu().autodiff())
    .train();
    let bytes = params_to_bytes(&m, true).unwrap();
    let fresh = One {
        w: Param::from_tensor(Tensor::<1>::from_floats([0.0, 0.0], &cpu())),
        frozen: Param::from_tensor(Tensor::<1>::from_floats([7.0], &cpu())).set_require_grad(false),
    }
    .fork(&cpu().autodiff())
    .train();
    let (loaded, n) = load_params(fresh, &bytes, std::path::Path::new("w.safetensors"), &cpu()).unwrap();
    assert_eq!(n, 1);
    assert_eq!(param_values(&loaded, false).unwrap()["w"].1, vec![1.5, 2.5]);
    assert!(loaded.w.val().is_require_grad());
    // A file lacking a trainable tensor is refused, naming it.
    let empty = params_to_bytes(
        &One {
            w: Param::from_tensor(Tensor::<1>::from_floats([0.0], &cpu())).set_require_grad(false),
            frozen: Param::from_tensor(Tensor::<1>::from_floats([0.0], &cpu())).set_require_grad(false),
        },
        true,
    )
    .unwrap();
    let err = load_params(loaded, &empty, std::path::Path::new("e.safetensors"), &cpu()).unwrap_err();
    assert!(matches!(err, eda_core::EdaError::MissingTensor { ref name, .. } if name == "w"), "{err:?}");
}

// ---------------------------------------------------------------------------------------------
// The whole objective against a hand computation.

/// A draft whose prediction is a fixed tensor (its only "parameter"), with a fixed LM head and
/// fixed router losses, so the loss of a batch can be computed by hand.
#[derive(Module, Debug)]
struct FixedDraft {
    out: Param<Tensor<3>>,
    head: Param<Tensor<2>>,
}

impl TrainableDraft for FixedDraft {
    fn hidden_size(&self) -> usize {
        2
    }
    fn vocab_size(&self) -> usize {
        3
    }
    fn forward_train(&self, _tokens: Tensor<2, burn::tensor::Int>, _features: Tensor<3>) -> TrainForward {
        let device = self.out.val().device();
        TrainForward {
            hidden: self.out.val(),
            aux_loss_shared: Tensor::from_floats([0.3], &device),
            aux_loss_private: Tensor::from_floats([0.7], &device),
        }
    }
    fn logits3(&self, hidden: Tensor<3>) -> Tensor<3> {
        let [b, t, h] = hidden.dims();
        hidden.reshape([b * t, h]).matmul(self.head.val().transpose()).reshape([b, t, 3])
    }
    fn save_draft(&self, _dir: &std::path::Path) -> eda_core::Result<()> {
        Ok(())
    }
}

#[test]
fn loss_matches_a_hand_computation() {
    let d = cpu();
    // One sequence of 3 positions, hidden 2, vocabulary 3; the last position is masked out.
    let pred = [[0.5f64, -1.0], [2.0, 0.1], [0.0, 0.3]]; // draft's predicted features
    let target = [[0.0f64, 0.5], [0.2, 0.1], [1.0, -1.0]]; // target's next features
    let head = [[1.0f64, 0.0], [0.0, 1.0], [1.0, -1.0]]; // LM head, [V, H]
    let mask = [1.0f64, 1.0, 0.0];
    let t3 = |x: &[[f64; 2]; 3]| {
        Tensor::<3>::from_data(TensorData::new(x.iter().flatten().map(|&v| v as f32).collect::<Vec<_>>(), [1, 3, 2]), &d)
    };
    let model = FixedDraft {
        out: Param::from_tensor(t3(&pred)),
        head: Param::from_tensor(Tensor::<2>::from_data(
            TensorData::new(head.iter().flatten().map(|&v| v as f32).collect::<Vec<_>>(), [3, 2]),
            &d,
        )),
    };
    let batch = DeviceBatch {
        tokens: Tensor::zeros([1, 3], &d),
        features: Tensor::zeros([1, 3, 2], &d),
        target: t3(&target),
        mask: Tensor::<2>::from_floats([[1.0, 1.0, 0.0]], &d),
        masked_tokens: 2,
        real_tokens: 3,
    };

    // By hand. SmoothL1 per element, mean over the hidden dim, masked sum over positions:
    //   position 0: z = (0.5, -1.5) -> (0.5 * 0.25, 1.5 - 0.5) = (0.125, 1.0), mean 0.5625
    //   position 1: z = (1.8, 0.0)  -> (1.8 - 0.5, 0.0)        = (1.3, 0.0),   mean 0.65
    //   position 2 is masked out.
    let reg_sum = 0.5625 + 0.65;
    // Soft cross-entropy -sum_x p(x) log q(x), p = softmax(head . target), q = softmax(head . pred).
    let logits = |h: [f64; 2]| -> [f64; 3] {
        [head[0][0] * h[0] + head[0][1] * h[1], head[1][0] * h[0] + head[1][1] * h[1], head[2][0] * h[0] + head[2][1] * h[1]]
    };
    let mut cls_sum = 0.0;
    let mut correct = 0.0;
    for t in 0..3 {
        let (lp, lq) = (logits(target[t]), logits(pred[t]));
        let zp = lp[0].exp() + lp[1].exp() + lp[2].exp();
        let zq = lq[0].exp() + lq[1].exp() + lq[2].exp();
        let mut ce = 0.0;
        for x in 0..3 {
            ce -= (lp[x].exp() / zp) * (lq[x] - zq.ln());
        }
        cls_sum += mask[t] * ce;
        let argmax = |l: [f64; 3]| (0..3).fold(0, |b, i| if l[i] > l[b] { i } else { b });
        correct += mask[t] * f64::from(u8::from(argmax(lp) == argmax(lq)));
    }
    // Position 0: target logits (0, 0.5, -0.5), draft (0.5, -1, 1.5): argmax 1 vs 2.
    // Position 1: target (0.2, 0.1, 0.1), draft (2, 0.1, 1.9): argmax 0 vs 0.
    assert_eq!(correct, 1.0);

    let read = |x: &Tensor<1>| eda_core::backend::to_vec_f32(x.clone()).unwrap()[0] as f64;
    // The reference objective: normalised over the 2 masked positions, cross-entropy weight 0.1,
    // router losses off.
    let parts = compute_loss(&model, &batch, &LossConfig::default());
    let (reg, cls) = (reg_sum / 2.0, cls_sum / 2.0);
    assert!((read(&parts.reg) - reg).abs() < 1e-6, "reg {} vs {reg}", read(&parts.reg));
    assert!((read(&parts.cls) - cls).abs() < 1e-5, "cls {} vs {cls}", read(&parts.cls));
    assert!(read(&parts.aux).abs() < 1e-12);
    let total = reg + 0.1 * cls;
    assert!((read(&parts.total) - total).abs() < 1e-5, "total {} vs {total}", read(&parts.total));
    assert_eq!(read(&parts.correct), correct);

    // Other weights, router losses on, normalised over all 3 positions of the batch.
    let cfg = LossConfig { w_reg: 2.0, w_cls: 0.5, aux_w_shared: 0.01, aux_w_private: 0.1, norm: LossNorm::BatchTokens };
    let parts = compute_loss(&model, &batch, &cfg);
    let (reg, cls) = (reg_sum / 3.0, cls_sum / 3.0);
    let aux = 0.01 * 0.3 + 0.1 * 0.7;
    assert!((read(&parts.reg) - reg).abs() < 1e-6 && (read(&parts.cls) - cls).abs() < 1e-5);
    assert!((read(&parts.aux) - aux).abs() < 1e-6);
    let total = 2.0 * reg + 0.5 * cls + aux;
    assert!((read(&parts.total) - total).abs() < 1e-5, "total {} vs {total}", read(&parts.total));
}
