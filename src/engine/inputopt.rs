//! Optimising an input with the network frozen: what trigger recovery and feature
//! visualisation share. The network's weights are detached, so a backward pass
//! computes gradients for the input alone (no weight gradients are formed).

use super::layer::Layer;
use super::lean::lean_forward;
use super::model::{Net, block};
use tch::{Kind, Tensor};

/// The network's parameters without autograd history: a forward through them
/// differentiates with respect to its input only.
pub struct FrozenNet {
    weights: Vec<Tensor>,
    biases: Vec<Tensor>,
}

impl FrozenNet {
    pub fn of(net: &Net) -> FrozenNet {
        FrozenNet {
            weights: Layer::ALL.iter().map(|&l| net.weight(l).detach()).collect(),
            biases: Layer::ALL.iter().map(|&l| net.bias(l).detach()).collect(),
        }
    }

    /// Logits for normalised inputs `[N, 1, H, W]`, the lean way (`lean::lean_forward`):
    /// 2.5× faster than `Net::forward` for the forward and backward of a stamped batch.
    pub fn forward(&self, x: &Tensor) -> Tensor {
        lean_forward(x, &self.weights, &self.biases)
    }

    fn block(&self, layer: Layer, input: &Tensor) -> Tensor {
        block(layer, input, &self.weights[layer.position()], &self.biases[layer.position()])
    }

    /// Each unit's pre-activation in `layer` (before ReLU), a convolution's
    /// averaged over positions: `[N, units]`. The quantity feature visualisation
    /// maximises (the pre-activation still has a gradient where ReLU would be 0).
    pub fn unit_preactivations(&self, x: &Tensor, layer: Layer) -> Tensor {
        let mut h = x.shallow_clone();
        for &earlier in &Layer::ALL[..layer.position()] {
            h = self.block(earlier, &h);
        }
        let (w, b) = (&self.weights[layer.position()], &self.biases[layer.position()]);
        if layer.is_conv() {
            h.conv2d(w, Some(b), [1, 1], [0, 0], [1, 1], 1).mean_dim([2i64, 3].as_slice(), false, Kind::Float)
        } else {
            h.flatten(1, -1).linear(w, Some(b))
        }
    }
}

/// `(1 − m)·x + m·p`: Neural Cleanse's stamp, in raw pixel space.
/// `raw` is `[B, C, H, W]`, `mask` `[L, 1, H, W]` (one mask for every channel,
/// as the reference) and `pattern` `[L, C, H, W]`; the result is `[L·B, C, H, W]`,
/// every image stamped with every label's trigger, label-major.
pub fn stamp_all(raw: &Tensor, mask: &Tensor, pattern: &Tensor) -> Tensor {
    let kept = mask.ones_like().subtract(mask).unsqueeze(1) * raw.unsqueeze(0);
    let stamped = kept + (mask * pattern).unsqueeze(1);
    stamped.flatten(0, 1)
}

/// `tanh(a)/(2 − ε) + 0.5`: an unconstrained tensor squashed into (0, 1), as the
/// reference parameterises masks and patterns.
pub fn squash(a: &Tensor) -> Tensor {
    a.tanh() / (2.0 - TANH_EPSILON) + 0.5
}

/// The inverse of `squash`, for a start value in [0, 1].
pub fn unsquash(v: &Tensor) -> Tensor {
    ((v - 0.5) * (2.0 - TANH_EPSILON)).atanh()
}

/// Keras's epsilon, which the reference uses to keep tanh's image inside (0, 1).
pub const TANH_EPSILON: f64 = 1e-7;
