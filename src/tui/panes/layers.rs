//! The four layers with their unit counts and how much poisoning changed them.

use super::{number, row};
use crate::engine::layer::Layer;
use crate::tui::app::App;
use crate::tui::render::{ACCENT, WARN};
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Modifier, Style, Stylize};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Paragraph, Table};

/// The screen row of the first layer, for a pane drawn at `area` (border and header above).
pub fn first_row(area: Rect) -> u16 {
    area.y + 2
}

pub fn draw(frame: &mut Frame, area: Rect, app: &App) {
    let diffs = app.models.as_ref().map(|m| &m.diffs);
    let rows: Vec<_> = Layer::ALL
        .iter()
        .map(|&layer| {
            let d = diffs.map(|d| &d[layer.position()].total);
            let ablated = app.ablation.set.units_in(layer).len();
            let style = if layer == app.layer {
                Style::new().fg(ACCENT).add_modifier(Modifier::REVERSED)
            } else {
                Style::new()
            };
            row(
                [
                    layer.name().to_string(),
                    layer.units().to_string(),
                    number(d.map(|d| d.mean_abs), 5),
                    number(d.map(|d| d.max), 4),
                    if ablated > 0 { ablated.to_string() } else { String::new() },
                ],
                1,
            )
            .style(style)
        })
        .collect();
    let [table_area, bars_area] = area.layout(&Layout::vertical([Constraint::Length(5), Constraint::Fill(1)]));
    let widths = [
        Constraint::Length(5),
        Constraint::Length(5),
        Constraint::Length(8),
        Constraint::Length(7),
        Constraint::Length(3),
    ];
    let header = row(["layer", "units", "mean|Δw|", "max|Δw|", "abl"].map(String::from), 1).style(Style::new().bold());
    frame.render_widget(Table::new(rows, widths).header(header), table_area);
    let Some(diffs) = diffs else { return };
    // Bars of mean |Δw| relative to the most-changed layer: the study found most
    // of the change in the first and last layers.
    let top = diffs.iter().map(|d| d.total.mean_abs).fold(1e-12, f64::max);
    let width = bars_area.width.saturating_sub(7) as f64;
    let mut lines = vec![Line::from("poisoned − clean, mean |Δw|:".italic())];
    for d in diffs {
        let bar = "█".repeat((d.total.mean_abs / top * width).round() as usize);
        lines.push(Line::from(vec![
            Span::raw(format!("{:<6} ", d.layer.name())),
            Span::styled(bar, Style::new().fg(WARN)),
        ]));
    }
    frame.render_widget(Paragraph::new(lines), bars_area);
}
