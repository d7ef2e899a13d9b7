//! Ablation sets and modes, the constants an ablated unit is replaced by, and the
//! study's slow reference path (copy the model, zero, evaluate everything).

use super::layer::Layer;
use super::model::Net;
use super::testset::TestSet;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;
use tch::{Device, Kind, Tensor};

/// How an ablated unit is removed. Each mode replaces the unit's block output (what
/// the next layer sees) by an input-independent constant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AblationMode {
    /// The study's way: zero `weight[k]`, keep `bias[k]`; the unit outputs its bias.
    #[default]
    Weight,
    /// The unit's activation is 0.
    Zero,
    /// The unit's activation is its mean over the clean test set (per position).
    Mean,
}

impl AblationMode {
    pub const ALL: [AblationMode; 3] = [AblationMode::Weight, AblationMode::Zero, AblationMode::Mean];

    pub fn name(self) -> &'static str {
        match self {
            AblationMode::Weight => "weight",
            AblationMode::Zero => "zero",
            AblationMode::Mean => "mean",
        }
    }

    /// The next mode in `ALL`, wrapping (the UI cycles with one key).
    pub fn cycle(self) -> AblationMode {
        let i = AblationMode::ALL.iter().position(|m| *m == self).unwrap_or(0);
        AblationMode::ALL[(i + 1) % AblationMode::ALL.len()]
    }
}

crate::named_enum!(AblationMode, "ablation mode", "weight, zero or mean");

/// Units ablated together, possibly across layers: the study's layers, or any
/// other kind of site (a graph's nodes, `graph::circuit::GraphSite`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(bound(deserialize = "S: Ord + Deserialize<'de>"))]
pub struct AblationSet<S = Layer> {
    pub units: BTreeMap<S, BTreeSet<usize>>,
}

impl<S> Default for AblationSet<S> {
    fn default() -> Self {
        AblationSet { units: BTreeMap::new() }
    }
}

impl<S: Ord + Clone> AblationSet<S> {
    pub fn single(layer: S, unit: usize) -> AblationSet<S> {
        let mut set = AblationSet::default();
        set.insert(layer, unit);
        set
    }

    pub fn of(layer: S, units: &[usize]) -> AblationSet<S> {
        let mut set = AblationSet::default();
        for &u in units {
            set.insert(layer.clone(), u);
        }
        set
    }

    pub fn insert(&mut self, layer: S, unit: usize) {
        self.units.entry(layer).or_default().insert(unit);
    }

    /// Adds the unit if absent, removes it if present; returns whether it is now in.
    pub fn toggle(&mut self, layer: S, unit: usize) -> bool {
        let units = self.units.entry(layer.clone()).or_default();
        let now_in = units.insert(unit) || !units.remove(&unit);
        if units.is_empty() {
            self.units.remove(&layer);
        }
        now_in
    }

    pub fn contains(&self, layer: S, unit: usize) -> bool {
        self.units.get(&layer).is_some_and(|u| u.contains(&unit))
    }

    pub fn is_empty(&self) -> bool {
        self.units.values().all(BTreeSet::is_empty)
    }

    pub fn len(&self) -> usize {
        self.units.values().map(BTreeSet::len).sum()
    }

    pub fn units_in(&self, layer: S) -> Vec<usize> {
        self.units.get(&layer).map(|u| u.iter().copied().collect()).unwrap_or_default()
    }
}

impl AblationSet {
    /// The earliest layer with an ablated unit: everything before it is unchanged.
    pub fn first_layer(&self) -> Option<Layer> {
        self.units.iter().find(|(_, u)| !u.is_empty()).map(|(l, _)| *l)
    }

    /// Rejects units the layer does not have.
    pub fn validate(&self) -> Result<(), String> {
        for (layer, units) in &self.units {
            if let Some(bad) = units.iter().find(|&&u| u >= layer.units()) {
                return Err(format!("{layer} has units 0..{}, not {bad}", layer.units() - 1));
            }
        }
        Ok(())
    }
}

impl<S: fmt::Display + Ord + Clone> fmt::Display for AblationSet<S> {
    /// `conv1:9,15 conv2:37`, or `none`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("none");
        }
        let parts: Vec<String> = self
            .units
            .iter()
            .filter(|(_, u)| !u.is_empty())
            .map(|(l, u)| format!("{l}:{}", u.iter().map(usize::to_string).collect::<Vec<_>>().join(",")))
            .collect();
        f.write_str(&parts.join(" "))
    }
}

impl FromStr for AblationSet {
    type Err = String;
    /// Parses `conv1:9,15 conv2:37` (layers separated by spaces or `;`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut set = AblationSet::default();
        for part in s.split([' ', ';']).filter(|p| !p.trim().is_empty()) {
            let (layer, units) =
                part.split_once(':').ok_or_else(|| format!("'{part}' is not LAYER:UNIT[,UNIT…] (e.g. conv1:9,15)"))?;
            let layer: Layer = layer.parse()?;
            for unit in units.split(',').filter(|u| !u.trim().is_empty()) {
                let unit = unit.trim().parse().map_err(|_| format!("'{unit}' in '{part}' is not a unit number"))?;
                set.insert(layer, unit);
            }
        }
        set.validate()?;
        Ok(set)
    }
}

/// Per layer, each unit's mean block output over the clean images `clean`
/// (`[units, …]` as `Layer::output_shape`): what "mean" ablation substitutes.
pub fn clean_means(net: &Net, clean: &Tensor) -> Vec<Tensor> {
    let _guard = tch::no_grad_guard();
    let mut sums: Vec<Tensor> =
        Layer::ALL.iter().map(|l| Tensor::zeros(l.output_shape(), (Kind::Float, clean.device()))).collect();
    for x in clean.split(super::testset::chunk(clean.device()), 0) {
        let mut h = x;
        for layer in Layer::ALL {
            h = net.block(layer, &h);
            sums[layer.position()] += h.sum_dim_intlist(0, false, Kind::Float);
        }
    }
    sums.into_iter().map(|s| s / clean.size()[0].max(1) as f64).collect()
}

/// What ablated units of `layer` output instead, shaped `[units.len(), …]` like
/// the layer's block output.
pub fn replacement(net: &Net, means: &[Tensor], layer: Layer, index: &Tensor, mode: AblationMode) -> Tensor {
    let mut shape = layer.output_shape();
    shape[0] = index.size()[0];
    match mode {
        AblationMode::Zero => Tensor::zeros(shape, (Kind::Float, net.device())),
        AblationMode::Mean => means[layer.position()].index_select(0, index),
        AblationMode::Weight => {
            // With a zero kernel the unit's output is its bias, through ReLU where
            // the layer has one; pooling a constant map leaves it unchanged.
            let bias = net.bias(layer).detach().index_select(0, index);
            let bias = if layer == Layer::Fc2 { bias } else { bias.relu() };
            let view: Vec<i64> = std::iter::once(shape[0]).chain(std::iter::repeat_n(1, shape.len() - 1)).collect();
            bias.view(view.as_slice()).expand(shape, false).contiguous()
        }
    }
}

pub fn unit_index(units: &[usize], device: Device) -> Tensor {
    let units: Vec<i64> = units.iter().map(|&u| u as i64).collect();
    Tensor::from_slice(&units).to_device(device)
}

/// The study's procedure, kept as the ground truth the fast engine is tested
/// against: "weight" copies the model and zeroes the kernels; "zero" and "mean"
/// overwrite block outputs during a full forward pass. Returns `[2N]` predictions.
pub fn reference_predictions(
    net: &Net,
    means: &[Tensor],
    test: &TestSet,
    set: &AblationSet,
    mode: AblationMode,
) -> Tensor {
    let model = AblatedModel::new(net, means, set, mode);
    test.predict_with(|x| model.block_outputs(x).pop().expect("four blocks"))
}

/// A model with a set ablated the slow, obvious way.
pub struct AblatedModel<'a> {
    net: &'a Net,
    /// The weight-mode copy with zeroed kernels.
    zeroed: Option<Net>,
    overwrites: Vec<(Layer, Tensor, Tensor)>,
}

impl<'a> AblatedModel<'a> {
    pub fn new(net: &'a Net, means: &[Tensor], set: &AblationSet, mode: AblationMode) -> AblatedModel<'a> {
        if mode == AblationMode::Weight {
            let mut copy = net.duplicate();
            for (&layer, units) in &set.units {
                for &unit in units {
                    copy.zero_unit_weights(layer, unit);
                }
            }
            return AblatedModel { net, zeroed: Some(copy), overwrites: Vec::new() };
        }
        let overwrites = set
            .units
            .iter()
            .filter(|(_, u)| !u.is_empty())
            .map(|(&layer, units)| {
                let index = unit_index(&units.iter().copied().collect::<Vec<_>>(), net.device());
                let values = replacement(net, means, layer, &index, mode);
                (layer, index, values)
            })
            .collect();
        AblatedModel { net, zeroed: None, overwrites }
    }

    /// Every block's output (what the next layer sees); the last is the logits.
    pub fn block_outputs(&self, x: &Tensor) -> Vec<Tensor> {
        let net = self.zeroed.as_ref().unwrap_or(self.net);
        let mut outputs: Vec<Tensor> = Vec::with_capacity(4);
        for layer in Layer::ALL {
            let input = outputs.last().unwrap_or(x);
            let mut h = net.block(layer, input);
            if let Some((_, index, values)) = self.overwrites.iter().find(|(l, _, _)| *l == layer) {
                h = overwrite_units(h, index, values);
            }
            outputs.push(h);
        }
        outputs
    }
}
/// `h[:, index] = values` for every example, on a tensor this call owns.
pub fn overwrite_units(mut h: Tensor, index: &Tensor, values: &Tensor) -> Tensor {
    let mut shape = values.size();
    shape.insert(0, h.size()[0]);
    let _ = h.index_copy_(1, index, &values.unsqueeze(0).expand(shape, false));
    h
}
