//! Training: where the run is (phase, step, loss, batch accuracy, images/s, ETA,
//! device), the loss over every step, the probe accuracies during poison and
//! rehab fine-tuning, and the settings of the next run.

use super::common::{Cx, View, legend, line_dataset, rows_moved};
use crate::engine::lab::ModelKind;
use crate::engine::train::Phase;
use crate::tui::cursor::moved;
use crate::tui::effect::{Effect, Popup, Question};
use crate::tui::fit::fit_lines;
use crate::tui::keys::{Action, Binding, PaneKey, Scope, ch, key};
use crate::tui::pictures::{accuracy_series, loss_points_by_phase};
use crate::tui::protocol::{Command, Job};
use crate::tui::study::Study;
use crate::tui::theme::{ACCENT, ACCURACY, ACCURACY_NAMES, DIM, PHASES, WARN};
use crate::tui::train_state::{Field, TrainState};
use ratatui::Frame;
use ratatui::crossterm::event::KeyCode;
use ratatui::layout::{Constraint, Direction, Layout, Rect};
use ratatui::style::{Color, Style, Stylize};
use ratatui::symbols::Marker;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Axis, Block, Chart, Dataset, GraphType, Paragraph};

const LOWER: PaneKey = PaneKey("training.lower");
const RAISE: PaneKey = PaneKey("training.raise");
const RETRAIN: PaneKey = PaneKey("training.retrain");
const SHOW: PaneKey = PaneKey("training.show");

pub const KEYS: &[Binding] = &[
    crate::bind!(&[key(KeyCode::Left), ch('h')], "←/h", Action::Pane(LOWER), Scope::Focused, "lower the setting", None),
    crate::bind!(
        &[key(KeyCode::Right), ch('l')],
        "→/l",
        Action::Pane(RAISE),
        Scope::Focused,
        "raise the setting",
        Some("change")
    ),
    crate::bind!(&[ch('r')], "r", Action::Pane(RETRAIN), Scope::Main, "retrain with the settings", Some("retrain")),
    crate::bind!(&[ch('t')], "t", Action::Pane(SHOW), Scope::Main, "training view", Some("train")),
];

fn phase_colour(phase: Phase) -> Color {
    let i = Phase::ALL.iter().chain(&[Phase::Unlearn]).position(|&p| p == phase).unwrap_or(0);
    PHASES[i.min(PHASES.len() - 1)]
}

pub fn handle(state: &mut TrainState, action: Action, cx: Cx) -> Option<Vec<Effect>> {
    match action {
        Action::Pane(LOWER) | Action::Pane(RAISE) => {
            state.field().adjust(&mut state.config, action == Action::Pane(RAISE));
        }
        Action::Pane(RETRAIN) => return Some(retrain(state, cx)),
        Action::Pane(SHOW) => return Some(vec![Effect::FocusOwner]),
        other => state.field = moved(state.field, rows_moved(other)?, Field::ALL.len()),
    }
    Some(Vec::new())
}

fn retrain(state: &mut TrainState, cx: Cx) -> Vec<Effect> {
    if cx.jobs.is_running(Job::Train) {
        return vec![Effect::Notice("training is already running (x stops it)".into())];
    }
    if let Some(why) = cx.refuse_write() {
        return vec![Effect::Notice(why)];
    }
    let Some(run) = cx.study.run.as_ref() else { return vec![Effect::Notice("the run is not open".into())] };
    if run.missing.len() < Phase::ALL.len() {
        return vec![Effect::Popup(Popup::Confirm(Question::Retrain))];
    }
    start(state, Phase::ALL.to_vec())
}

/// Trains `phases` with the pane's settings, in front of the user.
pub fn start(state: &mut TrainState, phases: Vec<Phase>) -> Vec<Effect> {
    state.restart();
    vec![Effect::FocusOwner, Effect::Send(Command::Train { config: Box::new(state.config.clone()), phases })]
}

/// A training run ended: the models are loaded when every phase is saved.
pub fn finished(
    state: &mut TrainState,
    study: &mut Study,
    cancelled: bool,
    missing: Vec<Phase>,
    seconds: f64,
) -> Vec<Effect> {
    let outcome = if cancelled { "stopped" } else { "finished" };
    state.outcome = Some(format!("{outcome} after {seconds:.0} s"));
    let mut effects = vec![Effect::Notice(format!("training {outcome}"))];
    let complete = missing.is_empty() && !cancelled;
    if let Some(run) = study.run.as_mut() {
        run.missing = missing;
    }
    if complete {
        effects.push(study.load());
    }
    effects
}

pub fn draw(frame: &mut Frame, area: Rect, view: &View, state: &TrainState) {
    // A narrow pane keeps the settings compact so the charts keep some room.
    let info_width = if area.width < 100 { 33 } else { 44 };
    let [info, charts] =
        area.layout(&Layout::horizontal([Constraint::Length(info_width), Constraint::Fill(1)]).spacing(1));
    info_panel(frame, info, view, state);
    let direction = if charts.width >= 2 * charts.height * 3 { Direction::Horizontal } else { Direction::Vertical };
    let [loss, accuracy] =
        charts.layout(&Layout::new(direction, [Constraint::Fill(1), Constraint::Fill(1)]).spacing(2));
    loss_chart(frame, loss, state);
    accuracy_chart(frame, accuracy, state);
}

fn info_panel(frame: &mut Frame, area: Rect, view: &View, t: &TrainState) {
    let running = view.jobs.is_running(Job::Train);
    let mut lines = Vec::new();
    let device = view.study.run.as_ref().map(|r| r.device.as_str()).unwrap_or("–");
    match &t.progress {
        Some(p) => {
            let pct = 100.0 * p.step as f64 / p.total_steps.max(1) as f64;
            lines.push(Line::from(vec![
                Span::styled(p.phase.to_string(), Style::new().fg(WARN).bold()),
                format!(" · epoch {}/{} · step {}/{} ({pct:.0}%)", p.epoch + 1, p.epochs, p.step, p.total_steps).into(),
            ]));
            let loss = t.losses.last().map(|(_, l)| format!("{l:.4}")).unwrap_or_else(|| "–".into());
            lines.push(Line::from(format!("loss {loss} · batch acc {:.1} % · ETA {:.0} s", p.batch_acc, p.eta_s)));
            lines.push(Line::from(format!("{:.0} img/s · {:.0} s · {device}", p.images_per_sec, p.elapsed_s)).fg(DIM));
        }
        None => {
            let what = if running {
                "starting…".to_string()
            } else if t.losses.is_empty() {
                "No training yet.".into()
            } else {
                format!("saved run: {} logged steps", t.losses.len())
            };
            lines.push(Line::from(what).fg(DIM));
            lines.push(Line::from(format!("device {device}")).fg(DIM));
        }
    }
    if let Some(outcome) = &t.outcome {
        lines.push(Line::from(format!("last run {outcome}")).fg(DIM));
    }
    let verb = if running { "x stops" } else { "r retrains" };
    lines.push(Line::from(format!("next run (←→) · {verb}")).fg(ACCENT));
    for (i, field) in Field::ALL.iter().enumerate() {
        let selected = i == t.field && view.focused;
        let text = format!("{} {:<17}{:>8}", if selected { "›" } else { " " }, field.label(), field.value(&t.config));
        lines.push(if selected { Line::from(text).reversed() } else { Line::from(text) });
    }
    frame.render_widget(Paragraph::new(fit_lines(lines, area.width)), area);
}

fn axis_labels(low: f64, high: f64, decimals: usize) -> Vec<Line<'static>> {
    vec![Line::from(format!("{low:.decimals$}")), Line::from(format!("{high:.decimals$}"))]
}

fn loss_chart(frame: &mut Frame, area: Rect, t: &TrainState) {
    let segments = loss_points_by_phase(&t.losses, area.width.saturating_sub(8) as usize * 2);
    let top = segments.iter().flat_map(|(_, p)| p).map(|p| p.1).fold(1e-6, f64::max);
    let steps = t.losses.len().max(1) as f64;
    let datasets = segments
        .iter()
        .map(|(phase, points)| {
            Dataset::default()
                .marker(Marker::Braille)
                .graph_type(GraphType::Line)
                .style(Style::new().fg(phase_colour(*phase)))
                .data(points)
        })
        .collect();
    let mut phases: Vec<Phase> = segments.iter().map(|(p, _)| *p).collect();
    phases.dedup();
    let names: Vec<(String, Color)> =
        phases.iter().map(|&p| (ModelKind::of_phase(p).to_string(), phase_colour(p))).collect();
    let named: Vec<(&str, Color)> = names.iter().map(|(n, c)| (n.as_str(), *c)).collect();
    let chart = Chart::new(datasets)
        .block(Block::new().title(Line::from(" loss per step ").bold()).title_bottom(legend(&named)))
        .x_axis(Axis::default().bounds([0.0, steps]).labels(axis_labels(0.0, steps, 0)))
        .y_axis(Axis::default().bounds([0.0, top]).labels(axis_labels(0.0, top, 2)));
    frame.render_widget(chart, area);
}

fn accuracy_chart(frame: &mut Frame, area: Rect, t: &TrainState) {
    let series = accuracy_series(t);
    if series[0].is_empty() {
        let text = "Probe accuracies (clean, poison, rehab) appear during poison and rehab fine-tuning.";
        frame.render_widget(Paragraph::new(text).fg(DIM).wrap(ratatui::widgets::Wrap { trim: true }), area);
        return;
    }
    let (low, high) = series[0].iter().fold((f64::MAX, f64::MIN), |(l, h), p| (l.min(p.0), h.max(p.0)));
    let datasets = series
        .iter()
        .zip(ACCURACY.iter().zip(ACCURACY_NAMES))
        .map(|(data, (&colour, name))| line_dataset(name.into(), colour, data))
        .collect();
    let named: Vec<(&str, Color)> = ACCURACY_NAMES.into_iter().zip(ACCURACY).collect();
    let chart = Chart::new(datasets)
        .block(Block::new().title(Line::from(" probe accuracy % ").bold()).title_bottom(legend(&named)))
        // The legend is the block's bottom line, where it always fits.
        .hidden_legend_constraints((Constraint::Length(0), Constraint::Length(0)))
        .x_axis(Axis::default().bounds([low, high.max(low + 1.0)]).labels(axis_labels(low, high, 0)))
        .y_axis(Axis::default().bounds([0.0, 100.0]).labels(axis_labels(0.0, 100.0, 0)));
    frame.render_widget(chart, area);
}
