//! A graph run's session, kept in the run as `session.json` like a study run's:
//! the selected node, unit and image, the folds, the ablation set, mode and
//! history, every sweep, the patching maps, the circuit search and the pruning
//! curves, and the focused pane. The results are kept with the SHA-256 of every
//! checkpoint and the test images' count, and dropped when either changed. The
//! worker reads it (a saved map names its nodes, which only the graph resolves);
//! the event loop writes it as the study's (`session::Saver`).

use crate::engine::run::RunDir;
use crate::graph::circuit::{GraphSite, reading_sites};
use crate::tui::protocol::{Checkpoints, GraphRestored, GraphResults, GraphView};
use crate::tui::session;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GraphSessionFile {
    /// Test images per condition the results were measured on.
    pub test_images: usize,
    /// Every model's checkpoint the results were computed on.
    pub checkpoints: Checkpoints,
    pub view: GraphView,
    pub results: GraphResults,
}

/// The message for a restored session: what came back, or why nothing did.
pub fn notice(restored: &GraphRestored) -> String {
    match &restored.unreadable {
        Some(why) => why.clone(),
        None => session::restored_notice(restored.results.count(), restored.dropped),
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
