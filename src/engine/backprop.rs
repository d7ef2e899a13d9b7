//! The training loss and its gradient with respect to every parameter.
//!
//! On the CPU the convolution blocks are differentiated by hand: the first
//! (conv1, a shallow reduction) by `conv_pool::training`, which never writes the
//! full pre-activation, the others (conv2, a deep 3×3 reduction) by F(2×2, 3×3)
//! (`winograd::training`), 2.25× less arithmetic than libtorch's convolutions
//! forward, to the input and to the weights. Autograd covers the linear layers
//! and the loss, from the last block's output as a leaf. Elsewhere (a GPU, a CPU
//! without AVX-512) autograd runs through the whole lean forward, which computes
//! the plain forward's function with less arithmetic (`lean.rs`).
//!
//! Differentiating `Net::forward` instead gave gradients up to 5 % of a block's
//! largest entry away from the f64 gradient (conv2's weights and bias, on a
//! random batch); its forward values agree to 1e-7, so the difference lies in
//! libtorch's backward of that channels-last graph (conv1's output copied to
//! channels-last, 13×13 maps into conv2), which was not pinned down further. Both
//! paths here match the f64 gradient to 1e-5 of each block's largest entry, and
//! `tests/engine.rs` holds them there.

use super::conv_pool;
use super::layer::Layer;
use super::lean::{self, lean_forward};
use super::model::Net;
use super::winograd;
use tch::Tensor;

/// One batch's forward and backward pass.
pub struct Backprop {
    pub logits: Tensor,
    /// The mean cross-entropy.
    pub loss: Tensor,
    /// Its gradient, one flat vector in `Net::parameters()` order.
    pub gradient: Tensor,
}

/// The cross-entropy of `net` on images `x` (`[N, 1, H, W]`) with labels `y`, and
/// its gradient (the parameters' own `.grad` is left alone).
pub fn cross_entropy_gradient(net: &Net, x: &Tensor, y: &Tensor) -> Backprop {
    conv_blocks_by_hand(net, x, y).unwrap_or_else(|| through_autograd(net, x, y))
}

/// Autograd through the whole lean forward.
pub fn through_autograd(net: &Net, x: &Tensor, y: &Tensor) -> Backprop {
    let (weights, biases) = net.weights_and_biases();
    let logits = lean_forward(x, weights, biases);
    let loss = logits.cross_entropy_for_logits(y);
    let parameters: Vec<&Tensor> = net.parameters().collect();
    let grads = Tensor::run_backward(&[&loss], &parameters, false, false);
    Backprop { logits: logits.detach(), loss: loss.detach(), gradient: flat(&grads) }
}

/// The convolution blocks by hand, the rest through autograd; `None` where the
/// hand-made blocks do not take this network or device.
fn conv_blocks_by_hand(net: &Net, x: &Tensor, y: &Tensor) -> Option<Backprop> {
    let convs: Vec<Layer> = Layer::ALL.into_iter().filter(|l| l.is_conv()).collect();
    let (&first, deep) = convs.split_first()?;
    let (features, first_saved, deep_saved) = {
        let _guard = tch::no_grad_guard();
        let (mut h, first_saved) =
            conv_pool::training::forward(&lean::lean_input(x), net.weight(first), net.bias(first))?;
        let mut deep_saved = Vec::new();
        for &conv in deep {
            let (output, saved) = winograd::training::forward(&h, net.weight(conv), net.bias(conv))?;
            h = output;
            deep_saved.push(saved);
        }
        (h, first_saved, deep_saved)
    };
    let leaf = features.set_requires_grad(true);
    let dense = &Layer::ALL[convs.len()..];
    let logits = dense.iter().fold(leaf.shallow_clone(), |h, &l| lean::net_block(net, l, &h));
    let loss = logits.cross_entropy_for_logits(y);
    let mut wrt = vec![&leaf];
    wrt.extend(dense.iter().flat_map(|&l| [net.weight(l), net.bias(l)]));
    let mut dense_grads = Tensor::run_backward(&[&loss], &wrt, false, false);
    let _guard = tch::no_grad_guard();
    let mut upstream = dense_grads.remove(0);
    let mut deep_grads = Vec::new();
    for saved in deep_saved.iter().rev() {
        let [to_input, weight, bias] = winograd::training::backward(saved, &upstream);
        deep_grads.push([weight, bias]);
        upstream = to_input;
    }
    let mut grads: Vec<Tensor> = conv_pool::training::backward(&first_saved, &upstream).into();
    grads.extend(deep_grads.into_iter().rev().flatten());
    grads.extend(dense_grads);
    Some(Backprop { logits: logits.detach(), loss: loss.detach(), gradient: flat(&grads) })
}

/// Gradients in parameter order as one flat vector.
fn flat(grads: &[Tensor]) -> Tensor {
    let flat: Vec<Tensor> = grads.iter().map(|g| g.flatten(0, -1)).collect();
    Tensor::cat(&flat, 0)
}
