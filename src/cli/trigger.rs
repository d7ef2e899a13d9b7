//! `recover`, `unlearn` and `visualize`: finding the trigger without being told,
//! removing it, and looking at what units respond to.

use super::args::CommonArgs;
use super::output::Format;
use super::progress::{TrainingBars, counter};
use crate::engine::cleanse::{self, CleanseConfig, RecoveryEnd, RecoveryReport};
use crate::engine::featvis::{self, VisConfig, Visualization};
use crate::engine::lab::{Lab, ModelKind};
use crate::engine::layer::Layer;
use crate::engine::model::Net;
use crate::engine::recovery_store::{self, recovery_table};
use crate::engine::run::key::FileKey;
use crate::engine::unlearn::{self, UnlearnConfig};
use crate::picture::{Heatmap, Palette, Picture, save_grey_png, save_png};
use crate::setup::{Splits, open_lab_writing};
use crate::table::Table;
use crate::table::{metrics_row, metrics_table};
use color_eyre::eyre::{Result, bail, eyre};
use serde::Serialize;
use std::ops::ControlFlow;
use std::path::Path;

/// The model examined: a run's, or a checkpoint file; its name, and its file with
/// the checksum it was read with (what results are keyed by).
pub(super) fn examined(lab: &Lab, model: ModelKind, file: Option<&Path>) -> Result<(Net, String, FileKey)> {
    let (name, path) = match file {
        Some(path) => (
            path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "checkpoint".into()),
            path.to_path_buf(),
        ),
        None => {
            lab.run.require(&[model])?;
            (model.to_string(), lab.run.model_path(model))
        }
    };
    let (net, key) = FileKey::read_model(&path, lab.device)?;
    Ok((net, name, key))
}

/// Runs Neural Cleanse with a progress bar (labels × epochs).
fn run_recovery(lab: &Lab, net: &Net, name: &str, cfg: &CleanseConfig, visible: bool) -> Result<RecoveryReport> {
    let bar = counter(&format!("recover {name}"), 1, visible);
    let end = cleanse::recover(net, name, &lab.data, &lab.config.trigger, cfg, &mut |p| {
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
            "{} model: label {} flagged (anomaly index {:.2}, mask L1 {:.2}; {:.0} % of its mass on the planted trigger){}",
            report.model,
            report.dataset.label(t.label),
            t.anomaly_index,
            t.l1,
            100.0 * t.on_trigger.mass_share,
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
    cfg.validate(Layer::Fc2.units()).map_err(|e| eyre!("invalid recovery settings: {e}"))?;
    let models = if file.is_some() { &[][..] } else { std::slice::from_ref(&model) };
    let lab = open_lab_writing(common, None, Splits::TrainAndTest, models)?;
    let (net, name, key) = examined(&lab, model, file)?;
    let report = run_recovery(&lab, &net, &name, cfg, format.is_human())?;
    let pictures = recovery_store::save(&lab.run, &name, &key, &report)?;
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&report.labels)?),
        _ => {
            format.emit(&report.labels, &recovery_table(&report))?;
            if format.is_human() {
                println!("{}", verdict(&report));
                eprintln!(
                    "{:.1} s optimising ({} images × {} epochs, all labels batched), {:.1} s in all; \
                     saved {} and pictures in {}",
                    report.optimise_s,
                    cfg.images,
                    cfg.epochs,
                    report.total_s,
                    lab.run.recovery_path(&name).display(),
                    pictures.display()
                );
            }
        }
    }
    Ok(())
}

#[derive(Serialize)]
struct UnlearnResult {
    model: ModelKind,
    label: u8,
    mask_l1: f64,
    anomaly_index: f64,
    before: crate::engine::metrics::Metrics,
    after: crate::engine::metrics::Metrics,
    rehab_model: Option<crate::engine::metrics::Metrics>,
    seconds: f64,
}

pub fn unlearn(common: &CommonArgs, format: Format, model: ModelKind, cfg: &UnlearnConfig) -> Result<()> {
    if model == ModelKind::Unlearned {
        bail!("the unlearned model is what unlearning writes; pick the model to unlearn from (e.g. --model poisoned)");
    }
    let lab = open_lab_writing(common, None, Splits::TrainAndTest, &[model])?;
    let (net, name, key) = examined(&lab, model, None)?;
    let recovery = match recovery_store::load_current(&lab.run, &name, &key)? {
        Some(report) => report,
        None => {
            if format.is_human() {
                eprintln!("no current trigger recovery of the {name} model: running `trojanscope recover` first");
            }
            let report = run_recovery(&lab, &net, &name, &CleanseConfig::default(), format.is_human())?;
            recovery_store::save(&lab.run, &name, &key, &report)?;
            report
        }
    };
    let chosen = unlearn::chosen_trigger(&recovery, cfg.label)?;
    if format.is_human() {
        eprintln!(
            "unlearning label {}'s recovered trigger (mask L1 {:.2}, anomaly index {:.2}) from the {name} model",
            chosen.label, chosen.l1, chosen.anomaly_index
        );
    }
    let mut bars = TrainingBars::new(format.is_human());
    let Some(outcome) = unlearn::unlearn(&lab, &net, &key, &recovery, cfg, &mut |e| bars.on_event(e))? else {
        bail!("unlearning stopped; nothing saved");
    };
    let rehab = lab.run.sidecar(ModelKind::Rehab).ok().map(|s| s.metrics);
    let result = UnlearnResult {
        model,
        label: outcome.record.label,
        mask_l1: outcome.record.mask_l1,
        anomaly_index: outcome.record.anomaly_index,
        before: outcome.record.before.clone(),
        after: outcome.after.clone(),
        rehab_model: rehab.clone(),
        seconds: outcome.seconds,
    };
    let mut table = metrics_table("model");
    table.rows.push(metrics_row(&format!("{name} (before)"), &result.before));
    table.rows.push(metrics_row("unlearned", &result.after));
    if let Some(r) = &rehab {
        table.rows.push(metrics_row("rehab (true trigger)", r));
    }
    format.emit(&result, &table)?;
    if format.is_human() {
        eprintln!("saved {} ({:.1} s)", lab.run.model_path(ModelKind::Unlearned).display(), outcome.seconds);
    }
    Ok(())
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
    for r in &results {
        save_grey_png(&r.visualization.image, side, 8, &dir.join(format!("{layer}-{unit}-{}.png", r.model)))
            .map_err(|e| eyre!(e))?;
    }
    let tiles: Vec<Heatmap> = results.iter().map(|r| Heatmap::new(side, side, r.visualization.image.clone())).collect();
    let side_by_side = dir.join(format!("{layer}-{unit}.png"));
    save_png(&Picture::of(&Heatmap::tiled(&tiles, tiles.len()), Palette::Heat, 1.0).enlarged(8), &side_by_side)
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
