//! The subcommands, each a thin layer over the engine.

use super::args::{AblationTarget, CommonArgs};
use super::output::Format;
use super::progress::{TrainingBars, counter};
use crate::data::dataset::Dataset;
use crate::engine::ablation::{self, AblationSet};
use crate::engine::analysis::Analysis;
use crate::engine::cache::ActivationCache;
use crate::engine::checkpoint;
use crate::engine::diff;
use crate::engine::lab::{Lab, ModelKind};
use crate::engine::layer::Layer;
use crate::engine::metrics::Metrics;
use crate::engine::probe;
use crate::engine::run::RunDir;
use crate::engine::swap;
use crate::engine::sweep::{self, SweepRow};
use crate::engine::train::Phase;
use crate::setup::open_lab_holding;
use crate::table::{
    Table, change_row, interval_cells, interval_headers, metrics_row, metrics_table, pct, swap_table, sweep_table,
};
use color_eyre::eyre::Result;
use serde::Serialize;
use std::ops::ControlFlow;
use std::path::Path;

/// Trains `phases`, with progress bars when a person is watching.
pub fn train(lab: &Lab, format: Format, phases: &[Phase]) -> Result<()> {
    let mut phases = phases.to_vec();
    phases.sort();
    phases.dedup();
    if format.is_human() {
        eprintln!(
            "training {} on {} ({} train / {} test images) into {}",
            phases.iter().map(|p| p.name()).collect::<Vec<_>>().join(" → "),
            crate::engine::device::describe(lab.device),
            lab.data.train.len(),
            lab.data.test.len(),
            lab.run.root.display()
        );
    }
    let mut bars = TrainingBars::new(format.is_human());
    let trained = lab.train(&phases, &mut |event| bars.on_event(event))?;
    if format.is_human() {
        // Saving already measured each model on the full test set: read it back
        // rather than evaluating again.
        for (kind, _) in &trained {
            let m = lab.run.sidecar(*kind)?.metrics;
            eprintln!(
                "{kind:>8}: clean {:.2}  poison {:.2}  ASR excl. target {:.2}  rehab {:.2}  → {}",
                m.clean_acc,
                m.poison_acc,
                m.asr_non_target,
                m.rehab_acc,
                lab.run.model_path(*kind).display()
            );
        }
    }
    Ok(())
}

#[derive(Serialize)]
pub struct EvalResult {
    pub model: String,
    /// BackdoorBench's attack success rate: triggered images whose label is not
    /// their target, classified as the target (`metrics.asr_non_target`).
    pub asr: f64,
    pub metrics: Metrics,
}

impl EvalResult {
    pub fn new(model: String, metrics: Metrics) -> EvalResult {
        EvalResult { model, asr: metrics.asr_non_target, metrics }
    }
}

/// `eval`'s table, study or graph: a row per model, per-class columns if asked.
pub fn eval_table(results: &[EvalResult], dataset: crate::data::dataset::Dataset, per_class: bool) -> Table {
    let mut table = metrics_table("model");
    if per_class {
        let classes = results.first().map_or(0, |r| r.metrics.per_class_clean.len());
        let headings: Vec<String> = (0..classes).map(|d| dataset.heading(d as u8)).collect();
        table.headers.extend(headings.iter().cloned());
        table.headers.extend(interval_headers(headings));
    }
    for r in results {
        let mut row = metrics_row(&r.model, &r.metrics);
        if per_class {
            let m = &r.metrics;
            row.extend(m.per_class_clean.iter().map(|&a| pct(a)));
            let intervals = m.class_intervals().map(|c| c.into_iter().map(Some).collect::<Vec<_>>());
            row.extend(interval_cells(intervals.unwrap_or_else(|| vec![None; m.per_class_clean.len()])));
        }
        table.rows.push(row);
    }
    table
}

/// `ablate`'s table, study or graph: the model, the ablated model, any reference,
/// and the change.
pub fn ablate_table(
    model: ModelKind,
    set: &str,
    mode: &str,
    b: &Metrics,
    a: &Metrics,
    reference: Option<&Metrics>,
) -> Table {
    let mut table = metrics_table("");
    table.rows.push(metrics_row(&format!("{model} model"), b));
    table.rows.push(metrics_row(&format!("ablated {set} ({mode})"), a));
    if let Some(r) = reference {
        table.rows.push(metrics_row("same, study's slow path", r));
    }
    table.rows.push(change_row("change", b, a));
    table
}

pub fn eval(
    common: &CommonArgs,
    format: Format,
    models: &[ModelKind],
    file: Option<&Path>,
    per_class: bool,
) -> Result<()> {
    let models = if models.is_empty() { ModelKind::STUDY.to_vec() } else { models.to_vec() };
    let lab = open_lab_holding(common, if file.is_some() { &[] } else { &models })?;
    let mut results = Vec::new();
    if let Some(path) = file {
        let net = checkpoint::load_net(path, lab.device)?;
        results.push(EvalResult::new(path.display().to_string(), lab.test.evaluate(&net)));
    } else {
        for kind in models {
            results.push(EvalResult::new(kind.to_string(), lab.test.evaluate(&lab.load(kind)?)));
        }
    }
    let table = eval_table(&results, lab.config.dataset, per_class);
    format.emit(&results, &table)
}

#[derive(Serialize)]
struct AblateResult {
    model: ModelKind,
    mode: String,
    set: String,
    baseline: Metrics,
    ablated: Metrics,
    reference: Option<Metrics>,
}

pub fn ablate(
    common: &CommonArgs,
    format: Format,
    set: &AblationSet,
    target: &AblationTarget,
    reference: bool,
) -> Result<()> {
    let lab = open_lab_holding(common, &[target.model])?;
    let analysis = Analysis::load(&lab, &[target.model], target.model)?;
    let (net, cache) = (analysis.subject_net(), &analysis.cache);
    let result = AblateResult {
        model: target.model,
        mode: target.mode.to_string(),
        set: set.to_string(),
        baseline: cache.evaluate(&lab.test, &AblationSet::default(), target.mode),
        ablated: cache.evaluate(&lab.test, set, target.mode),
        reference: reference.then(|| {
            lab.test.metrics(&ablation::reference_predictions(net, cache.means(), &lab.test, set, target.mode))
        }),
    };
    let (set, mode) = (result.set.as_str(), result.mode.as_str());
    let table = ablate_table(target.model, set, mode, &result.baseline, &result.ablated, result.reference.as_ref());
    format.emit(&result, &table)
}

/// Sweeps `layer` of a loaded model with a progress bar.
pub fn sweep_layer(
    lab: &Lab,
    cache: &ActivationCache,
    layer: Layer,
    target: &AblationTarget,
    visible: bool,
) -> Vec<SweepRow> {
    with_sweep_bar(layer, visible, |progress| sweep::sweep(cache, &lab.test, layer, target.mode, progress))
}

/// Runs one of the engine's sweeps of `layer` under a progress bar of its units.
fn with_sweep_bar(
    layer: Layer,
    visible: bool,
    sweep: impl FnOnce(&mut dyn FnMut(usize, usize) -> ControlFlow<()>) -> Vec<SweepRow>,
) -> Vec<SweepRow> {
    let bar = counter(&format!("sweep {layer}"), layer.units(), visible);
    let rows = sweep(&mut |done, _| {
        bar.set_position(done as u64);
        ControlFlow::Continue(())
    });
    bar.finish_and_clear();
    rows
}

pub fn sweep_cmd(
    common: &CommonArgs,
    format: Format,
    layer: Layer,
    target: &AblationTarget,
    sorted: bool,
) -> Result<()> {
    let lab = open_lab_holding(common, &[target.model])?;
    let net = lab.load(target.model)?;
    // Nothing else reads the model's cache: the sweep streams the test set.
    let mut rows = with_sweep_bar(layer, format.is_human(), |progress| {
        sweep::sweep_streamed(&net, &lab.test, layer, target.mode, progress)
    });
    if sorted {
        rows.sort_by(|a, b| a.metrics.poison_acc.total_cmp(&b.metrics.poison_acc));
    }
    format.emit(&rows, &sweep_table(&rows))
}

pub fn swap_rows(
    lab: &Lab,
    donor: ModelKind,
    recipient: ModelKind,
    subsets: &[Vec<Layer>],
) -> Result<Vec<swap::SwapRow>> {
    let (donor, recipient) = (lab.load(donor)?, lab.load(recipient)?);
    Ok(swap::swap_many(&recipient, &donor, subsets, &lab.test))
}

pub fn swap_cmd(
    common: &CommonArgs,
    format: Format,
    layers: Option<&[Layer]>,
    donor: ModelKind,
    recipient: ModelKind,
) -> Result<()> {
    let lab = open_lab_holding(common, &[donor, recipient])?;
    let subsets = match layers {
        Some(layers) => vec![layers.to_vec()],
        None => swap::all_subsets(),
    };
    let rows = swap_rows(&lab, donor, recipient, &subsets)?;
    format.emit(&rows, &swap_table(&rows))
}

pub fn diff_summary_table(pairs: &[(String, Vec<diff::LayerDiff>)]) -> Table {
    let mut table = Table::new(["difference", "layer", "L1", "L2", "max |Δ|", "mean |Δ|"]);
    for (name, layers) in pairs {
        for d in layers {
            table.push([
                name.clone(),
                d.layer.to_string(),
                format!("{:.4}", d.total.l1),
                format!("{:.4}", d.total.l2),
                format!("{:.5}", d.total.max),
                format!("{:.6}", d.total.mean_abs),
            ]);
        }
    }
    table
}

pub fn diff_cmd(common: &CommonArgs, format: Format, a: ModelKind, b: ModelKind, layer: Option<Layer>) -> Result<()> {
    let run = RunDir::new(&common.checkpoints, &common.run);
    let device = crate::engine::device::parse_device(&common.device).map_err(|e| color_eyre::eyre::eyre!(e))?;
    let diffs = diff::diff(&run.load(a, device)?, &run.load(b, device)?);
    let name = format!("{b} − {a}");
    match layer {
        None => format.emit(&diffs, &diff_summary_table(&[(name, diffs.clone())])),
        Some(layer) => {
            let d = &diffs[layer.position()];
            format.emit(d, &diff_units_table(&layer.to_string(), &d.units))
        }
    }
}

/// One row per unit of `name`: the norms of its difference.
pub fn diff_units_table(name: &str, units: &[diff::DiffNorms]) -> Table {
    let mut table = Table::new(["unit", "L1", "L2", "max |Δ|"]);
    for (unit, n) in units.iter().enumerate() {
        table.push([format!("{name}:{unit}"), format!("{:.4}", n.l1), format!("{:.4}", n.l2), format!("{:.5}", n.max)]);
    }
    table
}

pub fn features(
    common: &CommonArgs,
    format: Format,
    layer: Layer,
    unit: usize,
    model: ModelKind,
    k: usize,
) -> Result<()> {
    AblationSet::single(layer, unit).validate().map_err(|e| color_eyre::eyre::eyre!(e))?;
    let lab = open_lab_holding(common, &[model])?;
    let report = probe::features(&lab.load(model)?, &lab.test, layer, unit, k);
    format.emit(&report, &features_table(&report.top, &report.bottom, lab.config.dataset))
}

/// The images that excite a unit most and least, one row each.
pub fn features_table(top: &[probe::FeatureHit], bottom: &[probe::FeatureHit], dataset: Dataset) -> Table {
    let mut table = Table::new(["end", "rank", "test image", "input", "label", "mean activation"]);
    for (end, hits) in [("most", top), ("least", bottom)] {
        for (rank, h) in hits.iter().enumerate() {
            table.push([
                end.to_string(),
                (rank + 1).to_string(),
                h.image.to_string(),
                if h.triggered { "triggered" } else { "clean" }.to_string(),
                dataset.label(h.label),
                format!("{:.4}", h.score),
            ]);
        }
    }
    table
}
