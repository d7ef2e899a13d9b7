//! Tables and charts of the circuit analyses — patching, the circuit search and the
//! pruning-defence curves — and of feature visualisations, shared by the CLI's
//! output and the explorer's export.

use crate::engine::ablation::AblationSet;
use crate::engine::circuit::{CircuitReport, Site};
use crate::engine::metrics::Metrics;
use crate::engine::patch::{Direction, PatchEffect, PatchRow};
use crate::engine::prune::{CurvePoint, PruneCurve};
use crate::figure::{
    Chart, Figure, HeatmapChart, ImageGrid, Labels, Mark, Marker, Panel, Scale, Series, Values, style,
};
use crate::table::{Table, metrics_row, metrics_table, pct};
use image::RgbImage;

/// One row per patched unit under the unpatched row; `with_direction` adds the
/// direction as a first column (CSV, where no heading line names it).
pub fn patch_table(direction: Direction, baseline: &PatchEffect, rows: &[PatchRow], with_direction: bool) -> Table {
    let named = rows.iter().map(|r| {
        let name = match r.to_unit {
            Some(v) => format!("{}:{} → {v}", r.layer, r.unit),
            None => format!("{}:{}", r.layer, r.unit),
        };
        (name, &r.effect)
    });
    named_patch_table(direction, baseline, named, with_direction)
}

/// `patch_table` with each row's unit named by the caller (a graph's `NODE:UNIT`).
pub fn named_patch_table<'e>(
    direction: Direction,
    baseline: &PatchEffect,
    rows: impl IntoIterator<Item = (String, &'e PatchEffect)>,
    with_direction: bool,
) -> Table {
    let mut header = vec!["unit", "clean", "poison (ASR)", "rehab", "patched → target %", "logit diff"];
    if with_direction {
        header.insert(0, "direction");
    }
    let mut table = Table::new(header);
    let mut push = |name: String, e: &PatchEffect| {
        let m = &e.metrics;
        let mut row = vec![
            name,
            pct(m.clean_acc),
            pct(m.poison_acc),
            pct(m.rehab_acc),
            pct(e.target_rate),
            format!("{:.3}", e.logit_diff),
        ];
        if with_direction {
            row.insert(0, direction.to_string());
        }
        table.rows.push(row);
    };
    push("unpatched".into(), baseline);
    for (name, effect) in rows {
        push(name, effect);
    }
    table
}

/// The search's report: the model, the circuit, the greedy steps, the best pairs,
/// the Pareto front and the keep sets, one row each.
pub fn circuit_table<S: Site>(model: &str, r: &CircuitReport<S>) -> Table {
    let mut table = metrics_table("set");
    let mut push = |what: String, m: &Metrics| table.rows.push(metrics_row(&what, m));
    let short = |set: &AblationSet<S>| short_set(set);
    push(format!("{model} model"), &r.baseline);
    if let Some(t) = &r.circuit {
        push(format!("circuit: {} ({})", short(&t.set), t.size_text()), &t.metrics);
    }
    for (i, t) in r.greedy.iter().enumerate() {
        push(format!("greedy step {}: {}", i + 1, short(&t.set)), &t.metrics);
    }
    for t in &r.best_pairs {
        push(format!("best pair: {}", short(&t.set)), &t.metrics);
    }
    for t in &r.front {
        push(format!("front, {}: {}", t.size_text(), short(&t.set)), &t.metrics);
    }
    for k in &r.keep {
        let kept: Vec<String> = k.kept.iter().map(usize::to_string).collect();
        let verdict = if k.survives { "survives" } else { "does not survive" };
        push(format!("keep only {}:{} of {} ({verdict})", k.layer, kept.join(","), k.layer.unit_count()), &k.metrics);
    }
    table
}

/// A set as `conv1:4,31`, a layer with most of its units in it as `conv1:all but 15`.
pub fn short_set<S: Site>(set: &AblationSet<S>) -> String {
    if set.is_empty() {
        return "none".into();
    }
    let parts: Vec<String> = set
        .units
        .iter()
        .filter(|(_, u)| !u.is_empty())
        .map(|(layer, units)| {
            let list = |us: &mut dyn Iterator<Item = usize>| us.map(|u| u.to_string()).collect::<Vec<_>>().join(",");
            let count = layer.unit_count();
            if units.len() == count {
                format!("{layer}:all")
            } else if units.len() * 2 > count {
                format!("{layer}:all but {}", list(&mut (0..count).filter(|u| !units.contains(u))))
            } else {
                format!("{layer}:{}", list(&mut units.iter().copied()))
            }
        })
        .collect();
    parts.join(" ")
}

/// One ranking's curve: clean, poison and rehab accuracy against units pruned,
/// the point of highest DER marked.
pub fn prune_chart(c: &PruneCurve) -> Figure {
    let series = Metrics::HEADLINE
        .iter()
        .zip(style::ACCURACY)
        .map(|((name, accuracy), colour)| {
            let points = c.points.iter().map(|p| (p.pruned as f64, accuracy(&p.metrics))).collect();
            Series::line(*name, points, colour)
        })
        .collect();
    let title = format!("{} pruned by {} ({} mode)", c.layer, c.ranking, c.mode);
    let mut chart = Chart::new(Labels::new(title, format!("{} units pruned", c.layer), "accuracy (%)"), series);
    chart.y = Some((0.0, 100.0));
    let best = &c.points[c.best];
    chart.markers.push(Marker { x: best.pruned as f64, label: format!("best DER {:.3} at {}", best.der, best.pruned) });
    Figure::Chart(chart)
}

/// A patching direction's map: sites (top to bottom) × units, each cell the
/// points of target rate its patch moves (`PatchMap::effect`), on a scale
/// symmetric around zero; a site with fewer units than the widest leaves its
/// row's end empty.
pub fn patch_heatmap(direction: Direction, sites: &[String], cells: &[(usize, usize, f64)]) -> Figure {
    let columns = cells.iter().map(|c| c.1 + 1).max().unwrap_or(1);
    let mut values = vec![f32::NAN; sites.len() * columns];
    for &(site, unit, effect) in cells {
        values[site * columns + unit] = effect as f32;
    }
    let span = values.iter().filter(|v| v.is_finite()).fold(1.0f32, |m, v| m.max(v.abs()));
    let labels = Labels::new(format!("activation patching: {direction}"), "unit", "layer");
    let scale = Scale::new(Values::Diverging { span }, "backdoor carried (points)");
    Figure::Heatmap(HeatmapChart::new(labels, sites.to_vec(), columns, values, scale))
}

/// The circuit search's sets as poison accuracy against size: everything on the
/// Pareto front, the greedy path, and the circuit found.
pub fn circuit_front_chart<S>(report: &CircuitReport<S>) -> Figure {
    let points = |sets: &mut dyn Iterator<Item = &crate::engine::circuit::Tried<S>>| {
        sets.map(|t| (t.size as f64, t.metrics.poison_acc)).collect::<Vec<_>>()
    };
    let mut front = Series::line("Pareto front", points(&mut report.front.iter()), style::POISON);
    front.mark = Mark::LinePoints;
    let mut greedy = Series::line("greedy additions", points(&mut report.greedy.iter()), style::MUTED);
    greedy.mark = Mark::LinePoints;
    let mut series = vec![greedy, front];
    if let Some(circuit) = &report.circuit {
        let found = points(&mut std::iter::once(circuit));
        series.push(Series { name: "circuit".into(), points: found, colour: style::REHAB, mark: Mark::Points });
    }
    let mut chart = Chart::new(Labels::new("circuit search", "units ablated together", "poison accuracy (%)"), series);
    chart.y = Some((0.0, 100.0));
    Figure::Chart(chart)
}

/// Each model's optimised input side by side, titled with the unit's activation
/// before and after (a grey scale bar for one channel; colour images as they are).
pub fn vis_figure(unit: &str, panels: Vec<(String, RgbImage, f64, f64)>, channels: usize) -> Figure {
    let panels: Vec<Panel> = panels
        .into_iter()
        .map(|(model, image, start, end)| Panel {
            title: format!("{model} model\nactivation {start:.2} → {end:.2}"),
            image,
        })
        .collect();
    let (columns, scale) =
        (panels.len(), (channels == 1).then(|| Scale::new(Values::Grey { low: 0.0, high: 1.0 }, "pixel")));
    let title = format!("feature visualisation of {unit}: the input that excites it most");
    Figure::Grid(ImageGrid {
        title,
        panels,
        columns,
        scale,
        note: "pixels in [0, 1]; activation: from the starting image to the optimised one".into(),
    })
}

/// Each ranking's point of highest DER.
pub fn prune_best_table(curves: &[PruneCurve]) -> Table {
    let mut table =
        Table::new(["ranking", "pruned", "first units", "clean", "poison (ASR)", "ASR excl. target", "rehab", "DER"]);
    for c in curves {
        let p = &c.points[c.best];
        let first: Vec<String> = c.order[..p.pruned.min(6)].iter().map(usize::to_string).collect();
        let more = if p.pruned > 6 { ", …" } else { "" };
        table.rows.push(row(c, p, format!("{}{more}", first.join(", "))));
    }
    table
}

/// Every point of every curve.
pub fn prune_curve_table(curves: &[PruneCurve]) -> Table {
    let mut table = Table::new(["ranking", "pruned", "unit", "clean", "poison", "asr_non_target", "rehab", "der"]);
    for c in curves {
        for p in &c.points {
            table.rows.push(row(c, p, p.unit.map(|u| u.to_string()).unwrap_or_default()));
        }
    }
    table
}

/// A point's cells: ranking, units pruned, `units` (which), the metrics and the DER.
fn row(c: &PruneCurve, p: &CurvePoint, units: String) -> Vec<String> {
    let m = &p.metrics;
    vec![
        c.ranking.to_string(),
        p.pruned.to_string(),
        units,
        pct(m.clean_acc),
        pct(m.poison_acc),
        pct(m.asr_non_target),
        pct(m.rehab_acc),
        format!("{:.4}", p.der),
    ]
}
