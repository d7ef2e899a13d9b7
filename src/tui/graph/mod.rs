//! The explorer on a graph run (a network imported from PyTorch or trained from a
//! preset): the same app, keys and layout, with the Layers, Channels, Kernels,
//! Activations and Ablation panes drawn from the graph's nodes by module path,
//! the Trigger and Circuit panes the study's own over the graph's results, and
//! the worker answering through the generic executor (`session`, `trigger`,
//! `circuit`), and export (`export`). What still runs on the study's CNN only
//! (training, swaps, top images) says so: `STUDY_ONLY`.

pub mod activations;
pub mod circuit;
pub mod data;
pub mod export;
pub mod kernels;
pub mod keys;
pub mod panes;
pub mod resume;
pub mod saved;
pub mod session;
pub mod sites;
pub mod state;
pub mod trigger;

/// What a pane or key of the study's own analyses says on a graph run.
pub const STUDY_ONLY: &str = "runs on the study's CNN only for now (not on a graph run)";
