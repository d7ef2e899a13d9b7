//! Export: the figures on screen as SVG and PNG (kernels, activations, sweep
//! heatmaps, training curves, the recovered triggers and feature visualisations,
//! patching heatmaps, the circuit search's front and pruning curves) and the
//! ablation history, sweeps, trigger recovery, patching, circuit search, pruning
//! curves and layer swaps as CSV and Markdown. The job is built from the state in
//! `update` (plain data) and drawn and written on a helper thread.

use super::effect::ExportJob;
use super::panes::Panes;
use super::panes::circuit::{CircuitState, MapSite};
use super::panes::trigger::TriggerState;
use super::pictures::{self, Maps, compared, difference_maps, difference_scale, slices, tile_columns, unit_weights};
use super::study::Study;
use crate::analysis_tables::{
    circuit_front_chart, circuit_table, named_patch_table, patch_heatmap, prune_chart, prune_curve_table, vis_figure,
};
use crate::engine::ablation::AblationMode;
use crate::engine::lab::ModelKind;
use crate::engine::metrics::Metrics;
use crate::engine::recovery_store::{self, recovery_table};
use crate::figure::{Chart, Figure, HeatmapChart, ImageGrid, Labels, Panel, Scale, Series, Values, style};
use crate::picture::{Heatmap, input_picture};
use crate::table::Table;
use crate::table::{metrics_headers, metrics_row, metrics_table, swap_table};
use std::path::PathBuf;

/// The Circuit pane's results: each patching direction as a table and a sites ×
/// units heatmap, the circuit search's report and its front, and the pruning
/// curves with a chart per ranking.
pub fn circuit_exports<S: MapSite>(
    state: &CircuitState<S>,
    figures: &mut Vec<(String, Figure)>,
    tables: &mut Vec<(String, Table)>,
) {
    if let Some(patch) = state.patch.as_deref() {
        let sites: Vec<String> = patch.sites.iter().map(|s| s.to_string()).collect();
        for map in &patch.maps {
            let name = format!("patching-{}", map.direction);
            let named = map.rows.iter().map(|r| (format!("{}:{}", r.site, r.unit), &r.effect));
            tables.push((name.clone(), named_patch_table(map.direction, &map.baseline, named, false)));
            let row = |site: &S| patch.sites.iter().position(|s| s == site).expect("a map's rows are of its sites");
            let cells: Vec<(usize, usize, f64)> =
                map.rows.iter().map(|r| (row(&r.site), r.unit, map.effect(r))).collect();
            figures.push((name, patch_heatmap(map.direction, &sites, &cells)));
        }
    }
    if let Some(report) = &state.report {
        tables.push(("circuit-search".into(), circuit_table(ModelKind::Poisoned.name(), report)));
        figures.push(("circuit-search".into(), circuit_front_chart(report)));
    }
    if let Some((layer, curves)) = &state.curves {
        tables.push((format!("prune-{layer}"), prune_curve_table(curves)));
        for c in curves {
            figures.push((format!("prune-{layer}-{}", c.ranking), prune_chart(c)));
        }
    }
}

/// The Trigger pane's results: the recovery's overview and table, and the
/// feature visualisations in each model.
pub fn trigger_exports(state: &TriggerState, figures: &mut Vec<(String, Figure)>, tables: &mut Vec<(String, Table)>) {
    if let Some(report) = state.report.as_deref() {
        figures.push(("trigger-recovery-overview".into(), recovery_store::overview(report)));
        tables.push(("trigger-recovery".into(), recovery_table(report)));
    }
    if let Some(v) = state.visuals.as_deref() {
        let channels = v.models.first().map_or(1, |(_, vis)| vis.shape[0]);
        let panels = v
            .models
            .iter()
            .filter_map(|(kind, vis)| {
                let image = input_picture(&vis.image, vis.shape, 1).ok()?;
                Some((kind.to_string(), image, vis.start_activation, vis.activation))
            })
            .collect();
        let unit = format!("{}:{}", v.site, v.unit);
        figures.push((format!("visualize-{}-{}", v.site, v.unit), vis_figure(&unit, panels, channels)));
    }
}

/// A sweep of `site` in `mode` (each unit's metrics): a metrics × units heatmap and its table.
pub fn sweep_exports(
    site: &str,
    mode: AblationMode,
    rows: &[(usize, &Metrics)],
    figures: &mut Vec<(String, Figure)>,
    tables: &mut Vec<(String, Table)>,
) {
    let values: Vec<f32> =
        Metrics::HEADLINE.iter().flat_map(|(_, accuracy)| rows.iter().map(move |(_, m)| accuracy(m) as f32)).collect();
    let title = format!("{site} sweep: each unit ablated alone ({mode} mode)");
    figures.push((
        format!("sweep-{site}-{mode}"),
        accuracy_heatmap(title, format!("{site} unit ablated"), rows.len(), values),
    ));
    let mut table = metrics_table("unit");
    table.rows.extend(rows.iter().map(|(unit, m)| metrics_row(&format!("{site}:{unit}"), m)));
    tables.push((format!("sweep-{site}-{mode}"), table));
}

/// The ablation history: each set's metrics, its mode and the model it was measured on.
pub fn history_table<'m>(rows: impl Iterator<Item = (String, AblationMode, &'m Metrics, ModelKind)>) -> Table {
    let mut table = Table::new(["set", "mode"]);
    table.headers.extend(metrics_headers());
    table.headers.push("model".into());
    for (set, mode, metrics, model) in rows {
        let mut row = metrics_row(&set, metrics);
        row.insert(1, mode.to_string());
        row.push(model.to_string());
        table.rows.push(row);
    }
    table
}

/// Panels of maps in one scale's colours, side by side.
fn grid(title: String, panels: Vec<(String, Heatmap)>, scale: Scale, note: String) -> Figure {
    let columns = panels.len();
    let panels = panels.into_iter().map(|(title, map)| Panel { title, image: scale.paint(&map) }).collect();
    Figure::Grid(ImageGrid { title, panels, columns, scale: Some(scale), note })
}

/// The selected unit's incoming weights in both models on one scale, and their
/// difference on its own.
fn kernel_figures(study: &Study, figures: &mut Vec<(String, Figure)>) {
    let Some([reference, subject, diff]) = unit_weights(study) else { return };
    let (layer, unit) = (study.layer, study.selected_unit());
    let tiled = |w: &[f32]| Heatmap::tiled(&slices(layer, w), tile_columns(layer));
    let [reference, subject, diff] = [&reference, &subject, &diff].map(|w| tiled(w));
    let span = reference.max_abs().max(subject.max_abs());
    let note = format!("{layer}:{unit}'s incoming weights, one tile per input slice; grey: gaps");
    let names = (study.reference.name().to_string(), study.subject.name().to_string());
    let pair = grid(
        format!("{layer}:{unit} incoming weights"),
        vec![(format!("{} model", names.0), reference), (format!("{} model", names.1), subject)],
        Scale::new(Values::Diverging { span }, "weight"),
        note.clone(),
    );
    figures.push((format!("kernel-{layer}-{unit}"), pair));
    let title = format!("{layer}:{unit} incoming weights: {} − {}", names.1, names.0);
    let span = diff.max_abs();
    let change =
        grid(title, vec![("difference".into(), diff)], Scale::new(Values::Diverging { span }, "weight change"), note);
    figures.push((format!("kernel-{layer}-{unit}-diff"), change));
}

/// The digit with the trigger and the selected channel's maps (the reference on
/// the clean digit, the model under study on the triggered one), their
/// difference, and every channel's difference.
fn activation_figures(study: &Study, figures: &mut Vec<(String, Figure)>) {
    let (layer, unit, reference, subject) = (study.layer, study.selected_unit(), study.reference, study.subject);
    let Some(data) = study.digit_data.as_deref() else { return };
    let Some(pair) = compared(data, reference, subject).filter(|_| layer.is_conv()) else { return };
    let maps = (Maps::of(&pair.0[layer.position()]), Maps::of(&pair.1[layer.position()]));
    let (r, s) = (maps.0.map(unit), maps.1.map(unit));
    let stem = format!("activations-digit{}-{layer}", data.index);
    let side = (data.triggered_pixels.len() as f64).sqrt() as usize;
    let digit = Heatmap::new(side, side, data.triggered_pixels.clone());
    figures.push((
        format!("{stem}-digit"),
        grid(
            format!("test digit {} (a {}) with the trigger", data.index, data.label),
            vec![("triggered".into(), digit.clone())],
            Scale::new(
                Values::Grey { low: digit.values.iter().copied().fold(f32::MAX, f32::min), high: digit.max_abs() },
                "pixel (normalised)",
            ),
            format!("{side}×{side} pixels"),
        ),
    ));
    let span = r.max_abs().max(s.max_abs());
    let note = format!("{}×{} map of {layer}:{unit} after ReLU", r.width, r.height);
    let panels = vec![
        (format!("{} model, clean digit", reference.name()), r),
        (format!("{} model, triggered digit", subject.name()), s),
    ];
    let title = format!("{layer}:{unit} on test digit {}", data.index);
    figures.push((
        format!("{stem}-{unit}"),
        grid(title, panels, Scale::new(Values::Sequential { low: 0.0, high: span }, "activation"), note.clone()),
    ));
    let change = Scale::new(Values::Diverging { span: difference_scale(maps) }, "model Δ (activation change)");
    let diffs = difference_maps(maps);
    let title = format!("{layer}:{unit} model Δ: {} on triggered − {} on clean", subject.name(), reference.name());
    figures.push((
        format!("{stem}-{unit}-diff"),
        grid(title, vec![(format!("unit {unit}"), diffs[unit].clone())], change.clone(), note),
    ));
    let panels: Vec<Panel> =
        diffs.iter().enumerate().map(|(u, m)| Panel { title: format!("{u}"), image: change.paint(m) }).collect();
    let title = format!("{layer} model Δ, every unit: {} on triggered − {} on clean", subject.name(), reference.name());
    let note = format!("test digit {}; panels titled by unit", data.index);
    figures.push((
        format!("{stem}-all-diff"),
        Figure::Grid(ImageGrid { title, panels, columns: 8, scale: Some(change), note }),
    ));
}

/// Accuracy (%) of the three headline metrics: one row per metric over `columns`.
fn accuracy_heatmap(title: String, x: String, columns: usize, values: Vec<f32>) -> Figure {
    let rows = Metrics::HEADLINE.iter().map(|(name, _)| name.to_string()).collect();
    let scale = Scale::new(Values::Sequential { low: 0.0, high: 100.0 }, "accuracy (%)");
    Figure::Heatmap(HeatmapChart::new(Labels::new(title, x, "accuracy"), rows, columns, values, scale))
}

/// The loss per phase and the probe accuracies over training steps.
fn training_figures(panes: &Panes, figures: &mut Vec<(String, Figure)>) {
    let training = &panes.training;
    if !training.losses.is_empty() {
        let colours = [style::CLEAN, style::POISON, style::REHAB].into_iter().chain(style::SERIES).cycle();
        let series = pictures::loss_points_by_phase(&training.losses, 800)
            .into_iter()
            .zip(colours)
            .map(|((phase, points), colour)| Series::line(phase.name(), points, colour))
            .collect();
        figures.push((
            "training-loss".into(),
            Figure::Chart(Chart::new(Labels::new("training loss", "training step", "loss (cross-entropy)"), series)),
        ));
    }
    let lines = pictures::accuracy_series(training);
    if !lines[0].is_empty() {
        let series = Metrics::HEADLINE
            .iter()
            .zip(lines)
            .zip(style::ACCURACY)
            .map(|(((name, _), points), colour)| Series::line(*name, points, colour))
            .collect();
        let mut chart =
            Chart::new(Labels::new("probe accuracy during training", "training step", "accuracy (%)"), series);
        chart.y = Some((0.0, 100.0));
        figures.push(("training-accuracy".into(), Figure::Chart(chart)));
    }
}

/// The export folder's name: the UTC date and time, `2026-12-07T21-03-05`
/// (colons are not allowed in Windows file names).
pub fn folder_name(now: std::time::SystemTime) -> String {
    let secs = now.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    // Howard Hinnant's days-to-civil: the proleptic Gregorian date of a day count.
    let days = (secs / 86_400) as i64 + 719_468;
    let (era, day_of_era) = (days.div_euclid(146_097), days.rem_euclid(146_097));
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let (day, month) = (day_of_year - (153 * mp + 2) / 5 + 1, if mp < 10 { mp + 3 } else { mp - 9 });
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    let (h, m, s) = (secs % 86_400 / 3600, secs % 3600 / 60, secs % 60);
    format!("{year:04}-{month:02}-{day:02}T{h:02}-{m:02}-{s:02}")
}

/// Everything on screen worth keeping, as files for `dir`.
pub fn job(study: &Study, panes: &Panes, dir: PathBuf) -> ExportJob {
    let mut figures = Vec::new();
    kernel_figures(study, &mut figures);
    activation_figures(study, &mut figures);
    if let Some(top) = panes.activations.top.as_deref() {
        for (end, hits) in [("top", &top.top), ("bottom", &top.bottom)] {
            let panels = hits
                .iter()
                .enumerate()
                .map(|(rank, hit)| {
                    let h = &hit.hit;
                    let trigger = if h.triggered { ", triggered" } else { "" };
                    let title = format!(
                        "#{} image {}{trigger}\nlabel {} · activation {:.2}",
                        rank + 1,
                        h.image,
                        h.label,
                        h.score
                    );
                    Panel { title, image: pictures::ranked_picture(hit, top.side).rgb }
                })
                .collect();
            let title = format!("{} images of {}:{} in the {} model", end, top.layer, top.unit, top.model);
            let note = format!(
                "test images ({}×{} pixels, grey over each image's range), ranked by the unit's mean activation",
                top.side, top.side
            );
            let grid = ImageGrid { title, panels, columns: 4, scale: None, note };
            figures.push((format!("{end}-images-{}-{}-{}", top.model, top.layer, top.unit), Figure::Grid(grid)));
        }
    }
    let mut tables = Vec::new();
    for (layer, sweep) in &study.ablation.sweeps {
        let rows: Vec<(usize, &Metrics)> = sweep.rows.iter().map(|r| (r.unit, &r.metrics)).collect();
        sweep_exports(&layer.to_string(), sweep.mode, &rows, &mut figures, &mut tables);
    }
    if let Some(swaps) = panes.ablation.swaps.as_deref().filter(|s| !s.rows.is_empty()) {
        tables.push((format!("swaps-{}-into-{}", swaps.donor, swaps.recipient), swap_table(&swaps.rows)));
    }
    training_figures(panes, &mut figures);
    trigger_exports(&panes.trigger, &mut figures, &mut tables);
    circuit_exports(&panes.circuit, &mut figures, &mut tables);
    let history = &study.ablation.history;
    if !history.is_empty() {
        let rows = history.iter().map(|e| (e.set.to_string(), e.mode, &e.metrics, e.model));
        tables.push(("ablation-history".into(), history_table(rows)));
    }
    ExportJob { dir, figures, tables }
}

#[cfg(test)]
mod tests {
    use super::folder_name;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn export_folders_are_named_by_the_utc_date_and_time() {
        let at = |secs: u64| folder_name(UNIX_EPOCH + Duration::from_secs(secs));
        assert_eq!(at(0), "1970-01-01T00-00-00");
        // `date -u -d @1796677385`: Mon Dec  7 21:03:05 UTC 2026.
        assert_eq!(at(1_796_677_385), "2026-12-07T21-03-05");
        // A leap day, and the last second of a century's leap year.
        assert_eq!(at(951_782_400), "2000-02-29T00-00-00");
        assert_eq!(at(978_307_199), "2000-12-31T23-59-59");
    }
}
