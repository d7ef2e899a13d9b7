//! The training loss and its gradient with respect to every parameter: autograd
//! through the lean forward, which computes the plain forward's function with
//! less arithmetic (`lean.rs`).
//!
//! Differentiating `Net::forward` instead gave gradients up to 5 % of a block's
//! largest entry away from the f64 gradient (conv2's weights and bias, on a
//! random batch); its forward values agree to 1e-7, so the difference lies in
//! libtorch's backward of that channels-last graph (conv1's output copied to
//! channels-last, 13×13 maps into conv2), which was not pinned down further. The
//! lean forward's gradient matches the f64 one to 1e-6 relative, and
//! `tests/engine.rs` holds it there.

use super::lean::lean_forward;
use super::model::Net;
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
    let (weights, biases) = net.weights_and_biases();
    let logits = lean_forward(x, weights, biases);
    let loss = logits.cross_entropy_for_logits(y);
    let parameters: Vec<&Tensor> = net.parameters().collect();
    let grads = Tensor::run_backward(&[&loss], &parameters, false, false);
    let flat: Vec<Tensor> = grads.iter().map(|g| g.flatten(0, -1)).collect();
    Backprop { logits: logits.detach(), loss: loss.detach(), gradient: Tensor::cat(&flat, 0) }
}
