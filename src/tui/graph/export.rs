//! Export on a graph run: the sweeps of its nodes (a heatmap and a table each),
//! the ablation history, the Trigger pane's recovery and feature visualisations,
//! and the Circuit pane's patching maps, circuit search and pruning curves,
//! through the same shared tables and charts as the study's export.

use super::state::GraphState;
use crate::engine::metrics::Metrics;
use crate::tui::effect::ExportJob;
use crate::tui::export::{circuit_exports, history_table, sweep_exports, trigger_exports};
use crate::tui::panes::Panes;
use std::path::PathBuf;

/// Everything the graph run's panes hold worth keeping, as files for `dir`.
pub fn job(g: &GraphState, panes: &Panes, dir: PathBuf) -> ExportJob {
    let (mut figures, mut tables) = (Vec::new(), Vec::new());
    for (site, sweep) in &g.sweeps {
        let rows: Vec<(usize, &Metrics)> = sweep.rows.iter().enumerate().collect();
        sweep_exports(site, sweep.mode, &rows, &mut figures, &mut tables);
    }
    if !g.history.is_empty() {
        let rows = g.history.iter().map(|e| (e.set.to_string(), e.mode, &e.metrics, e.model));
        tables.push(("ablation-history".into(), history_table(rows)));
    }
    trigger_exports(&panes.trigger, &mut figures, &mut tables);
    circuit_exports(&panes.graph_circuit, &mut figures, &mut tables);
    ExportJob { dir, figures, tables }
}
