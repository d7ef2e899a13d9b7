//! Export: the pictures on screen as PNGs (kernels, activations, sweep heatmaps,
//! training charts, the recovered triggers and feature visualisations, patching
//! heatmaps and pruning charts) and the ablation history, sweeps, trigger recovery,
//! patching, circuit search, pruning curves and layer swaps as CSV and Markdown.
//! The job is built from the state in `update` and written on a helper thread.

use super::effect::ExportJob;
use super::panes::Panes;
use super::panes::circuit::{CircuitState, MapSite};
use super::panes::trigger::TriggerState;
use super::pictures::{self, channel_pictures, compared, grid_picture, kernel_pictures, unit_weights};
use super::study::Study;
use crate::analysis_tables::{circuit_table, named_patch_table, prune_chart, prune_curve_table};
use crate::engine::ablation::AblationMode;
use crate::engine::lab::ModelKind;
use crate::engine::metrics::Metrics;
use crate::engine::recovery_store::{self, recovery_table};
use crate::picture::{ACCURACY_COLOURS, Heatmap, Palette, Picture, Series, plot};
use crate::table::Table;
use crate::table::{metrics_row, metrics_table, swap_table};
use image::{Rgb, RgbImage};
use std::path::PathBuf;

/// Pictures are enlarged (nearest neighbour) to about this many pixels across.
const TARGET_PIXELS: u32 = 480;

pub fn enlarged(picture: &Picture) -> RgbImage {
    let side = picture.rgb.width().max(picture.rgb.height()).max(1);
    picture.enlarged((TARGET_PIXELS / side).max(1))
}

/// The Circuit pane's results: each patching direction as a table and a sites ×
/// units heatmap (black: the unit moves nothing, yellow: the whole backdoor), the
/// circuit search's report, and the pruning curves with a chart per ranking.
pub fn circuit_exports<S: MapSite>(
    state: &CircuitState<S>,
    pictures: &mut Vec<(String, RgbImage)>,
    tables: &mut Vec<(String, Table)>,
) {
    if let Some(patch) = state.patch.as_deref() {
        let width = patch.sites.iter().map(|s| s.unit_count()).max().unwrap_or(1);
        for map in &patch.maps {
            let name = format!("patching-{}", map.direction);
            let named = map.rows.iter().map(|r| (format!("{}:{}", r.site, r.unit), &r.effect));
            tables.push((name.clone(), named_patch_table(map.direction, &map.baseline, named, false)));
            let mut values = vec![0f32; width * patch.sites.len()];
            for r in &map.rows {
                let row = patch.sites.iter().position(|s| *s == r.site).expect("a map's rows are of its sites");
                values[row * width + r.unit] = (map.effect(r).clamp(0.0, 100.0) / 100.0) as f32;
            }
            let picture = Picture::of(&Heatmap::new(width, patch.sites.len(), values), Palette::Heat, 1.0);
            pictures.push((format!("{name}.png"), picture.enlarged(16)));
        }
    }
    if let Some(report) = &state.report {
        tables.push(("circuit-search".into(), circuit_table(ModelKind::Poisoned.name(), report)));
    }
    if let Some((layer, curves)) = &state.curves {
        tables.push((format!("prune-{layer}"), prune_curve_table(curves)));
        for c in curves {
            pictures.push((format!("prune-{layer}-{}.png", c.ranking), prune_chart(c)));
        }
    }
}

/// The Trigger pane's results: the recovery's overview and table, and the
/// feature visualisations in each model.
pub fn trigger_exports(
    state: &TriggerState,
    pictures: &mut Vec<(String, RgbImage)>,
    tables: &mut Vec<(String, Table)>,
) {
    if let Some(report) = state.report.as_deref() {
        pictures.push(("trigger-recovery-overview.png".into(), recovery_store::overview(report).enlarged(6)));
        tables.push(("trigger-recovery".into(), recovery_table(report)));
    }
    if let Some(v) = state.visuals.as_deref() {
        for (kind, vis) in &v.models {
            let picture = Picture::of_image(&vis.image, vis.shape);
            pictures.push((format!("visualize-{}-{}-{kind}.png", v.site, v.unit), enlarged(&picture)));
        }
    }
}

/// A sweep of `site` in `mode` (each unit's metrics): a units × metrics heatmap and its table.
pub fn sweep_exports(
    site: &str,
    mode: AblationMode,
    rows: &[(usize, &Metrics)],
    pictures: &mut Vec<(String, RgbImage)>,
    tables: &mut Vec<(String, Table)>,
) {
    let values: Vec<f32> =
        Metrics::HEADLINE.iter().flat_map(|(_, accuracy)| rows.iter().map(move |(_, m)| accuracy(m) as f32)).collect();
    let map = Heatmap::new(rows.len(), Metrics::HEADLINE.len(), values);
    pictures.push((format!("sweep-{site}-{mode}.png"), Picture::of(&map, Palette::Heat, 100.0).enlarged(16)));
    let mut table = metrics_table("unit");
    table.rows.extend(rows.iter().map(|(unit, m)| metrics_row(&format!("{site}:{unit}"), m)));
    tables.push((format!("sweep-{site}-{mode}"), table));
}

/// The ablation history: each set's metrics, its mode and the model it was measured on.
pub fn history_table<'m>(rows: impl Iterator<Item = (String, AblationMode, &'m Metrics, ModelKind)>) -> Table {
    let mut table = Table::new(["set", "mode", "clean", "poison (ASR)", "ASR excl. target", "rehab", "model"]);
    for (set, mode, metrics, model) in rows {
        let mut row = metrics_row(&set, metrics);
        row.insert(1, mode.to_string());
        row.push(model.to_string());
        table.rows.push(row);
    }
    table
}

/// Everything on screen worth keeping, as files for `dir`.
pub fn job(study: &Study, panes: &Panes, dir: PathBuf) -> ExportJob {
    let mut pictures = Vec::new();
    let (layer, unit) = (study.layer, study.selected_unit());
    let (reference, subject) = (study.reference, study.subject);
    if let Some(weights) = unit_weights(study) {
        let (three, _, _) = kernel_pictures(layer, &weights);
        for (picture, name) in three.iter().zip([reference.name(), subject.name(), "diff"]) {
            pictures.push((format!("kernel-{layer}-{unit}-{name}.png"), enlarged(picture)));
        }
    }
    if let Some(data) = study.digit_data.as_deref()
        && let Some(pair) = compared(data, reference, subject)
        && layer.is_conv()
    {
        let stem = format!("activations-digit{}-{layer}-{unit}", data.index);
        let four = channel_pictures(data, pair, layer, unit);
        for (picture, name) in four.iter().zip(["digit", reference.name(), subject.name(), "diff"]) {
            pictures.push((format!("{stem}-{name}.png"), enlarged(picture)));
        }
        let grid = grid_picture(pair, layer, unit, 8);
        pictures.push((format!("activations-digit{}-{layer}-all-diff.png", data.index), enlarged(&grid)));
    }
    if let Some(top) = panes.activations.top.as_deref() {
        for (end, hits) in [("top", &top.top), ("bottom", &top.bottom)] {
            for (rank, hit) in hits.iter().enumerate() {
                let name = format!("{end}-images-{}-{}-{}-{rank}.png", top.model, top.layer, top.unit);
                pictures.push((name, enlarged(&pictures::ranked_picture(hit, top.side))));
            }
        }
    }
    let mut tables = Vec::new();
    for (layer, sweep) in &study.ablation.sweeps {
        let rows: Vec<(usize, &Metrics)> = sweep.rows.iter().map(|r| (r.unit, &r.metrics)).collect();
        sweep_exports(&layer.to_string(), sweep.mode, &rows, &mut pictures, &mut tables);
    }
    if let Some(swaps) = panes.ablation.swaps.as_deref().filter(|s| !s.rows.is_empty()) {
        tables.push((format!("swaps-{}-into-{}", swaps.donor, swaps.recipient), swap_table(&swaps.rows)));
    }
    let training = &panes.training;
    if !training.losses.is_empty() {
        let points = pictures::loss_points(&training.losses, 800);
        let top = points.iter().map(|p| p.1).fold(1e-6, f64::max);
        pictures.push(("training-loss.png".into(), plot(&[(&points, Rgb([200, 120, 0]))], (0.0, top))));
    }
    let series = pictures::accuracy_series(training);
    if !series[0].is_empty() {
        let lines: Vec<Series> = series.iter().map(|s| s.as_slice()).zip(ACCURACY_COLOURS).collect();
        pictures.push(("training-accuracy.png".into(), plot(&lines, (0.0, 100.0))));
    }
    trigger_exports(&panes.trigger, &mut pictures, &mut tables);
    circuit_exports(&panes.circuit, &mut pictures, &mut tables);
    let history = &study.ablation.history;
    if !history.is_empty() {
        let rows = history.iter().map(|e| (e.set.to_string(), e.mode, &e.metrics, e.model));
        tables.push(("ablation-history".into(), history_table(rows)));
    }
    ExportJob { dir, pictures, tables }
}
