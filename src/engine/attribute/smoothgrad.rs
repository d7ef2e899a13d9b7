//! SmoothGrad as Captum 0.9's `NoiseTunnel(nt_type="smoothgrad")`: the mean of
//! a method's maps over noisy copies of each image. The noise is drawn here
//! (SplitMix64, Box–Muller: the same on every device) and handed to a reference
//! as is, so both average the same draws.

use super::{Smoothed, ig, saliency};
use crate::engine::classifier::Classifier;
use crate::splitmix::SplitMix64;
use tch::{Kind, Tensor};

/// `[N·samples, C, H, W]` Gaussian noise of standard deviation `sigma` for the
/// images `first..first + N` (each image's own stream, so chunks do not matter),
/// image-major like Captum's `repeat_interleave`.
pub fn noise(shape: &[i64], samples: usize, sigma: f64, seed: u64, first: u64) -> Tensor {
    let per_image = samples * shape[1..].iter().product::<i64>() as usize;
    let mut values = Vec::with_capacity(shape[0] as usize * per_image);
    for image in 0..shape[0] as u64 {
        let mut rng = SplitMix64(seed ^ (first + image).wrapping_mul(0xA24B_AED4_963E_E407));
        let mut uniform = || ((rng.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
        values.extend((0..per_image).map(|_| {
            let (u, v) = (uniform(), uniform());
            (sigma * (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32
        }));
    }
    let mut out = vec![shape[0] * samples as i64];
    out.extend(&shape[1..]);
    Tensor::from_slice(&values).view(out.as_slice())
}

/// The mean of `of`'s maps over `raw` plus `noise` (`samples` copies per image),
/// and for IG the mean convergence delta of each image's copies.
pub fn smooth_grad(
    net: &dyn Classifier,
    of: Smoothed,
    raw: &Tensor,
    targets: &Tensor,
    noise: &Tensor,
) -> (Tensor, Option<Tensor>) {
    let n = raw.size()[0];
    let samples = noise.size()[0] / n.max(1);
    let noisy = raw.repeat_interleave_self_int(samples, Some(0), None) + noise;
    let repeated = targets.repeat_interleave_self_int(samples, Some(0), None);
    let (maps, deltas) = match of {
        Smoothed::Ig { steps } => {
            let (maps, deltas) = ig::integrated_gradients(net, &noisy, &repeated, steps);
            (maps, Some(deltas))
        }
        Smoothed::Saliency => (saliency(net, &noisy, &repeated), None),
    };
    let mut shape = vec![n, samples];
    shape.extend(&raw.size()[1..]);
    let mean = maps.view(shape.as_slice()).mean_dim(1, false, Kind::Float);
    (mean, deltas.map(|d| d.view([n, samples]).mean_dim(1, false, Kind::Float)))
}
