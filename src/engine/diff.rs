//! Weight differences between two models, per layer and per output unit.

use super::layer::Layer;
use super::model::Net;
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

/// Norms of a difference `b − a` over some set of parameters.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct DiffNorms {
    /// Σ|Δ|.
    pub l1: f64,
    /// √ΣΔ².
    pub l2: f64,
    /// max|Δ|.
    pub max: f64,
    /// Σ|Δ| / count, comparable across layers of different size.
    pub mean_abs: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerDiff {
    pub layer: Layer,
    pub total: DiffNorms,
    /// Per output unit: its kernel (weight[k]) and its bias together.
    pub units: Vec<DiffNorms>,
}

/// `b − a` for every layer.
pub fn diff(a: &Net, b: &Net) -> Vec<LayerDiff> {
    let _guard = tch::no_grad_guard();
    Layer::ALL
        .iter()
        .map(|&layer| {
            let units = layer.units() as i64;
            let dw = (b.weight(layer) - a.weight(layer)).reshape([units, -1]);
            let db = (b.bias(layer) - a.bias(layer)).reshape([units, 1]);
            let (total, units) = unit_norms(&Tensor::cat(&[dw, db], 1));
            LayerDiff { layer, total, units }
        })
        .collect()
}

/// The norms of a difference laid out `[units, values per unit]`: over all of it,
/// and per unit (row).
pub fn unit_norms(per_unit: &Tensor) -> (DiffNorms, Vec<DiffNorms>) {
    let per_unit = per_unit.to_device(Device::Cpu).to_kind(Kind::Double);
    let rows: Vec<Vec<f64>> = Vec::try_from(&per_unit).expect("a 2-D tensor");
    let all: Vec<f64> = rows.iter().flatten().copied().collect();
    (norms(&all), rows.iter().map(|r| norms(r)).collect())
}

pub fn norms(values: &[f64]) -> DiffNorms {
    let l1: f64 = values.iter().map(|v| v.abs()).sum();
    DiffNorms {
        l1,
        l2: values.iter().map(|v| v * v).sum::<f64>().sqrt(),
        max: values.iter().fold(0.0, |m, v| m.max(v.abs())),
        mean_abs: if values.is_empty() { 0.0 } else { l1 / values.len() as f64 },
    }
}
