//! A graph read at one node for Grad-CAM (`engine::attribute`): the node's
//! output, kept through the executor's pass (so it is not fused away), and the
//! logits computed from it. The default node is the last convolution.

use super::exec::Executor;
use super::features::single_node;
use super::preset::last_conv;
use crate::engine::attribute::gradcam::LayerNet;
use tch::Tensor;

pub struct GraphLayer<'a> {
    pub exec: &'a Executor,
    pub node: usize,
}

impl LayerNet for GraphLayer<'_> {
    fn activation_and_logits(&self, raw: &Tensor) -> (Tensor, Tensor) {
        let (logits, mut kept) = self.exec.logits_and(raw, &[], &[self.node]);
        (kept.swap_remove(0), logits)
    }
}

/// The node `site` names (default: the last convolution); it must output maps
/// `[C, H, W]` for Grad-CAM to average over positions.
pub fn cam_node(exec: &Executor, site: Option<&str>) -> Result<usize, String> {
    let name = match site {
        Some(site) => site.to_string(),
        None => last_conv(&exec.spec).ok_or("the graph has no convolution; name Grad-CAM's node with --node")?,
    };
    let node = single_node(&name, exec)?;
    if exec.shapes[node].len() != 3 {
        return Err(format!(
            "Grad-CAM needs a node with [C, H, W] maps; {} outputs {:?}",
            exec.spec.nodes[node].name, exec.shapes[node]
        ));
    }
    Ok(node)
}
