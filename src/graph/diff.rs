//! Weight differences between two models of one graph: per parametrised module
//! (weights and biases together; a batch norm's running statistics apart) and
//! per output unit.

use super::spec::{GraphSpec, Op, op_name};
use super::weights::{Weights, parametrised_modules};
use crate::engine::diff::{DiffNorms, norms, unit_norms};
use serde::Serialize;
use tch::{Device, Kind, Tensor};

#[derive(Debug, Clone, Serialize)]
pub struct ModuleDiff {
    pub module: String,
    /// The op of the module's nodes (`conv2d`, `linear`, `batch_norm2d`).
    pub op: String,
    /// Over its weight and bias (a batch norm's affine ones).
    pub total: DiffNorms,
    /// A batch norm's running mean and variance together.
    pub statistics: Option<DiffNorms>,
    /// Per output unit: its slice of the weight and its bias.
    pub units: Vec<DiffNorms>,
}

/// `b − a` for every parametrised module of `spec`, in graph order.
pub fn diff(spec: &GraphSpec, a: &Weights, b: &Weights) -> Vec<ModuleDiff> {
    parametrised_modules(spec).into_iter().map(|m| module_diff(spec, a, b, &m)).collect()
}

/// `b − a` for one module (its path).
pub fn module_diff(spec: &GraphSpec, a: &Weights, b: &Weights, module: &str) -> ModuleDiff {
    let _guard = tch::no_grad_guard();
    let op = &spec.nodes.iter().find(|n| n.module() == module).expect("a module of the graph").op;
    let delta = |suffix: &str| {
        let key = format!("{module}.{suffix}");
        a.contains(&key).then(|| b.get(&key).to_device(Device::Cpu) - a.get(&key).to_device(Device::Cpu))
    };
    let units = match op {
        Op::Conv2d { out_channels, .. } => *out_channels,
        Op::Linear { out_features, .. } => *out_features,
        Op::BatchNorm2d { channels, .. } => *channels,
        _ => 0,
    };
    let learned: Vec<Tensor> =
        ["weight", "bias"].iter().filter_map(|s| delta(s)).map(|d| d.reshape([units, -1])).collect();
    let (total, per_unit) = if learned.is_empty() {
        (norms(&[]), vec![norms(&[]); units as usize])
    } else {
        unit_norms(&Tensor::cat(&learned, 1))
    };
    let statistics = matches!(op, Op::BatchNorm2d { .. }).then(|| {
        let stats: Vec<Tensor> = ["running_mean", "running_var"].iter().filter_map(|s| delta(s)).collect();
        let values = Vec::<f64>::try_from(Tensor::cat(&stats, 0).to_kind(Kind::Double)).expect("a 1-D tensor");
        norms(&values)
    });
    ModuleDiff { module: module.to_string(), op: op_name(op), total, statistics, units: per_unit }
}
