//! Optimising an input with the network frozen: what trigger recovery and feature
//! visualisation share. The network's weights are detached, so a backward pass
//! computes gradients for the input alone (no weight gradients are formed).

use super::layer::Layer;
use super::model::{Net, block, channels_last};
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

    /// Logits for normalised inputs `[N, 1, H, W]`: the network's own function,
    /// computed on only the input rows and columns the logits depend on (floor-mode
    /// pooling drops each map's odd last row and column, so on 28×28 inputs rows
    /// and columns 26 and 27 reach nothing), pooling before ReLU (the same value:
    /// ReLU is monotone) on a quarter of the values, and channels-last throughout.
    /// 2.5× faster than `Net::forward` for the forward and backward of a stamped
    /// batch here; a test checks the logits are the same.
    pub fn forward(&self, x: &Tensor) -> Tensor {
        let used = used_input_side(x.size()[2]).min(used_input_side(x.size()[3]));
        // A one-channel image laid out channels-last makes conv1 answer channels-last,
        // saving the copy of its 32-channel output into that layout.
        let mut h = channels_last(&x.narrow(2, 0, used).narrow(3, 0, used));
        for layer in Layer::ALL {
            let (w, b) = (&self.weights[layer.position()], &self.biases[layer.position()]);
            h = if layer.is_conv() {
                channels_last(&h.conv2d(w, Some(b), [1, 1], [0, 0], [1, 1], 1))
                    .max_pool2d([2, 2], [2, 2], [0, 0], [1, 1], false)
                    .relu()
            } else if layer.next().is_some() {
                h.flatten(1, -1).linear(w, Some(b)).relu()
            } else {
                h.linear(w, Some(b))
            };
        }
        h
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

/// How many leading rows (or columns) of an input `side` wide the logits depend
/// on: each convolution (kernel k, stride 1) needs k − 1 more than it outputs, and
/// each 2×2 floor-mode pooling reads twice the rows it outputs.
pub fn used_input_side(side: i64) -> i64 {
    let convs: Vec<i64> = Layer::ALL.iter().filter(|l| l.is_conv()).map(|l| l.weight_shape()[2]).collect();
    // Forward: the size after each conv + pool.
    let mut sizes = Vec::new();
    let mut n = side;
    for &k in &convs {
        n = (n - k + 1) / 2;
        sizes.push(n);
    }
    // Back: the last pooled size needs 2n conv rows, which need 2n + k − 1 inputs.
    let mut used = *sizes.last().unwrap_or(&side);
    for &k in convs.iter().rev() {
        used = 2 * used + k - 1;
    }
    used.min(side)
}

/// `(1 − m)·x + m·p`: Neural Cleanse's stamp, in raw pixel space.
/// `raw` is `[B, H, W]`, `mask` and `pattern` are `[L, H, W]`; the result is
/// `[L·B, 1, H, W]`, every image stamped with every label's trigger, label-major.
pub fn stamp_all(raw: &Tensor, mask: &Tensor, pattern: &Tensor) -> Tensor {
    let (labels, batch) = (mask.size()[0], raw.size()[0]);
    let (h, w) = (raw.size()[1], raw.size()[2]);
    let kept = mask.ones_like().subtract(mask).unsqueeze(1) * raw.unsqueeze(0);
    let stamped = kept + (mask * pattern).unsqueeze(1);
    stamped.view([labels * batch, 1, h, w])
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
