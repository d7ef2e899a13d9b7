//! Feature visualisation on any graph: the input that most excites one unit
//! of a node (its output channel's spatial mean), by the study's optimisation
//! (`engine::featvis::optimise_input`) through the executor, the pass stopped
//! at the node.

use super::exec::Executor;
use super::features::single_node;
use crate::engine::featvis::{Optimum, VisConfig, optimise_input};
use serde::Serialize;
use tch::{Kind, Tensor};

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GraphVisualization {
    pub node: String,
    pub unit: i64,
    /// The image in raw pixels [0, 1], `[channels, height, width]` row-major.
    pub image: Vec<f32>,
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    /// The unit's activation on the starting image and on the result (no jitter).
    pub start_activation: f64,
    pub activation: f64,
}

/// Each image's activation of `unit` at `node` (`[N]`): the pass runs up to
/// the node only, differentiable with respect to the images.
pub fn unit_activation(exec: &Executor, x: &Tensor, node: usize, unit: i64) -> Tensor {
    let out = exec.checkpoint(x, node).output().select(1, unit);
    if out.dim() > 1 { out.flatten(1, -1).mean_dim(1, false, Kind::Float) } else { out }
}

/// Optimises an image of the graph's input shape for `unit` of `site`.
/// Deterministic for a seed at a fixed thread count.
pub fn visualize(exec: &Executor, site: &str, unit: i64, cfg: &VisConfig) -> Result<GraphVisualization, String> {
    cfg.validate()?;
    let node = single_node(site, exec)?;
    let units = exec.shapes[node][0];
    if !(0..units).contains(&unit) {
        return Err(format!("{site} has units 0..{}, not {unit}", units - 1));
    }
    let shape = exec.spec.input;
    let activation = |x: &Tensor| unit_activation(exec, x, node, unit);
    let Optimum { image, start_activation, activation } = optimise_input(&activation, shape, exec.device, cfg);
    let [channels, height, width] = shape.map(|d| d as usize);
    Ok(GraphVisualization {
        node: site.to_string(),
        unit,
        image,
        channels,
        height,
        width,
        start_activation,
        activation,
    })
}
