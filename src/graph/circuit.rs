//! The circuit search (engine/circuit.rs) on a graph: its units are nodes'
//! output channels, each set evaluated by the generic executor from a
//! checkpoint at the earliest searched node, so the nodes before it run once
//! per chunk of images for a whole batch of sets.

use super::exec::{Executor, Intervention};
use super::features::single_node;
use super::units::{UnitSet, parametrised_outputs};
use crate::engine::ablation::{AblationMode, AblationSet};
use crate::engine::circuit::{Evaluate, SearchConfig, Site};
use crate::engine::metrics::Metrics;
use crate::engine::testset::{self, TestSet};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::HashMap;
use std::fmt;
use tch::Tensor;

/// A searched node: ordered as the graph runs, shown and written by its name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GraphSite {
    pub node: usize,
    pub name: String,
    pub units: usize,
}

impl GraphSite {
    pub fn of(exec: &Executor, node: usize) -> GraphSite {
        GraphSite { node, name: exec.spec.nodes[node].name.clone(), units: exec.shapes[node][0] as usize }
    }
}

impl Site for GraphSite {
    fn unit_count(&self) -> usize {
        self.units
    }
}

impl fmt::Display for GraphSite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

/// As its name: sets are written `{"layer3.0.conv2": [0]}` like the study's.
impl Serialize for GraphSite {
    fn serialize<Z: Serializer>(&self, serializer: Z) -> Result<Z::Ok, Z::Error> {
        serializer.serialize_str(&self.name)
    }
}

thread_local! {
    /// The graph's nodes while a saved result is read (`reading_sites`).
    static KNOWN: std::cell::RefCell<Vec<GraphSite>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Runs `read` with `sites` as the nodes a saved `GraphSite` may name: a file
/// keeps only the name; the node's place and units are the graph's.
pub fn reading_sites<T>(sites: Vec<GraphSite>, read: impl FnOnce() -> T) -> T {
    KNOWN.with(|k| *k.borrow_mut() = sites);
    let out = read();
    KNOWN.with(|k| k.borrow_mut().clear());
    out
}

/// By name, among the nodes `reading_sites` gave; an unknown name is an error.
impl<'de> Deserialize<'de> for GraphSite {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<GraphSite, D::Error> {
        let name = String::deserialize(deserializer)?;
        let found = KNOWN.with(|k| k.borrow().iter().find(|s| s.name == name).cloned());
        found.ok_or_else(|| serde::de::Error::custom(format!("the graph has no node {name}")))
    }
}

/// The nodes searched: with no `chosen`, every convolution's and linear layer's
/// output but the logits; else, per name, the nodes of that name or under that
/// module path (`layer3` is every convolution in it), or the one node so named
/// whatever its op (a ReLU's output).
pub fn sites(exec: &Executor, chosen: &[String]) -> Result<Vec<GraphSite>, String> {
    let parametrised = parametrised_outputs(exec);
    if chosen.is_empty() {
        return Ok(parametrised.into_iter().map(|n| GraphSite::of(exec, n)).collect());
    }
    let mut nodes = Vec::new();
    for path in chosen {
        let name = |n: usize| exec.spec.nodes[n].name.as_str();
        let under: Vec<usize> = parametrised
            .iter()
            .copied()
            .filter(|&n| name(n) == path || name(n).starts_with(&format!("{path}.")))
            .collect();
        if under.is_empty() {
            nodes.push(single_node(path, exec)?);
        }
        nodes.extend(under);
    }
    nodes.sort_unstable();
    nodes.dedup();
    Ok(nodes.into_iter().map(|n| GraphSite::of(exec, n)).collect())
}

/// The search's defaults over `sites` (`SearchConfig::over`), its clean baseline
/// the unablated model's on `raw`. Every pair and the keep sets cost units²
/// evaluations per node: with `narrowed` (the sites were chosen) they run within them.
pub fn search_config(
    exec: &Executor,
    raw: &TestSet,
    sites: Vec<GraphSite>,
    clean_model_poison: f64,
    mode: AblationMode,
    narrowed: bool,
) -> SearchConfig<GraphSite> {
    let clean_baseline = super::eval::evaluate(exec, raw, &[]).clean_acc;
    let mut config = SearchConfig::over(sites.clone(), clean_model_poison, clean_baseline, mode);
    if narrowed {
        config.pair_layers = sites.clone();
        config.keep_layers = sites;
    }
    config
}

/// The set as `NODE:UNITS` by the nodes' names.
impl From<&AblationSet<GraphSite>> for UnitSet {
    fn from(set: &AblationSet<GraphSite>) -> UnitSet {
        let sites =
            set.units.iter().map(|(site, units)| (site.name.clone(), units.iter().map(|&u| u as i64).collect()));
        UnitSet { sites: sites.collect() }
    }
}

/// Evaluates sets of graph units on the test set, in one ablation mode.
pub struct GraphEvaluator<'a> {
    exec: &'a Executor,
    raw: &'a TestSet,
    mode: AblationMode,
    /// Mean mode: each searched node's mean output over the clean images.
    means: HashMap<usize, Tensor>,
    /// The earliest searched node: every set resumes from there.
    first: usize,
}

impl<'a> GraphEvaluator<'a> {
    /// Fails when `mode` does not apply to a site (weight mode at a ReLU).
    pub fn new(
        exec: &'a Executor,
        raw: &'a TestSet,
        mode: AblationMode,
        sites: &[GraphSite],
    ) -> Result<GraphEvaluator<'a>, String> {
        let first = sites.iter().map(|s| s.node).min().ok_or("no nodes to search")?;
        let nodes: Vec<usize> = sites.iter().map(|s| s.node).collect();
        let means = match mode {
            AblationMode::Mean => nodes
                .iter()
                .copied()
                .zip(exec.mean_outputs(&raw.clean(), testset::chunk(exec.device), &nodes))
                .collect(),
            _ => HashMap::new(),
        };
        let evaluator = GraphEvaluator { exec, raw, mode, means, first };
        for site in sites {
            evaluator.try_interventions(&AblationSet::single(site.clone(), 0))?;
        }
        Ok(evaluator)
    }

    /// What removes `set`'s units.
    pub fn interventions(&self, set: &AblationSet<GraphSite>) -> Vec<Intervention> {
        self.try_interventions(set).expect("every site was checked at new")
    }

    fn try_interventions(&self, set: &AblationSet<GraphSite>) -> Result<Vec<Intervention>, String> {
        UnitSet::from(set).interventions(self.exec, self.mode, |n| self.means[&n].shallow_clone())
    }
}

impl Evaluate<GraphSite> for GraphEvaluator<'_> {
    fn evaluate(&mut self, sets: &[AblationSet<GraphSite>]) -> Vec<Metrics> {
        let _guard = tch::no_grad_guard();
        let exec = self.exec;
        let interventions: Vec<Vec<Intervention>> = sets.iter().map(|set| self.interventions(set)).collect();
        let mut predictions: Vec<Vec<Tensor>> = sets.iter().map(|_| Vec::new()).collect();
        for x in self.raw.inputs.split(testset::chunk(exec.device), 0) {
            let checkpoint = exec.checkpoint(&x, self.first);
            for (set, ivs) in predictions.iter_mut().zip(&interventions) {
                set.push(exec.resume(&checkpoint, &x, ivs).argmax(1, false));
            }
        }
        let predictions: Vec<Tensor> = predictions.iter().map(|p| Tensor::cat(p, 0)).collect();
        self.raw.metrics_of_many(&predictions)
    }
}
