//! The selected layer's channels: weight change, activation change and, once the
//! layer is swept, each channel's lone-ablation metrics; sortable, ablated marked.

use super::ablation::result_line;
use super::common::{Cx, View, number, row, rows_moved, scroll_offset};
use crate::engine::metrics::Accuracy;
use crate::tui::columns::{Column, Sort};
use crate::tui::effect::Effect;
use crate::tui::fit::draw_line;
use crate::tui::keys::{Action, Binding, PaneKey, Scope, ch, key};
use crate::tui::study::Study;
use crate::tui::theme::{ACCENT, DIM, WARN};
use ratatui::Frame;
use ratatui::crossterm::event::KeyCode;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Modifier, Style, Stylize};
use ratatui::text::Line;
use ratatui::widgets::{Table, TableState};

pub const SORT: PaneKey = PaneKey("channels.sort");
pub const REVERSE: PaneKey = PaneKey("channels.reverse");
pub const OPEN: PaneKey = PaneKey("channels.open");
pub const FIND: PaneKey = PaneKey("channels.find");
pub const SIGNIFICANCE: PaneKey = PaneKey("channels.significance");

pub const KEYS: &[Binding] = &[
    crate::bind!(&[ch('s')], "s", Action::Pane(SORT), Scope::Focused, "sort by the next column", Some("sort")),
    crate::bind!(&[ch('S')], "S", Action::Pane(REVERSE), Scope::Focused, "reverse the channel order", None),
    crate::bind!(
        &[ch('!')],
        "!",
        Action::Pane(SIGNIFICANCE),
        Scope::Focused,
        "sort by significance: the sweep's surest poison change (95 % interval) first",
        None
    ),
    crate::bind!(&[key(KeyCode::Enter)], "Enter", Action::Pane(OPEN), Scope::Focused, "the unit's kernels", None),
    crate::bind!(&[ch('/')], "/", Action::Pane(FIND), Scope::Focused, "find a unit: digits, Enter jumps", None),
];

/// Moves the cursor over the selected layer's units; `None` for other actions.
pub fn step(action: Action, study: &mut Study) -> Option<()> {
    study.step_row(rows_moved(action)?);
    Some(())
}

pub fn handle(action: Action, cx: Cx) -> Option<Vec<Effect>> {
    let sort = &mut cx.study.sort;
    match action {
        Action::Pane(SORT) => {
            let column = sort.column.next();
            *sort = Sort { column, descending: column.descending_by_default(), significance: false };
        }
        Action::Pane(SIGNIFICANCE) => sort.significance = !sort.significance,
        Action::Pane(REVERSE) => sort.descending = !sort.descending,
        Action::Pane(OPEN) => return Some(vec![Effect::FocusNext]),
        Action::Pane(FIND) => cx.study.find = Some(String::new()),
        other => step(other, cx.study)?,
    }
    Some(Vec::new())
}

/// The screen rows the table's data occupies, for a pane drawn at `area`: the
/// first row and how many are visible (border, caption, result and header above).
fn row_span(area: Rect) -> (u16, u16) {
    (area.y + 4, area.height.saturating_sub(5))
}

/// A click on a unit's row selects it.
pub fn click(area: Rect, y: u16, study: &mut Study) {
    let (first, visible) = row_span(area);
    let offset = scroll_offset(study.cursor(), study.layer.units(), visible as usize);
    if let Some(i) = y.checked_sub(first).filter(|&i| i < visible) {
        let row = offset + i as usize;
        if row < study.layer.units() {
            study.rows[study.layer] = row;
        }
    }
}

pub fn draw(frame: &mut Frame, area: Rect, view: &View) {
    let study = view.study;
    let [caption, result, table_area] =
        area.layout(&Layout::vertical([Constraint::Length(1), Constraint::Length(1), Constraint::Fill(1)]));
    let sweep = study.ablation.sweeps.get(&study.layer);
    let sweep_note = match sweep {
        Some(s) => format!("swept ({})", s.mode),
        None => "w sweeps".into(),
    };
    draw_line(
        frame,
        Line::from(vec![
            format!("{} · {} units · ", study.layer, study.layer.units()).bold(),
            match study.sort.significance {
                true => format!("s sorts (significance↓) · {sweep_note}"),
                false => format!(
                    "s sorts ({}{}) · {sweep_note}",
                    study.sort.column.title(),
                    if study.sort.descending { "↓" } else { "↑" }
                ),
            }
            .fg(DIM),
        ]),
        caption,
    );
    let ab = &study.ablation;
    let ablated = ab.result.as_ref().filter(|r| r.set == ab.set).map(|r| &r.metrics);
    let before = study.base.as_ref().and_then(|b| b.get(study.subject));
    let set = if ab.set.is_empty() { String::new() } else { ab.set.to_string() };
    draw_line(frame, result_line(&set, ablated, before, &study.asr_heading()), result);
    let rows = study.channel_rows();
    let cursor = study.cursor();
    let body: Vec<_> = rows
        .iter()
        .map(|r| {
            let swept = |accuracy: Accuracy| number(r.swept.as_ref().map(accuracy), 2);
            let cells = [
                if r.ablated { "✗".to_string() } else { String::new() },
                r.unit.to_string(),
                number(r.weight_change, 4),
                number(r.activation_change, 4),
                swept(|m| m.clean_acc),
                swept(|m| m.poison_acc),
                swept(|m| m.rehab_acc),
            ];
            let line = row(cells, 1);
            if r.ablated { line.style(Style::new().fg(WARN)) } else { line }
        })
        .collect();
    let titles = Column::ALL.map(|c| {
        let arrow = if c == study.sort.column { if study.sort.descending { "↓" } else { "↑" } } else { "" };
        format!("{}{arrow}", c.title())
    });
    let header = row(std::iter::once(String::new()).chain(titles), 1).style(Style::new().bold());
    let widths = [1, 5, 8, 10, 7, 7, 7].map(Constraint::Length);
    let visible = table_area.height.saturating_sub(1) as usize;
    let mut state =
        TableState::new().with_offset(scroll_offset(cursor, rows.len(), visible)).with_selected(Some(cursor));
    let table = Table::new(body, widths)
        .header(header)
        .row_highlight_style(Style::new().fg(ACCENT).add_modifier(Modifier::REVERSED));
    frame.render_stateful_widget(table, table_area, &mut state);
}
