//! Training: where the run is (phase, step, loss, batch accuracy, images/s, ETA,
//! device), the loss over every step, the probe accuracies during poison and
//! rehab fine-tuning, and the settings of the next run.

use super::line_dataset;
use crate::tui::app::App;
use crate::tui::render::{ACCENT, DIM, WARN};
use crate::tui::train_state::{Field, TrainState};
use ratatui::Frame;
use ratatui::layout::{Constraint, Direction, Layout, Rect};
use ratatui::style::{Color, Style, Stylize};
use ratatui::symbols::Marker;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Axis, Block, Chart, Dataset, GraphType, Paragraph};

/// At most `width` points: the mean of each run of consecutive losses.
pub fn loss_points(losses: &[(crate::engine::train::Phase, f32)], width: usize) -> Vec<(f64, f64)> {
    let bucket = losses.len().div_ceil(width.max(1)).max(1);
    losses
        .chunks(bucket)
        .enumerate()
        .map(|(i, c)| ((i * bucket) as f64, c.iter().map(|(_, l)| *l as f64).sum::<f64>() / c.len() as f64))
        .collect()
}

/// (x, clean), (x, poison), (x, rehab) series of the probe evaluations.
pub fn accuracy_series(state: &TrainState) -> [Vec<(f64, f64)>; 3] {
    [0, 1, 2].map(|i| state.evals.iter().map(|(x, p)| (*x, [p.clean_acc, p.poison_acc, p.rehab_acc][i])).collect())
}

pub fn draw(frame: &mut Frame, area: Rect, app: &App) {
    let [info, charts] = area.layout(&Layout::horizontal([Constraint::Length(44), Constraint::Fill(1)]).spacing(1));
    info_panel(frame, info, app);
    let direction = if charts.width >= 2 * charts.height * 3 { Direction::Horizontal } else { Direction::Vertical };
    let [loss, accuracy] =
        charts.layout(&Layout::new(direction, [Constraint::Fill(1), Constraint::Fill(1)]).spacing(2));
    loss_chart(frame, loss, &app.training);
    accuracy_chart(frame, accuracy, &app.training);
}

fn info_panel(frame: &mut Frame, area: Rect, app: &App) {
    let t = &app.training;
    let mut lines = Vec::new();
    let device = app.run.as_ref().map(|r| r.device.as_str()).unwrap_or("–");
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
            let what = if t.running {
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
    let verb = if t.running { "x stops" } else { "r retrains" };
    lines.push(Line::from(format!("next run · ←→ changes · {verb}")).fg(ACCENT));
    for (i, field) in Field::ALL.iter().enumerate() {
        let selected = i == t.field && app.focus == crate::tui::pane::Pane::Training;
        let text = format!("{} {:<17}{:>8}", if selected { "›" } else { " " }, field.label(), field.value(&t.config));
        lines.push(if selected { Line::from(text).reversed() } else { Line::from(text) });
    }
    frame.render_widget(Paragraph::new(lines), area);
}

fn axis_labels(low: f64, high: f64, decimals: usize) -> Vec<Line<'static>> {
    vec![Line::from(format!("{low:.decimals$}")), Line::from(format!("{high:.decimals$}"))]
}

fn loss_chart(frame: &mut Frame, area: Rect, t: &TrainState) {
    let points = loss_points(&t.losses, area.width.saturating_sub(8) as usize * 2);
    let top = points.iter().map(|p| p.1).fold(1e-6, f64::max);
    let steps = t.losses.len().max(1) as f64;
    let phases: Vec<String> = t.phase_starts.iter().map(|(p, s)| format!("{p} from {s}")).collect();
    let chart = Chart::new(vec![
        Dataset::default()
            .marker(Marker::Braille)
            .graph_type(GraphType::Line)
            .style(Style::new().fg(WARN))
            .data(&points),
    ])
    .block(Block::new().title(Line::from(vec![" loss per step ".bold(), phases.join(", ").fg(DIM)])))
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
    let colours = [Color::Green, Color::LightRed, Color::LightBlue];
    let names = ["clean", "poison", "rehab"];
    let datasets = series
        .iter()
        .zip(colours.iter().zip(names))
        .map(|(data, (&colour, name))| line_dataset(name.into(), colour, data))
        .collect();
    let chart = Chart::new(datasets)
        .block(Block::new().title(Line::from(" probe accuracy % ").bold()))
        .x_axis(Axis::default().bounds([low, high.max(low + 1.0)]).labels(axis_labels(low, high, 0)))
        .y_axis(Axis::default().bounds([0.0, 100.0]).labels(axis_labels(0.0, 100.0, 0)));
    frame.render_widget(chart, area);
}
