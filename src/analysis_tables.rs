//! Tables and charts of the circuit analyses — patching, the circuit search and the
//! pruning-defence curves — shared by the CLI's output and the explorer's export.

use crate::engine::ablation::AblationSet;
use crate::engine::circuit::{CircuitReport, Site};
use crate::engine::metrics::Metrics;
use crate::engine::patch::{Direction, PatchEffect, PatchRow};
use crate::engine::prune::{CurvePoint, PruneCurve};
use crate::picture::{ACCURACY_COLOURS, Series, plot};
use crate::table::{Table, metrics_row, metrics_table, pct};

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

/// One ranking's curve: clean (green), poison (red) and rehab (blue) accuracy
/// against units pruned, the colours of the explorer's accuracy chart.
pub fn prune_chart(c: &PruneCurve) -> image::RgbImage {
    let line = |pick: fn(&crate::engine::metrics::Metrics) -> f64| -> Vec<(f64, f64)> {
        c.points.iter().map(|p| (p.pruned as f64, pick(&p.metrics))).collect()
    };
    let (clean, poison, rehab) = (line(|m| m.clean_acc), line(|m| m.poison_acc), line(|m| m.rehab_acc));
    let series: Vec<Series> =
        [&clean, &poison, &rehab].into_iter().map(|l| l.as_slice()).zip(ACCURACY_COLOURS).collect();
    plot(&series, (0.0, 100.0))
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
