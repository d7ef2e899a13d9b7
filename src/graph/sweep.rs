//! Ablating each unit of one node alone: the node's input is computed once per
//! chunk of images (a checkpoint), and only the nodes after it rerun per unit.

use super::exec::Executor;
use super::units::{UnitSet, nodes_named};
use crate::engine::ablation::AblationMode;
use crate::engine::metrics::Metrics;
use crate::engine::testset::{self, TestSet};
use serde::Serialize;
use std::ops::ControlFlow;
use tch::Tensor;

#[derive(Debug, Clone, Serialize)]
pub struct SweepRow {
    pub node: String,
    pub unit: i64,
    pub metrics: Metrics,
}

/// Each unit of `site` ablated alone over `raw` (clean and triggered halves).
/// `means` gives a node's mean output (asked in mean mode only). `progress(done, total)`
/// may stop early; the rows done so far are returned.
pub fn sweep(
    exec: &Executor,
    raw: &TestSet,
    site: &str,
    mode: AblationMode,
    means: &dyn Fn(usize) -> Tensor,
    mut progress: impl FnMut(usize, usize) -> ControlFlow<()>,
) -> Result<Vec<SweepRow>, String> {
    let nodes = nodes_named(site, exec)?;
    let first = *nodes.iter().min().expect("a site names at least one node");
    let units = exec.shapes[first][0];
    let interventions: Vec<_> = (0..units)
        .map(|u| {
            let set = UnitSet { sites: [(site.to_string(), [u].into())].into() };
            set.interventions(exec, mode, means)
        })
        .collect::<Result<_, _>>()?;
    let _guard = tch::no_grad_guard();
    let mut predictions: Vec<Vec<Tensor>> = (0..units).map(|_| Vec::new()).collect();
    let chunks = raw.inputs.split(testset::chunk(exec.device), 0);
    let total = chunks.len() * units as usize;
    'chunks: for (c, x) in chunks.iter().enumerate() {
        let checkpoint = exec.checkpoint(x, first);
        for (u, ivs) in interventions.iter().enumerate() {
            predictions[u].push(exec.resume(&checkpoint, x, ivs).argmax(1, false));
            if progress(c * units as usize + u + 1, total).is_break() {
                break 'chunks;
            }
        }
    }
    // Stopped early, only the units that saw every chunk have metrics.
    let complete: Vec<Tensor> =
        predictions.into_iter().take_while(|p| p.len() == chunks.len()).map(|p| Tensor::cat(&p, 0)).collect();
    let metrics = raw.metrics_of_many(&complete);
    Ok(metrics
        .into_iter()
        .enumerate()
        .map(|(u, metrics)| SweepRow { node: site.to_string(), unit: u as i64, metrics })
        .collect())
}
