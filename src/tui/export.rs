//! Export: the pictures on screen as PNGs (kernels, activations, sweep heatmaps,
//! training charts, the recovered triggers and feature visualisations, patching
//! heatmaps and pruning charts) and the ablation history, sweeps, trigger recovery,
//! patching, circuit search, pruning curves and layer swaps as CSV and Markdown.
//! The job is built from the state in `update` and written on a helper thread.

use super::effect::ExportJob;
use super::panes::Panes;
use super::pictures::{self, channel_pictures, compared, grid_picture, kernel_pictures, unit_weights};
use super::study::Study;
use crate::analysis_tables::{circuit_table, named_patch_table, prune_chart, prune_curve_table};
use crate::engine::lab::ModelKind;
use crate::engine::layer::Layer;
use crate::engine::metrics::Metrics;
use crate::engine::recovery_store::{self, recovery_table};
use crate::picture::{ACCURACY_COLOURS, Heatmap, Palette, Picture, Series, plot};
use crate::table::Table;
use crate::table::{metrics_row, swap_table, sweep_table};
use image::{Rgb, RgbImage};
use std::path::PathBuf;

/// Pictures are enlarged (nearest neighbour) to about this many pixels across.
const TARGET_PIXELS: u32 = 480;

fn enlarged(picture: &Picture) -> RgbImage {
    let side = picture.rgb.width().max(picture.rgb.height()).max(1);
    picture.enlarged((TARGET_PIXELS / side).max(1))
}

/// The Circuit pane's results: each patching direction as a table and a layers ×
/// units heatmap (black: the unit moves nothing, yellow: the whole backdoor), the
/// circuit search's report, and the pruning curves with a chart per ranking.
fn circuit_exports(panes: &Panes, pictures: &mut Vec<(String, RgbImage)>, tables: &mut Vec<(String, Table)>) {
    let state = &panes.circuit;
    for map in state.patch.iter().flat_map(|p| &p.maps) {
        let name = format!("patching-{}", map.direction);
        let named = map.rows.iter().map(|r| (format!("{}:{}", r.site, r.unit), &r.effect));
        tables.push((name.clone(), named_patch_table(map.direction, &map.baseline, named, false)));
        let width = Layer::ALL.iter().map(|l| l.units()).max().unwrap_or(1);
        let mut values = vec![0f32; width * Layer::ALL.len()];
        for r in &map.rows {
            values[r.site.position() * width + r.unit] = (map.effect(r).clamp(0.0, 100.0) / 100.0) as f32;
        }
        let picture = Picture::of(&Heatmap::new(width, Layer::ALL.len(), values), Palette::Heat, 1.0);
        pictures.push((format!("{name}.png"), picture.enlarged(16)));
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
        let values: Vec<f32> = Metrics::HEADLINE
            .iter()
            .flat_map(|(_, accuracy)| sweep.rows.iter().map(move |r| accuracy(&r.metrics) as f32))
            .collect();
        let map = Heatmap::new(sweep.rows.len(), Metrics::HEADLINE.len(), values);
        let picture = Picture::of(&map, Palette::Heat, 100.0);
        pictures.push((format!("sweep-{layer}-{}.png", sweep.mode), picture.enlarged(16)));
        tables.push((format!("sweep-{layer}-{}", sweep.mode), sweep_table(&sweep.rows)));
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
    if let Some(report) = panes.trigger.report.as_deref() {
        pictures.push(("trigger-recovery-overview.png".into(), recovery_store::overview(report).enlarged(6)));
        tables.push(("trigger-recovery".into(), recovery_table(report)));
    }
    if let Some(v) = panes.trigger.visuals.as_deref() {
        for (kind, vis) in &v.models {
            let map = Heatmap::new(vis.side, vis.side, vis.image.clone());
            let picture = Picture::of(&map, Palette::Grey, 1.0);
            pictures.push((format!("visualize-{}-{}-{kind}.png", v.layer, v.unit), enlarged(&picture)));
        }
    }
    circuit_exports(panes, &mut pictures, &mut tables);
    let history = &study.ablation.history;
    if !history.is_empty() {
        let mut table = Table::new(["set", "mode", "clean", "poison (ASR)", "ASR excl. target", "rehab", "model"]);
        for e in history {
            let mut row = metrics_row(&e.set.to_string(), &e.metrics);
            row.insert(1, e.mode.to_string());
            row.push(e.model.to_string());
            table.rows.push(row);
        }
        tables.push(("ablation-history".into(), table));
    }
    ExportJob { dir, pictures, tables }
}
