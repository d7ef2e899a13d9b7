//! The test images that excite one unit of a node most and least: the unit's
//! mean activation (the spatial mean of its output channel) per image, clean and
//! triggered pooled.

use super::exec::Executor;
use super::units::nodes_named;
use crate::engine::probe::{FeatureHit, extremes};
use crate::engine::testset::{self, TestSet};
use serde::Serialize;
use tch::{Device, Kind, Tensor};

#[derive(Debug, Clone, Serialize)]
pub struct GraphFeatureReport {
    pub node: String,
    pub unit: i64,
    pub top: Vec<FeatureHit>,
    pub bottom: Vec<FeatureHit>,
}

/// The one node `site` names (a node, or a module called once).
pub fn single_node(site: &str, exec: &Executor) -> Result<usize, String> {
    let nodes = nodes_named(site, exec)?;
    if let [node] = nodes[..] {
        return Ok(node);
    }
    let names: Vec<&str> = nodes.iter().map(|&n| exec.spec.nodes[n].name.as_str()).collect();
    Err(format!("{site} is called {} times; name one call ({})", nodes.len(), names.join(", ")))
}

/// Per image of `raw` (`[2N]`), each unit's mean activation at `node`: `[2N, units]` on the CPU.
pub fn unit_scores(exec: &Executor, raw: &TestSet, node: usize) -> Tensor {
    let _guard = tch::no_grad_guard();
    let parts: Vec<Tensor> = raw
        .inputs
        .split(testset::chunk(exec.device), 0)
        .iter()
        .map(|x| {
            // The pass stops at the node: nothing after it is needed.
            let out = exec.checkpoint(x, node).output().shallow_clone();
            let out = if out.dim() > 2 { out.flatten(2, -1).mean_dim(2, false, Kind::Float) } else { out };
            out.to_device(Device::Cpu)
        })
        .collect();
    Tensor::cat(&parts, 0)
}

/// The `k` images of `raw` that excite `unit` of `site` most and the `k` that excite it least.
pub fn features(exec: &Executor, raw: &TestSet, site: &str, unit: i64, k: usize) -> Result<GraphFeatureReport, String> {
    let node = single_node(site, exec)?;
    let units = exec.shapes[node][0];
    if !(0..units).contains(&unit) {
        return Err(format!("{site} has units 0..{}, not {unit}", units - 1));
    }
    let (top, bottom) = extremes(&unit_scores(exec, raw, node).select(1, unit), &raw.labels, k);
    Ok(GraphFeatureReport { node: site.to_string(), unit, top, bottom })
}
