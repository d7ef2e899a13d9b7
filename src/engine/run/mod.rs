//! A run folder (`checkpoints/<run>/`) and the rules for writing into it: one
//! writer at a time, never through a symbolic link, a folder that cannot be
//! written found before any long job, and a training log that keeps the history
//! of every model on disk.
pub mod dir;
pub mod files;
pub mod key;
pub mod lock;
pub mod log;
pub mod settings;

pub use dir::RunDir;
pub use lock::RunLock;
