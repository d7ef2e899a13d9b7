//! Saved trigger recoveries: the report beside the run (with the SHA-256 of the
//! checkpoint it examined, so a retrained model is never paired with an old
//! recovery) and its pictures. The CLI, the report and the explorer share it.

use super::checkpoint;
use super::cleanse::RecoveryReport;
use super::run::RunDir;
use super::run::key::FileKey;
use crate::figure::{Figure, ImageGrid, Panel, Scale, Values};
use crate::picture::{Heatmap, channel_mean, painted, save_image_png};
use crate::table::{Table, pct};
use color_eyre::eyre::{Result, eyre};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedRecovery {
    /// SHA-256 of the checkpoint file the recovery ran on.
    pub checkpoint_sha256: String,
    pub report: RecoveryReport,
}

/// Writes the report (atomically) and its pictures; returns the picture folder.
/// The report is keyed by the checksum of the checkpoint as the recovery read it
/// (`examined`), and refused when the file has changed since.
pub fn save(run: &RunDir, name: &str, examined: &FileKey, report: &RecoveryReport) -> Result<PathBuf> {
    examined.unchanged(&format!("{name} model"))?;
    let saved = SavedRecovery { checkpoint_sha256: examined.sha256.clone(), report: report.clone() };
    checkpoint::save_json(&saved, &run.recovery_path(name))?;
    let dir = run.recovery_pictures(name);
    write_pictures(&dir, report).map_err(|e| eyre!(e))?;
    Ok(dir)
}

/// The saved recovery of `name` if it examined the checkpoint as it was read (`model`).
pub fn load_current(run: &RunDir, name: &str, model: &FileKey) -> Result<Option<RecoveryReport>> {
    let path = run.recovery_path(name);
    if !path.is_file() {
        return Ok(None);
    }
    let saved: SavedRecovery = checkpoint::load_json(&path)?;
    Ok((saved.checkpoint_sha256 == model.sha256).then_some(saved.report))
}

/// Per label `mask-L.png` (grey, 8× size), `pattern-L.png` and `trigger-L.png`
/// (mask × pattern, what the stamp paints; in colour on colour images), plus the
/// `overview` figure (SVG and PNG).
pub fn write_pictures(dir: &Path, report: &RecoveryReport) -> Result<(), String> {
    let side = report.side;
    for t in &report.labels {
        let shape = [t.pattern.len() / t.mask.len().max(1), side, side];
        save_image_png(&t.mask, [1, side, side], 8, &dir.join(format!("mask-{}.png", t.label)))?;
        save_image_png(&t.pattern, shape, 8, &dir.join(format!("pattern-{}.png", t.label)))?;
        save_image_png(&painted(&t.mask, &t.pattern), shape, 8, &dir.join(format!("trigger-{}.png", t.label)))?;
    }
    overview(report).save(dir, "overview").map(|_| ())
}

/// Every label's mask beside its painted trigger (its channels' mean), titled
/// with the label, its mask's L1 and its anomaly index.
pub fn overview(report: &RecoveryReport) -> Figure {
    let (side, scale) = (report.side, Scale::new(Values::Sequential { low: 0.0, high: 1.0 }, "mask, mask × pattern"));
    let panels = report
        .labels
        .iter()
        .map(|t| {
            let trigger = Heatmap::new(side, side, channel_mean(&painted(&t.mask, &t.pattern), t.mask.len()));
            let pair = Heatmap::tiled(&[Heatmap::new(side, side, t.mask.clone()), trigger], 2);
            let flagged = if t.flagged { " (flagged)" } else { "" };
            let title = format!(
                "label {}{flagged}\nL1 {:.1} · anomaly {:.2}",
                report.dataset.label(t.label),
                t.l1,
                t.anomaly_index
            );
            Panel { title, image: scale.paint(&pair) }
        })
        .collect();
    let title = format!("Neural Cleanse on the {} model: the trigger recovered for each label", report.model);
    let note = format!("each label: its mask | mask × pattern, {side}×{side} pixels; flagged: anomaly index > 2");
    let columns = if report.labels.len() <= 10 { 5 } else { 8 };
    Figure::Grid(ImageGrid { title, panels, columns, scale: Some(scale), note })
}

/// One row per label: what `recover` prints and the explorer exports.
pub fn recovery_table(report: &RecoveryReport) -> Table {
    let mut table = Table::new([
        "label",
        "mask L1",
        "anomaly index",
        "flagged",
        "held-out success",
        "mass on trigger",
        "top pixels on trigger",
        "epochs",
    ]);
    for t in &report.labels {
        table.push([
            report.dataset.label(t.label),
            format!("{:.2}", t.l1),
            format!("{:.2}", t.anomaly_index),
            if t.flagged { "FLAGGED" } else { "" }.to_string(),
            pct(t.success),
            t.on_trigger.as_ref().map_or("n/a".into(), |o| pct(100.0 * o.mass_share)),
            t.on_trigger.as_ref().map_or("n/a".into(), |o| pct(100.0 * o.top_pixel_overlap)),
            format!("{}{}", t.epochs_run, if t.reached_threshold { "" } else { " (never ≥ threshold)" }),
        ]);
    }
    table
}
