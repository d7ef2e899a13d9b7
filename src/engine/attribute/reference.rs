//! The slow, obvious attributions the batched ones are checked against: IG one
//! image and one Gauss–Legendre step per backward, occlusion one image and one
//! window per forward.

use super::ig::gauss_legendre;
use super::occlusion::windows;
use super::{target_gradient, target_logits};
use crate::engine::classifier::Classifier;
use tch::{Kind, Tensor};

/// IG maps `[N, C, H, W]`, a step at a time.
pub fn integrated_gradients(net: &dyn Classifier, raw: &Tensor, targets: &Tensor, steps: usize) -> Tensor {
    let (alphas, sizes) = gauss_legendre(steps);
    let maps: Vec<Tensor> = (0..raw.size()[0])
        .map(|i| {
            let (x, t) = (raw.narrow(0, i, 1), targets.narrow(0, i, 1));
            let mut total = x.zeros_like().to_kind(Kind::Double);
            for (&alpha, &size) in alphas.iter().zip(&sizes) {
                total += target_gradient(net, &(&x * alpha), &t).to_kind(Kind::Double) * size;
            }
            (total * x.to_kind(Kind::Double)).to_kind(Kind::Float)
        })
        .collect();
    Tensor::cat(&maps, 0)
}

/// Occlusion maps `[N, C, H, W]`, a window at a time.
pub fn occlusion(net: &dyn Classifier, raw: &Tensor, targets: &Tensor, window: i64, stride: i64) -> Tensor {
    let size = raw.size();
    let maps: Vec<Tensor> = (0..size[0])
        .map(|i| {
            let (x, t) = (raw.narrow(0, i, 1), targets.narrow(0, i, 1));
            let base = target_logits(net, &x, &t).double_value(&[0]);
            let (sums, counts) = (x.zeros_like().to_kind(Kind::Double), x.zeros_like().to_kind(Kind::Double));
            for (y, x0, h, w) in windows(size[2], size[3], window, stride) {
                let occluded = x.copy();
                let _ = occluded.narrow(2, y, h).narrow(3, x0, w).fill_(0.0);
                let drop = base - target_logits(net, &occluded, &t).double_value(&[0]);
                let _ = sums.narrow(2, y, h).narrow(3, x0, w).g_add_scalar_(drop);
                let _ = counts.narrow(2, y, h).narrow(3, x0, w).g_add_scalar_(1.0);
            }
            (sums / counts).to_kind(Kind::Float)
        })
        .collect();
    Tensor::cat(&maps, 0)
}
