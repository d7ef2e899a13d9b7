//! Export: the pictures on screen as PNGs (kernels, activations, sweep heatmaps,
//! training charts, the recovered triggers and feature visualisations) and the
//! ablation history, sweeps and trigger recovery as CSV and Markdown. The
//! job is built from the state in `update` and written on a helper thread.

use super::app::App;
use super::panes::{activations, kernels, training};
use crate::cli::commands::{metrics_row, sweep_table};
use crate::engine::recovery_store::{self, recovery_table};
use crate::picture::{Heatmap, Palette, Picture};
use crate::table::Table;
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
            let colours = [Rgb([0, 150, 0]), Rgb([200, 30, 30]), Rgb([30, 80, 220])];
            let lines: Vec<Series> = series.iter().map(|s| s.as_slice()).zip(colours).collect();
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

/// A line's points and colour.
pub type Series<'a> = (&'a [(f64, f64)], Rgb<u8>);

/// Line plots of `series` on white, x over the series' range, y over `y`.
pub fn plot(series: &[Series], y: (f64, f64)) -> RgbImage {
    let (width, height, margin) = (800u32, 400u32, 20u32);
    let mut image = RgbImage::from_pixel(width, height, Rgb([255, 255, 255]));
    let xs = series.iter().flat_map(|(s, _)| s.iter().map(|p| p.0));
    let (x0, x1) = xs.fold((f64::MAX, f64::MIN), |(l, h), x| (l.min(x), h.max(x)));
    let span_x = (x1 - x0).max(1e-9);
    let span_y = (y.1 - y.0).max(1e-9);
    let to_pixel = |(x, v): (f64, f64)| {
        let px = margin as f64 + (x - x0) / span_x * (width - 2 * margin) as f64;
        let py = (height - margin) as f64 - (v - y.0) / span_y * (height - 2 * margin) as f64;
        (px, py)
    };
    let grey = Rgb([160, 160, 160]);
    segment(
        &mut image,
        (margin as f64, (height - margin) as f64),
        ((width - margin) as f64, (height - margin) as f64),
        grey,
    );
    segment(&mut image, (margin as f64, margin as f64), (margin as f64, (height - margin) as f64), grey);
    for (points, colour) in series {
        for pair in points.windows(2) {
            segment(&mut image, to_pixel(pair[0]), to_pixel(pair[1]), *colour);
        }
    }
    image
}

/// A straight line, sampled densely enough to leave no gaps.
fn segment(image: &mut RgbImage, a: (f64, f64), b: (f64, f64), colour: Rgb<u8>) {
    let steps = (b.0 - a.0).abs().max((b.1 - a.1).abs()).ceil().max(1.0) as usize;
    for i in 0..=steps {
        let t = i as f64 / steps as f64;
        let (x, y) = (a.0 + (b.0 - a.0) * t, a.1 + (b.1 - a.1) * t);
        if x >= 0.0 && y >= 0.0 && (x as u32) < image.width() && (y as u32) < image.height() {
            image.put_pixel(x as u32, y as u32, colour);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plots_draw_their_lines_inside_the_frame() {
        let line = [(0.0, 0.0), (10.0, 100.0)];
        let image = plot(&[(&line, Rgb([255, 0, 0]))], (0.0, 100.0));
        assert_eq!(*image.get_pixel(20, 380), Rgb([255, 0, 0]));
        assert_eq!(*image.get_pixel(780, 20), Rgb([255, 0, 0]));
        assert_eq!(*image.get_pixel(400, 100), Rgb([255, 255, 255]));
    }
}
