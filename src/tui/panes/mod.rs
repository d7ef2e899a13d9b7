//! The panes, one module each: its state, its keys, its draw function (over the
//! study and its own state, never the whole app) and the replies it takes. This
//! file is their registry: order and titles, where the wide layout puts them,
//! their key bindings, and the dispatch to each. A new pane is a module here and
//! a line in each table below.

pub mod ablation;
pub mod activations;
pub mod channels;
pub mod circuit;
pub mod common;
pub mod kernels;
pub mod layers;
pub mod training;
pub mod trigger;

use super::effect::Effect;
use super::images::ImageStore;
use super::jobs::Jobs;
use super::keys::{Action, Binding};
use super::protocol::Reply;
use super::study::Study;
use super::theme::{ACCENT, DIM};
use super::train_state::TrainState;
use crate::graph::circuit::GraphSite;
use ablation::AblationView;
use activations::ActivationsState;
use circuit::CircuitState;
pub use common::{Cx, View, scroll_offset};
use ratatui::Frame;
use ratatui::layout::{Constraint, Rect};
use ratatui::style::{Style, Stylize};
use ratatui::text::Line;
use ratatui::widgets::Block;
use trigger::TriggerState;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Pane {
    Layers,
    Channels,
    Kernels,
    Activations,
    Ablation,
    Training,
    Trigger,
    Circuit,
}

impl Pane {
    pub const ALL: [Pane; 8] = [
        Pane::Layers,
        Pane::Channels,
        Pane::Kernels,
        Pane::Activations,
        Pane::Ablation,
        Pane::Training,
        Pane::Trigger,
        Pane::Circuit,
    ];

    pub fn title(self) -> &'static str {
        match self {
            Pane::Layers => "Layers",
            Pane::Channels => "Channels",
            Pane::Kernels => "Kernels",
            Pane::Activations => "Activations",
            Pane::Ablation => "Ablation",
            Pane::Training => "Training",
            Pane::Trigger => "Trigger",
            Pane::Circuit => "Circuit",
        }
    }

    fn position(self) -> usize {
        Pane::ALL.iter().position(|&p| p == self).unwrap_or(0)
    }

    /// The number key that focuses it (1-based).
    pub fn number(self) -> usize {
        self.position() + 1
    }

    pub fn of_number(number: usize) -> Option<Pane> {
        Pane::ALL.get(number.checked_sub(1)?).copied()
    }

    pub fn next(self) -> Pane {
        Pane::ALL[(self.position() + 1) % Pane::ALL.len()]
    }

    pub fn previous(self) -> Pane {
        Pane::ALL[(self.position() + Pane::ALL.len() - 1) % Pane::ALL.len()]
    }
}

/// The wide layout (every pane at once): rows of panes, each row with its height
/// and each pane with its width. Every pane is in it exactly once (a test checks),
/// so a new pane cannot silently vanish.
pub const WIDE_ROWS: &[(Constraint, &[(Pane, Constraint)])] = &[
    (
        Constraint::Percentage(32),
        &[
            (Pane::Layers, Constraint::Length(36)),
            (Pane::Channels, Constraint::Percentage(40)),
            (Pane::Kernels, Constraint::Fill(1)),
        ],
    ),
    (
        Constraint::Percentage(34),
        &[(Pane::Activations, Constraint::Percentage(60)), (Pane::Ablation, Constraint::Fill(1))],
    ),
    (
        Constraint::Fill(1),
        &[
            (Pane::Training, Constraint::Percentage(40)),
            (Pane::Trigger, Constraint::Percentage(26)),
            (Pane::Circuit, Constraint::Fill(1)),
        ],
    ),
];

/// A pane's own bindings (in the one key table through `keymap`).
pub fn bindings(pane: Pane) -> &'static [Binding] {
    match pane {
        Pane::Layers => layers::KEYS,
        Pane::Channels => channels::KEYS,
        Pane::Kernels => kernels::KEYS,
        Pane::Activations => activations::KEYS,
        Pane::Ablation => ablation::KEYS,
        Pane::Training => training::KEYS,
        Pane::Trigger => trigger::KEYS,
        Pane::Circuit => circuit::KEYS,
    }
}

/// Every pane's own state.
#[derive(Debug, Clone, Default)]
pub struct Panes {
    pub activations: ActivationsState,
    pub ablation: AblationView,
    pub training: TrainState,
    pub trigger: TriggerState,
    pub circuit: CircuitState,
    /// The Circuit pane on a graph run: its units are the graph's nodes'.
    pub graph_circuit: CircuitState<GraphSite>,
}

impl Panes {
    pub fn draw(&self, pane: Pane, frame: &mut Frame, area: Rect, view: &View, images: &mut ImageStore, framed: bool) {
        let block = Block::bordered()
            .title(Line::from(format!(" {} {} ", pane.number(), pane.title())).bold())
            .border_style(if framed { Style::new().fg(ACCENT) } else { Style::new().fg(DIM) });
        let inner = block.inner(area);
        frame.render_widget(block, area);
        if let Some(g) = view.study.graph.as_deref() {
            use crate::tui::graph::{activations as graph_activations, kernels as graph_kernels, panes as on_graph};
            return match pane {
                Pane::Layers => on_graph::layers(frame, inner, g),
                Pane::Channels => on_graph::channels(frame, inner, view, g),
                Pane::Kernels => graph_kernels::draw(frame, inner, view, g),
                Pane::Activations => graph_activations::draw(frame, inner, view, g, images),
                Pane::Ablation => on_graph::ablation(frame, inner, view, g),
                Pane::Trigger => trigger::draw(frame, inner, view, &self.trigger, images),
                Pane::Circuit => circuit::draw(frame, inner, view, &self.graph_circuit),
                Pane::Training => on_graph::study_only(frame, inner, pane.title()),
            };
        }
        match pane {
            Pane::Layers => layers::draw(frame, inner, view),
            Pane::Channels => channels::draw(frame, inner, view),
            Pane::Kernels => kernels::draw(frame, inner, view, images),
            Pane::Activations => activations::draw(frame, inner, view, &self.activations, images),
            Pane::Ablation => ablation::draw(frame, inner, view, &self.ablation),
            Pane::Training => training::draw(frame, inner, view, &self.training),
            Pane::Trigger => trigger::draw(frame, inner, view, &self.trigger, images),
            Pane::Circuit => circuit::draw(frame, inner, view, &self.circuit),
        }
    }

    /// A key for `pane` (one of its own, or a movement while it has the focus);
    /// `None` when the pane has no use for it.
    pub fn handle(&mut self, pane: Pane, action: Action, cx: Cx) -> Option<Vec<Effect>> {
        match pane {
            Pane::Layers => layers::handle(action, cx),
            Pane::Channels => channels::handle(action, cx),
            Pane::Kernels => channels::step(action, cx.study).map(|()| Vec::new()),
            Pane::Activations => activations::handle(&mut self.activations, action, cx),
            Pane::Ablation => ablation::handle(&mut self.ablation, action, cx),
            Pane::Training => training::handle(&mut self.training, action, cx),
            Pane::Trigger => trigger::handle(&mut self.trigger, action, cx),
            Pane::Circuit => circuit::handle(&mut self.circuit, action, cx),
        }
    }

    /// A click at screen row `y` of a pane drawn at `area`.
    pub fn click(&mut self, pane: Pane, area: Rect, y: u16, study: &mut Study) {
        match pane {
            Pane::Layers => layers::click(area, y, study),
            Pane::Channels => channels::click(area, y, study),
            _ => {}
        }
    }

    /// The replies the panes own (the app keeps the study's own).
    pub fn on_reply(&mut self, reply: Reply, study: &mut Study) -> Vec<Effect> {
        match reply {
            Reply::Training(update) => self.training.apply(update),
            Reply::History(update) => self.training.replace(update),
            Reply::TrainFinished { cancelled, missing, seconds } => {
                return training::finished(&mut self.training, study, cancelled, missing, seconds);
            }
            Reply::Swept { layer, mode, rows, complete } => return ablation::swept(study, layer, mode, rows, complete),
            Reply::Swapped(swaps) => return ablation::swapped(&mut self.ablation, swaps),
            Reply::TopImages(top) => self.activations.top = Some(top),
            Reply::RecoveryProgress(progress) => self.trigger.progress = Some(progress),
            Reply::Recovered(report) => self.trigger.recovered(report),
            Reply::RecoveryStopped => return self.trigger.stopped("recovery"),
            Reply::Unlearned { label, metrics } => self.trigger.unlearned = Some((label, metrics)),
            Reply::UnlearnStopped => return self.trigger.stopped("unlearning"),
            Reply::Visualized(visuals) => self.trigger.visuals = Some(visuals),
            Reply::Patched(maps) => return self.circuit.patched(maps),
            Reply::CircuitProgress(progress) => self.circuit.progress = Some(progress),
            Reply::CircuitFound(report) => return self.circuit.found(report),
            Reply::PruneCurves { layer, curves } if study.graph.is_some() => {
                // Only the rankings that apply to the node were asked for: a stop leaves none.
                let rankings = if curves.is_empty() { 1 } else { curves.len() };
                return self.graph_circuit.pruned(layer, curves, rankings);
            }
            Reply::PruneCurves { layer, curves } => {
                return self.circuit.pruned(layer, curves, crate::engine::prune::Ranking::ALL.len());
            }
            Reply::GraphPatched(maps) => return self.graph_circuit.patched(maps),
            Reply::GraphCircuitProgress(progress) => self.graph_circuit.progress = Some(progress),
            Reply::GraphCircuitFound(report) => return self.graph_circuit.found(report),
            _ => {}
        }
        Vec::new()
    }

    /// New models: what was computed on the old ones no longer applies.
    pub fn models_changed(&mut self) {
        self.activations.top = None;
        self.ablation.swaps = None;
        self.trigger = TriggerState { config: self.trigger.config.clone(), ..TriggerState::default() };
        self.circuit = CircuitState { direction: self.circuit.direction, ..CircuitState::default() };
        self.graph_circuit = CircuitState { direction: self.graph_circuit.direction, ..CircuitState::default() };
    }

    /// Work the panes want done after the state changed (the top images of a newly
    /// selected unit, while they are shown).
    pub fn follow(&mut self, study: &Study, jobs: &Jobs) -> Vec<Effect> {
        activations::follow(&self.activations, study, jobs)
    }
}
