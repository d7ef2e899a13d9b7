//! The Circuit pane: which units the backdoor needs. A layers × units heatmap of
//! activation patching (denoise: how much a unit's clean value removes the
//! backdoor; noise: how much its triggered value brings it to clean images), the
//! circuit the search found (Enter ablates it), the Pareto front of every set the
//! search tried, and the selected layer's pruning-defence curves.

use super::common::scroll_offset;
use super::common::{Cx, View, legend, line_dataset, placeholder};
use crate::engine::ablation::{AblationMode, AblationSet};
use crate::engine::circuit::{CircuitReport, SearchProgress, Site, Tried};
use crate::engine::layer::Layer;
use crate::engine::patch::Direction;
use crate::engine::prune::PruneCurve;
use crate::graph::circuit::GraphSite;
use crate::picture::heat;
use crate::tui::effect::Effect;
use crate::tui::fit::{draw_line, fit_lines};
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
use ratatui::widgets::{Axis, Chart, Dataset, GraphType, Paragraph, Wrap};
use std::fmt;

/// Where the pane's units live: the study's layers, or a graph's nodes
/// (a graph's jobs start in `tui/graph/keys.rs`).
pub trait MapSite: Site + fmt::Debug {
    /// A graph's node: its maps and curves are measured on the sample.
    const GRAPH: bool;
}

impl MapSite for Layer {
    const GRAPH: bool = false;
}

impl MapSite for GraphSite {
    const GRAPH: bool = true;
}

/// Everything the pane shows, kept by the app.
#[derive(Debug, Clone)]
pub struct CircuitState<S = Layer> {
    /// The heatmap's rows: every layer, or the nodes a graph's map patched.
    pub sites: Vec<S>,
    pub patch: Option<Box<PatchMaps<S>>>,
    /// The direction the heatmap shows.
    pub direction: Direction,
    /// The heatmap cursor: a site and one of its units.
    pub layer: usize,
    pub unit: usize,
    pub progress: Option<Box<SearchProgress<S>>>,
    pub report: Option<Box<CircuitReport<S>>>,
    /// The last curves and their layer (or node).
    pub curves: Option<(String, Vec<PruneCurve>)>,
}

impl Default for CircuitState {
    fn default() -> Self {
        CircuitState::over(Layer::ALL.to_vec())
    }
}

impl Default for CircuitState<GraphSite> {
    /// A graph's sites come with its first map.
    fn default() -> Self {
        CircuitState::over(Vec::new())
    }
}

impl<S> CircuitState<S> {
    pub fn over(sites: Vec<S>) -> Self {
        let direction = Direction::default();
        CircuitState { sites, patch: None, direction, layer: 0, unit: 0, progress: None, report: None, curves: None }
    }
}

pub const PATCH: PaneKey = PaneKey("circuit.patch");
pub const SEARCH: PaneKey = PaneKey("circuit.search");
pub const PRUNE: PaneKey = PaneKey("circuit.prune");
const DIRECTION: PaneKey = PaneKey("circuit.direction");
const PREVIOUS_UNIT: PaneKey = PaneKey("circuit.previous");
const NEXT_UNIT: PaneKey = PaneKey("circuit.next");
pub const ABLATE: PaneKey = PaneKey("circuit.ablate");

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
        // The selected layer (the header's): moving on the map selects its cell.
        Action::Pane(PRUNE) => long(Command::Prune { layer: cx.study.layer, mode }),
        Action::Pane(ABLATE) => {
            let (set, mode) = match found_circuit(state) {
                Ok(found) => found,
                Err(why) => return Some(why),
            };
            let ab = &mut cx.study.ablation;
            (ab.set, ab.mode) = (set.clone(), mode);
            let mut effects = vec![Effect::Notice(format!("ablating the circuit {set}"))];
            effects.extend(cx.study.evaluate_current());
            effects
        }
        Action::ToggleAblation => cx.study.toggle(state.selected_layer(), state.selected_unit()),
        other => {
            let moved = moves(state, other)?;
            // The map's cell is the selected unit everywhere (the layer, the Channels row).
            cx.study.layer = state.selected_layer();
            cx.study.jump_to_unit(state.selected_unit()).ok();
            moved
        }
    };
    Some(effects)
}

/// The keys that move about the map, on any run.
pub fn moves<S: MapSite>(state: &mut CircuitState<S>, action: Action) -> Option<Vec<Effect>> {
    Some(match action {
        Action::Pane(DIRECTION) => {
            state.toggle_direction();
            Vec::new()
        }
        Action::Pane(PREVIOUS_UNIT) => state.step_unit(-1),
        Action::Pane(NEXT_UNIT) => state.step_unit(1),
        Action::Up => state.step_layer(-1),
        Action::Down => state.step_layer(1),
        _ => return None,
    })
}

/// The `ABLATE` key's set: the circuit found, in the mode it was found in.
pub fn found_circuit<S: MapSite>(state: &CircuitState<S>) -> Result<(AblationSet<S>, AblationMode), Vec<Effect>> {
    let found = state.report.as_ref().and_then(|r| Some((r.circuit.as_ref()?.set.clone(), r.mode)));
    found.ok_or_else(|| vec![Effect::Notice("no circuit yet (C searches for one)".into())])
}

impl CircuitState {
    /// The study's selected layer.
    pub fn selected_layer(&self) -> Layer {
        self.selected_site().copied().unwrap_or(Layer::ALL[0])
    }
}

impl<S> CircuitState<S> {
    /// Curves arrived: fewer than asked for (`rankings`) means the job was stopped.
    pub fn pruned(&mut self, layer: String, curves: Vec<PruneCurve>, rankings: usize) -> Vec<Effect> {
        let count = curves.len();
        let notice =
            (count < rankings).then(|| Effect::Notice(format!("pruning {layer} stopped after {count} rankings")));
        self.curves = Some((layer, curves));
        notice.into_iter().collect()
    }
}

impl<S: MapSite> CircuitState<S> {
    pub fn patched(&mut self, maps: Box<PatchMaps<S>>) -> Vec<Effect> {
        let all_units: usize = maps.sites.iter().map(|l| l.unit_count()).sum();
        let early = maps.maps.len() < 2 || maps.maps.iter().any(|m| m.rows.len() < all_units);
        self.sites = maps.sites.clone();
        self.layer = self.layer.min(self.sites.len().saturating_sub(1));
        self.patch = Some(maps);
        early
            .then(|| Effect::Notice("patching stopped early: the map shows what was done".into()))
            .into_iter()
            .collect()
    }

    pub fn found(&mut self, report: Box<CircuitReport<S>>) -> Vec<Effect> {
        let stopped = report.stopped;
        self.report = Some(report);
        stopped
            .then(|| Effect::Notice("circuit search stopped: showing what it had tried".into()))
            .into_iter()
            .collect()
    }

    /// The selected site, if there are any (a graph's before its map).
    pub fn selected_site(&self) -> Option<&S> {
        self.sites.get(self.layer.min(self.sites.len().saturating_sub(1)))
    }

    pub fn selected_unit(&self) -> usize {
        self.unit.min(self.selected_site().map_or(1, |s| s.unit_count()).saturating_sub(1))
    }

    /// ↑/↓ pick the layer row.
    pub fn step_layer(&mut self, delta: i64) -> Vec<Effect> {
        self.layer = (self.layer as i64 + delta).clamp(0, self.sites.len().saturating_sub(1) as i64) as usize;
        self.unit = self.selected_unit();
        Vec::new()
    }

    /// ←/→ move along the layer's units.
    pub fn step_unit(&mut self, delta: i64) -> Vec<Effect> {
        let units = self.selected_site().map_or(1, |s| s.unit_count()) as i64;
        self.unit = (self.selected_unit() as i64 + delta).clamp(0, (units - 1).max(0)) as usize;
        Vec::new()
    }

    pub fn shown_map(&self) -> Option<&PatchMap<S>> {
        self.patch.as_ref()?.maps.iter().find(|m| m.direction == self.direction)
    }

    pub fn toggle_direction(&mut self) {
        self.direction = if self.direction == Direction::Denoise { Direction::Noise } else { Direction::Denoise };
    }
}

pub fn draw<S: MapSite>(frame: &mut Frame, area: Rect, view: &View, state: &CircuitState<S>) {
    let jobs = view.jobs;
    let map_height = heatmap_lines(&state.sites, area.width);
    // A graph's map scrolls (its selected unit on two lines): the summary and the
    // front keep their rows.
    // (Before its map, room for the placeholder's three lines at 80 columns.)
    let map_height = if S::GRAPH {
        (map_height + 3).max(5).min(area.height.saturating_sub(4 + SUMMARY + 5).max(4))
    } else {
        map_height + 2
    };
    let [status, map, summary, charts] = area.layout(&Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(map_height),
        Constraint::Length(if S::GRAPH { SUMMARY } else { 3 }),
        Constraint::Fill(1),
    ]));
    let (text, colour) = status_line(state, jobs);
    draw_line(frame, Line::from(text).fg(colour).bold(), status);
    draw_heatmap(frame, map, state, jobs.is_running(Job::Patch));
    draw_summary(frame, summary, state);
    let [front, curves] = charts.layout(&Layout::horizontal([Constraint::Fill(1), Constraint::Fill(1)]).spacing(2));
    draw_front(frame, front, state);
    draw_curves(frame, curves, state);
}

fn status_line<S: MapSite>(state: &CircuitState<S>, jobs: &Jobs) -> (String, Color) {
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
        None if S::GRAPH => ("P patches every unit · C searches the selected node for the circuit".into(), DIM),
        None => ("P patches every unit · C searches for the circuit · f prunes the layer".into(), DIM),
    }
}

/// Rows a graph's search summary has: its lines wrap.
const SUMMARY: u16 = 5;

/// Rows of heatmap cells: one line per layer, wider layers wrapped.
fn heatmap_lines<S: MapSite>(sites: &[S], width: u16) -> u16 {
    let room = width.saturating_sub(label_width(sites)).max(1) as usize;
    sites.iter().map(|l| l.unit_count().div_ceil(room) as u16).sum()
}

/// The heatmap's name column: the study's layers' 7, or a graph's longest path.
fn label_width<S: MapSite>(sites: &[S]) -> u16 {
    sites.iter().map(|s| s.to_string().chars().count() as u16 + 2).fold(7, u16::max)
}

/// The patching effect per unit: black (nothing) → yellow (the whole backdoor).
fn draw_heatmap<S: MapSite>(frame: &mut Frame, area: Rect, state: &CircuitState<S>, patching: bool) {
    let Some(map) = state.shown_map() else {
        let text = if patching {
            "patching…"
        } else {
            "P patches every unit, one at a time: denoise runs triggered images with the unit's clean value (necessity), noise runs clean images with its triggered value (sufficiency)."
        };
        placeholder(frame, area, text);
        return;
    };
    let label_width = label_width(&state.sites);
    let room = area.width.saturating_sub(label_width).max(1) as usize;
    // A graph's node names leave less room: the direction by name and the images measured on.
    let what = match &state.patch {
        Some(p) if S::GRAPH => format!("{} on {} images", map.direction, p.images),
        _ => map.direction.describe().to_string(),
    };
    let caption = format!("{what} · black 0 → yellow 100 points · d switches");
    let mut cells: Vec<(usize, Line)> = Vec::new();
    for (position, layer) in state.sites.iter().enumerate() {
        let units: Vec<usize> = (0..layer.unit_count()).collect();
        for (chunk_index, chunk) in units.chunks(room).enumerate() {
            let label = if chunk_index == 0 { layer.to_string() } else { String::new() };
            let mut spans = vec![Span::raw(format!("{label:<width$}", width = label_width as usize))];
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
            cells.push((position, Line::from(spans)));
        }
    }
    // A graph's nodes may outgrow the pane: its rows scroll to keep the selected node in view.
    let (offset, shown) = if S::GRAPH {
        let rows = area.height.saturating_sub(3) as usize;
        let first = cells.iter().position(|(p, _)| *p == state.layer).unwrap_or(0);
        (scroll_offset(first, cells.len(), rows), rows)
    } else {
        (0, cells.len())
    };
    let mut lines = vec![Line::from(caption).fg(DIM)];
    lines.extend(cells.into_iter().skip(offset).take(shown).map(|(_, line)| line));
    let Some(layer) = state.selected_site() else { return };
    let unit = state.selected_unit();
    if let Some(r) = map.row(layer, unit).filter(|_| S::GRAPH) {
        let (e, m) = (&r.effect, &r.effect.metrics);
        let target =
            format!("{layer}:{unit} → target {:.1} % (unpatched {:.1})", e.target_rate, map.baseline.target_rate);
        lines.push(Line::from(format!("{target} · logit diff {:+.2}", e.logit_diff)));
        lines.push(Line::from(format!(
            "  clean {:.1} poison {:.1} rehab {:.1}",
            m.clean_acc, m.poison_acc, m.rehab_acc
        )));
    } else if let Some(r) = map.row(layer, unit) {
        let m = &r.effect.metrics;
        lines.push(Line::from(format!(
            "{layer}:{unit} → target {:.1} % (unpatched {:.1}) · logit diff {:+.2} · clean {:.1} poison {:.1} rehab {:.1}",
            r.effect.target_rate, map.baseline.target_rate, r.effect.logit_diff, m.clean_acc, m.poison_acc, m.rehab_acc
        )));
    }
    frame.render_widget(Paragraph::new(fit_lines(lines, area.width)), area);
}

fn set_line<S: MapSite>(what: &str, t: &Tried<S>) -> Line<'static> {
    let m = &t.metrics;
    Line::from(format!(
        "{what}{} — clean {:.2} poison {:.2} rehab {:.2}",
        t.set, m.clean_acc, m.poison_acc, m.rehab_acc
    ))
}

fn draw_summary<S: MapSite>(frame: &mut Frame, area: Rect, state: &CircuitState<S>) {
    let Some(report) = &state.report else {
        let best = state.progress.as_ref().and_then(|p| p.best.as_ref());
        if let Some(best) = best {
            frame.render_widget(Paragraph::new(fit_lines(vec![set_line("best so far: ", best)], area.width)), area);
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
    // A graph's node names make long lines: they wrap into the rows it has.
    let summary = if S::GRAPH {
        Paragraph::new(lines).wrap(Wrap { trim: false })
    } else {
        Paragraph::new(fit_lines(lines, area.width))
    };
    frame.render_widget(summary, area);
}

fn axis(low: f64, high: f64, decimals: usize) -> Axis<'static> {
    Axis::default()
        .bounds([low, high])
        .labels(vec![Line::from(format!("{low:.decimals$}")), Line::from(format!("{high:.decimals$}"))])
}

/// The Pareto front: poison accuracy against set size, the small sets only.
fn draw_front<S: MapSite>(frame: &mut Frame, area: Rect, state: &CircuitState<S>) {
    if state.report.is_some() && area.height < 5 {
        // Too low for axes, title and legend: say where the chart is.
        draw_line(frame, Line::from("Pareto front: z zooms this pane").fg(DIM), area);
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
    let small: Vec<&Tried<S>> = report.front.iter().filter(|t| t.size <= 12).collect();
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
fn draw_curves<S: MapSite>(frame: &mut Frame, area: Rect, state: &CircuitState<S>) {
    if state.curves.is_some() && area.height < 5 {
        draw_line(frame, Line::from("pruning curves: z zooms this pane").fg(DIM), area);
        return;
    }
    let Some((layer, curves)) = &state.curves else {
        if S::GRAPH {
            placeholder(
                frame,
                area,
                "f prunes the heatmap's node (else the last convolution) unit by unit under each ranking that applies, on the sample, and draws the curves here.",
            );
            return;
        }
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
        .x_axis(axis(0.0, curves.first().map_or(1, |c| c.order.len()) as f64, 0))
        .y_axis(axis(0.0, 100.0, 0))
        .hidden_legend_constraints((Constraint::Percentage(90), Constraint::Percentage(90)));
    frame.render_widget(chart, area);
}
