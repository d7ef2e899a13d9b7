//! A graph run's session put on screen (`apply`) and taken from it (`snapshot`);
//! the file and its reading are `saved`'s.

use super::saved::GraphSessionFile;
use super::state::{GraphState, LayerRow};
use crate::engine::lab::ModelKind;
use crate::graph::circuit::GraphSite;
use crate::tui::panes::Pane;
use crate::tui::panes::circuit::CircuitState;
use crate::tui::protocol::Checkpoints;
use crate::tui::protocol::{GraphRestored, GraphResults, GraphView};

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
