//! Swaps on a graph: a donor's weights for some modules (conv, linear, batch norm
//! with its running statistics) put into a recipient, and the result evaluated.
//! Modules are grouped (each alone, by stage, or as chosen by path prefix); every
//! subset of the groups is swapped when there are at most four, otherwise each
//! group alone and all of them together.

use super::exec::Executor;
use super::weights::parametrised_modules;
use crate::engine::metrics::Metrics;
use crate::engine::testset::{self, TestSet};
use serde::Serialize;
use std::collections::BTreeSet;
use tch::Tensor;

/// Modules swapped together, under one name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SwapGroup {
    pub name: String,
    pub modules: Vec<String>,
}

/// How a graph's parametrised modules are grouped into units of a swap.
pub enum Grouping<'a> {
    /// Each module alone.
    Modules,
    /// By the module path's first component (`layer1`, `features`, `conv1`).
    Stages,
    /// One group per path given; a path selects every module under it.
    Chosen(&'a [String]),
}

#[derive(Debug, Clone, Serialize)]
pub struct GraphSwapRow {
    /// The groups taken from the donor (empty: the recipient unchanged).
    pub groups: Vec<String>,
    /// Their modules.
    pub modules: Vec<String>,
    pub metrics: Metrics,
}

/// The groups of `exec`'s graph under `grouping`, in graph order.
pub fn groups(exec: &Executor, grouping: Grouping) -> Result<Vec<SwapGroup>, String> {
    let modules = parametrised_modules(&exec.spec);
    let mut out: Vec<SwapGroup> = Vec::new();
    match grouping {
        Grouping::Modules => {
            out.extend(modules.iter().map(|m| SwapGroup { name: m.clone(), modules: vec![m.clone()] }));
        }
        Grouping::Stages => {
            for m in &modules {
                let stage = m.split('.').next().unwrap_or(m);
                match out.iter_mut().find(|g| g.name == stage) {
                    Some(group) => group.modules.push(m.clone()),
                    None => out.push(SwapGroup { name: stage.to_string(), modules: vec![m.clone()] }),
                }
            }
        }
        Grouping::Chosen(paths) => {
            for path in paths.iter().map(|p| p.trim()).filter(|p| !p.is_empty()) {
                let under = format!("{path}.");
                let chosen: Vec<String> =
                    modules.iter().filter(|m| *m == path || m.starts_with(&under)).cloned().collect();
                if chosen.is_empty() {
                    let stages: BTreeSet<&str> = modules.iter().filter_map(|m| m.split('.').next()).collect();
                    return Err(format!(
                        "no module of the graph with weights is or is under '{path}' (its stages: {})",
                        stages.into_iter().collect::<Vec<_>>().join(", ")
                    ));
                }
                out.push(SwapGroup { name: path.to_string(), modules: chosen });
            }
            if out.is_empty() {
                return Err("--layers names no module".into());
            }
        }
    }
    Ok(out)
}

/// The subsets of `n` groups to swap, by index: all of them (by size, then
/// order) when `n` ≤ 4; otherwise none, each alone and all together.
pub fn subsets(n: usize) -> Vec<Vec<usize>> {
    if n <= 4 {
        let mut all: Vec<Vec<usize>> =
            (0u32..1 << n).map(|mask| (0..n).filter(|i| mask & (1 << i) != 0).collect()).collect();
        all.sort_by_key(|s| (s.len(), s.clone()));
        return all;
    }
    let mut out = vec![Vec::new()];
    out.extend((0..n).map(|i| vec![i]));
    out.push((0..n).collect());
    out
}

/// One swapped model: the executor (none: the recipient itself) and the first
/// node whose weights changed.
struct Variant {
    exec: Option<Executor>,
    first: Option<usize>,
}

/// Each of `subsets` of `groups` copied from `donor` into `recipient`, evaluated
/// over `raw`. Per chunk of images, the recipient's values up to the node before
/// a variant's first swapped node are computed once and only the later nodes
/// rerun. `progress(done, total)` is told after every variant of every chunk.
pub fn swap(
    recipient: &Executor,
    donor: &Executor,
    groups: &[SwapGroup],
    subsets: &[Vec<usize>],
    raw: &TestSet,
    mut progress: impl FnMut(usize, usize),
) -> Result<Vec<GraphSwapRow>, String> {
    if recipient.spec != donor.spec {
        return Err("the donor and the recipient are different graphs: a swap needs one graph".into());
    }
    let mut variants = Vec::new();
    let mut rows = Vec::new();
    for subset in subsets {
        let chosen: Vec<&SwapGroup> = subset.iter().map(|&i| &groups[i]).collect();
        let modules: BTreeSet<&str> = chosen.iter().flat_map(|g| g.modules.iter().map(String::as_str)).collect();
        variants.push(variant(recipient, donor, &modules)?);
        rows.push((chosen.iter().map(|g| g.name.clone()).collect(), modules.iter().map(|m| m.to_string()).collect()));
    }
    let mut order: Vec<usize> = (0..variants.len()).collect();
    order.sort_by_key(|&v| variants[v].first);
    let _guard = tch::no_grad_guard();
    let mut predictions: Vec<Vec<Tensor>> = variants.iter().map(|_| Vec::new()).collect();
    let chunks = raw.inputs.split(testset::chunk(recipient.device), 0);
    let total = chunks.len() * variants.len();
    let mut done = 0;
    for x in &chunks {
        let mut checkpoint = None;
        for &v in &order {
            let variant = &variants[v];
            let exec = variant.exec.as_ref().unwrap_or(recipient);
            let logits = match variant.first {
                None | Some(0) => exec.logits(x, &[]),
                Some(first) => {
                    let at = first - 1;
                    if checkpoint.as_ref().is_none_or(|c: &super::exec::Checkpoint| c.at != at) {
                        checkpoint = Some(recipient.checkpoint(x, at));
                    }
                    exec.resume(checkpoint.as_ref().expect("made above"), x, &[])
                }
            };
            predictions[v].push(logits.argmax(1, false));
            done += 1;
            progress(done, total);
        }
    }
    let predictions: Vec<Tensor> = predictions.into_iter().map(|p| Tensor::cat(&p, 0)).collect();
    let metrics = raw.metrics_of_many(&predictions);
    Ok(rows
        .into_iter()
        .zip(metrics)
        .map(|((groups, modules), metrics)| GraphSwapRow { groups, modules, metrics })
        .collect())
}

fn variant(recipient: &Executor, donor: &Executor, modules: &BTreeSet<&str>) -> Result<Variant, String> {
    if modules.is_empty() {
        return Ok(Variant { exec: None, first: None });
    }
    let first = recipient.spec.nodes.iter().position(|n| modules.contains(n.module()));
    let weights = recipient
        .weights
        .with_replaced(&donor.weights, |key| key.rsplit_once('.').is_some_and(|(m, _)| modules.contains(m)))?;
    let exec = Executor::new(recipient.spec.clone(), weights, recipient.device)?;
    Ok(Variant { exec: Some(exec), first })
}
