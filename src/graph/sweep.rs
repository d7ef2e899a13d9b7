//! Ablating each unit of one node alone: the node's input is computed once per
//! chunk of images (a checkpoint), and only the nodes after it rerun per unit.
//! Chunks are spread over the CPU's threads (`exec::lanes`).

use super::exec::{Executor, Intervention, Replacement, lanes};
use super::units::{UnitSet, nodes_named};
use crate::engine::ablation::AblationMode;
use crate::engine::metrics::Metrics;
use crate::engine::testset::{self, TestSet};
use serde::Serialize;
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, Ordering};
use tch::Tensor;

#[derive(Debug, Clone, Serialize)]
pub struct SweepRow {
    pub node: String,
    pub unit: i64,
    pub metrics: Metrics,
}

/// How each unit's logits are computed on a chunk of images.
enum Plan {
    /// One node: each unit as a change to the unablated pass (exec/delta.rs),
    /// the unit's replacement values one map per unit.
    Delta { node: usize, replacements: Vec<Tensor> },
    /// A module called more than once: the calls' nodes rerun from the first.
    Resume { first: usize, interventions: Vec<Vec<Intervention>> },
}

impl Plan {
    fn units(&self) -> usize {
        match self {
            Plan::Delta { replacements, .. } => replacements.len(),
            Plan::Resume { interventions, .. } => interventions.len(),
        }
    }

    fn lane_copy(&self) -> Plan {
        match self {
            Plan::Delta { node, replacements } => {
                Plan::Delta { node: *node, replacements: lanes::copies(replacements) }
            }
            Plan::Resume { first, interventions } => Plan::Resume {
                first: *first,
                interventions: interventions
                    .iter()
                    .map(|ivs| ivs.iter().map(Intervention::lane_copy).collect())
                    .collect(),
            },
        }
    }

    /// Each unit's predictions on `x` in unit order, until `stop` is set;
    /// `done` is told of each.
    fn predictions(&self, exec: &Executor, x: &Tensor, stop: &AtomicBool, done: &dyn Fn()) -> Vec<Tensor> {
        let mut logits_of: Box<dyn FnMut(usize) -> Tensor> = match self {
            Plan::Delta { node, replacements } => {
                let base = exec.base_pass(x);
                Box::new(move |u| exec.logits_with_unit(&base, *node, u as i64, &replacements[u]))
            }
            Plan::Resume { first, interventions } => {
                let checkpoint = exec.checkpoint(x, *first);
                Box::new(move |u| exec.resume(&checkpoint, x, &interventions[u]))
            }
        };
        let mut out = Vec::with_capacity(self.units());
        for u in 0..self.units() {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            out.push(logits_of(u).argmax(1, false));
            done();
        }
        out
    }
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
    let plan = if nodes.len() == 1 {
        let zeros = || Tensor::zeros(&exec.shapes[first][1..], (tch::Kind::Float, exec.device));
        let replacements = interventions
            .iter()
            .map(|ivs| match &ivs[0].replace {
                Replacement::Zero => zeros(),
                Replacement::Values(v) => v.get(0),
                Replacement::PerImage(_) => unreachable!("an ablation replaces by constants"),
            })
            .collect();
        Plan::Delta { node: first, replacements }
    } else {
        Plan::Resume { first, interventions }
    };
    let chunks = raw.inputs.split(testset::chunk(exec.device), 0);
    let (chunk_count, total) = (chunks.len(), chunks.len() * units as usize);
    let lane_count = lanes::count(exec.device).min(chunk_count.max(1));
    let jobs: Vec<_> =
        lanes::deal(chunks, lane_count).into_iter().map(|mine| (exec.lane_copy(), plan.lane_copy(), mine)).collect();
    let stop = AtomicBool::new(false);
    let mut finished = 0;
    let dealt = lanes::spread(
        jobs,
        |(exec, plan, mine), tx| {
            let done = || tx.send(()).unwrap_or(());
            mine.into_iter().map(|(i, x)| (i, plan.predictions(&exec, &x, &stop, &done))).collect::<Vec<_>>()
        },
        |()| {
            finished += 1;
            if progress(finished, total).is_break() {
                stop.store(true, Ordering::Relaxed);
            }
        },
    );
    let per_chunk = lanes::gather(dealt);
    // Stopped early, only the units that saw every chunk have metrics.
    let complete: Vec<Tensor> = (0..units as usize)
        .take_while(|&u| per_chunk.iter().all(|p| p.len() > u))
        .map(|u| Tensor::cat(&per_chunk.iter().map(|p| &p[u]).collect::<Vec<_>>(), 0))
        .collect();
    let metrics = raw.metrics_of_many(&complete);
    Ok(metrics
        .into_iter()
        .enumerate()
        .map(|(u, metrics)| SweepRow { node: site.to_string(), unit: u as i64, metrics })
        .collect())
}
