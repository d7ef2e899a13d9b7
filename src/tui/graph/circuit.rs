//! The Circuit pane's jobs on a graph run, on the worker, both on the sample (the
//! first 1,000 test images per condition): the patching map (every unit of every
//! convolution and linear layer patched alone, both directions, by `graph::patch`
//! as `patch` runs it; preact8's 1,200 units take minutes even so) and the
//! circuit search within one node (`engine::circuit` through `graph::circuit`, as
//! `circuit --nodes NODE --test-limit 1000` runs it; its every pair costs units²
//! sets), and the pruning-defence curves of one node (`graph::prune`, as `prune
//! NODE --test-limit 1000` runs them).

use super::session::GraphSession;
use crate::engine::ablation::AblationMode;
use crate::engine::circuit::{CircuitReport, SearchProgress, search};
use crate::engine::lab::ModelKind;
use crate::engine::patch::Direction;
use crate::engine::prune::{PruneCurve, Ranking};
use crate::graph::circuit::{GraphEvaluator, GraphSite, search_config, sites};
use crate::graph::eval::evaluate;
use crate::graph::features::single_node;
use crate::graph::patch::NodePatch;
use crate::graph::prune::{self, RankingInputs};
use crate::graph::units::{UnitSet, parametrised_outputs};
use crate::tui::protocol::{PatchMap, PatchMaps, UnitPatch};
use color_eyre::eyre::{Result, eyre};
use std::ops::ControlFlow;

impl GraphSession {
    /// Every unit of every convolution's and linear layer's output but the
    /// logits, patched alone in the model under study, denoise then noise.
    /// `progress(done, total)` counts units and may stop it: the maps then hold
    /// what was done.
    pub fn patch_map(&self, progress: &mut dyn FnMut(usize, usize) -> ControlFlow<()>) -> Result<PatchMaps<GraphSite>> {
        let exec = self.exec(self.subject)?;
        let sites: Vec<GraphSite> = parametrised_outputs(exec).into_iter().map(|n| GraphSite::of(exec, n)).collect();
        let per_direction: usize = sites.iter().map(|s| s.units).sum();
        let mut maps = Vec::new();
        let mut stopped = false;
        for (d, direction) in [Direction::Denoise, Direction::Noise].into_iter().enumerate() {
            let patcher = NodePatch::new(exec, None, &self.sample, direction).map_err(|e| eyre!(e))?;
            let mut rows = Vec::new();
            let mut before = d * per_direction;
            for site in &sites {
                let patched = patcher.patch(site.node, |done, total| {
                    let flow = progress(before + done * site.units / total.max(1), 2 * per_direction);
                    stopped |= flow.is_break();
                    flow
                });
                let unit = |u: i64| u as usize;
                rows.extend(patched.into_iter().map(|r| UnitPatch {
                    site: site.clone(),
                    unit: unit(r.unit),
                    effect: r.effect,
                }));
                before += site.units;
                if stopped {
                    break;
                }
            }
            maps.push(PatchMap { direction, baseline: patcher.baseline(), rows });
            if stopped {
                break;
            }
        }
        Ok(PatchMaps { sites, maps, images: self.sample.len() })
    }

    /// The circuit search within `site` (a node, or the convolutions under a
    /// module path) in the model under study, with every pair and the keep set
    /// there; the poison target is the clean model's poison accuracy + 3 points.
    /// On the sample, as is its target.
    pub fn circuit(
        &self,
        site: &str,
        mode: AblationMode,
        progress: &mut dyn FnMut(&SearchProgress<GraphSite>) -> ControlFlow<()>,
    ) -> Result<CircuitReport<GraphSite>> {
        let clean = self.exec(ModelKind::Clean).map_err(|_| {
            eyre!("the circuit's target is the clean model's poison accuracy: the run has no clean model")
        })?;
        let raw = &self.sample;
        let clean_model_poison = evaluate(clean, raw, &[]).poison_acc;
        let exec = self.exec(self.subject)?;
        let sites = sites(exec, &[site.to_string()]).map_err(|e| eyre!(e))?;
        let mut eval = GraphEvaluator::new(exec, raw, mode, &sites).map_err(|e| eyre!(e))?;
        let config = search_config(exec, raw, sites, clean_model_poison, mode, true);
        Ok(search(&mut eval, &config, progress))
    }

    /// The pruning-defence curves of `site` (default: the last convolution, as
    /// the CLI's) in the model under study, every ranking that applies, on the
    /// sample; the node's name and the curves, fewer when `progress` stopped it.
    pub fn prune(
        &mut self,
        site: Option<String>,
        mode: AblationMode,
        progress: impl FnMut(usize, usize) -> ControlFlow<()>,
    ) -> Result<(String, Vec<PruneCurve>)> {
        let site = match site {
            Some(site) => site,
            None => crate::graph::preset::last_conv(&self.exec(self.subject)?.spec)
                .ok_or_else(|| eyre!("the graph has no convolution to prune by default: select a node"))?,
        };
        let whole = UnitSet { sites: [(site.clone(), Default::default())].into() };
        let means = self.means_for(&whole, mode)?;
        let (exec, raw) = (self.exec(self.subject)?, &self.sample);
        let clean = self.exec(ModelKind::Clean).map_err(|_| {
            eyre!("the weight-change ranking compares with the clean model: the run has no clean model")
        })?;
        let node = single_node(&site, exec).map_err(|e| eyre!(e))?;
        let inputs = RankingInputs { exec, clean, raw, seed: 0 };
        let orders = Ranking::ALL
            .into_iter()
            .filter(|&r| prune::applies(r, exec, node).is_ok())
            .map(|r| Ok((r, prune::ranking_order(r, node, &inputs)?)))
            .collect::<Result<Vec<_>, String>>()
            .map_err(|e| eyre!(e))?;
        let means = |n: usize| means[&n].shallow_clone();
        let curves = prune::curves(exec, raw, &site, orders, mode, &means, progress).map_err(|e| eyre!(e))?;
        Ok((site, curves))
    }
}
