//! The selected layer's channels: weight change, activation change and, once the
//! layer is swept, each channel's lone-ablation metrics; sortable, ablated marked.

use super::{number, row};
use crate::tui::app::App;
use crate::tui::columns::Column;
use crate::tui::layout::scroll_offset;
use crate::tui::render::{ACCENT, DIM, WARN};
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Modifier, Style, Stylize};
use ratatui::text::Line;
use ratatui::widgets::{Table, TableState};

/// The screen rows the table's data occupies, for a pane drawn at `area`: the
/// first row and how many are visible (border, caption and header above).
pub fn row_span(area: Rect) -> (u16, u16) {
    (area.y + 3, area.height.saturating_sub(4))
}

pub fn draw(frame: &mut Frame, area: Rect, app: &App) {
    let [caption, table_area] = area.layout(&Layout::vertical([Constraint::Length(1), Constraint::Fill(1)]));
    let sweep = app.ablation.sweeps.get(&app.layer);
    let sweep_note = match sweep {
        Some(s) => format!("swept ({})", s.mode),
        None => "w sweeps".into(),
    };
    frame.render_widget(
        Line::from(vec![
            format!("{} · {} units · ", app.layer, app.layer.units()).bold(),
            format!(
                "s sorts ({}{}) · {sweep_note}",
                app.sort.column.title(),
                if app.sort.descending { "↓" } else { "↑" }
            )
            .fg(DIM),
        ]),
        caption,
    );
    let rows = app.channel_rows();
    let cursor = app.cursor();
    let body: Vec<_> = rows
        .iter()
        .map(|r| {
            let swept = |i: usize| number(r.swept.map(|s| s[i]), 2);
            let cells = [
                if r.ablated { "✗".to_string() } else { String::new() },
                r.unit.to_string(),
                number(r.weight_change, 4),
                number(r.activation_change, 4),
                swept(0),
                swept(1),
                swept(2),
            ];
            let line = row(cells, 1);
            if r.ablated { line.style(Style::new().fg(WARN)) } else { line }
        })
        .collect();
    let titles = Column::ALL.map(|c| {
        let arrow = if c == app.sort.column { if app.sort.descending { "↓" } else { "↑" } } else { "" };
        format!("{}{arrow}", c.title())
    });
    let header = row(std::iter::once(String::new()).chain(titles), 1).style(Style::new().bold());
    let widths = [1, 5, 8, 8, 7, 7, 7].map(Constraint::Length);
    let visible = table_area.height.saturating_sub(1) as usize;
    let mut state =
        TableState::new().with_offset(scroll_offset(cursor, rows.len(), visible)).with_selected(Some(cursor));
    let table = Table::new(body, widths)
        .header(header)
        .row_highlight_style(Style::new().fg(ACCENT).add_modifier(Modifier::REVERSED));
    frame.render_stateful_widget(table, table_area, &mut state);
}
