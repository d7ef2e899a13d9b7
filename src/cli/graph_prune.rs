//! `prune` on a graph run: pruning-defence curves for any node, named by its
//! module path (default: the last convolution).

use super::args::{AblationTarget, CommonArgs};
use super::output::Format;
use super::progress::counter;
use crate::engine::ablation::AblationMode;
use crate::engine::lab::ModelKind;
use crate::engine::prune::Ranking;
use crate::engine::run::{RunDir, RunLock};
use crate::engine::testset;
use crate::graph::features::single_node;
use crate::graph::prune::{self, RankingInputs};
use crate::graph::run as graph_run;
use crate::setup::open_graph_lab;
use color_eyre::eyre::{Result, eyre};

pub fn prune(
    common: &CommonArgs,
    format: Format,
    site: Option<&str>,
    rankings: &[Ranking],
    target: &AblationTarget,
    seed: u64,
) -> Result<()> {
    // It saves its charts into the run: the lock before any work.
    let _lock = RunLock::acquire(&RunDir::new(&common.checkpoints, &common.run))?;
    let lab = open_graph_lab(common, &[target.model, ModelKind::Clean])?;
    let exec = graph_run::load(&lab.run, target.model, lab.device)?;
    let clean = graph_run::load(&lab.run, ModelKind::Clean, lab.device)?;
    let site = match site {
        Some(site) => site.to_string(),
        None => crate::graph::preset::last_conv(&exec.spec)
            .ok_or_else(|| eyre!("the graph has no convolution to prune by default: name a node"))?,
    };
    let node = single_node(&site, &exec).map_err(|e| eyre!(e))?;
    // Asked for, a ranking that does not apply is an error; by default it is left out.
    let rankings: Vec<Ranking> = if rankings.is_empty() {
        Ranking::ALL.into_iter().filter(|&r| prune::applies(r, &exec, node).is_ok()).collect()
    } else {
        rankings.to_vec()
    };
    let inputs = RankingInputs { exec: &exec, clean: &clean, raw: &lab.raw, seed };
    let orders = rankings
        .iter()
        .map(|&r| Ok((r, prune::ranking_order(r, node, &inputs)?)))
        .collect::<Result<Vec<_>, String>>()
        .map_err(|e| eyre!(e))?;
    let means = match target.mode {
        AblationMode::Mean => Some(exec.mean_outputs(&lab.raw.clean(), testset::chunk(exec.device), &[node]).remove(0)),
        _ => None,
    };
    let means = |_: usize| means.as_ref().expect("asked in mean mode only").shallow_clone();
    let bar = counter(&format!("prune {site}"), 1, format.is_human());
    let curves = prune::curves(&exec, &lab.raw, &site, orders, target.mode, &means, |done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
        std::ops::ControlFlow::Continue(())
    })
    .map_err(|e| eyre!(e))?;
    bar.finish_and_clear();
    super::defence::report(format, &curves, &lab.run.root, target)
}
