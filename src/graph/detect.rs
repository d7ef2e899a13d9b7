//! A graph read at one node for the training-set scans (`engine::detect`): the
//! executor runs up to the node and stops. The default node is what the last
//! Linear reads, the penultimate features.

use super::exec::Executor;
use super::features::single_node;
use super::spec::{INPUT, Op};
use crate::engine::detect::FeatureNet;
use tch::{Device, Tensor};

pub struct GraphFeatures<'a> {
    pub exec: &'a Executor,
    pub node: usize,
}

impl FeatureNet for GraphFeatures<'_> {
    fn features(&self, raw: &Tensor) -> Tensor {
        self.exec.checkpoint(raw, self.node).output().flatten(1, -1)
    }

    fn device(&self) -> Device {
        self.exec.device
    }
}

/// The node `site` names, or by default the input of the last Linear.
pub fn feature_node(exec: &Executor, site: Option<&str>) -> Result<usize, String> {
    if let Some(site) = site {
        return single_node(site, exec);
    }
    let last = exec.spec.nodes.iter().rev().find(|n| matches!(n.op, Op::Linear { .. }));
    let read = last.map(|n| n.inputs[0].as_str()).filter(|&name| name != INPUT);
    read.and_then(|name| exec.spec.index_of(name)).ok_or_else(|| {
        "the graph has no Linear layer reading another node's output; name the features' node with --node".to_string()
    })
}
