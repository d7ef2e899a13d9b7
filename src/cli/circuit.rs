//! `patch` and `circuit`: which units the backdoor needs, by activation patching
//! and by searching for the smallest set whose ablation removes it.

use super::args::CommonArgs;
use super::output::Format;
use super::progress::counter;
use super::trigger::examined;
use crate::analysis_tables::{circuit_table, patch_table};
use crate::engine::ablation::{self, AblationMode, AblationSet};
use crate::engine::analysis::Analysis;
use crate::engine::cache::ActivationCache;
use crate::engine::circuit::{self, Evaluate, FastEvaluator, SearchConfig, Site, Tried};
use crate::engine::lab::ModelKind;
use crate::engine::layer::Layer;
use crate::engine::metrics::Metrics;
use crate::engine::patch::{self, Direction, Patch, PatchEffect, PatchRow, Patcher};
use crate::setup::open_lab_holding;
use color_eyre::eyre::{Result, bail, eyre};
use serde::Serialize;
use std::ops::ControlFlow;
use std::path::Path;
use std::time::Instant;

/// What `patch` is asked for.
pub struct PatchArgs<'a> {
    /// A study layer, or a graph's node (all of its conv/linear outputs when absent).
    pub layer: Option<&'a str>,
    pub direction: Option<Direction>,
    pub model: ModelKind,
    pub checkpoint: Option<&'a Path>,
    pub donor: Option<ModelKind>,
    pub to_unit: Option<usize>,
    /// Strongest effect on the patched images first.
    pub sorted: bool,
    /// Also run the slow hook-style path for every unit and report the largest gap.
    pub reference: bool,
}

#[derive(Serialize)]
struct PatchReport {
    direction: Direction,
    /// The direction in words: which images ran, where the values came from.
    meaning: &'static str,
    model: String,
    donor: String,
    path: String,
    baseline: PatchEffect,
    rows: Vec<PatchRow>,
    /// Patching every unit, the models' activations already cached.
    seconds: f64,
    /// Caching the activations (once per model, shared with ablations in the explorer).
    cache_seconds: f64,
    /// Largest |fast − slow| over every unit and metric, in points, with --reference.
    reference_gap: Option<f64>,
}

/// The direction asked for, checked against the donor: denoise by default, model
/// with a donor.
pub(super) fn direction(args: &PatchArgs) -> Result<Direction> {
    Ok(match (args.direction, args.donor) {
        (Some(d @ (Direction::Denoise | Direction::Noise)), Some(donor)) => {
            bail!("--direction {d} patches a model with its own twin images; --donor {donor} needs --direction model")
        }
        (Some(Direction::Model) | None, Some(_)) => Direction::Model,
        (Some(Direction::Model), None) => bail!("--direction model needs --donor MODEL (e.g. --donor clean)"),
        (Some(d), None) => d,
        (None, None) => Direction::Denoise,
    })
}

/// Sorting key, strongest effect first: the patch that moves the patched images
/// furthest from what they did unpatched.
pub(super) fn strongest_first(direction: Direction, effect: &PatchEffect) -> f64 {
    match direction {
        Direction::Noise => -effect.target_rate,
        _ => effect.target_rate,
    }
}

pub fn patch(common: &CommonArgs, format: Format, args: &PatchArgs) -> Result<()> {
    let direction = direction(args)?;
    let layer: Layer = args
        .layer
        .ok_or_else(|| eyre!("patch needs the LAYER whose units it patches (conv1, conv2, fc1 or fc2)"))?
        .parse()
        .map_err(|e: String| eyre!(e))?;
    let spec = Patch { layer, direction, to_unit: args.to_unit };
    spec.validate().map_err(|e| eyre!(e))?;
    let examined_model = args.checkpoint.is_none().then_some(args.model);
    let lab = open_lab_holding(common, &examined_model.into_iter().chain(args.donor).collect::<Vec<_>>())?;
    let (net, name, _) = examined(&lab, args.model, args.checkpoint)?;
    let donor_net = args.donor.map(|d| lab.load(d)).transpose()?;
    let started = Instant::now();
    let cache = ActivationCache::build(&net, &lab.test);
    let donor_cache = donor_net.as_ref().map(|d| ActivationCache::build(d, &lab.test));
    let cache_seconds = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let patcher = Patcher::new(&cache, donor_cache.as_ref(), &lab.test, spec).map_err(|e| eyre!(e))?;
    let bar = counter(&format!("patch {}", spec.path_name()), layer.units(), format.is_human());
    let mut rows = patcher.run(|done, _| {
        bar.set_position(done as u64);
        ControlFlow::Continue(())
    });
    bar.finish_and_clear();
    let seconds = started.elapsed().as_secs_f64();
    let reference_gap = args.reference.then(|| {
        let reference = patch::ReferencePatch::new(&net, donor_net.as_ref().unwrap_or(&net), &lab.test, spec);
        rows.iter().map(|r| effect_gap(&r.effect, &reference.effect(r.unit))).fold(0.0, f64::max)
    });
    if args.sorted {
        let moved = |r: &PatchRow| strongest_first(direction, &r.effect);
        rows.sort_by(|a, b| moved(a).total_cmp(&moved(b)).then(a.unit.cmp(&b.unit)));
    }
    let report = PatchReport {
        direction,
        meaning: direction.describe(),
        model: name,
        donor: args.donor.map(|d| format!("the {d} model")).unwrap_or_else(|| "the twin image".into()),
        path: spec.path_name(),
        baseline: patcher.baseline(),
        rows,
        seconds,
        cache_seconds,
        reference_gap,
    };
    let table = patch_table(direction, &report.baseline, &report.rows, format == Format::Csv);
    if format.is_human() {
        println!("{} — {} model, {}", report.meaning, report.model, report.path);
    }
    format.emit(&report, &table)?;
    if format.is_human() {
        eprintln!(
            "{} units patched in {:.3} s (after {:.2} s caching the activations, once per model)",
            report.rows.len(),
            seconds,
            cache_seconds
        );
        if let Some(gap) = report.reference_gap {
            eprintln!("slow reference path: largest difference {gap:.4} points");
        }
    }
    Ok(())
}

/// The largest difference between two effects, in points (or logits).
pub(super) fn effect_gap(a: &PatchEffect, b: &PatchEffect) -> f64 {
    let own = [a.target_rate - b.target_rate, a.logit_diff - b.logit_diff].map(f64::abs);
    own.into_iter().fold(metrics_gap(&a.metrics, &b.metrics), f64::max)
}

/// What `circuit` is asked for.
pub struct CircuitArgs {
    pub model: ModelKind,
    pub mode: AblationMode,
    /// Poison accuracy to reach (default: the clean model's + 3 points).
    pub poison_target: Option<f64>,
    pub clean_margin: f64,
    pub max_size: usize,
    pub survive: f64,
    /// Skip re-evaluating the reported sets on the slow reference path.
    pub no_verify: bool,
    /// A graph's nodes (module paths or their prefixes) to search.
    pub nodes: Vec<String>,
}

impl CircuitArgs {
    /// The flags' criteria on `config`.
    pub(super) fn configure<S>(&self, config: &mut SearchConfig<S>) {
        if let Some(p) = self.poison_target {
            config.criteria.poison_at_most = p;
        }
        config.criteria.clean_margin = self.clean_margin;
        config.criteria.max_size = self.max_size;
        config.survive_at = self.survive;
    }
}

#[derive(Serialize)]
pub(super) struct CircuitOutput<S: Site> {
    pub(super) model: ModelKind,
    #[serde(flatten)]
    pub(super) report: circuit::CircuitReport<S>,
    pub(super) seconds: f64,
    /// Largest |fast − slow| over the reported sets' metrics, in points.
    pub(super) reference_gap: Option<f64>,
    pub(super) verified_sets: usize,
}

pub fn circuit(common: &CommonArgs, format: Format, args: &CircuitArgs) -> Result<()> {
    if !args.nodes.is_empty() {
        bail!("--nodes chooses an imported graph's nodes; the study's search covers conv1, conv2 and fc1");
    }
    let clean_target = args.poison_target.is_none().then_some(ModelKind::Clean);
    let lab = open_lab_holding(common, &[args.model].into_iter().chain(clean_target).collect::<Vec<_>>())?;
    let nets = Analysis::load_models(&lab, &[args.model])?;
    // The clean model is evaluated only when the default target needs it.
    let clean_model_poison = match args.poison_target {
        Some(_) => 0.0,
        None => lab.test.evaluate(&lab.load(ModelKind::Clean)?).poison_acc,
    };
    let started = Instant::now();
    let analysis = Analysis::new(&lab, nets, args.model)?;
    let (net, cache) = (analysis.subject_net(), &analysis.cache);
    let clean_baseline = cache.evaluate(&lab.test, &AblationSet::default(), args.mode).clean_acc;
    let mut config = SearchConfig::defaults(clean_model_poison, clean_baseline, args.mode);
    args.configure(&mut config);
    let mut eval = FastEvaluator { cache, test: &lab.test, mode: args.mode };
    let report = search_shown(&mut eval, &config, format);
    let seconds = started.elapsed().as_secs_f64();
    let (reference_gap, verified_sets) = verify(&report, args.no_verify, |set| {
        lab.test.metrics(&ablation::reference_predictions(net, cache.means(), &lab.test, set, args.mode))
    });
    let output = CircuitOutput { model: args.model, report, seconds, reference_gap, verified_sets };
    format.emit(&output, &circuit_table(output.model.name(), &output.report))?;
    if format.is_human() {
        say_circuit(&output);
    }
    Ok(())
}

/// Unless `skip`, the reported sets (circuit, best pairs, front) evaluated again
/// on the slow path: the largest difference in points, and how many sets.
pub(super) fn verify<S: Site>(
    report: &circuit::CircuitReport<S>,
    skip: bool,
    slow: impl Fn(&AblationSet<S>) -> Metrics,
) -> (Option<f64>, usize) {
    if skip {
        return (None, 0);
    }
    let reported: Vec<&Tried<S>> = report.circuit.iter().chain(&report.best_pairs).chain(&report.front).collect();
    let gap = reported.iter().map(|t| metrics_gap(&t.metrics, &slow(&t.set))).fold(0.0, f64::max);
    (Some(gap), reported.len())
}

/// The search with its stage on a progress line.
pub(super) fn search_shown<S: Site>(
    eval: &mut impl Evaluate<S>,
    config: &SearchConfig<S>,
    format: Format,
) -> circuit::CircuitReport<S> {
    let bar = counter("circuit search", 1, format.is_human());
    let report = circuit::search(eval, config, |p| {
        bar.set_message(format!("{} ({} sets)", p.stage, p.evaluated));
        ControlFlow::Continue(())
    });
    bar.finish_and_clear();
    report
}

pub(super) fn metrics_gap(a: &Metrics, b: &Metrics) -> f64 {
    a.triple().iter().zip(b.triple()).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max)
}

/// The criteria and the verdict in words, below the table.
pub(super) fn say_circuit<S: Site>(o: &CircuitOutput<S>) {
    let r = &o.report;
    let c = &r.criteria;
    eprintln!(
        "criteria: poison ≤ {:.2} %, clean ≥ {:.2} % ({} mode); {} sets evaluated in {:.1} s",
        c.poison_at_most,
        c.clean_baseline - c.clean_margin,
        r.mode,
        r.evaluated,
        o.seconds
    );
    let stages: Vec<String> = r.stage_seconds.iter().map(|(name, s)| format!("{name} {s:.1} s")).collect();
    eprintln!("stages: {}", stages.join(", "));
    match &r.circuit {
        Some(t) => eprintln!("circuit: {} ({})", t.set, t.size_text()),
        None => eprintln!(
            "no set meets the criteria; the closest on the Pareto front are listed (smallest first){}",
            if r.stopped { " — search stopped early" } else { "" }
        ),
    }
    if let Some(gap) = o.reference_gap {
        eprintln!(
            "{} reported sets re-evaluated on the slow reference path: largest difference {gap:.4} points",
            o.verified_sets
        );
    }
}
