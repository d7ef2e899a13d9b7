//! `prune`: pruning-defence curves for a layer under each ranking.

use super::args::{AblationTarget, CommonArgs};
use super::output::Format;
use crate::analysis_tables::{prune_best_table, prune_chart, prune_curve_table};
use crate::engine::analysis::Analysis;
use crate::engine::lab::ModelKind;
use crate::engine::layer::Layer;
use crate::engine::prune::{self, PruneCurve, Ranking, RankingInputs};
use crate::setup::{Splits, open_lab_writing};
use color_eyre::eyre::{Result, eyre};
use std::path::Path;

pub fn prune(
    common: &CommonArgs,
    format: Format,
    layer: Option<Layer>,
    rankings: &[Ranking],
    target: &AblationTarget,
    seed: u64,
) -> Result<()> {
    // Liu et al. prune the last convolutional layer.
    let layer =
        layer.unwrap_or_else(|| *Layer::ALL.iter().rev().find(|l| l.is_conv()).expect("the study has convolutions"));
    // It saves its charts into the run.
    let lab = open_lab_writing(common, None, Splits::Test, &[target.model, ModelKind::Clean])?;
    let analysis = Analysis::load(&lab, &[target.model, ModelKind::Clean], target.model)?;
    let (net, clean, cache) = (analysis.subject_net(), analysis.net(ModelKind::Clean)?, &analysis.cache);
    let inputs = RankingInputs { net, clean, test: &lab.test, seed };
    let rankings = if rankings.is_empty() { Ranking::ALL.to_vec() } else { rankings.to_vec() };
    let curves: Vec<PruneCurve> = rankings
        .iter()
        .map(|&r| prune::curve(cache, &lab.test, layer, r, prune::ranking_order(r, layer, &inputs), target.mode))
        .collect();
    report(format, &curves, &lab.run.root, target)
}

/// Prints the curves (each ranking's best point; every point with --csv or
/// --json) and saves a chart per ranking into the run's `prune/` folder (SVG and PNG).
pub(super) fn report(format: Format, curves: &[PruneCurve], run: &Path, target: &AblationTarget) -> Result<()> {
    let table = if format == Format::Csv { prune_curve_table(curves) } else { prune_best_table(curves) };
    format.emit(&curves, &table)?;
    let dir = run.join("prune");
    let layer = curves.first().map_or("", |c| c.layer.as_str());
    for c in curves {
        prune_chart(c).save(&dir, &format!("{layer}-{}", c.ranking)).map_err(|e| eyre!(e))?;
    }
    if format.is_human() {
        eprintln!(
            "{layer} of the {} model, {} mode; every point of each curve: --csv or --json; charts (SVG and \
             PNG) in {}",
            target.model,
            target.mode,
            dir.display()
        );
    }
    Ok(())
}
