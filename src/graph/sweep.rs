//! Ablating each unit of one node alone: the node's input is computed once per
//! chunk of images (a checkpoint), and only the nodes after it rerun per unit.

use super::exec::{BasePass, Checkpoint, Executor, Replacement};
use super::units::{UnitSet, nodes_named};
use super::variants::metrics_of_variants;
use crate::engine::ablation::AblationMode;
use crate::engine::metrics::Metrics;
use crate::engine::testset::TestSet;
use serde::Serialize;
use std::ops::ControlFlow;
use tch::Tensor;

/// What a chunk's units share: the unablated pass (one node), or a checkpoint
/// at the first of a module's calls.
enum Shared {
    Base(BasePass),
    Checkpoint(Checkpoint),
}

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
            })
            .collect()
    });
    let metrics = metrics_of_variants(
        raw,
        exec.device,
        units as usize,
        |x| match &replacements {
            Some(_) => Shared::Base(exec.base_pass(x)),
            None => Shared::Checkpoint(exec.checkpoint(x, first)),
        },
        |shared, x, u| match shared {
            Shared::Base(base) => {
                let replacements = replacements.as_ref().expect("a base pass only where there are replacements");
                exec.logits_with_unit(base, first, u as i64, &replacements[u])
            }
            Shared::Checkpoint(checkpoint) => exec.resume(checkpoint, x, &interventions[u]),
        },
        &mut progress,
    );
    Ok(metrics
        .into_iter()
        .enumerate()
        .map(|(u, metrics)| SweepRow { node: site.to_string(), unit: u as i64, metrics })
        .collect())
}
