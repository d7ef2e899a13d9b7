//! Layer swaps: a donor model's layers copied into a recipient.

use super::layer::Layer;
use super::lean;
use super::metrics::Metrics;
use super::model::Net;
use super::testset::{CHUNK, TestSet};
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

/// The slow, obvious path: copy the layers, evaluate the copy (every image through
/// the lean forward, as `swap_many` computes it).
pub fn swap(recipient: &Net, donor: &Net, layers: &[Layer], test: &TestSet) -> SwapRow {
    let net = swapped(recipient, donor, layers);
    SwapRow { layers: layers.to_vec(), metrics: test.metrics(&test.predict_with(|x| net.lean_forward(x))) }
}

/// Many swaps at once, sharing what their layers have in common: the subsets are
/// walked as a tree of choices (each layer from the recipient or the donor) and a
/// prefix of layers is computed once for every subset that starts with it. All 16
/// subsets cost conv1 twice and conv2 four times instead of sixteen times each;
/// the values are the ones `swap` computes, op for op.
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
    let mut predictions: Vec<Vec<Tensor>> = subsets.iter().map(|_| Vec::new()).collect();
    let total = test.inputs.size()[0] as usize;
    let mut done = 0;
    for x in test.inputs.split(CHUNK, 0) {
        let mut walk = Walk { nets: [recipient, donor], choices: &choices, predictions: &mut predictions };
        walk.descend(&mut Vec::new(), &lean::lean_input(&x));
        done += x.size()[0] as usize;
        // A stop that comes with the last chunk comes too late to save anything.
        if progress(done, total).is_break() && done < total {
            return None;
        }
    }
    let rows = subsets
        .iter()
        .zip(predictions)
        .map(|(layers, chunks)| SwapRow { layers: layers.clone(), metrics: test.metrics(&Tensor::cat(&chunks, 0)) })
        .collect();
    Some(rows)
}

/// One chunk's walk down the tree of layer choices.
struct Walk<'a> {
    /// The recipient (`false`) and the donor (`true`).
    nets: [&'a Net; 2],
    /// Per subset, per layer: taken from the donor.
    choices: &'a [Vec<bool>],
    predictions: &'a mut [Vec<Tensor>],
}

impl Walk<'_> {
    /// `prefix` holds the choices made for the layers before `h`'s.
    fn descend(&mut self, prefix: &mut Vec<bool>, h: &Tensor) {
        let depth = prefix.len();
        let matching: Vec<usize> =
            (0..self.choices.len()).filter(|&i| self.choices[i][..depth] == prefix[..]).collect();
        if depth == Layer::ALL.len() {
            for i in matching {
                self.predictions[i].push(h.argmax(1, false));
            }
            return;
        }
        for from_donor in [false, true] {
            if matching.iter().any(|&i| self.choices[i][depth] == from_donor) {
                let next = lean::net_block(self.nets[from_donor as usize], Layer::ALL[depth], h);
                prefix.push(from_donor);
                self.descend(prefix, &next);
                prefix.pop();
            }
        }
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
