//! `recover`, `unlearn` and `visualize`: finding the trigger without being told,
//! removing it, and looking at what units respond to.

use super::args::CommonArgs;
use super::graph_trigger;
use super::output::Format;
use super::progress::{TrainingBars, counter};
use crate::analysis_tables::vis_figure;
use crate::data::attack::Footprint;
use crate::data::loaded::LoadedData;
use crate::engine::classifier::{Classifier, FrozenStudy};
use crate::engine::cleanse::{self, CleanseConfig, RecoveryEnd, RecoveryReport};
use crate::engine::featvis::{self, VisConfig, Visualization};
use crate::engine::lab::{Lab, ModelKind};
use crate::engine::layer::Layer;
use crate::engine::metrics::Metrics;
use crate::engine::model::Net;
use crate::engine::recovery_store::{self, recovery_table};
use crate::engine::run::RunDir;
use crate::engine::run::key::FileKey;
use crate::engine::unlearn::{self, UnlearnConfig, UnlearnOutcome};
use crate::graph::run::is_graph_run;
use crate::picture::{input_picture, save_image_png};
use crate::setup::{Splits, open_lab_writing};
use crate::table::Table;
use crate::table::{metrics_row, metrics_table};
use color_eyre::eyre::{Result, bail, eyre};
use serde::Serialize;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

/// The model examined: a run's, or a checkpoint file; its name, and its file with
/// the checksum it was read with (what results are keyed by).
pub(super) fn examined(lab: &Lab, model: ModelKind, file: Option<&Path>) -> Result<(Net, String, FileKey)> {
    if file.is_none() {
        lab.run.require(&[model])?;
    }
    let (name, path) = model_file(&lab.run, model, file);
    let (net, key) = FileKey::read_model(&path, lab.device)?;
    Ok((net, name, key))
}

/// The examined model's name and file: a checkpoint file's stem and the file, or
/// the run's model.
pub(super) fn model_file(run: &RunDir, model: ModelKind, file: Option<&Path>) -> (String, PathBuf) {
    match file {
        Some(path) => (
            path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "checkpoint".into()),
            path.to_path_buf(),
        ),
        None => (model.to_string(), run.model_path(model)),
    }
}

/// Runs Neural Cleanse with a progress bar (labels × epochs).
pub(super) fn run_recovery(
    net: &dyn Classifier,
    name: &str,
    (data, trigger): (&LoadedData, Option<&Footprint>),
    cfg: &CleanseConfig,
    visible: bool,
) -> Result<RecoveryReport> {
    let bar = counter(&format!("recover {name}"), 1, visible);
    let end = cleanse::recover(net, name, data, trigger, cfg, &mut |p| {
        bar.set_length(p.total_steps as u64);
        bar.set_position(p.step as u64);
        ControlFlow::Continue(())
    })
    .map_err(|e| eyre!("invalid recovery settings: {e}"))?;
    bar.finish_and_clear();
    match end {
        RecoveryEnd::Done(report) => Ok(*report),
        RecoveryEnd::Cancelled => bail!("recovery stopped"),
    }
}

/// One line saying what the recovery concluded.
pub fn verdict(report: &RecoveryReport) -> String {
    match report.most_anomalous() {
        Some(t) => format!(
            "{} model: label {} flagged (anomaly index {:.2}, mask L1 {:.2}; {}){}",
            report.model,
            report.dataset.label(t.label),
            t.anomaly_index,
            t.l1,
            t.share_on_trigger(" % of its mass on the planted trigger"),
            if report.flagged.len() > 1 {
                format!("; also flagged: {:?}", &report.flagged[1..])
            } else {
                String::new()
            }
        ),
        None => {
            let worst = report.labels.iter().max_by(|a, b| a.anomaly_index.total_cmp(&b.anomaly_index));
            format!(
                "{} model: no label flagged (largest anomaly index {:.2})",
                report.model,
                worst.map(|t| t.anomaly_index).unwrap_or(0.0)
            )
        }
    }
}

pub fn recover(
    common: &CommonArgs,
    format: Format,
    model: ModelKind,
    file: Option<&Path>,
    cfg: &CleanseConfig,
) -> Result<()> {
    if is_graph_run(&RunDir::new(&common.checkpoints, &common.run)) {
        return graph_trigger::recover(format, &graph_trigger::examine(common, model, file)?, cfg);
    }
    cfg.validate(Layer::Fc2.units()).map_err(|e| eyre!("invalid recovery settings: {e}"))?;
    let models = if file.is_some() { &[][..] } else { std::slice::from_ref(&model) };
    let lab = open_lab_writing(common, None, Splits::TrainAndTest, models)?;
    let (net, name, key) = examined(&lab, model, file)?;
    let study = FrozenStudy::of(&net, lab.data.dataset.normalisation());
    let report = run_recovery(&study, &name, (&lab.data, lab.config.footprint().as_ref()), cfg, format.is_human())?;
    let pictures = recovery_store::save(&lab.run, &name, &key, &report)?;
    show_recovery(format, &report, &lab.run, &pictures)
}

/// Prints a saved recovery: its table, verdict and where it was saved.
pub(super) fn show_recovery(format: Format, report: &RecoveryReport, run: &RunDir, pictures: &Path) -> Result<()> {
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&report.labels)?),
        _ => {
            format.emit(&report.labels, &recovery_table(report))?;
            if format.is_human() {
                println!("{}", verdict(report));
                eprintln!(
                    "{:.1} s optimising ({} images × {} epochs, all labels batched), {:.1} s in all; \
                     saved {} and pictures in {}",
                    report.optimise_s,
                    report.config.images,
                    report.config.epochs,
                    report.total_s,
                    run.recovery_path(&report.model).display(),
                    pictures.display()
                );
            }
        }
    }
    Ok(())
}

/// The saved recovery of the model `key` names if it is current, else a fresh
/// one with the default settings (saved).
pub(super) fn current_recovery(
    run: &RunDir,
    (name, key): (&str, &FileKey),
    net: &dyn Classifier,
    data: (&LoadedData, Option<&Footprint>),
    human: bool,
) -> Result<RecoveryReport> {
    if let Some(report) = recovery_store::load_current(run, name, key)? {
        return Ok(report);
    }
    if human {
        eprintln!("no current trigger recovery of the {name} model: running `trojanscope recover` first");
    }
    let report = run_recovery(net, name, data, &CleanseConfig::default(), human)?;
    recovery_store::save(run, name, key, &report)?;
    Ok(report)
}

#[derive(Serialize)]
struct UnlearnResult {
    model: ModelKind,
    label: u8,
    mask_l1: f64,
    anomaly_index: f64,
    before: Metrics,
    after: Metrics,
    rehab_model: Option<Metrics>,
    seconds: f64,
}

/// Refuses unlearning the unlearned model itself.
fn check_unlearnable(model: ModelKind) -> Result<()> {
    if model == ModelKind::Unlearned {
        bail!("the unlearned model is what unlearning writes; pick the model to unlearn from (e.g. --model poisoned)");
    }
    Ok(())
}

/// Says which recovered trigger is unlearned from the `name` model.
pub(super) fn announce_unlearning(format: Format, recovery: &RecoveryReport, cfg: &UnlearnConfig) -> Result<()> {
    let chosen = unlearn::chosen_trigger(recovery, cfg.label)?;
    if format.is_human() {
        eprintln!(
            "unlearning label {}'s recovered trigger (mask L1 {:.2}, anomaly index {:.2}) from the {} model",
            chosen.label, chosen.l1, chosen.anomaly_index, recovery.model
        );
    }
    Ok(())
}

/// Prints unlearning's before and after (and the rehab model's, trained with the
/// true trigger, where the run has one).
pub(super) fn show_unlearned(
    format: Format,
    model: ModelKind,
    outcome: &UnlearnOutcome,
    rehab: Option<Metrics>,
    saved: &Path,
) -> Result<()> {
    let result = UnlearnResult {
        model,
        label: outcome.record.label,
        mask_l1: outcome.record.mask_l1,
        anomaly_index: outcome.record.anomaly_index,
        before: outcome.record.before.clone(),
        after: outcome.after.clone(),
        rehab_model: rehab,
        seconds: outcome.seconds,
    };
    let mut table = metrics_table("model");
    table.rows.push(metrics_row(&format!("{} (before)", outcome.record.from_model), &result.before));
    table.rows.push(metrics_row("unlearned", &result.after));
    if let Some(r) = &result.rehab_model {
        table.rows.push(metrics_row("rehab (true trigger)", r));
    }
    format.emit(&result, &table)?;
    if format.is_human() {
        eprintln!("saved {} ({:.1} s)", saved.display(), outcome.seconds);
    }
    Ok(())
}

pub fn unlearn(common: &CommonArgs, format: Format, model: ModelKind, cfg: &UnlearnConfig) -> Result<()> {
    check_unlearnable(model)?;
    cfg.validate()?;
    if is_graph_run(&RunDir::new(&common.checkpoints, &common.run)) {
        return graph_trigger::unlearn(format, &graph_trigger::examine(common, model, None)?, model, cfg);
    }
    let lab = open_lab_writing(common, None, Splits::TrainAndTest, &[model])?;
    let (net, name, key) = examined(&lab, model, None)?;
    let study = FrozenStudy::of(&net, lab.data.dataset.normalisation());
    let planted = lab.config.footprint();
    let data = (&lab.data, planted.as_ref());
    let recovery = current_recovery(&lab.run, (&name, &key), &study, data, format.is_human())?;
    announce_unlearning(format, &recovery, cfg)?;
    let mut bars = TrainingBars::new(format.is_human());
    let Some(outcome) = unlearn::unlearn(&lab, &net, &key, &recovery, cfg, &mut |e| bars.on_event(e))? else {
        bail!("unlearning stopped; nothing saved");
    };
    let rehab = lab.run.sidecar(ModelKind::Rehab).ok().map(|s| s.metrics);
    show_unlearned(format, model, &outcome, rehab, &lab.run.model_path(ModelKind::Unlearned))
}

#[derive(Serialize)]
struct VisResult {
    model: ModelKind,
    #[serde(flatten)]
    visualization: Visualization,
}

pub fn visualize(
    common: &CommonArgs,
    format: Format,
    layer: Layer,
    unit: usize,
    models: &[ModelKind],
    cfg: &VisConfig,
) -> Result<()> {
    if unit >= layer.units() {
        bail!("{layer} has units 0..={}, not {unit}", layer.units() - 1);
    }
    cfg.validate().map_err(|e| eyre!("invalid visualisation settings: {e}"))?;
    let models = if models.is_empty() { ModelKind::STUDY.to_vec() } else { models.to_vec() };
    // It saves its pictures into the run.
    let lab = open_lab_writing(common, None, Splits::Test, &models)?;
    let side = crate::data::mnist::SIDE;
    let input = (side, lab.data.test.normalisation);
    let mut results = Vec::new();
    for model in models {
        let visualization = featvis::visualize(&lab.load(model)?, (layer, unit), input, cfg).map_err(|e| eyre!(e))?;
        results.push(VisResult { model, visualization });
    }
    let dir = lab.run.root.join("visualize");
    let mut panels = Vec::new();
    for r in &results {
        let v = &r.visualization;
        save_image_png(&v.image, [1, side, side], 8, &dir.join(format!("{layer}-{unit}-{}.png", r.model)))
            .map_err(|e| eyre!(e))?;
        let image = input_picture(&v.image, [1, side, side], 1).map_err(|e| eyre!(e))?;
        panels.push((r.model.to_string(), image, v.start_activation, v.activation));
    }
    let [side_by_side, _] = vis_figure(&format!("{layer}:{unit}"), panels, 1)
        .save(&dir, &format!("{layer}-{unit}"))
        .map_err(|e| eyre!(e))?;
    let rows = results.iter().map(|r| (r.model, r.visualization.start_activation, r.visualization.activation));
    format.emit(&results, &vis_table(&format!("{layer}:{unit}"), rows))?;
    if format.is_human() {
        eprintln!("pictures in {} (side by side: {})", dir.display(), side_by_side.display());
    }
    Ok(())
}

/// Per model, the unit's activation on the starting image and on the optimised one.
pub(super) fn vis_table(unit: &str, rows: impl Iterator<Item = (ModelKind, f64, f64)>) -> Table {
    let mut table = Table::new(["model", "unit", "activation at start", "activation optimised"]);
    for (model, start, end) in rows {
        table.push([model.to_string(), unit.to_string(), format!("{start:.3}"), format!("{end:.3}")]);
    }
    table
}
