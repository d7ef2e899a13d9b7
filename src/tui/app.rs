//! The explorer's whole state and its one entry point, `update(msg) -> effects`.
//! Nothing here blocks or touches tensors: effects are carried out by the event
//! loop (commands to the worker, exports on a helper thread, quitting).

use super::columns::{self, ChannelRow, LayerFacts, Sort};
use super::export::ExportJob;
use super::keys::{self, Action, Context};
use super::layout::{Screen, scroll_offset};
use super::pane::Pane;
use super::panes;
use super::panes::circuit::CircuitState;
use super::panes::trigger::TriggerState;
use super::protocol::{Command, DigitData, Job, ModelsData, Reply, RunInfo};
use super::train_state::{Field, TrainState};
use crate::engine::ablation::{AblationMode, AblationSet};
use crate::engine::layer::Layer;
use crate::engine::metrics::Metrics;
use crate::engine::sweep::SweepRow;
use crate::engine::train::Phase;
use ratatui::crossterm::event::{KeyEvent, KeyEventKind, MouseButton, MouseEvent, MouseEventKind};
use ratatui::layout::Rect;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Something that happened.
#[derive(Debug)]
pub enum Msg {
    Key(KeyEvent),
    Mouse(MouseEvent),
    Resize(u16, u16),
    Worker(Reply),
    /// The worker's channel closed: the thread is gone.
    WorkerGone,
    /// An export finished: the folder, or what went wrong.
    Exported(Result<PathBuf, String>),
}

/// Something `update` wants done.
#[derive(Debug)]
pub enum Effect {
    Send(Command),
    Export(Box<ExportJob>),
    Quit,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Question {
    QuitWhileTraining,
    Retrain,
}

impl Question {
    pub fn text(self) -> &'static str {
        match self {
            Question::QuitWhileTraining => "Training is running. Quit anyway? Finished phases stay saved.",
            Question::Retrain => "Retrain all three models with these settings? The saved checkpoints are replaced.",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Popup {
    Error(String),
    Notice(String),
    Confirm(Question),
}

/// One evaluated ablation.
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation {
    pub set: AblationSet,
    pub mode: AblationMode,
    pub metrics: Metrics,
    /// The worker's time for it (shown, so the engine's speed is visible).
    pub seconds: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SweepResult {
    pub mode: AblationMode,
    pub rows: Vec<SweepRow>,
    pub complete: bool,
}

#[derive(Debug, Clone, Default)]
pub struct AblationState {
    pub set: AblationSet,
    pub mode: AblationMode,
    /// The result for the current set and mode, once computed.
    pub result: Option<Evaluation>,
    /// An evaluation of the current set is on its way.
    pub pending: bool,
    /// Every evaluation, oldest first.
    pub history: Vec<Evaluation>,
    /// Cursor in the history, counted from the newest.
    pub history_row: usize,
    pub sweeps: BTreeMap<Layer, SweepResult>,
    /// The running sweep: layer, units done, units in all.
    pub sweeping: Option<(Layer, usize, usize)>,
}

pub struct App {
    pub focus: Pane,
    /// The terminal's area.
    pub area: Rect,
    pub help: bool,
    /// The focused pane alone, even on a terminal wide enough for all of them.
    pub zoomed: bool,
    pub popup: Option<Popup>,
    pub run: Option<RunInfo>,
    /// What the worker is busy with, if anything.
    pub stage: Option<String>,
    pub models: Option<Box<ModelsData>>,
    /// Full-test-set metrics of clean, poisoned and rehab.
    pub base: Option<Vec<Metrics>>,
    pub activation_change: Option<Vec<Vec<f64>>>,
    /// Ablations and sweeps can run.
    pub ready: bool,
    pub layer: Layer,
    /// Cursor row in the Channels table, per layer.
    pub rows: [usize; 4],
    pub sort: Sort,
    pub digit: usize,
    pub digit_data: Option<Box<DigitData>>,
    pub ablation: AblationState,
    pub training: TrainState,
    pub trigger: TriggerState,
    pub circuit: CircuitState,
    /// The last short message (shown in the footer).
    pub notice: Option<String>,
    pub worker_alive: bool,
    /// Folder exports go into.
    pub export_root: PathBuf,
    /// Bumped whenever models or the digit change, so cached pictures are rebuilt.
    pub generation: u64,
}

impl App {
    pub fn new(area: Rect, export_root: PathBuf) -> App {
        App {
            focus: Pane::Layers,
            area,
            help: false,
            zoomed: false,
            popup: None,
            run: None,
            stage: Some("starting".into()),
            models: None,
            base: None,
            activation_change: None,
            ready: false,
            layer: Layer::Conv1,
            rows: [0; 4],
            sort: Sort::default(),
            digit: 0,
            digit_data: None,
            ablation: AblationState::default(),
            training: TrainState::default(),
            trigger: TriggerState::default(),
            circuit: CircuitState::default(),
            notice: None,
            worker_alive: true,
            export_root,
            generation: 0,
        }
    }

    /// The first effects: open the run.
    pub fn start(&mut self) -> Vec<Effect> {
        vec![Effect::Send(Command::Open)]
    }

    pub fn update(&mut self, msg: Msg) -> Vec<Effect> {
        match msg {
            Msg::Key(key) if key.kind != KeyEventKind::Release => {
                keys::action_for(&key, self.context()).map(|a| self.apply(a)).unwrap_or_default()
            }
            Msg::Key(_) => Vec::new(),
            Msg::Mouse(mouse) => self.on_mouse(mouse),
            Msg::Resize(width, height) => {
                self.area = Rect::new(0, 0, width, height);
                Vec::new()
            }
            Msg::Worker(reply) => self.on_reply(reply),
            Msg::WorkerGone => {
                if self.worker_alive {
                    self.worker_alive = false;
                    self.stage = None;
                    self.training.running = false;
                    self.popup = Some(Popup::Error(
                        "The worker thread has stopped; nothing more can be computed. Quit with q and start again."
                            .into(),
                    ));
                }
                Vec::new()
            }
            Msg::Exported(Ok(dir)) => {
                self.popup = Some(Popup::Notice(format!("Exported to {}", dir.display())));
                self.notice = Some(format!("exported to {}", dir.display()));
                Vec::new()
            }
            Msg::Exported(Err(e)) => {
                self.popup = Some(Popup::Error(format!("Export failed: {e}")));
                Vec::new()
            }
        }
    }

    /// Where everything is on the terminal now (`None`: too small).
    pub fn screen(&self) -> Option<Screen> {
        Screen::new(self.area, self.focus, self.zoomed)
    }

    /// Which bindings are live.
    pub fn context(&self) -> Context {
        match &self.popup {
            Some(Popup::Confirm(_)) => Context::Confirm,
            Some(_) => Context::Overlay,
            None if self.help => Context::Overlay,
            None => Context::Main,
        }
    }

    fn apply(&mut self, action: Action) -> Vec<Effect> {
        match action {
            Action::QuitNow => self.quit(),
            Action::Quit if self.training.running => {
                self.popup = Some(Popup::Confirm(Question::QuitWhileTraining));
                Vec::new()
            }
            Action::Quit => self.quit(),
            Action::Help => {
                self.help = !self.help;
                Vec::new()
            }
            Action::Zoom => {
                self.zoomed = !self.zoomed;
                Vec::new()
            }
            Action::Close => {
                if self.popup.take().is_none() {
                    self.help = false;
                }
                Vec::new()
            }
            Action::Yes => match self.popup.take() {
                Some(Popup::Confirm(Question::QuitWhileTraining)) => self.quit(),
                Some(Popup::Confirm(Question::Retrain)) => self.start_training(Phase::ALL.to_vec()),
                _ => Vec::new(),
            },
            Action::No => {
                self.popup = None;
                Vec::new()
            }
            Action::NextPane => self.focus_on(self.focus.next()),
            Action::PrevPane => self.focus_on(self.focus.previous()),
            Action::Focus(pane) => self.focus_on(pane),
            Action::TrainView => self.focus_on(Pane::Training),
            Action::Up => self.step(-1),
            Action::Down => self.step(1),
            Action::PageUp => self.step(-10),
            Action::PageDown => self.step(10),
            Action::Top => self.step(-10_000),
            Action::Bottom => self.step(10_000),
            Action::Left | Action::Right if self.focus == Pane::Training => {
                let field = self.training.field();
                field.adjust(&mut self.training.config, action == Action::Right);
                Vec::new()
            }
            Action::Left | Action::Right if self.focus == Pane::Circuit => {
                self.circuit.step_unit(if action == Action::Right { 1 } else { -1 });
                Vec::new()
            }
            Action::Left => self.change_layer(-1),
            Action::Right => self.change_layer(1),
            Action::Select => self.select(),
            Action::ToggleAblation => {
                let (layer, unit) = if self.focus == Pane::Circuit {
                    (self.circuit.selected_layer(), self.circuit.selected_unit())
                } else {
                    (self.layer, self.selected_unit())
                };
                self.ablation.set.toggle(layer, unit);
                self.evaluate_current()
            }
            Action::Sort => {
                let column = self.sort.column.next();
                self.sort = Sort { column, descending: column.descending_by_default() };
                Vec::new()
            }
            Action::ReverseSort => {
                self.sort.descending = !self.sort.descending;
                Vec::new()
            }
            Action::Sweep => self.sweep(),
            Action::CycleMode => {
                self.ablation.mode = self.ablation.mode.cycle();
                self.evaluate_current()
            }
            Action::ClearSet => {
                self.ablation.set = AblationSet::default();
                self.evaluate_current()
            }
            Action::NextDigit => self.show_digit(1),
            Action::PrevDigit => self.show_digit(-1),
            Action::Export => self.export(),
            Action::Retrain => self.retrain(),
            Action::Recover => self.recover(),
            Action::Unlearn => self.unlearn(),
            Action::Visualize => self.visualize(),
            Action::Patch => self.patch(),
            Action::Direction => {
                self.circuit.toggle_direction();
                Vec::new()
            }
            Action::Circuit => self.search_circuit(),
            Action::PruneCurves => self.prune_curves(),
            Action::Stop => {
                if self.cancellable() {
                    self.notice = Some("stopping…".into());
                    vec![Effect::Send(Command::Cancel)]
                } else {
                    self.notice = Some("nothing is running".into());
                    Vec::new()
                }
            }
        }
    }

    /// A long job the worker can be asked to stop is running.
    fn cancellable(&self) -> bool {
        self.training.running || self.ablation.sweeping.is_some() || self.trigger.busy() || self.circuit.busy()
    }

    fn quit(&mut self) -> Vec<Effect> {
        let mut effects = Vec::new();
        if self.cancellable() {
            effects.push(Effect::Send(Command::Cancel));
        }
        effects.push(Effect::Quit);
        effects
    }

    fn focus_on(&mut self, pane: Pane) -> Vec<Effect> {
        self.focus = pane;
        Vec::new()
    }

    /// Moves the focused pane's cursor by `delta` rows, clamped.
    fn step(&mut self, delta: i64) -> Vec<Effect> {
        let clamp = |value: usize, len: usize| (value as i64 + delta).clamp(0, len.max(1) as i64 - 1) as usize;
        match self.focus {
            Pane::Layers => self.layer = Layer::ALL[clamp(self.layer.position(), Layer::ALL.len())],
            Pane::Channels | Pane::Kernels | Pane::Activations => {
                let i = self.layer.position();
                self.rows[i] = clamp(self.rows[i], self.layer.units());
            }
            Pane::Ablation => {
                self.ablation.history_row = clamp(self.ablation.history_row, self.ablation.history.len());
            }
            Pane::Training => self.training.field = clamp(self.training.field, Field::ALL.len()),
            Pane::Trigger => self.trigger.step(delta),
            Pane::Circuit => self.circuit.step_layer(delta.signum()),
        }
        Vec::new()
    }

    fn change_layer(&mut self, delta: i64) -> Vec<Effect> {
        let i = (self.layer.position() as i64 + delta).clamp(0, Layer::ALL.len() as i64 - 1) as usize;
        self.layer = Layer::ALL[i];
        Vec::new()
    }

    fn select(&mut self) -> Vec<Effect> {
        match self.focus {
            Pane::Layers => self.focus_on(Pane::Channels),
            Pane::Channels => self.focus_on(Pane::Kernels),
            Pane::Ablation => {
                let Some(row) = self.ablation.history.iter().rev().nth(self.ablation.history_row).cloned() else {
                    return Vec::new();
                };
                self.ablation.set = row.set;
                self.ablation.mode = row.mode;
                self.evaluate_current()
            }
            Pane::Circuit => {
                let Some((set, mode)) =
                    self.circuit.report.as_ref().and_then(|r| Some((r.circuit.as_ref()?.set.clone(), r.mode)))
                else {
                    self.notice = Some("no circuit yet (C searches for one)".into());
                    return Vec::new();
                };
                self.notice = Some(format!("ablating the circuit {set}"));
                self.ablation.set = set;
                self.ablation.mode = mode;
                self.evaluate_current()
            }
            _ => Vec::new(),
        }
    }

    /// The facts the Channels table is built from, for `layer`.
    pub fn layer_facts(&self, layer: Layer) -> LayerFacts<'_> {
        LayerFacts {
            layer,
            weight_change: self.models.as_ref().map(|m| m.diffs[layer.position()].units.iter().map(|u| u.l2).collect()),
            activation_change: self.activation_change.as_ref().map(|a| a[layer.position()].as_slice()),
            sweep: self.ablation.sweeps.get(&layer).map(|s| s.rows.as_slice()),
            set: &self.ablation.set,
        }
    }

    /// The selected layer's rows in table order.
    pub fn channel_rows(&self) -> Vec<ChannelRow> {
        columns::rows(&self.layer_facts(self.layer), self.sort)
    }

    pub fn cursor(&self) -> usize {
        self.rows[self.layer.position()].min(self.layer.units() - 1)
    }

    /// The unit under the Channels cursor.
    pub fn selected_unit(&self) -> usize {
        self.channel_rows().get(self.cursor()).map(|r| r.unit).unwrap_or(0)
    }

    /// Asks for the current set's metrics (nothing to ask for an empty set).
    fn evaluate_current(&mut self) -> Vec<Effect> {
        let (set, mode) = (self.ablation.set.clone(), self.ablation.mode);
        self.ablation.result = self.ablation.history.iter().rev().find(|e| e.set == set && e.mode == mode).cloned();
        self.ablation.pending = false;
        if set.is_empty() || self.ablation.result.is_some() || !self.ready {
            return Vec::new();
        }
        self.ablation.pending = true;
        vec![Effect::Send(Command::Evaluate { set, mode })]
    }

    fn sweep(&mut self) -> Vec<Effect> {
        if let Some((layer, _, _)) = self.ablation.sweeping {
            self.notice = Some(format!("already sweeping {layer} (x stops it)"));
            return Vec::new();
        }
        if !self.ready {
            self.notice = Some("the models are not ready yet".into());
            return Vec::new();
        }
        self.ablation.sweeping = Some((self.layer, 0, self.layer.units()));
        vec![Effect::Send(Command::Sweep { layer: self.layer, mode: self.ablation.mode })]
    }

    /// Refuses (with a notice) while the models are not ready or another long job
    /// runs: the worker serves one job at a time, and x stops the running one.
    fn long_job_allowed(&mut self) -> bool {
        if !self.ready {
            self.notice = Some("the models are not ready yet".into());
            return false;
        }
        if self.cancellable() {
            self.notice = Some("another job is running (x stops it)".into());
            return false;
        }
        true
    }

    fn recover(&mut self) -> Vec<Effect> {
        if !self.long_job_allowed() {
            return Vec::new();
        }
        self.trigger.recovering = true;
        self.trigger.progress = None;
        self.focus = Pane::Trigger;
        vec![Effect::Send(Command::Recover { config: self.trigger.config.clone() })]
    }

    fn unlearn(&mut self) -> Vec<Effect> {
        if !self.long_job_allowed() {
            return Vec::new();
        }
        let Some(report) = &self.trigger.report else {
            self.notice = Some("recover the trigger first (R)".into());
            return Vec::new();
        };
        if report.flagged.is_empty() {
            self.notice = Some("no label is flagged: nothing to unlearn".into());
            return Vec::new();
        }
        self.trigger.unlearning = Some((0, 0));
        self.focus = Pane::Trigger;
        vec![Effect::Send(Command::Unlearn)]
    }

    fn visualize(&mut self) -> Vec<Effect> {
        if !self.long_job_allowed() {
            return Vec::new();
        }
        let (layer, unit) = (self.layer, self.selected_unit());
        self.trigger.visualizing = Some((layer, unit));
        vec![Effect::Send(Command::Visualize { layer, unit })]
    }

    fn patch(&mut self) -> Vec<Effect> {
        if !self.long_job_allowed() {
            return Vec::new();
        }
        self.circuit.patching = true;
        self.focus = Pane::Circuit;
        vec![Effect::Send(Command::Patch)]
    }

    fn search_circuit(&mut self) -> Vec<Effect> {
        if !self.long_job_allowed() {
            return Vec::new();
        }
        self.circuit.searching = true;
        self.circuit.progress = None;
        self.focus = Pane::Circuit;
        vec![Effect::Send(Command::Circuit { mode: self.ablation.mode })]
    }

    /// The curves of the heatmap's layer in the Circuit pane, else of the selected layer.
    fn prune_curves(&mut self) -> Vec<Effect> {
        if !self.long_job_allowed() {
            return Vec::new();
        }
        let layer = if self.focus == Pane::Circuit { self.circuit.selected_layer() } else { self.layer };
        self.circuit.pruning = Some(layer);
        self.focus = Pane::Circuit;
        vec![Effect::Send(Command::Prune { layer, mode: self.ablation.mode })]
    }

    fn show_digit(&mut self, delta: i64) -> Vec<Effect> {
        let count = self.run.as_ref().map(|r| r.test_images).unwrap_or(0);
        if count == 0 || self.models.is_none() {
            self.notice = Some("no models loaded yet".into());
            return Vec::new();
        }
        self.digit = (self.digit as i64 + delta).rem_euclid(count as i64) as usize;
        vec![Effect::Send(Command::Digit { index: self.digit })]
    }

    fn export(&mut self) -> Vec<Effect> {
        if self.models.is_none() && self.training.losses.is_empty() {
            self.notice = Some("nothing to export yet".into());
            return Vec::new();
        }
        let stamp =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let run = self.run.as_ref().and_then(|r| PathBuf::from(&r.root).file_name().map(|n| n.to_owned()));
        let name = format!("{}-{stamp}", run.map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "run".into()));
        vec![Effect::Export(Box::new(ExportJob::of(self, self.export_root.join(name))))]
    }

    fn retrain(&mut self) -> Vec<Effect> {
        if self.training.running {
            self.notice = Some("training is already running (x stops it)".into());
            return Vec::new();
        }
        if self.run.is_none() {
            self.notice = Some("the run is not open".into());
            return Vec::new();
        }
        if self.run.as_ref().is_some_and(|r| r.missing.len() < Phase::ALL.len()) {
            self.popup = Some(Popup::Confirm(Question::Retrain));
            return Vec::new();
        }
        self.start_training(Phase::ALL.to_vec())
    }

    fn start_training(&mut self, phases: Vec<Phase>) -> Vec<Effect> {
        self.training.restart();
        self.focus = Pane::Training;
        vec![Effect::Send(Command::Train { config: self.training.config.clone(), phases })]
    }

    fn on_reply(&mut self, reply: Reply) -> Vec<Effect> {
        match reply {
            Reply::Opened(info) => {
                self.stage = None;
                self.training.config = info.config.clone();
                let missing = info.missing.clone();
                self.run = Some(*info);
                if missing.is_empty() {
                    vec![Effect::Send(Command::Load { digit: self.digit })]
                } else {
                    self.notice = Some(format!("no saved {} model: training", missing[0]));
                    self.start_training(missing)
                }
            }
            Reply::Stage(stage) => {
                self.stage = Some(stage);
                Vec::new()
            }
            Reply::Models(models) => {
                self.models = Some(models);
                // Recoveries and visualisations of the previous models no longer apply.
                self.trigger = TriggerState { config: self.trigger.config.clone(), ..TriggerState::default() };
                self.circuit = CircuitState { direction: self.circuit.direction, ..CircuitState::default() };
                self.generation += 1;
                self.ready = false;
                Vec::new()
            }
            Reply::BaseMetrics(metrics) => {
                self.base = Some(metrics);
                Vec::new()
            }
            Reply::ActivationChange(change) => {
                self.activation_change = Some(change);
                Vec::new()
            }
            Reply::Ready => {
                self.ready = true;
                self.stage = None;
                // Results from the previous models no longer apply.
                self.ablation.history.clear();
                self.ablation.sweeps.clear();
                self.evaluate_current()
            }
            Reply::Training(update) => {
                self.training.apply(update);
                Vec::new()
            }
            Reply::History(update) => {
                self.training.replace(update);
                Vec::new()
            }
            Reply::TrainFinished { cancelled, missing, seconds } => {
                self.training.running = false;
                self.stage = None;
                let outcome = if cancelled { "stopped" } else { "finished" };
                self.training.outcome = Some(format!("{outcome} after {seconds:.0} s"));
                self.notice = Some(format!("training {outcome}"));
                if let Some(run) = self.run.as_mut() {
                    run.missing = missing.clone();
                }
                if missing.is_empty() && !cancelled {
                    vec![Effect::Send(Command::Load { digit: self.digit })]
                } else {
                    Vec::new()
                }
            }
            Reply::Evaluated { set, mode, metrics, seconds } => {
                let evaluation = Evaluation { set, mode, metrics, seconds };
                if evaluation.set == self.ablation.set && evaluation.mode == self.ablation.mode {
                    self.ablation.result = Some(evaluation.clone());
                    self.ablation.pending = false;
                }
                self.ablation.history.push(evaluation);
                Vec::new()
            }
            Reply::SweepProgress { layer, done, total } => {
                self.ablation.sweeping = Some((layer, done, total));
                Vec::new()
            }
            Reply::Swept { layer, mode, rows, complete } => {
                self.ablation.sweeping = None;
                if !complete {
                    self.notice =
                        Some(format!("sweep of {layer} stopped after {} of {} units", rows.len(), layer.units()));
                }
                self.ablation.sweeps.insert(layer, SweepResult { mode, rows, complete });
                Vec::new()
            }
            Reply::Digit(data) => {
                self.digit = data.index;
                self.digit_data = Some(data);
                self.generation += 1;
                Vec::new()
            }
            Reply::RecoveryProgress(progress) => {
                self.trigger.progress = Some(progress);
                Vec::new()
            }
            Reply::Recovered(report) => {
                self.trigger.recovering = false;
                self.trigger.progress = None;
                // Start on the most anomalous label.
                self.trigger.row = report
                    .most_anomalous()
                    .and_then(|t| report.labels.iter().position(|l| l.label == t.label))
                    .unwrap_or(0);
                self.trigger.report = Some(report);
                Vec::new()
            }
            Reply::RecoveryStopped => {
                self.trigger.recovering = false;
                self.trigger.progress = None;
                self.notice = Some("recovery stopped; nothing saved".into());
                Vec::new()
            }
            Reply::UnlearnProgress { step, total } => {
                self.trigger.unlearning = Some((step, total));
                Vec::new()
            }
            Reply::Unlearned { label, metrics } => {
                if self.trigger.unlearning.take().is_some() {
                    self.notice = Some("unlearned model saved".into());
                }
                self.trigger.unlearned = Some((label, metrics));
                Vec::new()
            }
            Reply::UnlearnStopped => {
                self.trigger.unlearning = None;
                self.notice = Some("unlearning stopped; nothing saved".into());
                Vec::new()
            }
            Reply::Visualized(visuals) => {
                self.trigger.visualizing = None;
                self.trigger.visuals = Some(visuals);
                Vec::new()
            }
            Reply::Patched(maps) => {
                self.circuit.patching = false;
                if maps.maps.len() < 2
                    || maps.maps.iter().any(|m| m.rows.len() < Layer::ALL.iter().map(|l| l.units()).sum())
                {
                    self.notice = Some("patching stopped early: the map shows what was done".into());
                }
                self.circuit.patch = Some(maps);
                Vec::new()
            }
            Reply::CircuitProgress(progress) => {
                self.circuit.progress = Some(progress);
                Vec::new()
            }
            Reply::CircuitFound(report) => {
                self.circuit.searching = false;
                self.stage = None;
                if report.stopped {
                    self.notice = Some("circuit search stopped: showing what it had tried".into());
                }
                self.circuit.report = Some(report);
                Vec::new()
            }
            Reply::PruneCurves { layer, curves } => {
                self.circuit.pruning = None;
                if curves.len() < crate::engine::prune::Ranking::ALL.len() {
                    self.notice = Some(format!("pruning {layer} stopped after {} rankings", curves.len()));
                }
                self.circuit.curves = Some((layer, curves));
                Vec::new()
            }
            Reply::Failed { job, message } => {
                self.stage = None;
                match job {
                    Job::Evaluate => self.ablation.pending = false,
                    Job::Sweep => self.ablation.sweeping = None,
                    Job::Train => self.training.running = false,
                    Job::Recover => self.trigger.recovering = false,
                    Job::Unlearn => self.trigger.unlearning = None,
                    Job::Visualize => self.trigger.visualizing = None,
                    Job::Patch => self.circuit.patching = false,
                    Job::Circuit => self.circuit.searching = false,
                    Job::Prune => self.circuit.pruning = None,
                    _ => {}
                }
                self.popup = Some(Popup::Error(format!("{} failed: {message}", capitalised(job.describe()))));
                Vec::new()
            }
        }
    }

    fn on_mouse(&mut self, mouse: MouseEvent) -> Vec<Effect> {
        if self.context() != Context::Main {
            return Vec::new();
        }
        let Some(screen) = self.screen() else { return Vec::new() };
        let (x, y) = (mouse.column, mouse.row);
        if let (MouseEventKind::Down(MouseButton::Left), Some(pane)) = (mouse.kind, screen.tab_at(x, y)) {
            return self.focus_on(pane);
        }
        let Some((pane, area)) = screen.pane_at(x, y) else { return Vec::new() };
        match mouse.kind {
            MouseEventKind::Down(MouseButton::Left) => {
                self.focus = pane;
                self.click_row(pane, area, y);
                Vec::new()
            }
            MouseEventKind::ScrollUp => {
                self.focus = pane;
                self.step(-1)
            }
            MouseEventKind::ScrollDown => {
                self.focus = pane;
                self.step(1)
            }
            _ => Vec::new(),
        }
    }

    /// A click on a list row selects it.
    fn click_row(&mut self, pane: Pane, area: Rect, y: u16) {
        match pane {
            Pane::Layers => {
                let first = panes::layers::first_row(area);
                if let Some(layer) = y.checked_sub(first).and_then(|i| Layer::ALL.get(i as usize)) {
                    self.layer = *layer;
                }
            }
            Pane::Channels => {
                let (first, visible) = panes::channels::row_span(area);
                let offset = scroll_offset(self.cursor(), self.layer.units(), visible as usize);
                if let Some(i) = y.checked_sub(first).filter(|&i| i < visible) {
                    let row = offset + i as usize;
                    if row < self.layer.units() {
                        self.rows[self.layer.position()] = row;
                    }
                }
            }
            _ => {}
        }
    }
}

fn capitalised(text: &str) -> String {
    let mut chars = text.chars();
    chars.next().map(|c| c.to_uppercase().collect::<String>() + chars.as_str()).unwrap_or_default()
}
