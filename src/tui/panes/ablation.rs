//! The ablation set and its effect: metrics of the compared model, the model under
//! study and the model under study with the set ablated (with deltas), the
//! layer's sweep heatmap, and either the history of every set tried or the layer
//! swaps (every subset of the compared model's layers copied into the model under
//! study).

use super::common::{Cx, View, number, placeholder, row, rows_moved, scroll_offset};
use crate::engine::ablation::AblationMode;
use crate::engine::lab::ModelKind;
use crate::engine::layer::Layer;
use crate::engine::metrics::Metrics;
use crate::engine::sweep::SweepRow;
use crate::engine::uncertainty::Rate;
use crate::picture::heat;
use crate::table::{marked_delta, swap_table};
use crate::tui::cursor::moved;
use crate::tui::effect::Effect;
use crate::tui::fit::{draw_line, fit_lines};
use crate::tui::jobs::Running;
use crate::tui::keys::{Action, Binding, PaneKey, Scope, ch, key};
use crate::tui::protocol::{Command, Job, Swaps};
use crate::tui::study::{Study, SweepResult};
use crate::tui::theme::{ACCENT, DIM, WARN};
use ratatui::Frame;
use ratatui::crossterm::event::KeyCode;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style, Stylize};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Gauge, Paragraph, Table, TableState};

pub const RESTORE: PaneKey = PaneKey("ablation.restore");
pub const SWEEP: PaneKey = PaneKey("ablation.sweep");
const SWAP: PaneKey = PaneKey("ablation.swap");
const VIEW: PaneKey = PaneKey("ablation.view");

pub const KEYS: &[Binding] = &[
    crate::bind!(
        &[key(KeyCode::Enter)],
        "Enter",
        Action::Pane(RESTORE),
        Scope::Focused,
        "restore the selected set",
        None
    ),
    crate::bind!(&[ch('o')], "o", Action::Pane(VIEW), Scope::Focused, "history ↔ layer swaps", Some("swaps")),
    crate::bind!(&[ch('w')], "w", Action::Pane(SWEEP), Scope::Main, "sweep: each unit alone", Some("sweep")),
    crate::bind!(&[ch('W')], "W", Action::Pane(SWAP), Scope::Main, "layer swaps into the model", Some("swap")),
];

/// The pane's own state: which table it shows, and the last swaps.
#[derive(Debug, Clone, Default)]
pub struct AblationView {
    pub showing_swaps: bool,
    pub swaps: Option<Box<Swaps>>,
    /// Cursor in the swap table.
    pub swap_row: usize,
}

pub fn handle(state: &mut AblationView, action: Action, cx: Cx) -> Option<Vec<Effect>> {
    let study = cx.study;
    let ab = &mut study.ablation;
    let delta = match action {
        Action::Pane(RESTORE) => {
            let row = ab.history.iter().rev().nth(ab.history_row).cloned()?;
            ab.set = row.set;
            ab.mode = row.mode;
            return Some(study.evaluate_current());
        }
        Action::Pane(VIEW) => {
            state.showing_swaps = !state.showing_swaps;
            return Some(Vec::new());
        }
        Action::Pane(SWEEP) => return Some(sweep(study, cx.jobs)),
        Action::Pane(SWAP) => return Some(swap(state, study, cx.jobs)),
        other => rows_moved(other)?,
    };
    if state.showing_swaps {
        state.swap_row = moved(state.swap_row, delta, state.swaps.as_ref().map_or(0, |s| s.rows.len()));
    } else {
        ab.history_row = moved(ab.history_row, delta, ab.history.len());
    }
    Some(Vec::new())
}

fn sweep(study: &Study, jobs: &crate::tui::jobs::Jobs) -> Vec<Effect> {
    if let Some(why) = jobs.refuse_long_job(study.ready) {
        return vec![Effect::Notice(why)];
    }
    vec![Effect::Send(Command::Sweep { layer: study.layer, mode: study.ablation.mode })]
}

fn swap(state: &mut AblationView, study: &Study, jobs: &crate::tui::jobs::Jobs) -> Vec<Effect> {
    if let Some(why) = jobs.refuse_long_job(study.ready) {
        return vec![Effect::Notice(why)];
    }
    state.showing_swaps = true;
    let (donor, recipient) = (study.reference, study.subject);
    vec![Effect::FocusOwner, Effect::Send(Command::Swap { donor, recipient })]
}

/// A sweep's result: kept per layer for the Channels table and the strip.
pub fn swept(study: &mut Study, layer: Layer, mode: AblationMode, rows: Vec<SweepRow>, complete: bool) -> Vec<Effect> {
    let stopped = (!complete)
        .then(|| Effect::Notice(format!("sweep of {layer} stopped after {} of {} units", rows.len(), layer.units())));
    study.ablation.sweeps.insert(layer, SweepResult { mode, rows, complete });
    stopped.into_iter().collect()
}

pub fn swapped(state: &mut AblationView, swaps: Box<Swaps>) -> Vec<Effect> {
    let stopped = swaps.rows.is_empty().then(|| Effect::Notice("layer swaps stopped; nothing measured".into()));
    state.swap_row = 0;
    state.swaps = Some(swaps);
    stopped.into_iter().collect()
}

const METRIC_WIDTHS: [u16; 4] = [7, 7, 7, 7];

fn metric_cells(m: Option<&Metrics>) -> [String; 4] {
    [
        number(m.map(|m| m.clean_acc), 2),
        number(m.map(|m| m.poison_acc), 2),
        number(m.map(|m| m.asr_non_target), 2),
        number(m.map(|m| m.rehab_acc), 2),
    ]
}

/// The ablation set's result in one line, drawn where Space is pressed (the
/// Channels pane) so it is seen without a trip to this pane: the studied
/// model's accuracies with `set` ablated and their change from `before`.
pub fn result_line(set: &str, ablated: Option<&Metrics>, before: Option<&Metrics>, asr: &str) -> Line<'static> {
    if set.is_empty() {
        return Line::from("Space ablates the selected unit; its result shows here").fg(DIM);
    }
    let Some(ablated) = ablated else { return Line::from(format!("set {set}: evaluating…")).fg(WARN) };
    let part = |name: &str, f: fn(&Metrics) -> f64| match before {
        Some(b) => format!("{name} {:.1} % {:+.1}", f(ablated), f(ablated) - f(b)),
        None => format!("{name} {:.1} %", f(ablated)),
    };
    let parts = [part("clean", |m| m.clean_acc), part("poison", |m| m.poison_acc), part(asr, |m| m.asr_non_target)];
    Line::from(vec![Span::styled(format!("set {set}: "), Style::new().fg(WARN)), Span::raw(parts.join(" · "))])
}

pub fn draw(frame: &mut Frame, area: Rect, view: &View, state: &AblationView) {
    let study = view.study;
    // The swap table takes the sweep strip's rows (the Channels pane still has the sweep).
    let strip = if state.showing_swaps { 0 } else { 5 };
    let [status, metrics, sweep, history] = area.layout(&Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(5),
        Constraint::Length(strip),
        Constraint::Fill(1),
    ]));
    let ab = &study.ablation;
    let line_state = if view.jobs.is_running(Job::Evaluate) {
        Span::styled(" · evaluating…", Style::new().fg(WARN))
    } else if !study.ready && !ab.set.is_empty() {
        Span::styled(" · waiting for the models", Style::new().fg(DIM))
    } else if let Some(result) = ab.result.as_ref().filter(|_| !ab.set.is_empty()) {
        Span::styled(format!(" · {:.0} ms", result.seconds * 1e3), Style::new().fg(DIM))
    } else {
        Span::raw("")
    };
    draw_line(
        frame,
        Line::from(vec![
            "mode ".into(),
            Span::styled(ab.mode.to_string(), Style::new().fg(ACCENT).bold()),
            " (m) · set ".into(),
            Span::styled(ab.set.to_string(), Style::new().fg(if ab.set.is_empty() { DIM } else { WARN }).bold()),
            " (Space adds, c clears)".fg(DIM),
            line_state,
        ]),
        status,
    );
    metrics_table(frame, metrics, study);
    sweep_strip(frame, sweep, view);
    if state.showing_swaps {
        swaps_table(frame, history, view, state);
    } else {
        history_table(frame, history, study);
    }
}

fn metrics_table(frame: &mut Frame, area: Rect, study: &Study) {
    let base = study.base.as_ref();
    let ablated = study.ablation.result.as_ref().map(|e| &e.metrics);
    let models = [study.reference, study.subject].map(|k| (k.name(), base.and_then(|b| b.get(k))));
    metrics_rows(frame, area, models, ablated, (study.ablation.set.is_empty(), study.asr_heading()));
}

/// The compared model's and the studied model's metrics, the studied model's
/// with the set ablated (`None` while unknown) and the change; the ASR column
/// headed `asr` (`Study::asr_heading`).
pub fn metrics_rows(
    frame: &mut Frame,
    area: Rect,
    [(reference, reference_metrics), (subject, poisoned)]: [(&str, Option<&Metrics>); 2],
    ablated: Option<&Metrics>,
    (empty_set, asr): (bool, String),
) {
    // `*`: the change's 95 % interval excludes zero.
    let delta = |rate: Rate| match (ablated, poisoned) {
        (Some(a), Some(p)) => marked_delta(rate.of(a) - rate.of(p), a.differs(p, rate)),
        _ => "–".into(),
    };
    let line = |name: &str, cells: [String; 4]| row(std::iter::once(name.to_string()).chain(cells), 1);
    let rows = vec![
        line(&format!("{reference} model"), metric_cells(reference_metrics)),
        line(&format!("{subject} model"), metric_cells(poisoned)),
        line(&format!("{subject} + set"), metric_cells(ablated.or(if empty_set { poisoned } else { None })))
            .style(Style::new().fg(WARN)),
        line("  change", [delta(Rate::Clean), delta(Rate::Poison), delta(Rate::AsrNonTarget), delta(Rate::Rehab)])
            .style(Style::new().add_modifier(Modifier::ITALIC)),
    ];
    let widths = std::iter::once(Constraint::Length(15)).chain(METRIC_WIDTHS.map(Constraint::Length));
    let header = row(["% of test set".into(), "clean".into(), "poison".into(), asr, "rehab".into()], 1)
        .style(Style::new().bold());
    frame.render_widget(Table::new(rows, widths).header(header), area);
}

/// The selected layer's sweep as three coloured strips (clean, poison, rehab
/// accuracy with each unit ablated alone; two units per cell when narrow).
fn sweep_strip(frame: &mut Frame, area: Rect, view: &View) {
    let study = view.study;
    let layer = study.layer;
    if let Some(running) = view.jobs.get(Job::Sweep) {
        return sweep_progress(frame, area, running, study.ablation.mode);
    }
    let Some(sweep) = study.ablation.sweeps.get(&layer) else {
        let text = if study.ready {
            format!("No sweep of {layer} yet: w ablates each unit alone.")
        } else {
            "Sweeps run once the models are ready.".into()
        };
        placeholder(frame, area, &text);
        return;
    };
    let note = if sweep.complete { String::new() } else { " (stopped early)".into() };
    let rows: Vec<&Metrics> = sweep.rows.iter().map(|r| &r.metrics).collect();
    sweep_heat(frame, area, format!("sweep {layer} ({}){note}", sweep.mode), &rows);
}

/// A running sweep's label and gauge.
pub fn sweep_progress(frame: &mut Frame, area: Rect, running: &Running, mode: AblationMode) {
    let [label, gauge] = area.layout(&Layout::vertical([Constraint::Length(1), Constraint::Length(1)]));
    draw_line(frame, Line::from(format!("{} ({mode}) — x stops", running.label)), label);
    let (done, total) = (running.done, running.total);
    let ratio = done as f64 / total.max(1) as f64;
    frame.render_widget(
        Gauge::default().ratio(ratio).label(format!("{done}/{total}")).gauge_style(Style::new().fg(ACCENT)),
        gauge,
    );
}

/// A sweep's units as three strips of colour, one per headline accuracy.
pub fn sweep_heat(frame: &mut Frame, area: Rect, title: String, rows: &[&Metrics]) {
    let label_width = 7u16;
    let room = area.width.saturating_sub(label_width) as usize;
    let per_cell = if rows.len() <= room { 1 } else { rows.len().div_ceil(room.max(1)).max(2) };
    let mut lines = vec![Line::from(format!("{title}, black 0 % → yellow 100 %")).fg(DIM)];
    for (name, accuracy) in Metrics::HEADLINE {
        let values: Vec<f64> = rows.iter().map(|r| accuracy(r)).collect();
        let mut spans = vec![Span::raw(format!("{name:<7}"))];
        let colour = |v: f64| {
            let c = heat((v / 100.0) as f32);
            Color::Rgb(c[0], c[1], c[2])
        };
        for chunk in values.chunks(per_cell) {
            // Two units per cell share it (left, right); more take their lowest.
            let low = |c: &[f64]| c.iter().copied().fold(f64::INFINITY, f64::min);
            spans.push(match chunk {
                [a] => Span::styled("█", Style::new().fg(colour(*a))),
                [a, b] => Span::styled("▌", Style::new().fg(colour(*a)).bg(colour(*b))),
                many => Span::styled("█", Style::new().fg(colour(low(many)))),
            });
        }
        lines.push(Line::from(spans));
    }
    let tick_every = if per_cell <= 2 { 8 } else { 8 * per_cell };
    let ticks: String = (0..rows.len().div_ceil(per_cell))
        .map(|cell| if (cell * per_cell) % tick_every == 0 { '╵' } else { ' ' })
        .collect();
    lines.push(Line::from(format!("{:<7}{ticks}  (a tick every {tick_every} units)", "unit 0")).fg(DIM));
    frame.render_widget(Paragraph::new(fit_lines(lines, area.width)), area);
}

/// The layer swaps as a table: the layers copied, the metrics of the result.
fn swaps_table(frame: &mut Frame, area: Rect, view: &View, state: &AblationView) {
    let Some(swaps) = state.swaps.as_deref().filter(|s| !s.rows.is_empty()) else {
        let text = match view.jobs.get(Job::Swap) {
            Some(running) => format!("{}…", running.text()),
            None => format!(
                "Layer swaps: W copies every subset of the {}'s layers into the {} model (o: back to the history).",
                view.study.reference, view.study.subject
            ),
        };
        placeholder(frame, area, &text);
        return;
    };
    let table = swap_table(&swaps.rows);
    let [title, body] = area.layout(&Layout::vertical([Constraint::Length(1), Constraint::Fill(1)]));
    let caption = format!("{} layers into {} · e exports · o: history", swaps.donor, swaps.recipient);
    draw_line(frame, Line::from(caption).fg(DIM), title);
    let rows = table.rows.iter().map(|r| row(r.iter().cloned(), 1));
    let names = table.rows.iter().map(|r| r[0].chars().count()).max().unwrap_or(0) as u16;
    let widths = std::iter::once(Constraint::Length(names.max(14))).chain(METRIC_WIDTHS.map(Constraint::Length));
    let header =
        row(["layers swapped".into(), "clean".into(), "poison".into(), view.study.asr_heading(), "rehab".into()], 1)
            .style(Style::new().bold());
    let visible = body.height.saturating_sub(1) as usize;
    let selected = state.swap_row.min(table.rows.len() - 1);
    let mut table_state =
        TableState::new().with_offset(scroll_offset(selected, table.rows.len(), visible)).with_selected(Some(selected));
    let widget = Table::new(rows, widths)
        .header(header)
        .row_highlight_style(Style::new().fg(ACCENT).add_modifier(Modifier::REVERSED));
    frame.render_stateful_widget(widget, body, &mut table_state);
}

fn history_table(frame: &mut Frame, area: Rect, study: &Study) {
    let history = &study.ablation.history;
    let rows = history.iter().rev().map(|e| (e.set.to_string(), e.model, e.mode, &e.metrics)).collect();
    history_rows(frame, area, rows, study.ablation.history_row);
}

/// Every set tried (newest first: set, the model it was ablated in, mode,
/// metrics), the cursor on `selected`.
pub fn history_rows(
    frame: &mut Frame,
    area: Rect,
    history: Vec<(String, ModelKind, AblationMode, &Metrics)>,
    selected: usize,
) {
    if history.is_empty() {
        placeholder(frame, area, "History: every set you try appears here (Enter restores one).");
        return;
    }
    let len = history.len();
    let rows = history.into_iter().map(|(set, model, mode, metrics)| {
        let [clean, poison, _, rehab] = metric_cells(Some(metrics));
        row([set, model.to_string(), mode.to_string(), clean, poison, rehab], 3)
    });
    let header = row(["history: set", "model", "mode", "clean", "poison", "rehab"].map(String::from), 3)
        .style(Style::new().bold());
    let widths = [
        Constraint::Fill(1),
        Constraint::Length(9),
        Constraint::Length(6),
        Constraint::Length(6),
        Constraint::Length(6),
        Constraint::Length(6),
    ];
    let visible = area.height.saturating_sub(1) as usize;
    let row = selected.min(len - 1);
    let mut state = TableState::new().with_offset(scroll_offset(row, len, visible)).with_selected(Some(row));
    let table = Table::new(rows, widths)
        .header(header)
        .row_highlight_style(Style::new().fg(ACCENT).add_modifier(Modifier::REVERSED));
    frame.render_stateful_widget(table, area, &mut state);
}
