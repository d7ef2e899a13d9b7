//! Everything that touches tensors: the model, training, metrics, checkpoints and
//! the interventions. Runs on one thread (the CLI's, or the TUI's worker).
pub mod ablation;
pub mod cache;
pub mod checkpoint;
pub mod circuit;
pub mod cleanse;
pub mod device;
pub mod diff;
pub mod featvis;
pub mod host;
pub mod inputopt;
pub mod kernels;
pub mod lab;
pub mod lanes;
pub mod layer;
pub mod metrics;
pub mod model;
pub mod optim;
pub mod patch;
pub mod probe;
pub mod prune;
pub mod recovery_store;
pub mod swap;
pub mod sweep;
pub mod testset;
pub mod train;
pub mod unlearn;
