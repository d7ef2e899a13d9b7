//! Grad-CAM as Captum 0.9's `LayerGradCam` then `LayerAttribution.interpolate`:
//! the gradient of the target logit at a layer's output averaged over positions,
//! times the output, summed over channels (ReLU optional), upsampled to the input
//! by nearest neighbour (Captum's default `interpolate_mode`).

use super::picked;
use crate::data::dataset::Normalisation;
use crate::engine::layer::Layer;
use crate::engine::model::{Net, block};
use tch::{Kind, Tensor};

/// A network read at one layer: its output there and the logits computed from
/// that output (so a gradient reaches it).
pub trait LayerNet {
    /// `[N, C, h, w]` activations and `[N, classes]` logits of raw images.
    fn activation_and_logits(&self, raw: &Tensor) -> (Tensor, Tensor);
}

/// The study's CNN at a convolution's output (before its ReLU and pooling), as
/// the PyTorch module's `Conv2d` outputs it: the plain forward, not the lean
/// one, whose cropped input shrinks the map.
pub struct StudyLayer<'a> {
    pub net: &'a Net,
    pub normalisation: Normalisation,
    pub conv: Layer,
}

impl LayerNet for StudyLayer<'_> {
    fn activation_and_logits(&self, raw: &Tensor) -> (Tensor, Tensor) {
        let run = |l: Layer, h: &Tensor| block(l, h, &self.net.weight(l).detach(), &self.net.bias(l).detach());
        let position = self.conv.position();
        let input = Layer::ALL[..position].iter().fold(self.normalisation.normalise(raw), |h, &l| run(l, &h));
        let (weight, bias) = (self.net.weight(self.conv).detach(), self.net.bias(self.conv).detach());
        let activation = input.conv2d(&weight, Some(&bias), [1, 1], [0, 0], [1, 1], 1);
        let pooled = activation.relu().max_pool2d([2, 2], [2, 2], [0, 0], [1, 1], false);
        let logits = Layer::ALL[position + 1..].iter().fold(pooled, |h, &l| run(l, &h));
        (activation, logits)
    }
}

/// Grad-CAM maps `[N, 1, H, W]` of raw images `[N, C, H, W]` for `targets`.
pub fn grad_cam(layer: &dyn LayerNet, raw: &Tensor, targets: &Tensor, relu: bool) -> Tensor {
    // The input carries a gradient so that the activation is on autograd's graph
    // even when no weight is trainable.
    let x = raw.detach().set_requires_grad(true);
    let (activation, logits) = layer.activation_and_logits(&x);
    let target = picked(&logits, targets).sum(Kind::Float);
    let gradient = Tensor::run_backward(&[target], &[&activation], false, false).swap_remove(0);
    let weights = gradient.mean_dim([2i64, 3].as_slice(), true, Kind::Float);
    let map = (weights * activation.detach()).sum_dim_intlist(1, true, Kind::Float);
    let map = if relu { map.relu() } else { map };
    let size = raw.size();
    map.upsample_nearest2d([size[2], size[3]], None, None)
}
