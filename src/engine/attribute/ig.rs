//! Integrated gradients as Captum 0.9 computes them (`method="gausslegendre"`,
//! zero baseline): the gradient at `α·x` for the Gauss–Legendre points α on
//! [0, 1], weighted by their step sizes, summed, times `x`; all steps of a chunk
//! of images in one forward and one backward.

use super::{target_gradient, target_logits};
use crate::engine::classifier::Classifier;
use tch::{Kind, Tensor};

/// numpy's `leggauss(n)` moved to [0, 1] as Captum does: the points
/// `(1 + x) / 2` (ascending) and the step sizes `w / 2`, found by Newton's
/// method on the Legendre polynomial (to the last bit of an f64).
pub fn gauss_legendre(n: usize) -> (Vec<f64>, Vec<f64>) {
    let mut nodes: Vec<(f64, f64)> = (1..=n)
        .map(|i| {
            let mut x = (std::f64::consts::PI * (i as f64 - 0.25) / (n as f64 + 0.5)).cos();
            for _ in 0..100 {
                let (p, dp) = legendre(n, x);
                x -= p / dp;
                if (p / dp).abs() < 1e-16 {
                    break;
                }
            }
            let dp = legendre(n, x).1;
            (x, 2.0 / ((1.0 - x * x) * dp * dp))
        })
        .collect();
    nodes.sort_by(|a, b| a.0.total_cmp(&b.0));
    nodes.iter().map(|&(x, w)| (0.5 * (1.0 + x), 0.5 * w)).unzip()
}

/// `P_n(x)` and its derivative.
fn legendre(n: usize, x: f64) -> (f64, f64) {
    let (mut previous, mut p) = (1.0, x);
    for k in 2..=n {
        let next = ((2 * k - 1) as f64 * x * p - (k - 1) as f64 * previous) / k as f64;
        previous = p;
        p = next;
    }
    if n == 0 {
        return (1.0, 0.0);
    }
    (p, n as f64 * (x * p - previous) / (x * x - 1.0))
}

/// IG maps `[N, C, H, W]` of `raw` for `targets`, and Captum's convergence delta
/// `[N]`: the map's sum minus `F(x) − F(0)` at the target.
pub fn integrated_gradients(net: &dyn Classifier, raw: &Tensor, targets: &Tensor, steps: usize) -> (Tensor, Tensor) {
    let (alphas, sizes) = gauss_legendre(steps);
    let (n, device) = (raw.size()[0], raw.device());
    let column = |v: &[f64]| Tensor::from_slice(v).to_kind(Kind::Float).to_device(device).view([-1, 1, 1, 1, 1]);
    // Step-major like Captum's `torch.cat` over alphas.
    let scaled = (raw.unsqueeze(0) * column(&alphas)).flatten(0, 1);
    let gradients = target_gradient(net, &scaled, &targets.repeat([steps as i64]));
    let mut shape = vec![steps as i64, n];
    shape.extend(&raw.size()[1..]);
    let total = (gradients.view(shape.as_slice()) * column(&sizes)).sum_dim_intlist(0, false, Kind::Float);
    let maps = total * raw;
    let ends = target_logits(net, raw, targets) - target_logits(net, &raw.zeros_like(), targets);
    let delta = maps.flatten(1, -1).sum_dim_intlist(1, false, Kind::Float) - ends;
    (maps, delta)
}
