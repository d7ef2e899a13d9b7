//! The Circuit pane: which units the backdoor needs. A layers × units heatmap of
//! activation patching (denoise: how much a unit's clean value removes the
//! backdoor; noise: how much its triggered value brings it to clean images), the
//! circuit the search found (Enter ablates it), the Pareto front of every set the
//! search tried, and the selected layer's pruning-defence curves.

use super::common::{Cx, View, legend, line_dataset, placeholder};
use crate::engine::circuit::{CircuitReport, SearchProgress, Tried};
use crate::engine::layer::Layer;
use crate::engine::patch::Direction;
use crate::engine::prune::PruneCurve;
use crate::picture::heat;
use crate::tui::effect::Effect;
use crate::tui::jobs::Jobs;
use crate::tui::keys::{Action, Binding, PaneKey, Scope, ch, key};
use crate::tui::protocol::{Command, Job, PatchMap, PatchMaps};
use crate::tui::theme::{ACCENT, ACCURACY, BAD, DIM, SERIES, WARN};
use ratatui::Frame;
use ratatui::crossterm::event::KeyCode;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Style, Stylize};
use ratatui::symbols::Marker;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Axis, Chart, Dataset, GraphType, Paragraph};

/// Everything the pane shows, kept by the app.
#[derive(Debug, Clone, Default)]
pub struct CircuitState {
    pub patch: Option<Box<PatchMaps>>,
    /// The direction the heatmap shows.
    pub direction: Direction,
    /// The heatmap cursor: a layer and one of its units.
    pub layer: usize,
    pub unit: usize,
    pub progress: Option<Box<SearchProgress>>,
    pub report: Option<Box<CircuitReport>>,
    /// The last curves and their layer.
    pub curves: Option<(Layer, Vec<PruneCurve>)>,
}

const PATCH: PaneKey = PaneKey("circuit.patch");
const SEARCH: PaneKey = PaneKey("circuit.search");
const PRUNE: PaneKey = PaneKey("circuit.prune");
const DIRECTION: PaneKey = PaneKey("circuit.direction");
const PREVIOUS_UNIT: PaneKey = PaneKey("circuit.previous");
const NEXT_UNIT: PaneKey = PaneKey("circuit.next");
const ABLATE: PaneKey = PaneKey("circuit.ablate");

pub const KEYS: &[Binding] = &[
    crate::bind!(&[ch('P')], "P", Action::Pane(PATCH), Scope::Main, "patch every unit (both ways)", Some("patch")),
    crate::bind!(&[ch('C')], "C", Action::Pane(SEARCH), Scope::Main, "search for the circuit", Some("circuit")),
    crate::bind!(&[ch('f')], "f", Action::Pane(PRUNE), Scope::Main, "pruning curves of the layer", None),
    crate::bind!(
        &[ch('d')],
        "d",
        Action::Pane(DIRECTION),
        Scope::Focused,
        "denoise ↔ noise patching",
        Some("direction")
    ),
    crate::bind!(
        &[key(KeyCode::Left), ch('h')],
        "←/h",
        Action::Pane(PREVIOUS_UNIT),
        Scope::Focused,
        "previous unit of the map",
        None
    ),
    crate::bind!(
        &[key(KeyCode::Right), ch('l')],
        "→/l",
        Action::Pane(NEXT_UNIT),
        Scope::Focused,
        "next unit of the map",
        None
    ),
    crate::bind!(
        &[key(KeyCode::Enter)],
        "Enter",
        Action::Pane(ABLATE),
        Scope::Focused,
        "ablate the circuit found",
        Some("ablate circuit")
    ),
];

pub fn handle(state: &mut CircuitState, action: Action, cx: Cx) -> Option<Vec<Effect>> {
    let long = |command: Command| {
        if let Some(why) = cx.jobs.refuse_long_job(cx.study.ready) {
            return vec![Effect::Notice(why)];
        }
        vec![Effect::FocusOwner, Effect::Send(command)]
    };
    let mode = cx.study.ablation.mode;
    let effects = match action {
        Action::Pane(PATCH) => long(Command::Patch),
        Action::Pane(SEARCH) => {
            let effects = long(Command::Circuit { mode });
            state.progress = None;
            effects
        }
        // The heatmap's layer while the pane has the focus, else the selected one.
        Action::Pane(PRUNE) => {
            let layer = if cx.focused { state.selected_layer() } else { cx.study.layer };
            long(Command::Prune { layer, mode })
        }
        Action::Pane(DIRECTION) => {
            state.toggle_direction();
            Vec::new()
        }
        Action::Pane(PREVIOUS_UNIT) => state.step_unit(-1),
        Action::Pane(NEXT_UNIT) => state.step_unit(1),
        Action::Pane(ABLATE) => {
            let found = state.report.as_ref().and_then(|r| Some((r.circuit.as_ref()?.set.clone(), r.mode)));
            let Some((set, mode)) = found else {
                return Some(vec![Effect::Notice("no circuit yet (C searches for one)".into())]);
            };
            let ab = &mut cx.study.ablation;
            (ab.set, ab.mode) = (set.clone(), mode);
            let mut effects = vec![Effect::Notice(format!("ablating the circuit {set}"))];
            effects.extend(cx.study.evaluate_current());
            effects
        }
        Action::ToggleAblation => cx.study.toggle(state.selected_layer(), state.selected_unit()),
        Action::Up => state.step_layer(-1),
        Action::Down => state.step_layer(1),
        _ => return None,
    };
    Some(effects)
}

impl CircuitState {
    pub fn patched(&mut self, maps: Box<PatchMaps>) -> Vec<Effect> {
        let all_units: usize = Layer::ALL.iter().map(|l| l.units()).sum();
        let early = maps.maps.len() < 2 || maps.maps.iter().any(|m| m.rows.len() < all_units);
        self.patch = Some(maps);
        early
            .then(|| Effect::Notice("patching stopped early: the map shows what was done".into()))
            .into_iter()
            .collect()
    }

    pub fn found(&mut self, report: Box<CircuitReport>) -> Vec<Effect> {
        let stopped = report.stopped;
        self.report = Some(report);
        stopped
            .then(|| Effect::Notice("circuit search stopped: showing what it had tried".into()))
            .into_iter()
            .collect()
    }

    pub fn pruned(&mut self, layer: Layer, curves: Vec<PruneCurve>) -> Vec<Effect> {
        let count = curves.len();
        self.curves = Some((layer, curves));
        (count < crate::engine::prune::Ranking::ALL.len())
            .then(|| Effect::Notice(format!("pruning {layer} stopped after {count} rankings")))
            .into_iter()
            .collect()
    }

    pub fn selected_layer(&self) -> Layer {
        Layer::ALL[self.layer.min(Layer::ALL.len() - 1)]
    }

    pub fn selected_unit(&self) -> usize {
        self.unit.min(self.selected_layer().units() - 1)
    }

    /// ↑/↓ pick the layer row.
    pub fn step_layer(&mut self, delta: i64) -> Vec<Effect> {
        self.layer = (self.layer as i64 + delta).clamp(0, Layer::ALL.len() as i64 - 1) as usize;
        self.unit = self.selected_unit();
        Vec::new()
    }

    /// ←/→ move along the layer's units.
    pub fn step_unit(&mut self, delta: i64) -> Vec<Effect> {
        let units = self.selected_layer().units() as i64;
        self.unit = (self.selected_unit() as i64 + delta).clamp(0, units - 1) as usize;
        Vec::new()
    }

    pub fn shown_map(&self) -> Option<&PatchMap> {
        self.patch.as_ref()?.maps.iter().find(|m| m.direction == self.direction)
    }

    pub fn toggle_direction(&mut self) {
        self.direction = if self.direction == Direction::Denoise { Direction::Noise } else { Direction::Denoise };
    }
}

pub fn draw(frame: &mut Frame, area: Rect, view: &View, state: &CircuitState) {
    let jobs = view.jobs;
    let map_height = heatmap_lines(area.width);
    let [status, map, summary, charts] = area.layout(&Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(map_height + 2),
        Constraint::Length(3),
        Constraint::Fill(1),
    ]));
    let (text, colour) = status_line(state, jobs);
    frame.render_widget(Line::from(text).fg(colour).bold(), status);
    draw_heatmap(frame, map, state, jobs.is_running(Job::Patch));
    draw_summary(frame, summary, state);
    let [front, curves] = charts.layout(&Layout::horizontal([Constraint::Fill(1), Constraint::Fill(1)]).spacing(2));
    draw_front(frame, front, state);
    draw_curves(frame, curves, state);
}

fn status_line(state: &CircuitState, jobs: &Jobs) -> (String, Color) {
    if jobs.is_running(Job::Circuit) {
        return match &state.progress {
            Some(p) => (format!("searching: {} · {} sets evaluated · x stops", p.stage, p.evaluated), WARN),
            None => ("searching: the greedy step… · x stops".into(), WARN),
        };
    }
    if jobs.is_running(Job::Patch) {
        return ("patching every unit of every layer…".into(), WARN);
    }
    if let Some(running) = jobs.get(Job::Prune) {
        return (format!("{} under every ranking…", running.label), WARN);
    }
    match state.report.as_ref().and_then(|r| r.circuit.as_ref()) {
        Some(c) => (format!("circuit: {} ({}) · Enter ablates it", c.set, c.size_text()), BAD),
        None if state.report.is_some() => ("no set meets the criteria: see the front".into(), ACCENT),
        None => ("P patches every unit · C searches for the circuit · f prunes the layer".into(), DIM),
    }
}

/// Rows of heatmap cells: one line per layer, wider layers wrapped.
fn heatmap_lines(width: u16) -> u16 {
    let room = width.saturating_sub(LABEL).max(1) as usize;
    Layer::ALL.iter().map(|l| l.units().div_ceil(room) as u16).sum()
}

const LABEL: u16 = 7;

/// The patching effect per unit: black (nothing) → yellow (the whole backdoor).
fn draw_heatmap(frame: &mut Frame, area: Rect, state: &CircuitState, patching: bool) {
    let Some(map) = state.shown_map() else {
        let text = if patching {
            "patching…"
        } else {
            "P patches every unit, one at a time: denoise runs triggered images with the unit's clean value (necessity), noise runs clean images with its triggered value (sufficiency)."
        };
        placeholder(frame, area, text);
        return;
    };
    let room = area.width.saturating_sub(LABEL).max(1) as usize;
    let mut lines =
        vec![Line::from(format!("{} · black 0 → yellow 100 points · d switches", map.direction.describe())).fg(DIM)];
    for (position, &layer) in Layer::ALL.iter().enumerate() {
        let units: Vec<usize> = (0..layer.units()).collect();
        for (chunk_index, chunk) in units.chunks(room).enumerate() {
            let label = if chunk_index == 0 { layer.name().to_string() } else { String::new() };
            let mut spans = vec![Span::raw(format!("{label:<width$}", width = LABEL as usize))];
            for &unit in chunk {
                let effect = map.row(layer, unit).map(|r| map.effect(r)).unwrap_or(0.0);
                let c = heat((effect.clamp(0.0, 100.0) / 100.0) as f32);
                let selected = position == state.layer && unit == state.selected_unit();
                let style = Style::new().fg(Color::Rgb(c[0], c[1], c[2]));
                spans.push(if selected {
                    Span::styled("▣", style.fg(ACCENT).bold())
                } else {
                    Span::styled("█", style)
                });
            }
            lines.push(Line::from(spans));
        }
    }
    let (layer, unit) = (state.selected_layer(), state.selected_unit());
    if let Some(r) = map.row(layer, unit) {
        let m = &r.effect.metrics;
        lines.push(Line::from(format!(
            "{layer}:{unit} → target {:.1} % (unpatched {:.1}) · logit diff {:+.2} · clean {:.1} poison {:.1} rehab {:.1}",
            r.effect.target_rate, map.baseline.target_rate, r.effect.logit_diff, m.clean_acc, m.poison_acc, m.rehab_acc
        )));
    }
    frame.render_widget(Paragraph::new(lines), area);
}

fn set_line(what: &str, t: &Tried) -> Line<'static> {
    let m = &t.metrics;
    Line::from(format!(
        "{what}{} — clean {:.2} poison {:.2} rehab {:.2}",
        t.set, m.clean_acc, m.poison_acc, m.rehab_acc
    ))
}

fn draw_summary(frame: &mut Frame, area: Rect, state: &CircuitState) {
    let Some(report) = &state.report else {
        let best = state.progress.as_ref().and_then(|p| p.best.as_ref());
        if let Some(best) = best {
            frame.render_widget(Paragraph::new(vec![set_line("best so far: ", best)]), area);
        }
        return;
    };
    let mut lines = Vec::new();
    let c = &report.criteria;
    match &report.circuit {
        Some(t) => lines.push(set_line("circuit ", t).fg(BAD)),
        None => lines.push(Line::from("no set meets the criteria").fg(ACCENT)),
    }
    let pairs: Vec<String> =
        report.best_pairs.iter().map(|t| format!("{} ({:.1} %)", t.set, t.metrics.poison_acc)).collect();
    let stopped = if report.stopped { " · stopped early" } else { "" };
    lines.push(Line::from(format!(
        "poison ≤ {:.1} %, clean ≥ {:.1} % · best pairs {} · {} sets{stopped}",
        c.poison_at_most,
        c.clean_baseline - c.clean_margin,
        pairs.join(", "),
        report.evaluated
    )));
    let keep: Vec<String> = report
        .keep
        .iter()
        .map(|k| {
            let units: Vec<String> = k.kept.iter().map(usize::to_string).collect();
            format!("{}:{}{}", k.layer, units.join(","), if k.survives { "" } else { " (not enough)" })
        })
        .collect();
    lines.push(Line::from(format!("the backdoor survives keeping only {}", keep.join(" · "))).fg(DIM));
    frame.render_widget(Paragraph::new(lines), area);
}

fn axis(low: f64, high: f64, decimals: usize) -> Axis<'static> {
    Axis::default()
        .bounds([low, high])
        .labels(vec![Line::from(format!("{low:.decimals$}")), Line::from(format!("{high:.decimals$}"))])
}

/// The Pareto front: poison accuracy against set size, the small sets only.
fn draw_front(frame: &mut Frame, area: Rect, state: &CircuitState) {
    if state.report.is_some() && area.height < 5 {
        // Too low for axes, title and legend: say where the chart is.
        frame.render_widget(Line::from("Pareto front: z zooms this pane").fg(DIM), area);
        return;
    }
    let Some(report) = &state.report else {
        placeholder(
            frame,
            area,
            "C searches for the smallest set whose ablation removes the backdoor; its Pareto front (set size, poison, clean) is drawn here.",
        );
        return;
    };
    let small: Vec<&Tried> = report.front.iter().filter(|t| t.size <= 12).collect();
    let poison: Vec<(f64, f64)> = small.iter().map(|t| (t.size as f64, t.metrics.poison_acc)).collect();
    let clean: Vec<(f64, f64)> = small.iter().map(|t| (t.size as f64, t.metrics.clean_acc)).collect();
    let widest = poison.iter().map(|p| p.0).fold(1.0, f64::max);
    let dots = |name: &'static str, colour: Color, data| {
        Dataset::default()
            .name(name)
            .marker(Marker::Dot)
            .graph_type(GraphType::Scatter)
            .style(Style::new().fg(colour))
            .data(data)
    };
    let [clean_colour, poison_colour, _] = ACCURACY;
    let datasets = vec![dots("poison %", poison_colour, &poison), dots("clean %", clean_colour, &clean)];
    let key = legend(&[("poison", poison_colour), ("clean", clean_colour)]);
    let chart = Chart::new(datasets)
        .block(
            ratatui::widgets::Block::new()
                .title(Line::from(" Pareto front: units ablated → % ").bold())
                .title_bottom(key),
        )
        .hidden_legend_constraints((Constraint::Length(0), Constraint::Length(0)))
        .x_axis(axis(0.0, widest, 0))
        .y_axis(axis(0.0, 100.0, 0));
    frame.render_widget(chart, area);
}

/// Poison accuracy against units pruned, one line per ranking, its DER in the legend.
fn draw_curves(frame: &mut Frame, area: Rect, state: &CircuitState) {
    if state.curves.is_some() && area.height < 5 {
        frame.render_widget(Line::from("pruning curves: z zooms this pane").fg(DIM), area);
        return;
    }
    let Some((layer, curves)) = &state.curves else {
        placeholder(
            frame,
            area,
            "f prunes the selected layer's units one by one under each ranking (Fine-Pruning, CLP, TAC, weight change, random) and draws the curves here.",
        );
        return;
    };
    let colours = SERIES;
    let series: Vec<(String, Vec<(f64, f64)>)> = curves
        .iter()
        .map(|c| {
            let best = &c.points[c.best];
            let name = format!("{} DER {:.2}@{}", c.ranking, best.der, best.pruned);
            (name, c.points.iter().map(|p| (p.pruned as f64, p.metrics.poison_acc)).collect())
        })
        .collect();
    let datasets = series
        .iter()
        .zip(colours.iter().cycle())
        .map(|((name, data), &colour)| line_dataset(name.clone(), colour, data))
        .collect();
    let names: Vec<String> = curves.iter().map(|c| c.ranking.to_string()).collect();
    let named: Vec<(&str, Color)> = names.iter().map(String::as_str).zip(colours.iter().copied().cycle()).collect();
    let title = Line::from(format!(" {layer} pruned → poison % ")).bold();
    // The rankings always in the bottom line; their DERs in the chart's own legend where it fits.
    let chart = Chart::new(datasets)
        .block(ratatui::widgets::Block::new().title(title).title_bottom(legend(&named)))
        .x_axis(axis(0.0, layer.units() as f64, 0))
        .y_axis(axis(0.0, 100.0, 0))
        .hidden_legend_constraints((Constraint::Percentage(90), Constraint::Percentage(90)));
    frame.render_widget(chart, area);
}
