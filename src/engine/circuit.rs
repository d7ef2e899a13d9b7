//! Automatic circuit search: the smallest set of units, across all layers, whose
//! ablation brings poison accuracy down to a target while clean accuracy stays
//! within a margin — greedy forward selection ranked by the fast engine, backward
//! pruning of units no longer needed, and every pair within each convolution as a
//! check; the Pareto front of (size, poison, clean) over everything evaluated; and
//! the reverse question, the fewest units of a layer that must be kept (all its
//! others ablated) for the backdoor to survive.
//!
//! The search only calls `Evaluate`, so a test can run it on a constructed problem
//! whose answer is known, and the CLI hands it the fast ablation engine, or on an
//! imported graph the generic executor. Units live at sites: the study's layers
//! or a graph's nodes (`Site`).

use super::ablation::{AblationMode, AblationSet};
use super::cache::ActivationCache;
use super::layer::Layer;
use super::metrics::Metrics;
use super::testset::TestSet;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::ops::ControlFlow;
use std::time::Instant;

/// Where a searched unit lives: a layer of the study, a node of a graph.
pub trait Site: Ord + Clone + Hash + fmt::Display {
    fn unit_count(&self) -> usize;
}

impl Site for Layer {
    fn unit_count(&self) -> usize {
        self.units()
    }
}

/// Evaluates ablation sets, many at once.
pub trait Evaluate<S: Site = Layer> {
    fn evaluate(&mut self, sets: &[AblationSet<S>]) -> Vec<Metrics>;
}

/// The fast engine as an evaluator.
pub struct FastEvaluator<'a> {
    pub cache: &'a ActivationCache,
    pub test: &'a TestSet,
    pub mode: AblationMode,
}

/// Pairs evaluated between two progress reports.
const PAIR_SLICE: usize = 256;

/// Sets per pass over the cached activations.
const EVAL_BATCH: usize = 64;

impl Evaluate for FastEvaluator<'_> {
    fn evaluate(&mut self, sets: &[AblationSet]) -> Vec<Metrics> {
        // One copy from the device per pass, not one per set.
        sets.chunks(EVAL_BATCH)
            .flat_map(|batch| self.test.metrics_of_many(&self.cache.predict_many(self.test, batch, self.mode)))
            .collect()
    }
}

/// When a set counts as the backdoor's circuit.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Criteria {
    /// Poison accuracy must fall to this or below (%).
    pub poison_at_most: f64,
    /// Clean accuracy may fall by at most this many points.
    pub clean_margin: f64,
    /// The unablated model's clean accuracy the margin is measured from.
    pub clean_baseline: f64,
    /// Units the greedy search adds at most.
    pub max_size: usize,
}

impl Criteria {
    pub fn keeps_clean(&self, m: &Metrics) -> bool {
        m.clean_acc >= self.clean_baseline - self.clean_margin - 1e-9
    }

    pub fn met_by(&self, m: &Metrics) -> bool {
        self.keeps_clean(m) && m.poison_acc <= self.poison_at_most + 1e-9
    }
}

/// An evaluated set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(bound(deserialize = "S: Ord + Deserialize<'de>"))]
pub struct Tried<S = Layer> {
    pub set: AblationSet<S>,
    pub size: usize,
    pub metrics: Metrics,
}

impl<S> Tried<S> {
    /// `1 unit`, `2 units`.
    pub fn size_text(&self) -> String {
        format!("{} unit{}", self.size, if self.size == 1 { "" } else { "s" })
    }
}

/// Progress of a long search, as plain data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(bound(deserialize = "S: Ord + Deserialize<'de>"))]
pub struct SearchProgress<S = Layer> {
    pub stage: String,
    pub evaluated: usize,
    /// The best set so far (lowest poison accuracy among those keeping clean accuracy).
    pub best: Option<Tried<S>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(bound(deserialize = "S: Ord + Deserialize<'de>"))]
pub struct CircuitReport<S = Layer> {
    pub criteria: Criteria,
    pub mode: AblationMode,
    pub baseline: Metrics,
    /// The smallest set found that meets the criteria, if any.
    pub circuit: Option<Tried<S>>,
    /// The greedy additions in order, each with the set's metrics then.
    pub greedy: Vec<Tried<S>>,
    /// Units the backward pass removed from the greedy set.
    pub pruned: Vec<(S, usize)>,
    /// The best pair within each convolution (lowest poison keeping clean accuracy).
    pub best_pairs: Vec<Tried<S>>,
    /// Non-dominated sets over everything evaluated: smaller, lower poison, higher clean.
    pub front: Vec<Tried<S>>,
    /// Per layer, the fewest units that must be kept, all others of that layer ablated.
    pub keep: Vec<KeepSet<S>>,
    pub evaluated: usize,
    /// Seconds each stage took (greedy, pruning, the pairs of each layer, keep sets).
    pub stage_seconds: Vec<(String, f64)>,
    /// Stopped before the end (the rest of the report covers what was done).
    pub stopped: bool,
}

/// The reverse question for one layer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeepSet<S = Layer> {
    pub layer: S,
    /// The units kept (all others ablated), in the order the search added them.
    pub kept: Vec<usize>,
    pub metrics: Metrics,
    /// Whether the trigger's effect (poison accuracy less clean images sent to the
    /// target) reached the survival threshold.
    pub survives: bool,
}

/// Records every evaluation, so nothing is evaluated twice and the front covers all.
struct Ledger<'a, S: Site, E: Evaluate<S>> {
    eval: &'a mut E,
    seen: HashMap<AblationSet<S>, Metrics>,
    order: Vec<AblationSet<S>>,
}

impl<S: Site, E: Evaluate<S>> Ledger<'_, S, E> {
    fn evaluate(&mut self, sets: &[AblationSet<S>]) -> Vec<Metrics> {
        // Each set not seen before, once, in the order asked.
        let mut asked = std::collections::HashSet::new();
        let unique: Vec<AblationSet<S>> =
            sets.iter().filter(|s| !self.seen.contains_key(*s) && asked.insert(*s)).cloned().collect();
        for (set, metrics) in unique.iter().zip(self.eval.evaluate(&unique)) {
            self.seen.insert(set.clone(), metrics);
            self.order.push(set.clone());
        }
        sets.iter().map(|s| self.seen[s].clone()).collect()
    }

    fn tried(&self, set: &AblationSet<S>) -> Tried<S> {
        Tried { set: set.clone(), size: set.len(), metrics: self.seen[set].clone() }
    }

    fn all(&self) -> Vec<Tried<S>> {
        self.order.iter().map(|s| self.tried(s)).collect()
    }
}

/// Every unit of every searched site.
fn candidate_units<S: Site>(sites: &[S]) -> Vec<(S, usize)> {
    sites.iter().flat_map(|l| (0..l.unit_count()).map(move |u| (l.clone(), u))).collect()
}

fn with<S: Site>(set: &AblationSet<S>, layer: S, unit: usize) -> AblationSet<S> {
    let mut s = set.clone();
    s.insert(layer, unit);
    s
}

fn without<S: Site>(set: &AblationSet<S>, layer: S, unit: usize) -> AblationSet<S> {
    let mut s = set.clone();
    s.toggle(layer, unit);
    s
}

/// Lowest poison among the sets that keep clean accuracy; ties to the smaller set.
fn best_of<'t, S: 't>(criteria: &Criteria, tried: impl Iterator<Item = &'t Tried<S>>) -> Option<&'t Tried<S>> {
    tried
        .filter(|t| criteria.keeps_clean(&t.metrics))
        .min_by(|a, b| a.metrics.poison_acc.total_cmp(&b.metrics.poison_acc).then(a.size.cmp(&b.size)))
}

/// Every pair of units within `layer`, as ablation sets.
pub fn pairs_within<S: Site>(layer: &S) -> Vec<AblationSet<S>> {
    let n = layer.unit_count();
    (0..n).flat_map(|a| (a + 1..n).map(move |b| AblationSet::of(layer.clone(), &[a, b]))).collect()
}

/// Sets no other set beats on all of size (fewer), poison (lower) and clean
/// (higher) at once, sorted by size then poison.
pub fn pareto_front<S: Clone + PartialEq>(tried: &[Tried<S>]) -> Vec<Tried<S>> {
    let dominates = |a: &Tried<S>, b: &Tried<S>| {
        let no_worse = a.size <= b.size
            && a.metrics.poison_acc <= b.metrics.poison_acc
            && a.metrics.clean_acc >= b.metrics.clean_acc;
        let better =
            a.size < b.size || a.metrics.poison_acc < b.metrics.poison_acc || a.metrics.clean_acc > b.metrics.clean_acc;
        no_worse && better
    };
    let mut front: Vec<Tried<S>> = tried.iter().filter(|b| !tried.iter().any(|a| dominates(a, b))).cloned().collect();
    front.sort_by(|a, b| a.size.cmp(&b.size).then(a.metrics.poison_acc.total_cmp(&b.metrics.poison_acc)));
    front.dedup_by(|a, b| a.size == b.size && a.metrics == b.metrics);
    front
}

/// What the search is asked to do.
pub struct SearchConfig<S = Layer> {
    pub criteria: Criteria,
    pub mode: AblationMode,
    /// Trigger effect (poison accuracy less clean images predicted as the target, in
    /// points) at which a kept set counts as the backdoor surviving.
    pub survive_at: f64,
    /// Where candidate units live.
    pub sites: Vec<S>,
    /// Sites whose pairs are tried exhaustively (the study's convolutions).
    pub pair_layers: Vec<S>,
    /// Sites whose keep set is searched (the study's hidden layers).
    pub keep_layers: Vec<S>,
}

impl SearchConfig {
    /// The defaults every front end starts from: poison accuracy at most the clean
    /// model's + 3 points, clean accuracy within 1 point of `clean_baseline`, at most
    /// 12 units, survival at 50 points; every layer but the logits searched (ablating
    /// a logit says nothing about a circuit), pairs tried within each convolution.
    pub fn defaults(clean_model_poison: f64, clean_baseline: f64, mode: AblationMode) -> SearchConfig {
        let hidden = Layer::ALL[..Layer::ALL.len() - 1].to_vec();
        let convolutions = Layer::ALL.iter().copied().filter(|l| l.is_conv()).collect();
        let mut config = SearchConfig::over(hidden.clone(), clean_model_poison, clean_baseline, mode);
        config.pair_layers = convolutions;
        config.keep_layers = hidden;
        config
    }
}

impl<S> SearchConfig<S> {
    /// The defaults over chosen sites, with no pairs or keep sets.
    pub fn over(sites: Vec<S>, clean_model_poison: f64, clean_baseline: f64, mode: AblationMode) -> SearchConfig<S> {
        SearchConfig {
            criteria: Criteria {
                poison_at_most: clean_model_poison + 3.0,
                clean_margin: 1.0,
                clean_baseline,
                max_size: 12,
            },
            mode,
            survive_at: 50.0,
            sites,
            pair_layers: Vec::new(),
            keep_layers: Vec::new(),
        }
    }
}

/// Runs the whole search. `progress` is told each stage and may stop it with `Break`.
pub fn search<S: Site>(
    eval: &mut impl Evaluate<S>,
    config: &SearchConfig<S>,
    mut progress: impl FnMut(&SearchProgress<S>) -> ControlFlow<()>,
) -> CircuitReport<S> {
    let criteria = config.criteria;
    let mut ledger = Ledger { eval, seen: HashMap::new(), order: Vec::new() };
    let baseline = ledger.evaluate(&[AblationSet::default()]).remove(0);
    let mut stopped = false;
    let mut stage_seconds = Vec::new();
    let mut clock = Instant::now();
    let mut lap = |name: String| {
        stage_seconds.push((name, std::mem::replace(&mut clock, Instant::now()).elapsed().as_secs_f64()))
    };
    let mut report_stage = |ledger: &Ledger<S, _>, stage: &str| {
        let all = ledger.all();
        let best = best_of(&criteria, all.iter().filter(|t| t.size > 0)).cloned();
        progress(&SearchProgress { stage: stage.into(), evaluated: ledger.order.len(), best }).is_break()
    };

    // Greedy forward selection.
    let candidates = candidate_units(&config.sites);
    let mut set = AblationSet::default();
    let mut greedy = Vec::new();
    while set.len() < criteria.max_size && !criteria.met_by(&ledger.seen[&set]) {
        let options: Vec<(S, usize)> =
            candidates.iter().filter(|(l, u)| !set.contains(l.clone(), *u)).cloned().collect();
        let sets: Vec<AblationSet<S>> = options.iter().map(|(l, u)| with(&set, l.clone(), *u)).collect();
        ledger.evaluate(&sets);
        let current = ledger.seen[&set].poison_acc;
        let Some(next) = best_of(&criteria, sets.iter().map(|s| ledger.tried(s)).collect::<Vec<_>>().iter()).cloned()
        else {
            break;
        };
        if next.metrics.poison_acc >= current {
            break; // nothing lowers poison accuracy any more without costing clean accuracy
        }
        set = next.set.clone();
        greedy.push(next);
        if report_stage(&ledger, &format!("greedy: {} units", set.len())) {
            stopped = true;
            break;
        }
    }

    lap("greedy".into());
    // Backward pruning: drop units the rest of the set no longer needs.
    let mut pruned = Vec::new();
    if !stopped && criteria.met_by(&ledger.seen[&set]) {
        let units: Vec<(S, usize)> = set.units.iter().flat_map(|(l, us)| us.iter().map(|&u| (l.clone(), u))).collect();
        for (layer, unit) in units {
            let smaller = without(&set, layer.clone(), unit);
            if criteria.met_by(&ledger.evaluate(std::slice::from_ref(&smaller))[0]) {
                set = smaller;
                pruned.push((layer, unit));
            }
        }
    }
    let greedy_set = criteria.met_by(&ledger.seen[&set]).then(|| ledger.tried(&set));
    lap("backward pruning".into());

    // Every pair within each convolution, as a check on the greedy answer.
    let mut best_pairs = Vec::new();
    for layer in &config.pair_layers {
        if stopped {
            break;
        }
        let pairs = pairs_within(layer);
        // In slices, so progress (and a stop) comes every second or so.
        for (i, slice) in pairs.chunks(PAIR_SLICE).enumerate() {
            ledger.evaluate(slice);
            let done = (i * PAIR_SLICE + slice.len()).min(pairs.len());
            let stage = if done == pairs.len() {
                format!("all {} pairs of {layer}", pairs.len())
            } else {
                format!("pairs of {layer}: {done}/{}", pairs.len())
            };
            if report_stage(&ledger, &stage) {
                stopped = true;
                break;
            }
        }
        if !stopped {
            let tried: Vec<Tried<S>> = pairs.iter().map(|s| ledger.tried(s)).collect();
            best_pairs.extend(best_of(&criteria, tried.iter()).cloned());
        }
        lap(format!("{} pairs of {layer}", pairs.len()));
    }

    let keep = if stopped { Vec::new() } else { keep_sets(&mut ledger, config, &mut report_stage, &mut stopped) };
    lap("keep sets".into());
    let all = ledger.all();
    // The smallest set meeting the criteria among everything evaluated, lowest poison first.
    let circuit = all
        .iter()
        .filter(|t| t.size > 0 && criteria.met_by(&t.metrics))
        .min_by(|a, b| a.size.cmp(&b.size).then(a.metrics.poison_acc.total_cmp(&b.metrics.poison_acc)))
        .cloned()
        .or(greedy_set);
    CircuitReport {
        criteria,
        mode: config.mode,
        baseline,
        circuit,
        greedy,
        pruned,
        best_pairs,
        front: pareto_front(&all),
        keep,
        evaluated: all.len(),
        stage_seconds,
        stopped,
    }
}

/// Per keep layer: all its units ablated, then units given back one at a time,
/// each time the one that restores the trigger's effect most (poison accuracy less
/// the clean images sent to the target: a layer this ablated often sends every
/// image to one class, which is not the backdoor), until it reaches `survive_at`.
/// `report` is told after each layer and may stop the rest (`stopped` is then set).
fn keep_sets<S: Site, E: Evaluate<S>>(
    ledger: &mut Ledger<S, E>,
    config: &SearchConfig<S>,
    report: &mut impl FnMut(&Ledger<S, E>, &str) -> bool,
    stopped: &mut bool,
) -> Vec<KeepSet<S>> {
    let mut keep = Vec::new();
    for layer in &config.keep_layers {
        let all: Vec<usize> = (0..layer.unit_count()).collect();
        let mut kept: Vec<usize> = Vec::new();
        let ablate_all_but = |kept: &[usize]| {
            AblationSet::of(layer.clone(), &all.iter().copied().filter(|u| !kept.contains(u)).collect::<Vec<_>>())
        };
        let mut metrics = ledger.evaluate(&[ablate_all_but(&kept)]).remove(0);
        while metrics.trigger_effect() < config.survive_at && kept.len() < all.len().min(config.criteria.max_size) {
            let options: Vec<usize> = all.iter().copied().filter(|u| !kept.contains(u)).collect();
            let sets: Vec<AblationSet<S>> =
                options.iter().map(|&u| ablate_all_but(&[kept.as_slice(), &[u]].concat())).collect();
            let results = ledger.evaluate(&sets);
            let (best, m) = options
                .iter()
                .zip(results)
                .max_by(|a, b| a.1.trigger_effect().total_cmp(&b.1.trigger_effect()).then(b.0.cmp(a.0)))
                .expect("a unit is left to keep");
            kept.push(*best);
            metrics = m;
        }
        let survives = metrics.trigger_effect() >= config.survive_at;
        keep.push(KeepSet { layer: layer.clone(), kept, metrics, survives });
        if report(ledger, &format!("kept units of {layer}")) {
            *stopped = true;
            break;
        }
    }
    keep
}
