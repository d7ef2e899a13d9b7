//! Layer swaps: a donor model's layers copied into a recipient.

use super::layer::Layer;
use super::lean;
use super::metrics::Metrics;
use super::model::Net;
use super::testset::{TestSet, chunk};
use serde::{Deserialize, Serialize};
use std::ops::ControlFlow;
use tch::Tensor;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SwapRow {
    /// Layers taken from the donor (empty: the recipient unchanged).
    pub layers: Vec<Layer>,
    pub metrics: Metrics,
}

/// `recipient` with `layers` (weight and bias) copied from `donor`.
pub fn swapped(recipient: &Net, donor: &Net, layers: &[Layer]) -> Net {
    let mut net = recipient.duplicate();
    for &layer in layers {
        net.copy_layer_from(donor, layer);
    }
    net
}

/// The slow, obvious path: copy the layers, evaluate the copy.
pub fn swap(recipient: &Net, donor: &Net, layers: &[Layer], test: &TestSet) -> SwapRow {
    SwapRow { layers: layers.to_vec(), metrics: test.evaluate(&swapped(recipient, donor, layers)) }
}

/// Many swaps at once, sharing what their layers have in common: the subsets are
/// walked as a tree of choices (each layer from the recipient or the donor) and a
/// prefix of layers is computed once for every subset that starts with it. All 16
/// subsets cost conv1 twice and conv2 four times instead of sixteen times each.
/// Like every evaluation (`lean`), a triggered image is recomputed only where its
/// trigger reaches; the values are the ones `swap` computes, op for op.
pub fn swap_many(recipient: &Net, donor: &Net, subsets: &[Vec<Layer>], test: &TestSet) -> Vec<SwapRow> {
    swap_many_until(recipient, donor, subsets, test, |_, _| ControlFlow::Continue(())).unwrap_or_default()
}

/// `swap_many`, reporting `(images done, images in all)` after each chunk of the
/// test set; `None` when `progress` breaks (nothing is measured on part of a set).
pub fn swap_many_until(
    recipient: &Net,
    donor: &Net,
    subsets: &[Vec<Layer>],
    test: &TestSet,
    mut progress: impl FnMut(usize, usize) -> ControlFlow<()>,
) -> Option<Vec<SwapRow>> {
    let choices: Vec<Vec<bool>> =
        subsets.iter().map(|layers| Layer::ALL.iter().map(|l| layers.contains(l)).collect()).collect();
    let _guard = tch::no_grad_guard();
    // Per subset, per half (clean, triggered), one prediction tensor per chunk.
    let mut predictions: Vec<[Vec<Tensor>; 2]> = subsets.iter().map(|_| Default::default()).collect();
    let (n, total) = (test.len() as i64, test.inputs.size()[0] as usize);
    let window = lean::TriggerWindow::of(test);
    let mut done = 0;
    let step = chunk(test.device());
    for start in (0..n).step_by(step as usize) {
        let len = step.min(n - start);
        let triggered = test.inputs.narrow(0, n + start, len);
        let mut walk = Walk {
            nets: [recipient, donor],
            choices: &choices,
            triggered: (&triggered, window.as_ref()),
            predictions: &mut predictions,
        };
        walk.descend(&mut Vec::new(), &lean::lean_input(&test.inputs.narrow(0, start, len)), None);
        done += 2 * len as usize;
        // A stop that comes with the last chunk comes too late to save anything.
        if progress(done, total).is_break() && done < total {
            return None;
        }
    }
    let rows = subsets
        .iter()
        .zip(predictions)
        .map(|(layers, halves)| {
            let chunks: Vec<Tensor> = halves.into_iter().flatten().collect();
            SwapRow { layers: layers.clone(), metrics: test.metrics(&Tensor::cat(&chunks, 0)) }
        })
        .collect();
    Some(rows)
}

/// One chunk's walk down the tree of layer choices.
struct Walk<'a> {
    /// The recipient (`false`) and the donor (`true`).
    nets: [&'a Net; 2],
    /// Per subset, per layer: taken from the donor.
    choices: &'a [Vec<bool>],
    /// The chunk's triggered twins (raw images) and where they differ.
    triggered: (&'a Tensor, Option<&'a lean::TriggerWindow>),
    predictions: &'a mut [[Vec<Tensor>; 2]],
}

impl Walk<'_> {
    /// `prefix` holds the choices made for the layers before `h`'s; `twin` is the
    /// triggered images' activation from the last convolution on (before it, only
    /// the clean images are computed).
    fn descend(&mut self, prefix: &mut Vec<bool>, h: &Tensor, twin: Option<&Tensor>) {
        let depth = prefix.len();
        let matching: Vec<usize> =
            (0..self.choices.len()).filter(|&i| self.choices[i][..depth] == prefix[..]).collect();
        if depth == Layer::ALL.len() {
            let twin = twin.expect("the last convolution computed the triggered twins");
            for i in matching {
                self.predictions[i][0].push(h.argmax(1, false));
                self.predictions[i][1].push(twin.argmax(1, false));
            }
            return;
        }
        for from_donor in [false, true] {
            if matching.iter().any(|&i| self.choices[i][depth] == from_donor) {
                prefix.push(from_donor);
                let (next, next_twin) = self.step(prefix, h, twin);
                self.descend(prefix, &next, next_twin.as_ref());
                prefix.pop();
            }
        }
    }

    /// The block chosen by the last entry of `prefix`, on the clean activation and
    /// its twin; at the last convolution the twin is made from the clean
    /// pre-activation with the trigger's window recomputed through the chosen convolutions.
    fn step(&self, prefix: &[bool], h: &Tensor, twin: Option<&Tensor>) -> (Tensor, Option<Tensor>) {
        let layer = Layer::ALL[prefix.len() - 1];
        let net = self.nets[prefix[prefix.len() - 1] as usize];
        if layer != lean::last_conv() {
            return (lean::net_block(net, layer, h), twin.map(|t| lean::net_block(net, layer, t)));
        }
        let pre = lean::net_preactivation(net, layer, h);
        let (triggered, window) = self.triggered;
        let twin = match window {
            None => pre.shallow_clone(),
            Some(window) => {
                let chosen = |l: Layer| self.nets[*prefix.get(l.position()).unwrap_or(&false) as usize];
                let weights: Vec<Tensor> = Layer::ALL.iter().map(|&l| chosen(l).weight(l).shallow_clone()).collect();
                let biases: Vec<Tensor> = Layer::ALL.iter().map(|&l| chosen(l).bias(l).shallow_clone()).collect();
                window.recompute(&pre, triggered, &weights, &biases)
            }
        };
        (lean::pool_relu(&pre), Some(lean::pool_relu(&twin)))
    }
}

/// All 16 subsets of {conv1, conv2, fc1, fc2}, in order of size then depth.
pub fn all_subsets() -> Vec<Vec<Layer>> {
    let mut subsets: Vec<Vec<Layer>> = (0u32..16)
        .map(|mask| Layer::ALL.iter().enumerate().filter(|(i, _)| mask & (1 << i) != 0).map(|(_, l)| *l).collect())
        .collect();
    subsets.sort_by_key(|s: &Vec<Layer>| (s.len(), s.iter().map(|l| l.position()).collect::<Vec<_>>()));
    subsets
}
