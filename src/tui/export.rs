//! Export: the pictures on screen as PNGs (kernels, activations, sweep heatmaps,
//! training charts, the recovered triggers and feature visualisations, patching
//! heatmaps and pruning charts) and the ablation history, sweeps, trigger recovery,
//! patching, circuit search and pruning curves as CSV and Markdown. The
//! job is built from the state in `update` and written on a helper thread.

use super::app::App;
use super::panes::{activations, kernels, training};
use crate::analysis_tables::{circuit_table, patch_table, prune_chart, prune_curve_table};
use crate::engine::lab::ModelKind;
use crate::engine::layer::Layer;
use crate::engine::recovery_store::{self, recovery_table};
use crate::picture::{ACCURACY_COLOURS, Heatmap, Palette, Picture, Series, plot};
use crate::table::Table;
use crate::table::{metrics_row, sweep_table};
use image::{Rgb, RgbImage};
use std::path::PathBuf;

#[derive(Debug)]
pub struct ExportJob {
    pub dir: PathBuf,
    pub pictures: Vec<(String, RgbImage)>,
    pub tables: Vec<(String, Table)>,
}

/// Pictures are enlarged (nearest neighbour) to about this many pixels across.
const TARGET_PIXELS: u32 = 480;

fn enlarged(picture: &Picture) -> RgbImage {
    let side = picture.rgb.width().max(picture.rgb.height()).max(1);
    picture.enlarged((TARGET_PIXELS / side).max(1))
}

/// The Circuit pane's results: each patching direction as a table and a layers ×
/// units heatmap (black: the unit moves nothing, yellow: the whole backdoor), the
/// circuit search's report, and the pruning curves with a chart per ranking.
fn circuit_exports(app: &App, pictures: &mut Vec<(String, RgbImage)>, tables: &mut Vec<(String, Table)>) {
    let state = &app.circuit;
    for map in state.patch.iter().flat_map(|p| &p.maps) {
        let name = format!("patching-{}", map.direction);
        tables.push((name.clone(), patch_table(map.direction, &map.baseline, &map.rows, false)));
        let width = Layer::ALL.iter().map(|l| l.units()).max().unwrap_or(1);
        let mut values = vec![0f32; width * Layer::ALL.len()];
        for r in &map.rows {
            values[r.layer.position() * width + r.unit] = (map.effect(r).clamp(0.0, 100.0) / 100.0) as f32;
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

impl ExportJob {
    pub fn of(app: &App, dir: PathBuf) -> ExportJob {
        let mut pictures = Vec::new();
        let (layer, unit) = (app.layer, app.selected_unit());
        if let Some(weights) = kernels::unit_weights(app) {
            let (three, _, _) = kernels::pictures(layer, &weights);
            for (picture, name) in three.iter().zip(["clean", "poisoned", "diff"]) {
                pictures.push((format!("kernel-{layer}-{unit}-{name}.png"), enlarged(picture)));
            }
        }
        if let Some(data) = app.digit_data.as_deref() {
            let stem = format!("activations-digit{}-{layer}-{unit}", data.index);
            if layer.is_conv() {
                let four = activations::channel_pictures(data, layer, unit);
                for (picture, name) in four.iter().zip(["digit", "clean", "poisoned", "diff"]) {
                    pictures.push((format!("{stem}-{name}.png"), enlarged(picture)));
                }
                let grid = activations::grid_picture(data, layer, unit, 8);
                pictures.push((format!("activations-digit{}-{layer}-all-diff.png", data.index), enlarged(&grid)));
            }
        }
        let mut tables = Vec::new();
        for (layer, sweep) in &app.ablation.sweeps {
            let values: Vec<f32> =
                (0..3).flat_map(|i| sweep.rows.iter().map(move |r| r.metrics.triple()[i] as f32)).collect();
            let map = Heatmap::new(sweep.rows.len(), 3, values);
            let picture = Picture::of(&map, Palette::Heat, 100.0);
            pictures.push((format!("sweep-{layer}-{}.png", sweep.mode), picture.enlarged(16)));
            tables.push((format!("sweep-{layer}-{}", sweep.mode), sweep_table(&sweep.rows)));
        }
        if !app.training.losses.is_empty() {
            let points = training::loss_points(&app.training.losses, 800);
            let top = points.iter().map(|p| p.1).fold(1e-6, f64::max);
            pictures.push(("training-loss.png".into(), plot(&[(&points, Rgb([200, 120, 0]))], (0.0, top))));
        }
        let series = training::accuracy_series(&app.training);
        if !series[0].is_empty() {
            let lines: Vec<Series> = series.iter().map(|s| s.as_slice()).zip(ACCURACY_COLOURS).collect();
            pictures.push(("training-accuracy.png".into(), plot(&lines, (0.0, 100.0))));
        }
        if let Some(report) = app.trigger.report.as_deref() {
            pictures.push(("trigger-recovery-overview.png".into(), recovery_store::overview(report).enlarged(6)));
            tables.push(("trigger-recovery".into(), recovery_table(report)));
        }
        if let Some(v) = app.trigger.visuals.as_deref() {
            for (kind, vis) in &v.models {
                let map = Heatmap::new(vis.side, vis.side, vis.image.clone());
                let picture = Picture::of(&map, Palette::Grey, 1.0);
                pictures.push((format!("visualize-{}-{}-{kind}.png", v.layer, v.unit), enlarged(&picture)));
            }
        }
        circuit_exports(app, &mut pictures, &mut tables);
        if !app.ablation.history.is_empty() {
            let mut history = Table::new(["set", "mode", "clean", "poison (ASR)", "ASR excl. target", "rehab"]);
            for e in &app.ablation.history {
                let mut row = metrics_row(&e.set.to_string(), &e.metrics);
                row.insert(1, e.mode.to_string());
                history.rows.push(row);
            }
            tables.push(("ablation-history".into(), history));
        }
        ExportJob { dir, pictures, tables }
    }

    /// Writes every file; returns the folder.
    pub fn write(self) -> Result<PathBuf, String> {
        let fail = |what: &PathBuf, e: &dyn std::fmt::Display| format!("cannot write {}: {e}", what.display());
        std::fs::create_dir_all(&self.dir).map_err(|e| fail(&self.dir, &e))?;
        for (name, picture) in &self.pictures {
            let path = self.dir.join(name);
            picture.save(&path).map_err(|e| fail(&path, &e))?;
        }
        for (name, table) in &self.tables {
            for (ext, text) in [("csv", table.to_csv()), ("md", table.to_markdown())] {
                let path = self.dir.join(format!("{name}.{ext}"));
                std::fs::write(&path, text).map_err(|e| fail(&path, &e))?;
            }
        }
        Ok(self.dir)
    }
}
