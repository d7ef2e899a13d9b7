//! `visualize` on a graph run: the input that most excites a unit of any node,
//! for each model, saved where the study saves its pictures.

use super::args::CommonArgs;
use super::output::Format;
use crate::engine::device::parse_device;
use crate::engine::featvis::VisConfig;
use crate::engine::lab::ModelKind;
use crate::engine::run::{RunDir, RunLock};
use crate::graph::run as graph_run;
use crate::graph::visualize::{self, GraphVisualization};
use crate::picture::{input_picture, save_png};
use color_eyre::eyre::{Result, eyre};
use serde::Serialize;

#[derive(Serialize)]
struct VisResult {
    model: ModelKind,
    #[serde(flatten)]
    visualization: GraphVisualization,
}

pub fn visualize(
    common: &CommonArgs,
    format: Format,
    site: &str,
    unit: usize,
    models: &[ModelKind],
    cfg: &VisConfig,
) -> Result<()> {
    cfg.validate().map_err(|e| eyre!("invalid visualisation settings: {e}"))?;
    let models = if models.is_empty() { ModelKind::STUDY.to_vec() } else { models.to_vec() };
    let device = parse_device(&common.device).map_err(|e| eyre!(e))?;
    let run = RunDir::new(&common.checkpoints, &common.run);
    run.require(&models)?;
    // It saves its pictures into the run: the lock before any work. It reads no images.
    let _lock = RunLock::acquire(&run)?;
    let mut results = Vec::new();
    for model in models {
        let exec = graph_run::load(&run, model, device)?;
        let visualization = visualize::visualize(&exec, site, unit as i64, cfg).map_err(|e| eyre!(e))?;
        results.push(VisResult { model, visualization });
    }
    let dir = run.root.join("visualize");
    let mut panels = Vec::new();
    for r in &results {
        let v = &r.visualization;
        let shape = [v.channels, v.height, v.width];
        let picture = input_picture(&v.image, shape, 8).map_err(|e| eyre!(e))?;
        save_png(&picture, &dir.join(format!("{site}-{unit}-{}.png", r.model))).map_err(|e| eyre!(e))?;
        let image = input_picture(&v.image, shape, 1).map_err(|e| eyre!(e))?;
        panels.push((r.model.to_string(), image, v.start_activation, v.activation));
    }
    let channels = results.first().map_or(1, |r| r.visualization.channels);
    let figure = crate::analysis_tables::vis_figure(&format!("{site}:{unit}"), panels, channels);
    let [side_by_side_path, _] = figure.save(&dir, &format!("{site}-{unit}")).map_err(|e| eyre!(e))?;
    let rows = results.iter().map(|r| (r.model, r.visualization.start_activation, r.visualization.activation));
    format.emit(&results, &super::trigger::vis_table(&format!("{site}:{unit}"), rows))?;
    if format.is_human() {
        eprintln!("pictures in {} (side by side: {})", dir.display(), side_by_side_path.display());
    }
    Ok(())
}
