//! The explorer's whole state and its one entry point, `update(msg) -> effects`.
//! Nothing here blocks or touches tensors: effects are carried out by the event
//! loop (commands to the worker, exports on a helper thread, quitting). The app
//! keeps what is its own (focus, overlays, the job ledger, the study) and hands
//! pane keys and pane replies to the panes.

use super::effect::{Effect, Popup, Question};
use super::export;
use super::graph::{self, data::GraphSweep, state::GraphState};
use super::jobs::Jobs;
use super::keymap;
use super::keys::{Action, Context};
use super::layout::Screen;
use super::panes::{Cx, Pane, Panes, training, trigger};
use super::protocol::GraphRestored;
use super::protocol::{Command, Job, Reply};
use super::resume;
use super::session::Restored;
use super::shelf::Shelf;
use super::study::{Evaluation, Study};
use crate::engine::ablation::AblationSet;
use crate::engine::run::RunDir;
use crate::engine::train::Phase;
use crate::engine::uncertainty::keeping_detail;
use ratatui::crossterm::event::{KeyEvent, KeyEventKind, MouseButton, MouseEvent, MouseEventKind};
use ratatui::layout::Rect;
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
    /// The run's saved session, as read (`Effect::Restore`).
    Restored(Box<Restored>),
}

/// The status line when `--fresh` starts a clean session.
const FRESH: &str = "a fresh session (--fresh): the saved one is not restored and will be replaced";

pub struct App {
    pub focus: Pane,
    /// The terminal's area.
    pub area: Rect,
    pub help: bool,
    /// The help shows its second page: the words on screen and their meanings.
    pub help_words: bool,
    /// The focused pane alone, even on a terminal wide enough for all of them.
    pub zoomed: bool,
    pub popup: Option<Popup>,
    /// The worker jobs running now.
    pub jobs: Jobs,
    pub study: Study,
    pub panes: Panes,
    /// The last short message (shown in the footer).
    pub notice: Option<String>,
    pub worker_alive: bool,
    /// Folder exports go into.
    pub export_root: PathBuf,
    /// Results of the models not studied or compared now.
    pub shelf: Shelf,
    /// `--fresh`: the saved session is not restored (and is replaced).
    pub fresh: bool,
}

impl App {
    pub fn new(area: Rect, export_root: PathBuf) -> App {
        App {
            focus: Pane::Layers,
            area,
            help: false,
            help_words: false,
            zoomed: false,
            popup: None,
            jobs: Jobs::default(),
            study: Study::default(),
            panes: Panes::default(),
            notice: None,
            worker_alive: true,
            export_root,
            shelf: Shelf::default(),
            fresh: false,
        }
    }

    /// The first effects: open the run.
    pub fn start(&mut self) -> Vec<Effect> {
        self.settle(vec![Effect::Send(Command::Open)])
    }

    pub fn update(&mut self, msg: Msg) -> Vec<Effect> {
        let effects = match msg {
            Msg::Key(key) if key.kind != KeyEventKind::Release && self.study.find.is_some() => {
                graph::keys::find_key(&mut self.study, key)
            }
            Msg::Key(key) if key.kind != KeyEventKind::Release => {
                // A notice (an export's folder) does not hold the keys: one it has
                // no use for closes it and acts as usual.
                if matches!(self.popup, Some(Popup::Notice(_)))
                    && keymap::action_for(&key, Context::Overlay, self.focus).is_none()
                {
                    self.popup = None;
                }
                match keymap::action_for(&key, self.context(), self.focus) {
                    Some((owner, action)) => self.apply(owner, action),
                    None => Vec::new(),
                }
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
                    self.jobs.clear();
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
            Msg::Restored(restored) => self.restored(*restored),
        };
        let mut effects = self.settle(effects);
        let follow = match self.study.graph {
            Some(_) => graph::keys::follow(&self.study, &self.jobs),
            None => self.panes.follow(&self.study, &self.jobs),
        };
        effects.extend(self.settle(follow));
        effects
    }

    /// Applies the effects about the app itself and records every command sent in
    /// the job ledger; returns what the event loop carries out.
    fn settle(&mut self, effects: Vec<Effect>) -> Vec<Effect> {
        let mut out = Vec::new();
        for effect in effects {
            match effect {
                Effect::Notice(text) => self.notice = Some(text),
                Effect::Popup(popup) => self.popup = Some(popup),
                Effect::Focus(number) => self.focus = Pane::of_number(number).unwrap_or(self.focus),
                // Made absolute where a pane's effects come back (`owned_by`).
                Effect::FocusOwner | Effect::FocusNext => {}
                Effect::Send(command) => {
                    self.jobs.sent(&command);
                    out.push(Effect::Send(command));
                }
                other => out.push(other),
            }
        }
        out
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

    /// `pane`'s handler for `action`, with the study and the ledger.
    fn pane_handle(&mut self, pane: Pane, action: Action) -> Option<Vec<Effect>> {
        let cx = Cx { study: &mut self.study, jobs: &self.jobs, focused: pane == self.focus };
        // A graph run's Circuit pane has its own keys (its units are nodes'), kept
        // out of `panes` so the panes never depend on the graph's key table.
        let effects = if pane == Pane::Circuit && cx.study.graph.is_some() {
            graph::keys::circuit(&mut self.panes.graph_circuit, action, cx)
        } else {
            self.panes.handle(pane, action, cx)
        };
        effects.map(|effects| owned_by(pane, effects))
    }

    /// A key's action: a pane's own goes to that pane; a movement or Space goes to
    /// the focused pane first; the rest is the app's.
    fn apply(&mut self, owner: Option<Pane>, action: Action) -> Vec<Effect> {
        if self.study.graph.is_some() && !is_the_apps(action) {
            // The Trigger and Circuit panes serve a graph run with their own keys.
            let pane = owner.unwrap_or(self.focus);
            let theirs =
                matches!(pane, Pane::Trigger | Pane::Circuit) && (owner.is_some() || for_the_focused_pane(action));
            if theirs && let Some(effects) = self.pane_handle(pane, action) {
                return effects;
            }
            let graph = graph::keys::apply(&mut self.study, &self.jobs, self.focus, owner, action);
            return owned_by(owner.unwrap_or(self.focus), graph.unwrap_or_default());
        }
        if let Some(pane) = owner {
            return self.pane_handle(pane, action).unwrap_or_default();
        }
        let focus = self.focus;
        if for_the_focused_pane(action)
            && let Some(effects) = self.pane_handle(focus, action)
        {
            return effects;
        }
        match action {
            Action::QuitNow => self.quit(),
            Action::Quit if self.jobs.is_running(Job::Train) => {
                vec![Effect::Popup(Popup::Confirm(Question::QuitWhileTraining))]
            }
            Action::Quit => self.quit(),
            Action::Help => {
                // Keys, then the words on screen, then closed.
                (self.help, self.help_words) = (!self.help || !self.help_words, self.help && !self.help_words);
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
                Some(Popup::Confirm(Question::Retrain)) => {
                    owned_by(Pane::Training, training::start(&mut self.panes.training, Phase::ALL.to_vec()))
                }
                Some(Popup::Confirm(Question::Recover)) => {
                    let cx = Cx { study: &mut self.study, jobs: &self.jobs, focused: focus == Pane::Trigger };
                    owned_by(Pane::Trigger, trigger::recover(&mut self.panes.trigger, cx))
                }
                Some(Popup::Confirm(Question::Unlearn)) => {
                    let cx = Cx { study: &mut self.study, jobs: &self.jobs, focused: focus == Pane::Trigger };
                    owned_by(Pane::Trigger, trigger::unlearn(&self.panes.trigger, cx))
                }
                _ => Vec::new(),
            },
            Action::No => {
                self.popup = None;
                Vec::new()
            }
            Action::NextPane => vec![Effect::Focus(focus.next().number())],
            Action::PrevPane => vec![Effect::Focus(focus.previous().number())],
            Action::Focus(number) => vec![Effect::Focus(number)],
            Action::Left => {
                self.study.change_layer(-1);
                Vec::new()
            }
            Action::Right => {
                self.study.change_layer(1);
                Vec::new()
            }
            Action::ToggleAblation => {
                let (layer, unit) = (self.study.layer, self.study.selected_unit());
                self.study.toggle(layer, unit)
            }
            Action::CycleMode => {
                self.study.ablation.mode = self.study.ablation.mode.cycle();
                self.study.evaluate_current()
            }
            Action::ClearSet => {
                self.study.ablation.set = AblationSet::default();
                self.study.evaluate_current()
            }
            Action::NextDigit => self.show_digit(1),
            Action::PrevDigit => self.show_digit(-1),
            Action::NextSubject => self.next_subject(),
            Action::NextReference => self.next_reference(),
            Action::Export => self.export(),
            Action::Stop => match self.jobs.stoppable() {
                Some(running) => {
                    vec![Effect::Notice(format!("stopping {}…", running.label)), Effect::Send(Command::Cancel)]
                }
                None => vec![Effect::Notice("nothing is running".into())],
            },
            // Movements no pane took (a pane without a cursor).
            _ => Vec::new(),
        }
    }

    fn quit(&mut self) -> Vec<Effect> {
        let mut effects = Vec::new();
        if self.jobs.stoppable().is_some() {
            effects.push(Effect::Send(Command::Cancel));
        }
        effects.push(Effect::Quit);
        effects
    }

    /// The next saved model becomes the one under study: its ablation cache is
    /// built, and results on the previous one are set aside.
    fn next_subject(&mut self) -> Vec<Effect> {
        if let Some(why) = self.jobs.refuse_long_job(self.study.ready) {
            return vec![Effect::Notice(why)];
        }
        // Never the compared model: `M` changes only the model under study.
        let Some(model) = self.study.next_model(self.study.subject, Some(self.study.reference)) else {
            return vec![Effect::Notice("no other model to study".into())];
        };
        if model == self.study.subject {
            return vec![Effect::Notice(format!("the {model} model is the only one not compared with"))];
        }
        // The subject changes when its cache is ready (`Reply::Ready`).
        self.study.ready = false;
        self.study.ablation.result = None;
        vec![Effect::Notice(format!("studying the {model} model")), Effect::Send(Command::Study { model })]
    }

    fn next_reference(&mut self) -> Vec<Effect> {
        let Some(model) = self.study.next_model(self.study.reference, Some(self.study.subject)) else {
            return vec![Effect::Notice("no other model to compare with".into())];
        };
        self.study.reference = model;
        self.study.generation += 1;
        self.shelf.switch_pair(&self.study, &mut self.panes);
        vec![Effect::Notice(format!("comparing with the {model} model"))]
    }

    fn show_digit(&mut self, delta: i64) -> Vec<Effect> {
        let count = self.study.run.as_ref().map(|r| r.test_images).unwrap_or(0);
        if count == 0 || self.study.models.is_none() {
            return vec![Effect::Notice("no models loaded yet".into())];
        }
        self.study.digit = (self.study.digit as i64 + delta).rem_euclid(count as i64) as usize;
        vec![Effect::Send(Command::Digit { index: self.study.digit })]
    }

    fn export(&mut self) -> Vec<Effect> {
        let loaded = if self.study.graph.is_some() { self.study.ready } else { self.study.models.is_some() };
        if !loaded && self.panes.training.losses.is_empty() {
            return vec![Effect::Notice("nothing to export yet".into())];
        }
        let dir = self.export_root.join(export::folder_name(std::time::SystemTime::now()));
        let job = match self.study.graph.as_deref() {
            Some(g) => graph::export::job(g, &self.panes, dir),
            None => export::job(&self.study, &self.panes, dir),
        };
        vec![Effect::Export(Box::new(job))]
    }

    /// The saved session is on screen: load the models it studies.
    fn restored(&mut self, restored: Restored) -> Vec<Effect> {
        let notice = (restored.view.is_some() || restored.unreadable.is_some()).then(|| restored.notice());
        if let Some(pane) = resume::apply(restored, &mut self.study, &mut self.panes, &mut self.shelf) {
            self.focus = pane;
        }
        notice.map(Effect::Notice).into_iter().chain([self.study.load()]).collect()
    }

    /// A graph run's saved session (unless `--fresh`) is on screen; from now on
    /// the session is kept, keyed by the checkpoints the worker read.
    fn graph_restored(&mut self, restored: GraphRestored) -> Vec<Effect> {
        let Some(g) = self.study.graph.as_deref_mut() else { return Vec::new() };
        self.study.checkpoints = self.study.run.as_ref().map(|r| r.checkpoints.clone()).unwrap_or_default();
        if self.fresh {
            return vec![Effect::Notice(FRESH.into())];
        }
        let notice =
            (restored.view.is_some() || restored.unreadable.is_some()).then(|| graph::saved::notice(&restored));
        if let Some((subject, digit, pane)) = graph::resume::apply(restored, g, &mut self.panes.graph_circuit) {
            (self.study.subject, self.study.digit) = (subject, digit);
            self.focus = pane.unwrap_or(self.focus);
        }
        notice.map(Effect::Notice).into_iter().collect()
    }

    /// The checkpoints as loading read them: results computed on a model whose
    /// file changed since (a retrained model) are dropped.
    fn checkpoints(&mut self, checkpoints: crate::tui::protocol::Checkpoints) -> Vec<Effect> {
        let before = std::mem::replace(&mut self.study.checkpoints, checkpoints);
        if before.is_empty() || before == self.study.checkpoints {
            return Vec::new();
        }
        self.panes.models_changed();
        self.shelf = Shelf::default();
        let ablation = &mut self.study.ablation;
        (ablation.history, ablation.result, ablation.history_row) = (Vec::new(), None, 0);
        ablation.sweeps.clear();
        vec![Effect::Notice("the models changed: results computed on the previous ones were dropped".into())]
    }

    /// The session to keep in the run: its folder and the JSON, once the models
    /// it is keyed by are known; `None` on a run that cannot be written.
    pub fn session(&self) -> Option<(RunDir, String)> {
        let (study, run) = (&self.study, self.study.run.as_ref()?);
        if run.read_only || study.checkpoints.is_empty() {
            return None;
        }
        let text = keeping_detail(|| match study.graph.as_deref() {
            Some(g) => {
                let (circuit, selected) = (&self.panes.graph_circuit, (study.subject, study.digit));
                let (checkpoints, images) = (&study.checkpoints, run.test_images);
                serde_json::to_string(&graph::resume::snapshot(self.focus, selected, checkpoints, images, g, circuit))
            }
            None => serde_json::to_string(&resume::snapshot(self.focus, study, &self.panes, &self.shelf)),
        });
        Some((RunDir { root: PathBuf::from(&run.root) }, text.ok()?))
    }

    fn on_reply(&mut self, reply: Reply) -> Vec<Effect> {
        if let Some(job) = reply.finishes() {
            self.jobs.finish(job);
        }
        let study = &mut self.study;
        match reply {
            Reply::Opened(info) => {
                self.panes.training.config = info.config.clone();
                let missing = info.missing.clone();
                let (root, checkpoints, test_images) =
                    (PathBuf::from(&info.root), info.checkpoints.clone(), info.test_images);
                study.run = Some(*info);
                if missing.is_empty() && self.fresh {
                    vec![Effect::Notice(FRESH.into()), study.load()]
                } else if missing.is_empty() {
                    vec![Effect::Restore { root, checkpoints, test_images }]
                } else {
                    let notice = Effect::Notice(format!("no saved {} model: training", missing[0]));
                    let start = training::start(&mut self.panes.training, missing);
                    std::iter::once(notice).chain(owned_by(Pane::Training, start)).collect()
                }
            }
            Reply::GraphOpened(run, info) => {
                study.run = Some(*run);
                study.graph = Some(Box::new(GraphState::new(*info)));
                Vec::new()
            }
            Reply::GraphRestored(restored) => self.graph_restored(*restored),
            Reply::GraphEvaluated(evaluation) => {
                let Some(g) = study.graph.as_deref_mut() else { return Vec::new() };
                g.evaluated(*evaluation);
                // An older set's full answer: the last one asked for is still on its way.
                if let Some((set, mode)) = g.awaited.clone() {
                    self.jobs.sent(&Command::GraphAblate { set, mode });
                }
                Vec::new()
            }
            Reply::GraphSwept { site, mode, rows } => {
                let Some(g) = study.graph.as_deref_mut() else { return Vec::new() };
                let units = g.info.sites.iter().find(|s| s.name == site).map_or(0, |s| s.units());
                let stopped = (rows.len() < units)
                    .then(|| Effect::Notice(format!("sweep of {site} stopped after {} of {units} units", rows.len())));
                g.sweeps.insert(site, GraphSweep { mode, rows });
                stopped.into_iter().collect()
            }
            Reply::GraphActivations(activations) => {
                if let Some(g) = study.graph.as_deref_mut() {
                    g.activations = Some(activations);
                    study.generation += 1;
                }
                Vec::new()
            }
            Reply::GraphWeights(site, weights) => {
                if let Some(g) = study.graph.as_deref_mut() {
                    g.weights = Some((site, weights));
                    study.generation += 1;
                }
                Vec::new()
            }
            Reply::Progress(progress) => {
                self.jobs.progress(progress);
                Vec::new()
            }
            Reply::Checkpoints(checkpoints) => self.checkpoints(checkpoints),
            Reply::Models(models) => {
                study.models = Some(models);
                study.generation += 1;
                study.ready = false;
                Vec::new()
            }
            Reply::BaseMetrics(metrics) => {
                study.base = Some(metrics);
                Vec::new()
            }
            Reply::ActivationChange(change) => {
                study.activation_change = Some(change);
                Vec::new()
            }
            Reply::Ready { model, .. } => {
                study.ready = true;
                study.generation += 1;
                match study.graph.as_deref_mut() {
                    Some(g) => {
                        // Sweeps are the studied model's (a restored session's included).
                        if std::mem::replace(&mut study.subject, model) != model {
                            g.sweeps.clear();
                        }
                        g.evaluate_current(model, true)
                    }
                    None => {
                        // The previous model's results are set aside, this one's come back.
                        let from = std::mem::replace(&mut study.subject, model);
                        if from != model {
                            self.shelf.switch_subject(from, model, study, &mut self.panes);
                        }
                        study.evaluate_current()
                    }
                }
            }
            Reply::Evaluated { set, mode, metrics, seconds } => {
                let evaluation = Evaluation { set, mode, model: study.subject, metrics, seconds };
                let current = evaluation.set == study.ablation.set && evaluation.mode == study.ablation.mode;
                if current {
                    study.ablation.result = Some(evaluation.clone());
                }
                let answered =
                    study.ablation.awaited.as_ref().is_some_and(|(s, m)| *s == evaluation.set && *m == evaluation.mode);
                study.ablation.history.push(evaluation);
                match study.ablation.awaited.clone() {
                    Some(_) if answered => study.ablation.awaited = None,
                    // An older set's result: the last one asked for is still on its way.
                    Some((set, mode)) => self.jobs.sent(&Command::Evaluate { set, mode }),
                    None => {}
                }
                Vec::new()
            }
            Reply::Digit(data) => {
                study.digit = data.index;
                study.digit_data = Some(data);
                study.generation += 1;
                Vec::new()
            }
            Reply::Failed { job, message } => {
                if job == Job::Evaluate {
                    study.ablation.awaited = None;
                    if let Some(g) = study.graph.as_deref_mut() {
                        g.awaited = None;
                    }
                }
                // The worker keeps the previous model under study when switching fails.
                study.ready |= job == Job::Study && study.models.is_some();
                vec![Effect::Popup(Popup::Error(format!("{} failed: {message}", capitalised(job.describe()))))]
            }
            other => self.panes.on_reply(other, &mut self.study),
        }
    }

    fn on_mouse(&mut self, mouse: MouseEvent) -> Vec<Effect> {
        if self.context() != Context::Main {
            return Vec::new();
        }
        let Some(screen) = self.screen() else { return Vec::new() };
        let (x, y) = (mouse.column, mouse.row);
        if let (MouseEventKind::Down(MouseButton::Left), Some(pane)) = (mouse.kind, screen.tab_at(x, y)) {
            return vec![Effect::Focus(pane.number())];
        }
        let Some((pane, area)) = screen.pane_at(x, y) else { return Vec::new() };
        self.focus = pane;
        match mouse.kind {
            MouseEventKind::Down(MouseButton::Left) => {
                self.panes.click(pane, area, y, &mut self.study);
                Vec::new()
            }
            MouseEventKind::ScrollUp => self.apply(None, Action::Up),
            MouseEventKind::ScrollDown => self.apply(None, Action::Down),
            _ => Vec::new(),
        }
    }
}

/// The app's own actions, the same on every run (the rest act on a graph's
/// state on a graph run).
fn is_the_apps(action: Action) -> bool {
    matches!(
        action,
        Action::Quit
            | Action::QuitNow
            | Action::Help
            | Action::Zoom
            | Action::Close
            | Action::Yes
            | Action::No
            | Action::NextPane
            | Action::PrevPane
            | Action::Focus(_)
            | Action::Stop
            | Action::NextSubject
            | Action::NextReference
            | Action::Export
    )
}

/// Movements and Space: the focused pane's first.
fn for_the_focused_pane(action: Action) -> bool {
    matches!(
        action,
        Action::Up
            | Action::Down
            | Action::Left
            | Action::Right
            | Action::PageUp
            | Action::PageDown
            | Action::Top
            | Action::Bottom
            | Action::ToggleAblation
    )
}

/// Effects of `pane`'s code with its relative focus requests made absolute.
fn owned_by(pane: Pane, effects: Vec<Effect>) -> Vec<Effect> {
    let number = |e| match e {
        Effect::FocusOwner => Effect::Focus(pane.number()),
        Effect::FocusNext => Effect::Focus(pane.next().number()),
        other => other,
    };
    effects.into_iter().map(number).collect()
}

fn capitalised(text: &str) -> String {
    let mut chars = text.chars();
    chars.next().map(|c| c.to_uppercase().collect::<String>() + chars.as_str()).unwrap_or_default()
}
