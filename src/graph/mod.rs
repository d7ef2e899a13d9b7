//! Bring your own CNN: the network as data (`docs/graph.md`). A graph file is
//! read and its shapes checked (`spec`, `shape`), its weights bound by PyTorch's
//! names (`weights`), and one generic libtorch executor runs it with
//! interventions and cached prefixes (`exec`); `import` brings a PyTorch module
//! in, `run` is where an imported run keeps its files.
pub mod attribute;
pub mod circuit;
pub mod cleanse;
pub mod detect;
pub mod diff;
pub mod eval;
pub mod exec;
pub mod features;
pub mod import;
pub mod patch;
pub mod preset;
pub mod prune;
pub mod run;
pub mod shape;
pub mod spec;
pub mod swap;
pub mod sweep;
pub mod train;
pub mod units;
pub mod unlearn;
pub mod variants;
pub mod visualize;
pub mod weights;
