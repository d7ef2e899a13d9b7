//! `prune`: pruning-defence curves for a layer under each ranking.

use super::args::{AblationTarget, CommonArgs};
use super::lab_setup::open_lab;
use super::output::Format;
use crate::engine::cache::ActivationCache;
use crate::engine::lab::ModelKind;
use crate::engine::layer::Layer;
use crate::engine::prune::{self, CurvePoint, PruneCurve, Ranking, RankingInputs};
use crate::picture::{ACCURACY_COLOURS, Series, plot, save_png};
use crate::table::{Table, pct};
use color_eyre::eyre::{Result, eyre};

pub fn prune(
    common: &CommonArgs,
    format: Format,
    layer: Layer,
    rankings: &[Ranking],
    target: &AblationTarget,
    seed: u64,
) -> Result<()> {
    let lab = open_lab(common, None)?;
    let (net, clean) = (lab.load(target.model)?, lab.load(ModelKind::Clean)?);
    let cache = ActivationCache::build(&net, &lab.test);
    let inputs = RankingInputs { net: &net, clean: &clean, test: &lab.test, seed };
    let rankings = if rankings.is_empty() { Ranking::ALL.to_vec() } else { rankings.to_vec() };
    let curves: Vec<PruneCurve> = rankings
        .iter()
        .map(|&r| prune::curve(&cache, &lab.test, layer, r, prune::ranking_order(r, layer, &inputs), target.mode))
        .collect();
    let table = if format == Format::Csv { curve_table(&curves) } else { best_table(&curves) };
    format.emit(&curves, &table)?;
    let dir = lab.run.root.join("prune");
    for c in &curves {
        save_png(&chart(c), &dir.join(format!("{layer}-{}.png", c.ranking))).map_err(|e| eyre!(e))?;
    }
    if format.is_human() {
        eprintln!(
            "{layer} of the {} model, {} mode; every point of each curve: --csv or --json; charts in {} \
             (x: units pruned; green clean, red poison, blue rehab accuracy, 0–100 %)",
            target.model,
            target.mode,
            dir.display()
        );
    }
    Ok(())
}

/// One ranking's curve: clean (green), poison (red) and rehab (blue) accuracy
/// against units pruned, the colours of the explorer's accuracy chart.
fn chart(c: &PruneCurve) -> image::RgbImage {
    let line = |pick: fn(&crate::engine::metrics::Metrics) -> f64| -> Vec<(f64, f64)> {
        c.points.iter().map(|p| (p.pruned as f64, pick(&p.metrics))).collect()
    };
    let (clean, poison, rehab) = (line(|m| m.clean_acc), line(|m| m.poison_acc), line(|m| m.rehab_acc));
    let series: Vec<Series> =
        [&clean, &poison, &rehab].into_iter().map(|l| l.as_slice()).zip(ACCURACY_COLOURS).collect();
    plot(&series, (0.0, 100.0))
}

/// Each ranking's point of highest DER.
fn best_table(curves: &[PruneCurve]) -> Table {
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
fn curve_table(curves: &[PruneCurve]) -> Table {
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
