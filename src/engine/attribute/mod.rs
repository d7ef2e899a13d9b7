//! Input attributions with Captum 0.9's definitions, written once against a
//! `Classifier` (the logits of a batch of raw images, differentiable in them)
//! and, for Grad-CAM, a `LayerNet` (a node's activation and the logits read from
//! it): integrated gradients, saliency, Grad-CAM, occlusion and SmoothGrad over
//! IG or saliency. Attributions are over raw pixels in [0, 1] (the network
//! normalises first), so IG's zero baseline and occlusion's are black images.
//! Tensors stay here; plain numbers come out (`mass`).

pub mod gradcam;
pub mod ig;
pub mod mass;
pub mod occlusion;
pub mod reference;
pub mod smoothgrad;

use super::classifier::Classifier;
use gradcam::LayerNet;
use tch::{Device, Kind, Tensor};

/// A method and its settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Method {
    /// Integrated gradients, Gauss–Legendre with `steps` points, zero baseline.
    Ig { steps: usize },
    /// |∂ logit / ∂ pixel| (Captum's `abs=True`).
    Saliency,
    /// At the `LayerNet`'s node; ReLU of the map when `relu`.
    GradCam { relu: bool },
    /// A `window`² black patch slid by `stride` (covering every channel).
    Occlusion { window: i64, stride: i64 },
    /// The mean of `of` over `samples` noisy copies (Gaussian, `sigma` in pixels).
    SmoothGrad { of: Smoothed, samples: usize, sigma: f64, seed: u64 },
}

/// What SmoothGrad averages.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Smoothed {
    Ig { steps: usize },
    Saliency,
}

impl Smoothed {
    pub fn method(self) -> Method {
        match self {
            Smoothed::Ig { steps } => Method::Ig { steps },
            Smoothed::Saliency => Method::Saliency,
        }
    }
}

impl Method {
    /// Forward passes one image costs: what sizes a pass's chunk of images.
    pub fn passes_per_image(&self, [_, h, w]: [i64; 3]) -> usize {
        match *self {
            Method::Ig { steps } => steps,
            Method::Saliency | Method::GradCam { .. } => 1,
            Method::Occlusion { window, stride } => occlusion::windows(h, w, window, stride).len(),
            Method::SmoothGrad { of, samples, .. } => samples * of.method().passes_per_image([1, h, w]),
        }
    }
}

/// Maps `[N, C, H, W]` (Grad-CAM's `[N, 1, H, W]`) on the CPU, and IG's
/// convergence deltas `[N]` (IG and SmoothGrad over IG).
pub struct Maps {
    pub maps: Tensor,
    pub deltas: Option<Tensor>,
}

/// `method`'s maps of `raw` for each image's `targets` class, in chunks of at
/// most `pass` forward images (IG's steps and occlusion's windows of several
/// images share a pass). `layer` is Grad-CAM's; `progress` hears the images done.
pub fn attribute(
    net: &dyn Classifier,
    layer: Option<&dyn LayerNet>,
    method: &Method,
    raw: &Tensor,
    targets: &Tensor,
    pass: usize,
    progress: &mut dyn FnMut(usize),
) -> Maps {
    let n = raw.size()[0];
    let per_chunk = (pass / method.passes_per_image(net.input_shape()).max(1)).max(1) as i64;
    let (mut maps, mut deltas) = (Vec::new(), Vec::new());
    let mut start = 0;
    while start < n {
        let len = per_chunk.min(n - start);
        let (x, t) =
            (raw.narrow(0, start, len).to_device(net.device()), targets.narrow(0, start, len).to_device(net.device()));
        let (map, delta) = match *method {
            Method::Ig { steps } => {
                let (map, delta) = ig::integrated_gradients(net, &x, &t, steps);
                (map, Some(delta))
            }
            Method::Saliency => (saliency(net, &x, &t), None),
            Method::GradCam { relu } => (gradcam::grad_cam(layer.expect("Grad-CAM needs a layer"), &x, &t, relu), None),
            Method::Occlusion { window, stride } => (occlusion::occlusion(net, &x, &t, window, stride), None),
            Method::SmoothGrad { of, samples, sigma, seed } => {
                let noise = smoothgrad::noise(&x.size(), samples, sigma, seed, start as u64).to_device(net.device());
                smoothgrad::smooth_grad(net, of, &x, &t, &noise)
            }
        };
        maps.push(map.to_device(Device::Cpu));
        deltas.extend(delta.map(|d| d.to_device(Device::Cpu)));
        start += len;
        progress(start as usize);
    }
    let deltas = (!deltas.is_empty()).then(|| Tensor::cat(&deltas, 0));
    Maps { maps: Tensor::cat(&maps, 0), deltas }
}

/// ∂ logit[target] / ∂ raw for each image (its own target), and the target logits.
pub fn target_gradient(net: &dyn Classifier, raw: &Tensor, targets: &Tensor) -> Tensor {
    let x = raw.detach().set_requires_grad(true);
    let picked = picked(&net.logits(&x), targets);
    Tensor::run_backward(&[picked.sum(Kind::Float)], &[&x], false, false).swap_remove(0)
}

/// Saliency: the gradient's magnitude.
pub fn saliency(net: &dyn Classifier, raw: &Tensor, targets: &Tensor) -> Tensor {
    target_gradient(net, raw, targets).abs()
}

/// Each row's logit at its target: `[N]`.
pub fn picked(logits: &Tensor, targets: &Tensor) -> Tensor {
    logits.gather(1, &targets.unsqueeze(1), false).squeeze_dim(1)
}

/// The target logits of `raw`, without a gradient.
pub fn target_logits(net: &dyn Classifier, raw: &Tensor, targets: &Tensor) -> Tensor {
    let _guard = tch::no_grad_guard();
    picked(&net.logits(raw), targets)
}
