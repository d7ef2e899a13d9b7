//! The Trigger pane: Neural Cleanse as it runs (every label's mask L1 as a bar,
//! the selected label's mask and painted trigger forming live), the anomaly index
//! and the flagged label once it finishes, unlearning's result beside the other
//! models, and feature visualisations of the selected unit for each model.

use super::common::{Cx, Titled, View, placeholder, rows_moved, scroll_offset, titled_pictures};
use crate::data::dataset::Dataset;
use crate::engine::cleanse::{CleanseConfig, RecoveryProgress, RecoveryReport};
use crate::engine::lab::ModelKind;
use crate::engine::metrics::Metrics;
use crate::picture::{Heatmap, Palette, Picture};
use crate::tui::effect::{Effect, Popup, Question};
use crate::tui::fit::{draw_line, fit_lines};
use crate::tui::images::{ImageStore, key_of};
use crate::tui::keys::{Action, Binding, PaneKey, Scope, ch};
use crate::tui::protocol::{Command, Job, Visualizations};
use crate::tui::theme::{ACCENT, BAD, DIM, WARN};
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Style, Stylize};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Row, Table};

/// Everything the pane shows, kept by the app.
#[derive(Debug, Clone, Default)]
pub struct TriggerState {
    /// The latest snapshot of a recovery in progress.
    pub progress: Option<Box<RecoveryProgress>>,
    /// The finished recovery (shown once no newer one is running).
    pub report: Option<Box<RecoveryReport>>,
    /// The selected row (a label).
    pub row: usize,
    /// The unlearned model: the label it unlearned and its metrics.
    pub unlearned: Option<(u8, Metrics)>,
    /// The last visualisations.
    pub visuals: Option<Box<Visualizations>>,
    /// The settings a recovery runs with (the reference's by default).
    pub config: CleanseConfig,
}

/// One label's line, from a finished report or a live snapshot.
pub struct LabelRow<'a> {
    pub label: u8,
    pub l1: f64,
    pub anomaly: Option<f64>,
    pub success: Option<f64>,
    pub cost: Option<f64>,
    pub flagged: bool,
    pub mask: &'a [f32],
    pub pattern: &'a [f32],
}

const RECOVER: PaneKey = PaneKey("trigger.recover");
const UNLEARN: PaneKey = PaneKey("trigger.unlearn");
const VISUALIZE: PaneKey = PaneKey("trigger.visualize");

pub const KEYS: &[Binding] = &[
    crate::bind!(&[ch('R')], "R", Action::Pane(RECOVER), Scope::Main, "Neural Cleanse: the trigger", Some("recover")),
    crate::bind!(&[ch('u')], "u", Action::Pane(UNLEARN), Scope::Main, "unlearn the flagged trigger", None),
    crate::bind!(&[ch('v')], "v", Action::Pane(VISUALIZE), Scope::Main, "visualise the selected unit", None),
];

pub fn handle(state: &mut TriggerState, action: Action, cx: Cx) -> Option<Vec<Effect>> {
    let recovering = cx.jobs.is_running(Job::Recover);
    Some(match action {
        // Both write into the run: they ask first (`recover`, `unlearn` on yes).
        Action::Pane(RECOVER) => ask(Question::Recover, &cx),
        Action::Pane(UNLEARN) => match unlearnable(state) {
            Some(why) => vec![Effect::Notice(why)],
            None => ask(Question::Unlearn, &cx),
        },
        Action::Pane(VISUALIZE) if let Some(g) = cx.study.graph.as_deref() => {
            let (site, unit) = (g.selected().name.clone(), g.selected_unit());
            long(Command::GraphVisualize { site, unit }, false, &cx)
        }
        Action::Pane(VISUALIZE) => {
            let (layer, unit) = (cx.study.layer, cx.study.selected_unit());
            long(Command::Visualize { layer, unit }, false, &cx)
        }
        other => state.step(rows_moved(other)?, recovering),
    })
}

/// A long job's command, or why it cannot start now.
fn long(command: Command, focus: bool, cx: &Cx) -> Vec<Effect> {
    if let Some(why) = cx.jobs.refuse_long_job(cx.study.ready) {
        return vec![Effect::Notice(why)];
    }
    let focus = focus.then_some(Effect::FocusOwner);
    focus.into_iter().chain([Effect::Send(command)]).collect()
}

/// The question, unless the job could not start anyway (then why not).
fn ask(question: Question, cx: &Cx) -> Vec<Effect> {
    match cx.refuse_write().or_else(|| cx.jobs.refuse_long_job(cx.study.ready)) {
        Some(why) => vec![Effect::Notice(why)],
        None => vec![Effect::Popup(Popup::Confirm(question))],
    }
}

fn unlearnable(state: &TriggerState) -> Option<String> {
    match &state.report {
        None => Some("recover the trigger first (R)".into()),
        Some(r) if r.flagged.is_empty() => Some("no label is flagged: nothing to unlearn".into()),
        Some(_) => None,
    }
}

/// The recovery, once the user said yes.
pub fn recover(state: &mut TriggerState, cx: Cx) -> Vec<Effect> {
    state.progress = None;
    long(Command::Recover { config: state.config.clone() }, true, &cx)
}

/// Unlearning, once the user said yes.
pub fn unlearn(state: &TriggerState, cx: Cx) -> Vec<Effect> {
    match unlearnable(state) {
        Some(why) => vec![Effect::Notice(why)],
        None => long(Command::Unlearn, true, &cx),
    }
}

impl TriggerState {
    /// A finished recovery: its most anomalous label is selected.
    pub fn recovered(&mut self, report: Box<RecoveryReport>) {
        self.progress = None;
        self.row =
            report.most_anomalous().and_then(|t| report.labels.iter().position(|l| l.label == t.label)).unwrap_or(0);
        self.report = Some(report);
    }

    pub fn stopped(&mut self, what: &str) -> Vec<Effect> {
        self.progress = None;
        vec![Effect::Notice(format!("{what} stopped; nothing saved"))]
    }

    /// The rows to show: the live snapshot while recovering, else the report.
    pub fn rows(&self, recovering: bool) -> Vec<LabelRow<'_>> {
        match (&self.progress, &self.report) {
            (Some(p), _) if recovering => (0..p.labels.len())
                .map(|i| LabelRow {
                    label: p.labels[i],
                    l1: p.l1[i],
                    anomaly: None,
                    success: p.success[i],
                    cost: Some(p.cost[i]),
                    flagged: false,
                    mask: &p.masks[i],
                    pattern: &p.patterns[i],
                })
                .collect(),
            (_, Some(r)) => r
                .labels
                .iter()
                .map(|t| LabelRow {
                    label: t.label,
                    l1: t.l1,
                    anomaly: Some(t.anomaly_index),
                    success: Some(t.success),
                    cost: None,
                    flagged: t.flagged,
                    mask: &t.mask,
                    pattern: &t.pattern,
                })
                .collect(),
            _ => Vec::new(),
        }
    }

    /// Moves the label cursor, clamped to the rows there are.
    pub fn step(&mut self, delta: i64, recovering: bool) -> Vec<Effect> {
        self.row = crate::tui::cursor::moved(self.row, delta, self.rows(recovering).len());
        Vec::new()
    }

    /// What the status line says; `narrow` names the flagged label by its number
    /// alone (a class name may not fit).
    fn status(&self, recovering: bool, narrow: bool) -> (String, ratatui::style::Color) {
        if let (true, Some(p)) = (recovering, &self.progress) {
            return (format!("recovering: epoch {} · step {}/{} · x stops", p.epoch + 1, p.step, p.total_steps), WARN);
        }
        if recovering {
            return ("recovering: starting".into(), WARN);
        }
        match &self.report {
            Some(r) => match r.most_anomalous() {
                Some(t) => (
                    format!(
                        "label {} flagged · anomaly index {:.2} · L1 {:.1} · {}",
                        if narrow { t.label.to_string() } else { r.dataset.label(t.label) },
                        t.anomaly_index,
                        t.l1,
                        t.share_on_trigger("% of mask on the trigger")
                    ),
                    BAD,
                ),
                None => {
                    let top = r.labels.iter().map(|t| t.anomaly_index).fold(0.0, f64::max);
                    (format!("no label flagged (largest anomaly index {top:.2})"), ACCENT)
                }
            },
            None => ("R: Neural Cleanse on every label".into(), DIM),
        }
    }
}

/// Columns the mask and the painted trigger keep beside the table at least.
const PICTURES: u16 = 34;

pub fn draw(frame: &mut Frame, area: Rect, view: &View, state: &TriggerState, images: &mut ImageStore) {
    let recovering = view.jobs.is_running(Job::Recover);
    let [status, body, models] =
        area.layout(&Layout::vertical([Constraint::Length(1), Constraint::Fill(1), Constraint::Length(4)]));
    let (mut text, mut colour) = state.status(recovering, false);
    if text.chars().count() > status.width as usize {
        (text, colour) = state.status(recovering, true);
    }
    draw_line(frame, Line::from(text).fg(colour).bold(), status);
    let rows = state.rows(recovering);
    if rows.is_empty() {
        // Visualisations need no recovery: under the explanation when there are some.
        let [body, visuals] = match state.visuals.as_deref() {
            Some(_) => body.layout(&Layout::vertical([Constraint::Length(3), Constraint::Fill(1)])),
            None => [body, Rect::default()],
        };
        if let Some(v) = state.visuals.as_deref() {
            draw_visuals(frame, visuals, v, images);
        }
        placeholder(
            frame,
            body,
            "No recovery yet. R optimises, for every label, the smallest mask that sends clean images there; a backdoored label needs a far smaller one. u then unlearns the flagged trigger; v visualises the selected unit.",
        );
    } else {
        // The label column fits its class names (a digit's 6 columns) where the
        // pictures keep their room; else the labels go by number.
        let dataset = view.study.dataset();
        let named = rows.iter().map(|r| dataset.label(r.label).chars().count() as u16 + 1).fold(6, u16::max);
        let label_width = if body.width >= 38 + named + PICTURES { named } else { 6 };
        let [table, pictures] =
            body.layout(&Layout::horizontal([Constraint::Length(38 + label_width), Constraint::Fill(1)]));
        draw_table(frame, table, state, &rows, (dataset, label_width));
        draw_pictures(frame, pictures, state, recovering, images, &rows);
    }
    draw_models(frame, models, view, state);
}

fn draw_table(
    frame: &mut Frame,
    area: Rect,
    state: &TriggerState,
    rows: &[LabelRow],
    (dataset, label_width): (Dataset, u16),
) {
    let widest = rows.iter().map(|r| r.l1).fold(1e-9, f64::max);
    let label = |l: u8| if label_width > 6 { dataset.label(l) } else { l.to_string() };
    let bar_width = 12usize;
    let selected = state.row.min(rows.len() - 1);
    // The header takes a row; keep the selected label in view.
    let offset = scroll_offset(selected, rows.len(), area.height.saturating_sub(1) as usize);
    let lines: Vec<Row> = rows
        .iter()
        .enumerate()
        .skip(offset)
        .map(|(i, r)| {
            let filled = ((r.l1 / widest) * bar_width as f64).round() as usize;
            let bar = format!("{:<bar_width$}", "█".repeat(filled.min(bar_width)));
            let last = match (r.anomaly, r.cost) {
                (Some(a), _) => format!("{a:5.2}"),
                (None, Some(0.0)) => "0".into(),
                (None, Some(c)) => format!("{c:.0e}"),
                _ => "–".into(),
            };
            let cells = vec![
                format!("{}{}", if i == selected { "▶" } else { " " }, label(r.label)),
                format!("{:6.1}", r.l1),
                bar,
                last,
                r.success.map(|s| format!("{s:5.1}")).unwrap_or_else(|| "–".into()),
            ];
            let style = if r.flagged { Style::new().fg(BAD).bold() } else { Style::new() };
            Row::new(cells).style(if i == selected { style.reversed() } else { style })
        })
        .collect();
    let last_header = if rows.iter().any(|r| r.cost.is_some()) { "cost" } else { "anom." };
    let header = Row::new(vec!["label", "  L1", "mask L1", last_header, "succ%"]).style(Style::new().fg(DIM));
    let widths = [
        Constraint::Length(label_width),
        Constraint::Length(7),
        Constraint::Length(12),
        Constraint::Length(6),
        Constraint::Length(6),
    ];
    frame.render_widget(Table::new(lines, widths).header(header), area);
}

fn draw_pictures(
    frame: &mut Frame,
    area: Rect,
    state: &TriggerState,
    recovering: bool,
    images: &mut ImageStore,
    rows: &[LabelRow],
) {
    let row = &rows[state.row.min(rows.len() - 1)];
    let visuals = state.visuals.as_deref();
    let [top, bottom] = if visuals.is_some() {
        area.layout(&Layout::vertical([Constraint::Percentage(50), Constraint::Fill(1)]))
    } else {
        [area, Rect::default()]
    };
    let step = state.progress.as_ref().map(|p| p.step).unwrap_or(0);
    let key = key_of((row.label, step, recovering, row.l1.to_bits()));
    let side = (row.mask.len() as f64).sqrt() as usize;
    // Every channel of the pattern painted through the mask: a colour trigger in
    // colour, a grey one on the heat scale as before.
    let painted = crate::picture::painted(row.mask, row.pattern);
    let colour = painted.len() == 3 * row.mask.len();
    let mask = row.mask.to_vec();
    titled_pictures(
        frame,
        top,
        images,
        vec![
            Titled {
                title: format!("mask, label {}", row.label),
                slot: "trigger-mask",
                key,
                make: Box::new(move || Picture::of(&Heatmap::new(side, side, mask), Palette::Heat, 1.0)),
            },
            Titled {
                title: "mask × pattern".into(),
                slot: "trigger-painted",
                key,
                make: Box::new(move || {
                    if colour {
                        Picture::of_image(&painted, [3, side, side])
                    } else {
                        Picture::of(&Heatmap::new(side, side, painted), Palette::Heat, 1.0)
                    }
                }),
            },
        ],
    );
    if let Some(v) = visuals {
        draw_visuals(frame, bottom, v, images);
    }
}

/// Each model's feature visualisation of the unit, its value after optimising in the title.
fn draw_visuals(frame: &mut Frame, area: Rect, v: &Visualizations, images: &mut ImageStore) {
    let [caption, bottom] = area.layout(&Layout::vertical([Constraint::Length(1), Constraint::Fill(1)]));
    let text = format!("feature visualisation of {}:{} (its value after optimising)", v.site, v.unit);
    draw_line(frame, Line::from(text).fg(DIM), caption);
    let pictures = v
        .models
        .iter()
        .enumerate()
        .map(|(i, (kind, vis))| {
            let (image, shape) = (vis.image.clone(), vis.shape);
            Titled {
                title: format!("{kind} {:.1}", vis.activation),
                slot: ["vis-0", "vis-1", "vis-2", "vis-3"][i.min(3)],
                key: key_of((&v.site, v.unit, i, vis.activation.to_bits())),
                make: Box::new(move || Picture::of_image(&image, shape)),
            }
        })
        .collect();
    titled_pictures(frame, bottom, images, pictures);
}

/// The unlearned model's metrics under the study's three models', and what is running.
fn draw_models(frame: &mut Frame, area: Rect, view: &View, state: &TriggerState) {
    let line = |name: &str, m: &Metrics| {
        Line::from(format!(
            "{name:<10} clean {:6.2}  poison {:6.2}  rehab {:6.2}",
            m.clean_acc, m.poison_acc, m.rehab_acc
        ))
    };
    let base = view.study.base.iter().flat_map(|b| b.iter()).filter(|(k, _)| ModelKind::STUDY.contains(k));
    let mut lines: Vec<Line> = base.map(|(k, m)| line(k.name(), m)).collect();
    let (jobs, unlearned) = (view.jobs, &state.unlearned);
    match (jobs.get(Job::Unlearn), unlearned, jobs.get(Job::Visualize)) {
        (Some(running), _, _) => {
            lines.push(Line::from(Span::styled(format!("{}…", running.text()), Style::new().fg(WARN))))
        }
        (None, Some((label, m)), _) => {
            let mut l = line("unlearned", m);
            l.push_span(Span::styled(format!("  (label {label}'s recovered trigger)"), Style::new().fg(DIM)));
            lines.push(l);
        }
        (None, None, Some(running)) => lines.push(Line::from(format!("{}…", running.label)).fg(WARN)),
        _ => lines.push(Line::from("u unlearns it · v visualises the unit").fg(DIM)),
    }
    frame.render_widget(ratatui::widgets::Paragraph::new(fit_lines(lines, area.width)), area);
}
