//! `metrics.jsonl` (and `unlearn.jsonl`): one line per training step (its loss)
//! and one per probe evaluation, the history of each model the run holds.

use super::files::refuse_link;
use crate::engine::checkpoint::write_atomically;
use crate::engine::train::{LogLine, Phase, TrainEvent};
use color_eyre::eyre::{Result, WrapErr};
use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

/// A phase's lines replace that phase's earlier lines only once its model is
/// saved (`commit`), by rewriting the whole file (temp file + rename). A phase
/// that is interrupted, diverges or fails to save leaves the file as it was: the
/// history of every model on disk stays whole.
pub struct MetricsLog {
    path: PathBuf,
    /// The committed lines of each phase; written in phase order.
    phases: BTreeMap<Phase, Vec<String>>,
    /// The lines of the phase being trained.
    pending: Vec<String>,
}

impl MetricsLog {
    /// Reads the log at `path` (none yet: empty). A line that does not parse (a
    /// write cut short by a crash, before writes were atomic) is dropped.
    pub fn open(path: &Path) -> Result<MetricsLog> {
        refuse_link(path)?;
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(e).wrap_err_with(|| format!("cannot read {}", path.display())),
        };
        let mut phases: BTreeMap<Phase, Vec<String>> = BTreeMap::new();
        for line in text.lines() {
            if let Ok(parsed) = serde_json::from_str::<LogLine>(line) {
                phases.entry(parsed.phase()).or_default().push(line.to_string());
            }
        }
        Ok(MetricsLog { path: path.to_path_buf(), phases, pending: Vec::new() })
    }

    /// Runs `train` with every event kept as this phase's lines before `on_event`
    /// sees it.
    pub fn recording<T>(
        &mut self,
        on_event: &mut dyn FnMut(TrainEvent) -> ControlFlow<()>,
        train: impl FnOnce(&mut dyn FnMut(TrainEvent) -> ControlFlow<()>) -> T,
    ) -> T {
        self.pending.clear();
        let pending = &mut self.pending;
        train(&mut |event| {
            pending.extend(LogLine::of(&event).iter().filter_map(|line| serde_json::to_string(line).ok()));
            on_event(event)
        })
    }

    /// Makes the recorded lines `phase`'s history (its model has been saved),
    /// replacing that phase's earlier lines and keeping every other phase's.
    pub fn commit(&mut self, phase: Phase) -> Result<()> {
        self.phases.insert(phase, std::mem::take(&mut self.pending));
        let mut text = String::new();
        for line in self.phases.values().flatten() {
            text.push_str(line);
            text.push('\n');
        }
        write_atomically(&self.path, |tmp| {
            std::fs::write(tmp, &text).wrap_err_with(|| format!("cannot write {}", tmp.display()))
        })
    }
}
