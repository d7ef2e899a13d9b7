//! Pruning-defence curves on any graph: one node's units ablated cumulatively
//! in the order of a ranking (`engine::prune`'s rankings, their scores read from
//! the executor), every step over the test set resumed from one checkpoint at
//! the node per chunk of images.

use super::exec::Executor;
use super::features::unit_scores;
use super::spec::{Op, op_name};
use super::units::UnitSet;
use crate::engine::ablation::AblationMode;
use crate::engine::prune::{PruneCurve, Ranking, clean_means, order_of, singular_values_of};
use crate::engine::testset::{self, TestSet};
use std::collections::HashMap;
use std::ops::ControlFlow;
use tch::{Device, Kind, Tensor};

/// The node whose output is `node`'s units' activation, which Fine-Pruning and
/// TAC read: the ReLU that the node feeds alone, directly or through a batch
/// norm (Liu et al. rank a convolution's channels after its ReLU; each channel
/// stays itself through both), else the node itself.
pub fn activation_node(exec: &Executor, node: usize) -> usize {
    let nodes = &exec.spec.nodes;
    let mut at = node;
    loop {
        let readers: Vec<usize> = (0..nodes.len()).filter(|&j| nodes[j].inputs.contains(&nodes[at].name)).collect();
        match readers[..] {
            [j] if matches!(nodes[j].op, Op::Relu | Op::LeakyRelu { .. }) => return j,
            [j] if matches!(nodes[j].op, Op::BatchNorm2d { .. }) => at = j,
            _ => return node,
        }
    }
}

/// Whether `ranking` applies to `node`: CLP and weight change read the
/// weights of a unit, which a convolution and a linear layer have.
pub fn applies(ranking: Ranking, exec: &Executor, node: usize) -> Result<(), String> {
    let op = &exec.spec.nodes[node].op;
    if matches!(ranking, Ranking::Clp | Ranking::WeightChange) && !op.has_unit_weights() {
        return Err(format!(
            "the {ranking} ranking reads each unit's weights; {} is a {} node (rank it by fine-pruning, tac or \
             random, or prune a conv2d or linear node)",
            exec.spec.nodes[node].name,
            op_name(op)
        ));
    }
    Ok(())
}

/// What the rankings read: the model pruned, the clean model (weight change),
/// the test set in raw pixels and the random order's seed.
pub struct RankingInputs<'a> {
    pub exec: &'a Executor,
    pub clean: &'a Executor,
    pub raw: &'a TestSet,
    pub seed: u64,
}

/// The order in which `ranking` prunes `node`'s units.
pub fn ranking_order(ranking: Ranking, node: usize, inputs: &RankingInputs) -> Result<Vec<usize>, String> {
    applies(ranking, inputs.exec, node)?;
    let exec = inputs.exec;
    let units = exec.shapes[node][0] as usize;
    Ok(order_of(ranking, units, inputs.seed, |ranking| match ranking {
        Ranking::FinePruning => {
            clean_means(&unit_scores(exec, inputs.raw, activation_node(exec, node)), inputs.raw.len())
        }
        Ranking::Clp => singular_values_of(exec.weights.get(&format!("{}.weight", exec.spec.nodes[node].module()))),
        Ranking::Tac => activation_changes(exec, inputs.raw, activation_node(exec, node)),
        Ranking::WeightChange => {
            let module = exec.spec.nodes[node].module();
            let diff = super::diff::module_diff(&exec.spec, &inputs.clean.weights, &exec.weights, module);
            diff.units.iter().map(|u| u.l2).collect()
        }
        Ranking::Random => unreachable!("the random order has no scores"),
    }))
}

/// Per unit of `node`, the mean over the images and positions of
/// |output(triggered) − output(clean)| (the study's `probe::activation_changes`).
pub fn activation_changes(exec: &Executor, raw: &TestSet, node: usize) -> Vec<f64> {
    let _guard = tch::no_grad_guard();
    let n = raw.len() as i64;
    let mut total = Tensor::zeros([exec.shapes[node][0]], (Kind::Double, exec.device));
    let mut start = 0;
    while start < n {
        let len = testset::chunk(exec.device).min(n - start);
        let clean = exec.checkpoint(&raw.inputs.narrow(0, start, len), node).output().shallow_clone();
        let triggered = exec.checkpoint(&raw.inputs.narrow(0, n + start, len), node).output().shallow_clone();
        let change = (triggered - clean).abs();
        let per_unit = if change.dim() > 2 { change.flatten(2, -1).mean_dim(2, false, Kind::Float) } else { change };
        total += per_unit.sum_dim_intlist(0, false, Kind::Double);
        start += len;
    }
    Vec::<f64>::try_from((total / n.max(1) as f64).to_device(Device::Cpu)).expect("a 1-D tensor")
}

/// The curve of each `(ranking, order)` for `site` (one node) in `mode`: the
/// first k units of the order ablated together, for k from 0 to all. Per chunk
/// of images the pass runs to the node once and every step resumes from there;
/// a set of units that two orders share (none, all) is evaluated once.
/// `means` gives the node's mean output (asked in mean mode only).
/// `progress(done, total)` is told after every step of every chunk and may
/// stop it: then only the orders whose every step was measured have curves.
pub fn curves(
    exec: &Executor,
    raw: &TestSet,
    site: &str,
    orders: Vec<(Ranking, Vec<usize>)>,
    mode: AblationMode,
    means: &dyn Fn(usize) -> Tensor,
    progress: impl FnMut(usize, usize) -> ControlFlow<()>,
) -> Result<Vec<PruneCurve>, String> {
    let node = super::features::single_node(site, exec)?;
    // Every distinct set of units once, and where each step of each order finds it.
    let mut sets: Vec<Vec<usize>> = Vec::new();
    let mut index: HashMap<Vec<usize>, usize> = HashMap::new();
    let steps: Vec<Vec<usize>> = orders
        .iter()
        .map(|(_, order)| {
            (0..=order.len())
                .map(|k| {
                    let mut set = order[..k].to_vec();
                    set.sort_unstable();
                    *index.entry(set.clone()).or_insert_with(|| {
                        sets.push(set);
                        sets.len() - 1
                    })
                })
                .collect()
        })
        .collect();
    let interventions = sets
        .iter()
        .map(|set| {
            if set.is_empty() {
                return Ok(Vec::new());
            }
            let units = UnitSet { sites: [(site.to_string(), set.iter().map(|&u| u as i64).collect())].into() };
            units.interventions(exec, mode, means)
        })
        .collect::<Result<Vec<_>, String>>()?;
    let metrics = super::variants::metrics_of_variants(
        raw,
        exec.device,
        interventions.len(),
        |x| exec.checkpoint(x, node),
        |checkpoint, x, v| exec.resume(checkpoint, x, &interventions[v]),
        progress,
    );
    Ok(orders
        .into_iter()
        .zip(steps)
        .filter(|(_, steps)| steps.iter().all(|&s| s < metrics.len()))
        .map(|((ranking, order), steps)| {
            let curve = steps.iter().map(|&s| metrics[s].clone()).collect();
            PruneCurve::of(site.to_string(), ranking, mode, order, curve)
        })
        .collect())
}
