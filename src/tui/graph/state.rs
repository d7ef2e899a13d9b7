//! What the explorer knows about a graph run: its sites (nodes by module path),
//! which containers are folded in the Layers pane, the selected site and unit,
//! the ablation set as `NODE:UNITS` with its answers, sweeps, and the selected
//! site's weights and activations as the worker sent them.

use super::data::{GraphEvaluation, GraphInfo, GraphSweep, Site, SiteActivations, SiteWeights};
use crate::engine::ablation::AblationMode;
use crate::engine::lab::ModelKind;
use crate::graph::units::UnitSet;
use crate::tui::effect::Effect;
use crate::tui::protocol::Command;
use std::collections::{BTreeMap, BTreeSet};

/// A row of the Layers pane.
#[derive(Debug, Clone, PartialEq)]
pub enum LayerRow {
    /// A stage or block: its path, depth and whether it is folded.
    Container { path: String, depth: usize, folded: bool },
    /// A site (index into `GraphInfo::sites`) at its depth.
    Site { index: usize, depth: usize },
}

#[derive(Debug, Clone)]
pub struct GraphState {
    pub info: GraphInfo,
    pub folded: BTreeSet<String>,
    /// Cursor among the Layers pane's visible rows.
    pub layer_row: usize,
    /// The selected site.
    pub site: usize,
    /// Channels cursor (a row of the table) per site.
    pub unit_rows: Vec<usize>,
    /// Channels sorted by the swept poison accuracy (lowest first) rather than by unit.
    pub by_effect: bool,
    pub set: UnitSet,
    pub mode: AblationMode,
    /// The latest answer for the current set and mode (a sample's or the full test set's).
    pub result: Option<GraphEvaluation>,
    /// Every full-test-set answer, oldest first.
    pub history: Vec<GraphEvaluation>,
    /// Cursor in the history, counted from the newest.
    pub history_row: usize,
    /// The last set sent and not yet answered on the full test set.
    pub awaited: Option<(UnitSet, AblationMode)>,
    pub sweeps: BTreeMap<String, GraphSweep>,
    /// The last weights received: the site, and its units' weights if it has any.
    pub weights: Option<(String, Option<Box<SiteWeights>>)>,
    /// The input channel whose k×k slice the Kernels pane shows (at first the
    /// one whose weights changed most).
    pub input: Option<usize>,
    pub activations: Option<Box<SiteActivations>>,
}

impl GraphState {
    /// Opens with every container folded: the stages fit the Layers pane.
    pub fn new(info: GraphInfo) -> GraphState {
        let folded = info.sites.iter().flat_map(|s| s.containers.iter().cloned()).collect();
        let unit_rows = vec![0; info.sites.len()];
        GraphState {
            info,
            folded,
            layer_row: 0,
            site: 0,
            unit_rows,
            by_effect: false,
            set: UnitSet::default(),
            mode: AblationMode::Zero,
            result: None,
            history: Vec::new(),
            history_row: 0,
            awaited: None,
            sweeps: BTreeMap::new(),
            weights: None,
            input: None,
            activations: None,
        }
    }

    pub fn selected(&self) -> &Site {
        &self.info.sites[self.site]
    }

    /// The Layers pane's rows: containers with their sites under them, folded
    /// ones without.
    pub fn layer_rows(&self) -> Vec<LayerRow> {
        let mut rows = Vec::new();
        let mut open: Vec<&str> = Vec::new();
        for (index, site) in self.info.sites.iter().enumerate() {
            let shared = open.iter().zip(&site.containers).take_while(|(a, b)| **a == b.as_str()).count();
            open.truncate(shared);
            for (depth, path) in site.containers.iter().enumerate().skip(shared) {
                let hidden = site.containers[..depth].iter().any(|c| self.folded.contains(c));
                if !hidden {
                    rows.push(LayerRow::Container { path: path.clone(), depth, folded: self.folded.contains(path) });
                }
                open.push(path);
            }
            if !site.containers.iter().any(|c| self.folded.contains(c)) {
                rows.push(LayerRow::Site { index, depth: site.containers.len() });
            }
        }
        rows
    }

    /// Moves the Layers cursor; landing on a site selects it.
    pub fn move_layer_row(&mut self, delta: i64) {
        let rows = self.layer_rows();
        self.layer_row = crate::tui::cursor::moved(self.layer_row, delta, rows.len());
        if let Some(LayerRow::Site { index, .. }) = rows.get(self.layer_row)
            && *index != self.site
        {
            self.site = *index;
            self.input = None;
        }
    }

    /// Selects the site `delta` away in graph order, unfolding its containers.
    pub fn step_site(&mut self, delta: i64) {
        let site = crate::tui::cursor::moved(self.site, delta, self.info.sites.len());
        self.select_site(site);
    }

    pub fn select_site(&mut self, site: usize) {
        self.site = site;
        self.input = None;
        for c in &self.info.sites[site].containers {
            self.folded.remove(c);
        }
        let rows = self.layer_rows();
        self.layer_row =
            rows.iter().position(|r| matches!(r, LayerRow::Site { index, .. } if *index == site)).unwrap_or(0);
    }

    /// Folds or unfolds the container under the Layers cursor; `false` when the
    /// cursor is on a site.
    pub fn toggle_fold(&mut self) -> bool {
        let Some(LayerRow::Container { path, .. }) = self.layer_rows().get(self.layer_row).cloned() else {
            return false;
        };
        if !self.folded.remove(&path) {
            self.folded.insert(path);
        }
        true
    }

    /// The selected site's units in table order.
    pub fn unit_order(&self) -> Vec<usize> {
        let units = self.selected().units();
        let mut order: Vec<usize> = (0..units).collect();
        if let (true, Some(sweep)) = (self.by_effect, self.sweeps.get(&self.selected().name)) {
            let poison = |u: &usize| sweep.rows.get(*u).map_or(f64::INFINITY, |m| m.poison_acc);
            order.sort_by(|a, b| poison(a).total_cmp(&poison(b)));
        }
        order
    }

    pub fn unit_row(&self) -> usize {
        self.unit_rows[self.site].min(self.selected().units().saturating_sub(1))
    }

    pub fn selected_unit(&self) -> usize {
        self.unit_order().get(self.unit_row()).copied().unwrap_or(0)
    }

    pub fn move_unit_row(&mut self, delta: i64) {
        let units = self.selected().units();
        self.unit_rows[self.site] = crate::tui::cursor::moved(self.unit_rows[self.site], delta, units);
    }

    /// Puts the Channels cursor on `unit`; an error names the site's range.
    pub fn jump_to_unit(&mut self, unit: usize) -> Result<(), String> {
        let site = self.selected();
        let row = self.unit_order().iter().position(|&u| u == unit);
        let row = row.ok_or_else(|| format!("{} has units 0..{}, not {unit}", site.name, site.units() - 1))?;
        self.unit_rows[self.site] = row;
        Ok(())
    }

    /// Toggles the selected unit in the ablation set.
    pub fn toggle_selected(&mut self) {
        let (site, unit) = (self.selected().name.clone(), self.selected_unit() as i64);
        self.toggle(&site, unit);
    }

    /// Toggles `site:unit` in the ablation set.
    pub fn toggle(&mut self, site: &str, unit: i64) {
        let site = site.to_string();
        let units = self.set.sites.entry(site.clone()).or_default();
        if !units.remove(&unit) {
            units.insert(unit);
        }
        if units.is_empty() {
            self.set.sites.remove(&site);
        }
    }

    /// Units of `site` in the set.
    pub fn ablated(&self, site: &str) -> usize {
        self.set.sites.get(site).map_or(0, |u| u.len())
    }

    /// Asks for the current set's metrics on `model`, unless known (or empty, or
    /// the models are not ready).
    pub fn evaluate_current(&mut self, model: ModelKind, ready: bool) -> Vec<Effect> {
        let (set, mode) = (self.set.clone(), self.mode);
        self.result = self.history.iter().rev().find(|e| e.set == set && e.mode == mode && e.model == model).cloned();
        if set.sites.is_empty() || self.result.is_some() || !ready {
            return Vec::new();
        }
        self.awaited = Some((set.clone(), mode));
        vec![Effect::Send(Command::GraphAblate { set, mode })]
    }

    /// An answer: shown when it is the current set's; a full one goes into the history.
    /// Returns whether it answered the last set asked for.
    pub fn evaluated(&mut self, evaluation: GraphEvaluation) -> bool {
        let current = evaluation.set == self.set && evaluation.mode == self.mode;
        let last = self.awaited.as_ref().is_some_and(|(s, m)| *s == evaluation.set && *m == evaluation.mode);
        if current {
            self.result = Some(evaluation.clone());
        }
        if evaluation.sample {
            return false;
        }
        self.history.push(evaluation);
        if last {
            self.awaited = None;
        }
        last
    }

    /// What the worker should send next for the panes: the selected site's
    /// weights and its output on `digit`, each when not there and not on its way.
    pub fn wanted(&self, digit: usize, weights_asked: bool, activations_asked: bool) -> Vec<Command> {
        let site = &self.selected().name;
        let mut out = Vec::new();
        if !weights_asked && self.weights.as_ref().is_none_or(|(s, _)| s != site) {
            out.push(Command::GraphWeights { site: site.clone() });
        }
        let shown = self.activations.as_ref().is_some_and(|a| a.index == digit && a.site == *site);
        if !activations_asked && !shown {
            out.push(Command::GraphActivations { index: digit, site: site.clone() });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::attack::poison::Relabel;
    use crate::engine::metrics::Metrics;

    fn site(name: &str, containers: &[&str]) -> Site {
        Site {
            name: name.into(),
            op: "conv2d".into(),
            shape: vec![4, 2, 2],
            containers: containers.iter().map(|c| c.to_string()).collect(),
        }
    }

    fn state() -> GraphState {
        let sites = vec![
            site("conv1", &[]),
            site("layer1.0.conv1", &["layer1", "layer1.0"]),
            site("layer1.0.conv2", &["layer1", "layer1.0"]),
            site("layer1.1.conv1", &["layer1", "layer1.1"]),
            site("linear", &[]),
        ];
        GraphState::new(GraphInfo { sites, sample: 10 })
    }

    #[test]
    fn containers_fold_and_stepping_unfolds_the_selected_sites() {
        let mut g = state();
        let names = |g: &GraphState| -> Vec<String> {
            g.layer_rows()
                .iter()
                .map(|r| match r {
                    LayerRow::Container { path, folded, .. } => format!("{}{path}", if *folded { "+" } else { "-" }),
                    LayerRow::Site { index, depth } => format!("{depth}:{}", g.info.sites[*index].name),
                })
                .collect()
        };
        assert_eq!(names(&g), ["0:conv1", "+layer1", "0:linear"]);
        g.move_layer_row(1);
        assert!(g.toggle_fold());
        assert_eq!(names(&g), ["0:conv1", "-layer1", "+layer1.0", "+layer1.1", "0:linear"]);
        // → from conv1 goes to the next site in graph order, unfolding its block.
        g.select_site(0);
        g.step_site(1);
        assert_eq!(g.selected().name, "layer1.0.conv1");
        assert_eq!(names(&g)[2..5], ["-layer1.0", "2:layer1.0.conv1", "2:layer1.0.conv2"]);
        assert_eq!(g.layer_row, 3);
        g.move_layer_row(1);
        assert_eq!(g.selected().name, "layer1.0.conv2");
        assert!(!g.toggle_fold(), "a site row does not fold");
    }

    #[test]
    fn toggles_build_the_set_and_answers_go_where_they_belong() {
        let mut g = state();
        g.select_site(2);
        g.move_unit_row(3);
        g.toggle_selected();
        g.select_site(4);
        g.toggle_selected();
        assert_eq!(g.set.to_string(), "layer1.0.conv2:3 linear:0");
        let asked = g.evaluate_current(ModelKind::Poisoned, true);
        assert!(matches!(&asked[..], [Effect::Send(Command::GraphAblate { .. })]));
        let answer = |sample| GraphEvaluation {
            set: g.set.clone(),
            mode: g.mode,
            model: ModelKind::Poisoned,
            metrics: Metrics::from_predictions(&[1, 2], &[1, 2], &[0, 0], Relabel::To { target: 0 }, 10),
            sample,
            seconds: 0.1,
        };
        let (sample, full) = (answer(true), answer(false));
        assert!(!g.evaluated(sample));
        assert!(g.result.as_ref().unwrap().sample && g.history.is_empty());
        assert!(g.evaluated(full));
        assert_eq!(g.history.len(), 1);
        assert!(g.evaluate_current(ModelKind::Poisoned, true).is_empty(), "known sets are not asked again");
        g.toggle_selected();
        assert_eq!(g.set.to_string(), "layer1.0.conv2:3");
        assert_eq!(g.jump_to_unit(9), Err("linear has units 0..3, not 9".into()));
        g.jump_to_unit(2).unwrap();
        assert_eq!(g.selected_unit(), 2);
    }
}
