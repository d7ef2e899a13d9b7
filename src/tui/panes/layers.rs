//! The layers with their unit counts and how much the model under study differs
//! from the model it is compared with.

use super::common::{Cx, View, number, row, rows_moved};
use crate::engine::layer::Layer;
use crate::tui::effect::Effect;
use crate::tui::fit::fit_lines;
use crate::tui::keys::{Action, Binding, PaneKey, Scope, key};
use crate::tui::study::Study;
use crate::tui::theme::{ACCENT, WARN};
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Modifier, Style, Stylize};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Paragraph, Table};

pub const OPEN: PaneKey = PaneKey("layers.open");

pub const KEYS: &[Binding] = &[crate::bind!(
    &[key(ratatui::crossterm::event::KeyCode::Enter)],
    "Enter",
    Action::Pane(OPEN),
    Scope::Focused,
    "open the layer's channels",
    Some("open")
)];

pub fn handle(action: Action, cx: Cx) -> Option<Vec<Effect>> {
    if action == Action::Pane(OPEN) {
        return Some(vec![Effect::FocusNext]);
    }
    cx.study.change_layer(rows_moved(action)?);
    Some(Vec::new())
}

/// A click on a layer's row selects it (border and header above the first).
pub fn click(area: Rect, y: u16, study: &mut Study) {
    if let Some(layer) = y.checked_sub(area.y + 2).and_then(|i| Layer::ALL.get(i as usize)) {
        study.layer = *layer;
    }
}

pub fn draw(frame: &mut Frame, area: Rect, view: &View) {
    let study = view.study;
    let diffs = study.models.as_ref().and_then(|m| m.diff(study.reference, study.subject));
    let rows: Vec<_> = Layer::ALL
        .iter()
        .map(|&layer| {
            let d = diffs.map(|d| &d[layer.position()].total);
            let ablated = study.ablation.set.units_in(layer).len();
            let style = if layer == study.layer {
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
    let mut lines = vec![Line::from(format!("{} − {}, mean|Δw|:", study.subject, study.reference).italic())];
    for d in diffs {
        let bar = "█".repeat((d.total.mean_abs / top * width).round() as usize);
        lines.push(Line::from(vec![
            Span::raw(format!("{:<6} ", d.layer.name())),
            Span::styled(bar, Style::new().fg(WARN)),
        ]));
    }
    frame.render_widget(Paragraph::new(fit_lines(lines, bars_area.width)), bars_area);
}
