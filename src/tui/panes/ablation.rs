//! The ablation set and its effect: metrics of the clean model, the poisoned
//! model and the poisoned model with the set ablated (with deltas), the layer's
//! sweep heatmap, and the history of every set tried.

use super::{number, placeholder, row};
use crate::engine::metrics::Metrics;
use crate::picture::heat;
use crate::tui::app::App;
use crate::tui::layout::scroll_offset;
use crate::tui::render::{ACCENT, DIM, WARN};
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style, Stylize};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Gauge, Paragraph, Table, TableState};

const METRIC_WIDTHS: [u16; 4] = [7, 7, 7, 7];

fn metric_cells(m: Option<&Metrics>) -> [String; 4] {
    [
        number(m.map(|m| m.clean_acc), 2),
        number(m.map(|m| m.poison_acc), 2),
        number(m.map(|m| m.asr_non_target), 2),
        number(m.map(|m| m.rehab_acc), 2),
    ]
}

pub fn draw(frame: &mut Frame, area: Rect, app: &App) {
    let [status, metrics, sweep, history] = area.layout(&Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(5),
        Constraint::Length(5),
        Constraint::Fill(1),
    ]));
    let ab = &app.ablation;
    let state = if ab.pending {
        Span::styled(" · evaluating…", Style::new().fg(WARN))
    } else if !app.ready && !ab.set.is_empty() {
        Span::styled(" · waiting for the models", Style::new().fg(DIM))
    } else if let Some(result) = ab.result.as_ref().filter(|_| !ab.set.is_empty()) {
        Span::styled(format!(" · {:.0} ms", result.seconds * 1e3), Style::new().fg(DIM))
    } else {
        Span::raw("")
    };
    frame.render_widget(
        Line::from(vec![
            "mode ".into(),
            Span::styled(ab.mode.to_string(), Style::new().fg(ACCENT).bold()),
            " (m) · set ".into(),
            Span::styled(ab.set.to_string(), Style::new().fg(if ab.set.is_empty() { DIM } else { WARN }).bold()),
            " (Space adds, c clears)".fg(DIM),
            state,
        ]),
        status,
    );
    metrics_table(frame, metrics, app);
    sweep_strip(frame, sweep, app);
    history_table(frame, history, app);
}

fn metrics_table(frame: &mut Frame, area: Rect, app: &App) {
    let base = app.base.as_ref();
    let ablated = app.ablation.result.as_ref().map(|e| &e.metrics);
    let poisoned = base.map(|b| &b[1]);
    let delta = |f: fn(&Metrics) -> f64| match (ablated, poisoned) {
        (Some(a), Some(p)) => format!("{:+.2}", f(a) - f(p)),
        _ => "–".into(),
    };
    let line = |name: &str, cells: [String; 4]| row(std::iter::once(name.to_string()).chain(cells), 1);
    let rows = vec![
        line("clean model", metric_cells(base.map(|b| &b[0]))),
        line("poisoned model", metric_cells(poisoned)),
        line("poisoned + set", metric_cells(ablated.or(if app.ablation.set.is_empty() { poisoned } else { None })))
            .style(Style::new().fg(WARN)),
        line(
            "  change",
            [delta(|m| m.clean_acc), delta(|m| m.poison_acc), delta(|m| m.asr_non_target), delta(|m| m.rehab_acc)],
        )
        .style(Style::new().add_modifier(Modifier::ITALIC)),
    ];
    let widths = std::iter::once(Constraint::Length(15)).chain(METRIC_WIDTHS.map(Constraint::Length));
    let header =
        row(["% of test set", "clean", "poison", "ASR¬8", "rehab"].map(String::from), 1).style(Style::new().bold());
    frame.render_widget(Table::new(rows, widths).header(header), area);
}

/// The selected layer's sweep as three coloured strips (clean, poison, rehab
/// accuracy with each unit ablated alone; two units per cell when narrow).
fn sweep_strip(frame: &mut Frame, area: Rect, app: &App) {
    let layer = app.layer;
    if let Some((sweeping, done, total)) = app.ablation.sweeping.filter(|(l, _, _)| *l == layer) {
        let [label, gauge] = area.layout(&Layout::vertical([Constraint::Length(1), Constraint::Length(1)]));
        frame.render_widget(Line::from(format!("sweeping {sweeping} ({}) — x stops", app.ablation.mode)), label);
        let ratio = done as f64 / total.max(1) as f64;
        frame.render_widget(
            Gauge::default().ratio(ratio).label(format!("{done}/{total}")).gauge_style(Style::new().fg(ACCENT)),
            gauge,
        );
        return;
    }
    let Some(sweep) = app.ablation.sweeps.get(&layer) else {
        let text = if app.ready {
            format!("No sweep of {layer} yet: w ablates each unit alone.")
        } else {
            "Sweeps run once the models are ready.".into()
        };
        placeholder(frame, area, &text);
        return;
    };
    let label_width = 7u16;
    let room = area.width.saturating_sub(label_width) as usize;
    let per_cell = if sweep.rows.len() <= room { 1 } else { 2 };
    let note = if sweep.complete { String::new() } else { " (stopped early)".into() };
    let mut lines = vec![Line::from(format!("sweep {layer} ({}){note}, black 0 % → yellow 100 %", sweep.mode)).fg(DIM)];
    for (i, name) in ["clean", "poison", "rehab"].iter().enumerate() {
        let values: Vec<f64> = sweep.rows.iter().map(|r| r.metrics.triple()[i]).collect();
        let mut spans = vec![Span::raw(format!("{name:<7}"))];
        for chunk in values.chunks(per_cell) {
            let colour = |v: f64| {
                let c = heat((v / 100.0) as f32);
                Color::Rgb(c[0], c[1], c[2])
            };
            spans.push(match chunk {
                [a, b] => Span::styled("▌", Style::new().fg(colour(*a)).bg(colour(*b))),
                [a, ..] => Span::styled("█", Style::new().fg(colour(*a))),
                [] => Span::raw(""),
            });
        }
        lines.push(Line::from(spans));
    }
    let ticks: String = (0..sweep.rows.len().div_ceil(per_cell))
        .map(|cell| if (cell * per_cell) % 8 == 0 { '╵' } else { ' ' })
        .collect();
    lines.push(Line::from(format!("{:<7}{ticks}  (a tick every 8 units)", "unit 0")).fg(DIM));
    frame.render_widget(Paragraph::new(lines), area);
}

fn history_table(frame: &mut Frame, area: Rect, app: &App) {
    let history = &app.ablation.history;
    if history.is_empty() {
        placeholder(frame, area, "History: every set you try appears here (Enter restores one).");
        return;
    }
    let rows = history.iter().rev().map(|e| {
        let [clean, poison, _, rehab] = metric_cells(Some(&e.metrics));
        row([e.set.to_string(), e.mode.to_string(), clean, poison, rehab], 2)
    });
    let header =
        row(["history: set", "mode", "clean", "poison", "rehab"].map(String::from), 2).style(Style::new().bold());
    let widths = [
        Constraint::Fill(1),
        Constraint::Length(6),
        Constraint::Length(6),
        Constraint::Length(6),
        Constraint::Length(6),
    ];
    let visible = area.height.saturating_sub(1) as usize;
    let row = app.ablation.history_row.min(history.len() - 1);
    let mut state = TableState::new().with_offset(scroll_offset(row, history.len(), visible)).with_selected(Some(row));
    let table = Table::new(rows, widths)
        .header(header)
        .row_highlight_style(Style::new().fg(ACCENT).add_modifier(Modifier::REVERSED));
    frame.render_stateful_widget(table, area, &mut state);
}
