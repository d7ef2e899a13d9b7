//! The explorer's session, kept in the run as `session.json`: what is selected
//! and every result computed, each keyed by the SHA-256 of the checkpoints it was
//! computed on, so that opening the run again shows the same screen without
//! recomputing, and a retrained model never shows another model's numbers.

use super::columns::Sort;
use super::protocol::{Checkpoints, PatchMaps, Swaps};
use super::study::{Evaluation, SweepResult};
use crate::engine::ablation::{AblationMode, AblationSet};
use crate::engine::checkpoint::write_atomically;
use crate::engine::circuit::CircuitReport;
use crate::engine::lab::ModelKind;
use crate::engine::layer::Layer;
use crate::engine::patch::Direction;
use crate::engine::prune::PruneCurve;
use crate::engine::run::RunDir;
use crate::engine::run::files::refuse_link;
use color_eyre::eyre::{Result, WrapErr};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

pub fn path(run: &RunDir) -> PathBuf {
    run.root.join("session.json")
}

/// Where an unreadable session file is kept (nothing is lost).
pub fn bad_path(run: &RunDir) -> PathBuf {
    run.root.join("session.json.bad")
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionFile {
    /// Test images per condition the results were measured on (`--test-limit`).
    pub test_images: usize,
    pub view: SavedView,
    pub results: Vec<Keyed>,
}

/// What is selected: the models, the layer and unit, the digit, the set, the
/// focused pane and the Circuit pane's map.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedView {
    /// The focused pane's number.
    pub focus: usize,
    pub subject: ModelKind,
    pub reference: ModelKind,
    pub layer: Layer,
    /// The Channels cursor of each layer, in layer order.
    pub rows: Vec<usize>,
    pub sort: Sort,
    pub digit: usize,
    pub set: AblationSet,
    pub mode: AblationMode,
    pub history_row: usize,
    pub direction: Direction,
    /// The Circuit map's cursor: its row and unit.
    pub map: (usize, usize),
}

/// A result with the SHA-256 of every checkpoint it was computed on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Keyed {
    pub checkpoints: Checkpoints,
    pub result: Saved,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Saved {
    Evaluation(Evaluation),
    Sweep { subject: ModelKind, layer: Layer, sweep: SweepResult },
    Swaps(Box<Swaps>),
    Patch { subject: ModelKind, maps: Box<PatchMaps> },
    Circuit { subject: ModelKind, report: Box<CircuitReport> },
    Prune { subject: ModelKind, layer: String, curves: Vec<PruneCurve> },
}

impl Saved {
    /// The models it was computed on (the circuit's criteria and the pruning
    /// rankings read the clean model too).
    fn models(&self) -> Vec<ModelKind> {
        match self {
            Saved::Evaluation(e) => vec![e.model],
            Saved::Sweep { subject, .. } | Saved::Patch { subject, .. } => vec![*subject],
            Saved::Circuit { subject, .. } | Saved::Prune { subject, .. } => vec![*subject, ModelKind::Clean],
            Saved::Swaps(s) => vec![s.donor, s.recipient],
        }
    }

    /// Keyed by `checkpoints`; `None` when one of its models has no checkpoint.
    pub fn keyed(self, checkpoints: &Checkpoints) -> Option<Keyed> {
        let keys: Option<Checkpoints> =
            self.models().into_iter().map(|k| Some((k, checkpoints.get(&k)?.clone()))).collect();
        Some(Keyed { checkpoints: keys?, result: self })
    }
}

/// What opening the run found: the session's view and its results computed on
/// the checkpoints as they are now, how many were dropped, and what went wrong.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Restored {
    pub view: Option<SavedView>,
    pub results: Vec<Saved>,
    /// Results computed on checkpoints that have changed since.
    pub dropped: usize,
    /// The file could not be read (it was kept as `session.json.bad`).
    pub unreadable: Option<String>,
}

impl Restored {
    /// The line the status shows.
    pub fn notice(&self) -> String {
        if let Some(why) = &self.unreadable {
            return why.clone();
        }
        restored_notice(self.results.len(), self.dropped)
    }
}

/// The run's session file as `F`: `Ok(None)` when there is none. An unreadable
/// one is moved aside to `session.json.bad` (under the run's lock) and the error
/// is the line the status shows.
pub fn load<F: DeserializeOwned>(run: &RunDir) -> Result<Option<F>, String> {
    let file = path(run);
    if !file.exists() {
        return Ok(None);
    }
    let parsed = refuse_link(&file).and_then(|()| crate::engine::checkpoint::load_json::<F>(&file));
    parsed.map(Some).map_err(|e| {
        let why = e.chain().map(|c| c.to_string()).collect::<Vec<_>>().join(": ");
        let kept = crate::engine::run::RunLock::acquire(run)
            .and_then(|_lock| std::fs::rename(&file, bad_path(run)).wrap_err("cannot move it aside"));
        let kept = match kept {
            Ok(()) => format!("kept as {}", bad_path(run).display()),
            Err(e) => format!("left in place: {e}"),
        };
        format!("the saved session could not be read ({why}); {kept}; starting fresh")
    })
}

/// The line the status shows when a session is restored.
pub fn restored_notice(results: usize, dropped: usize) -> String {
    let dropped = match dropped {
        0 => String::new(),
        n => format!("; {n} computed on other checkpoints or test images dropped"),
    };
    format!("session restored: {results} results, nothing recomputed{dropped}")
}

/// Reads the run's session, keeping the results computed on `checkpoints` and
/// `test_images` test images. An unreadable file is moved aside (`load`).
pub fn read(run: &RunDir, checkpoints: &Checkpoints, test_images: usize) -> Restored {
    let session: SessionFile = match load(run) {
        Ok(Some(session)) => session,
        Ok(None) => return Restored::default(),
        Err(unreadable) => return Restored { unreadable: Some(unreadable), ..Restored::default() },
    };
    let total = session.results.len();
    let same_images = session.test_images == test_images;
    let current = |k: &Keyed| same_images && k.checkpoints.iter().all(|(kind, sha)| checkpoints.get(kind) == Some(sha));
    let results: Vec<Saved> = session.results.into_iter().filter(current).map(|k| k.result).collect();
    Restored { view: Some(session.view), dropped: total - results.len(), results, unreadable: None }
}

/// Writes `text` (a `SessionFile`'s JSON) into the run: atomically, under the
/// run's lock, so never while another writer holds it.
pub fn write(run: &RunDir, text: &str) -> Result<()> {
    let _lock = crate::engine::run::RunLock::acquire(run)?;
    write_atomically(&path(run), |tmp| {
        std::fs::write(tmp, text).wrap_err_with(|| format!("cannot write {}", tmp.display()))
    })
}

/// Keeps the run's session file up to date from the event loop: at most every
/// `SAVE_PERIOD`, only when it changed, and again later when another writer
/// held the run's lock.
#[derive(Default)]
pub struct Saver {
    written: Option<String>,
    last: Option<std::time::Instant>,
}

/// How often the session file may be rewritten.
pub const SAVE_PERIOD: std::time::Duration = std::time::Duration::from_millis(500);

impl Saver {
    /// Writes `session` (a run and its JSON) if it changed, unless the last write
    /// was under `SAVE_PERIOD` ago and `now` is false.
    pub fn save(&mut self, session: Option<(RunDir, String)>, now: bool) {
        if !now && self.last.is_some_and(|t| t.elapsed() < SAVE_PERIOD) {
            return;
        }
        let Some((run, text)) = session else { return };
        if self.written.as_ref() == Some(&text) {
            return;
        }
        self.last = Some(std::time::Instant::now());
        match write(&run, &text) {
            Ok(()) => self.written = Some(text),
            // Tried again on the next change or period (the lock is held while
            // training, recovering or unlearning); the log says why.
            Err(e) => eprintln!("the session was not saved this time: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::metrics::Metrics;

    fn evaluation(model: ModelKind, clean_acc: f64) -> Saved {
        let metrics = Metrics {
            clean_acc,
            poison_acc: 12.5,
            asr_non_target: 3.0,
            rehab_acc: 96.0,
            clean_as_target: 9.0,
            per_class_clean: vec![97.0; 10],
            count: 500,
            detail: Default::default(),
        };
        let set = AblationSet::single(Layer::Conv1, 31);
        Saved::Evaluation(Evaluation { set, mode: AblationMode::Zero, model, metrics, seconds: 0.5 })
    }

    fn view() -> SavedView {
        SavedView {
            focus: 5,
            subject: ModelKind::Poisoned,
            reference: ModelKind::Clean,
            layer: Layer::Conv2,
            rows: vec![0, 7, 0, 0],
            sort: Sort::default(),
            digit: 3,
            set: AblationSet::single(Layer::Conv1, 31),
            mode: AblationMode::Zero,
            history_row: 0,
            direction: Direction::Noise,
            map: (1, 7),
        }
    }

    /// Each result is kept only beside the checkpoints it was computed on, and
    /// only on the same test images; what is dropped is counted.
    #[test]
    fn results_of_other_checkpoints_or_test_images_are_dropped_and_counted() {
        let dir = std::env::temp_dir().join(format!("trojanscope-session-{}", std::process::id()));
        let run = RunDir { root: dir.clone() };
        std::fs::create_dir_all(&dir).unwrap();
        let old: Checkpoints = [(ModelKind::Poisoned, "aa".into()), (ModelKind::Rehab, "bb".into())].into();
        let results = [evaluation(ModelKind::Poisoned, 97.5), evaluation(ModelKind::Rehab, 96.5)];
        let results = results.into_iter().map(|r| r.keyed(&old).unwrap()).collect();
        let file = SessionFile { test_images: 500, view: view(), results };
        write(&run, &serde_json::to_string(&file).unwrap()).unwrap();
        let same = read(&run, &old, 500);
        assert_eq!((same.results.len(), same.dropped, same.view), (2, 0, Some(view())));
        // The poisoned model retrained: its result goes, the rehab model's stays.
        let retrained: Checkpoints = [(ModelKind::Poisoned, "cc".into()), (ModelKind::Rehab, "bb".into())].into();
        let restored = read(&run, &retrained, 500);
        assert_eq!((restored.results, restored.dropped), (vec![evaluation(ModelKind::Rehab, 96.5)], 1));
        assert_eq!(
            read(&run, &old, 10_000).notice(),
            "session restored: 0 results, nothing recomputed; 2 computed on other checkpoints or test images dropped"
        );
        // A model without a checkpoint cannot key a result: it is not kept.
        assert_eq!(evaluation(ModelKind::Unlearned, 90.0).keyed(&old), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
