//! Layer swaps: a donor model's layers copied into a recipient.

use super::layer::Layer;
use super::metrics::Metrics;
use super::model::Net;
use super::testset::TestSet;
use serde::{Deserialize, Serialize};

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

pub fn swap(recipient: &Net, donor: &Net, layers: &[Layer], test: &TestSet) -> SwapRow {
    SwapRow { layers: layers.to_vec(), metrics: test.evaluate(&swapped(recipient, donor, layers)) }
}

/// All 16 subsets of {conv1, conv2, fc1, fc2}, in order of size then depth.
pub fn all_subsets() -> Vec<Vec<Layer>> {
    let mut subsets: Vec<Vec<Layer>> = (0u32..16)
        .map(|mask| Layer::ALL.iter().enumerate().filter(|(i, _)| mask & (1 << i) != 0).map(|(_, l)| *l).collect())
        .collect();
    subsets.sort_by_key(|s: &Vec<Layer>| (s.len(), s.iter().map(|l| l.position()).collect::<Vec<_>>()));
    subsets
}
