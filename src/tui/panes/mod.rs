//! The panes, one module each: its state, its keys, its draw function (over the
//! study and its own state, never the whole app) and the replies it takes. This
//! file is their registry: order and titles, where the wide layout puts them,
//! their key bindings, and the dispatch to each. A new pane is a module here and
//! a line in each table below.

pub mod ablation;
pub mod activations;
pub mod channels;
pub mod circuit;
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
use ablation::AblationView;
use activations::ActivationsState;
use circuit::CircuitState;
use ratatui::Frame;
use ratatui::layout::{Constraint, Rect};
use ratatui::style::{Color, Style, Stylize};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Cell, Paragraph, Row, Wrap};
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
            (Pane::Training, Constraint::Percentage(36)),
            (Pane::Trigger, Constraint::Percentage(28)),
            (Pane::Circuit, Constraint::Fill(1)),
        ],
    ),
];

/// A pane's own bindings (in the one key table through `keymap`).
pub fn bindings(pane: Pane) -> &'static [Binding] {
    match pane {
        Pane::Layers => layers::KEYS,
        Pane::Channels => channels::KEYS,
        Pane::Kernels => &[],
        Pane::Activations => activations::KEYS,
        Pane::Ablation => ablation::KEYS,
        Pane::Training => training::KEYS,
        Pane::Trigger => trigger::KEYS,
        Pane::Circuit => circuit::KEYS,
    }
}

/// What a pane draws from.
pub struct View<'a> {
    pub study: &'a Study,
    pub jobs: &'a Jobs,
    pub focused: bool,
}

/// What a pane's key handler may read and change besides its own state.
pub struct Cx<'a> {
    pub study: &'a mut Study,
    pub jobs: &'a Jobs,
    /// The pane handling the key has the focus.
    pub focused: bool,
}

/// Every pane's own state.
#[derive(Debug, Clone, Default)]
pub struct Panes {
    pub activations: ActivationsState,
    pub ablation: AblationView,
    pub training: TrainState,
    pub trigger: TriggerState,
    pub circuit: CircuitState,
}

impl Panes {
    pub fn draw(&self, pane: Pane, frame: &mut Frame, area: Rect, view: &View, images: &mut ImageStore, framed: bool) {
        let block = Block::bordered()
            .title(Line::from(format!(" {} {} ", pane.number(), pane.title())).bold())
            .border_style(if framed { Style::new().fg(ACCENT) } else { Style::new().fg(DIM) });
        let inner = block.inner(area);
        frame.render_widget(block, area);
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
            Reply::PruneCurves { layer, curves } => return self.circuit.pruned(layer, curves),
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
    }

    /// Work the panes want done after the state changed (the top images of a newly
    /// selected unit, while they are shown).
    pub fn follow(&mut self, study: &Study, jobs: &Jobs) -> Vec<Effect> {
        activations::follow(&self.activations, study, jobs)
    }
}

/// The first visible row of a list of `len` rows, `height` of them visible, with
/// `selected` kept in view (the same rule the table widget follows from offset 0).
pub fn scroll_offset(selected: usize, len: usize, height: usize) -> usize {
    if height == 0 || len <= height { 0 } else { selected.saturating_sub(height - 1).min(len - height) }
}

/// A chart's legend as one line: a coloured mark and the name of each series.
pub fn legend(series: &[(&str, Color)]) -> Line<'static> {
    let spans = series.iter().flat_map(|&(name, colour)| {
        [Span::styled(" ━━ ", Style::new().fg(colour).bold()), Span::raw(name.to_string())]
    });
    Line::from(spans.collect::<Vec<_>>())
}

/// A dim explanation where data is not there yet.
pub fn placeholder(frame: &mut Frame, area: Rect, text: &str) {
    frame.render_widget(Paragraph::new(text.to_string()).fg(DIM).wrap(Wrap { trim: true }), area);
}

/// A table row whose first `text` cells are text (left-aligned) and the rest
/// numbers (right-aligned).
pub fn row<'a>(cells: impl IntoIterator<Item = String>, text: usize) -> Row<'a> {
    Row::new(cells.into_iter().enumerate().map(|(i, c)| {
        let line = Line::from(c);
        Cell::from(if i < text { line } else { line.right_aligned() })
    }))
}

/// A number with `decimals`, or a dash when unknown.
pub fn number(value: Option<f64>, decimals: usize) -> String {
    value.map(|v| format!("{v:.decimals$}")).unwrap_or_else(|| "–".into())
}

/// A picture to show under a title: its image-store slot, its cache key, and how
/// to build it.
pub struct Titled<'a> {
    pub title: String,
    pub slot: &'static str,
    pub key: u64,
    pub make: Box<dyn FnOnce() -> crate::picture::Picture + 'a>,
}

/// Pictures side by side in equal columns, each under its title.
pub fn titled_pictures(frame: &mut Frame, area: Rect, images: &mut ImageStore, pictures: Vec<Titled>) {
    use ratatui::layout::{Constraint, Layout};
    let columns = area.layout_vec(&Layout::horizontal(vec![Constraint::Fill(1); pictures.len()]).spacing(1));
    for (picture, column) in pictures.into_iter().zip(columns) {
        let [title, body] = column.layout(&Layout::vertical([Constraint::Length(1), Constraint::Fill(1)]));
        frame.render_widget(Line::from(picture.title).bold(), title);
        images.draw(frame.buffer_mut(), body, picture.slot, picture.key, picture.make);
    }
}

/// One line of a chart, in the explorer's chart style.
pub fn line_dataset<'a>(
    name: String,
    colour: ratatui::style::Color,
    data: &'a [(f64, f64)],
) -> ratatui::widgets::Dataset<'a> {
    ratatui::widgets::Dataset::default()
        .name(name)
        .marker(ratatui::symbols::Marker::Braille)
        .graph_type(ratatui::widgets::GraphType::Line)
        .style(Style::new().fg(colour))
        .data(data)
}
