//! A graph run's session, kept in the run as `session.json` like a study run's:
//! the selected node, unit and image, the folds, the ablation set, mode and
//! history, every sweep, the patching maps, the circuit search and the pruning
//! curves, and the focused pane. The results are kept with the SHA-256 of every
//! checkpoint and the test images' count, and dropped when either changed. The
//! worker reads it (a saved map names its nodes, which only the graph resolves);
//! the event loop writes it as the study's (`session::Saver`).

use super::data::GraphEvaluation;
use super::state::{GraphState, GraphSweep, LayerRow};
use crate::engine::ablation::AblationMode;
use crate::engine::circuit::CircuitReport;
use crate::engine::lab::ModelKind;
use crate::engine::patch::Direction;
use crate::engine::prune::PruneCurve;
use crate::engine::run::RunDir;
use crate::graph::circuit::{GraphSite, reading_sites};
use crate::graph::units::UnitSet;
use crate::tui::panes::Pane;
use crate::tui::panes::circuit::CircuitState;
use crate::tui::protocol::{Checkpoints, PatchMaps};
use crate::tui::session;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GraphSessionFile {
    /// Test images per condition the results were measured on.
    pub test_images: usize,
    /// Every model's checkpoint the results were computed on.
    pub checkpoints: Checkpoints,
    pub view: GraphView,
    pub results: GraphResults,
}

/// What is selected.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GraphView {
    /// The focused pane's number.
    pub focus: usize,
    /// The model under study (the sweeps are its).
    pub subject: ModelKind,
    /// The selected node, by name.
    pub site: String,
    /// The Channels cursor of each node, by name.
    pub unit_rows: BTreeMap<String, usize>,
    pub folded: BTreeSet<String>,
    pub by_effect: bool,
    pub set: UnitSet,
    pub mode: AblationMode,
    pub history_row: usize,
    pub digit: usize,
    pub direction: Direction,
    /// The Circuit map's cursor: its row and unit.
    pub map: (usize, usize),
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct GraphResults {
    pub history: Vec<GraphEvaluation>,
    pub sweeps: BTreeMap<String, GraphSweep>,
    pub patch: Option<Box<PatchMaps<GraphSite>>>,
    pub report: Option<Box<CircuitReport<GraphSite>>>,
    /// The last pruning curves and their node.
    pub curves: Option<(String, Vec<PruneCurve>)>,
}

impl GraphResults {
    fn count(&self) -> usize {
        let one = |present: bool| present as usize;
        self.history.len()
            + self.sweeps.len()
            + one(self.patch.is_some())
            + one(self.report.is_some())
            + one(self.curves.is_some())
    }
}

/// What opening the graph run found.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct GraphRestored {
    pub view: Option<GraphView>,
    pub results: GraphResults,
    /// Results computed on other checkpoints or test images, dropped.
    pub dropped: usize,
    /// The file could not be read (it was kept as `session.json.bad`).
    pub unreadable: Option<String>,
}

impl GraphRestored {
    pub fn notice(&self) -> String {
        match &self.unreadable {
            Some(why) => why.clone(),
            None => session::restored_notice(self.results.count(), self.dropped),
        }
    }
}

/// Reads the run's session against the graph's nodes (`sites`), keeping its
/// results only when they were computed on `checkpoints` and `test_images`.
pub fn read(run: &RunDir, checkpoints: &Checkpoints, test_images: usize, sites: Vec<GraphSite>) -> GraphRestored {
    let file: GraphSessionFile = match reading_sites(sites, || session::load(run)) {
        Ok(Some(file)) => file,
        Ok(None) => return GraphRestored::default(),
        Err(unreadable) => return GraphRestored { unreadable: Some(unreadable), ..GraphRestored::default() },
    };
    let view = Some(file.view);
    if file.checkpoints == *checkpoints && file.test_images == test_images {
        GraphRestored { view, results: file.results, dropped: 0, unreadable: None }
    } else {
        GraphRestored { view, results: GraphResults::default(), dropped: file.results.count(), unreadable: None }
    }
}

/// The session as the explorer shows it now.
pub fn snapshot(
    focus: Pane,
    (subject, digit): (ModelKind, usize),
    checkpoints: &Checkpoints,
    test_images: usize,
    g: &GraphState,
    circuit: &CircuitState<GraphSite>,
) -> GraphSessionFile {
    let names = g.info.sites.iter().map(|s| s.name.clone());
    let view = GraphView {
        focus: focus.number(),
        subject,
        site: g.selected().name.clone(),
        unit_rows: names.zip(g.unit_rows.iter().copied()).filter(|(_, row)| *row > 0).collect(),
        folded: g.folded.clone(),
        by_effect: g.by_effect,
        set: g.set.clone(),
        mode: g.mode,
        history_row: g.history_row,
        digit,
        direction: circuit.direction,
        map: (circuit.layer, circuit.unit),
    };
    let results = GraphResults {
        history: g.history.clone(),
        sweeps: g.sweeps.clone(),
        patch: circuit.patch.clone(),
        report: circuit.report.clone(),
        curves: circuit.curves.clone(),
    };
    GraphSessionFile { test_images, checkpoints: checkpoints.clone(), view, results }
}

/// Puts a restored session on screen; returns the model under study, the digit
/// and the pane to focus.
pub fn apply(
    restored: GraphRestored,
    g: &mut GraphState,
    circuit: &mut CircuitState<GraphSite>,
) -> Option<(ModelKind, usize, Option<Pane>)> {
    let view = restored.view?;
    for (index, site) in g.info.sites.iter().enumerate() {
        g.unit_rows[index] = view.unit_rows.get(&site.name).copied().unwrap_or(0);
    }
    if let Some(index) = g.info.sites.iter().position(|s| s.name == view.site) {
        g.select_site(index);
    }
    // After selecting: the saved folds win over what selecting unfolded.
    g.folded = view.folded;
    let selected = |r: &LayerRow| matches!(r, LayerRow::Site { index, .. } if *index == g.site);
    g.layer_row = g.layer_rows().iter().position(selected).unwrap_or(0);
    (g.by_effect, g.set, g.mode, g.history_row) = (view.by_effect, view.set, view.mode, view.history_row);
    let results = restored.results;
    (g.history, g.sweeps) = (results.history, results.sweeps);
    g.result = g.history.iter().rev().find(|e| e.set == g.set && e.mode == g.mode).cloned();
    circuit.direction = view.direction;
    if let Some(maps) = results.patch {
        circuit.patched(maps);
    }
    (circuit.report, circuit.curves) = (results.report, results.curves);
    (circuit.layer, circuit.unit) = view.map;
    Some((view.subject, view.digit, Pane::of_number(view.focus)))
}
