//! trojanscope: find the circuit behind a backdoor in an MNIST CNN.
pub mod alloc;
pub mod analysis_tables;
pub mod bench;
pub mod cli;
pub mod data;
pub mod engine;
pub mod figure;
pub mod graph;
pub mod named;
pub mod picture;
pub mod setup;
pub mod splitmix;
pub mod stats;
pub mod table;
pub mod tui;
