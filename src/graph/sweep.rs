//! Ablating each unit of one node alone: the node's input is computed once per
//! chunk of images (a checkpoint), and only the nodes after it rerun per unit.

use super::exec::{Executor, Replacement};
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
    // One node: each unit as a change to the unablated pass (exec/delta.rs).
    // A module called more than once: the calls' nodes rerun from the first.
    let replacements: Option<Vec<Tensor>> = (nodes.len() == 1).then(|| {
        let shape = &exec.shapes[first][1..];
        let zeros = || Tensor::zeros(shape, (tch::Kind::Float, exec.device));
        interventions
            .iter()
            .map(|ivs| match &ivs[0].replace {
                Replacement::Zero => zeros(),
                Replacement::Values(v) => v.get(0),
                Replacement::PerImage(_) => unreachable!("an ablation replaces by constants"),
            })
            .collect()
    });
    let interventions = &interventions;
    'chunks: for (c, x) in chunks.iter().enumerate() {
        let mut logits_of: Box<dyn FnMut(usize) -> Tensor> = match &replacements {
            Some(replacements) => {
                let base = exec.base_pass(x);
                Box::new(move |u| exec.logits_with_unit(&base, first, u as i64, &replacements[u]))
            }
            None => {
                let checkpoint = exec.checkpoint(x, first);
                Box::new(move |u| exec.resume(&checkpoint, x, &interventions[u]))
            }
        };
        for (u, unit_predictions) in predictions.iter_mut().enumerate() {
            unit_predictions.push(logits_of(u).argmax(1, false));
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
