//! The panes on a graph run: Layers (nodes by module path, folded by stage and
//! block), Channels (a node's units, swept effects, `/` finds one), Ablation
//! (`NODE:UNITS` sets, a sample's answer with its interval, then the full test
//! set's), Kernels and Activations (their own modules); the Training pane says
//! it runs on the study's CNN only.

use super::STUDY_ONLY;
use super::state::{GraphState, LayerRow};
use crate::engine::lab::ModelKind;
use crate::engine::metrics::Metrics;
use crate::engine::uncertainty::Rate;
use crate::tui::fit::draw_line;
use crate::tui::panes::ablation::{history_rows, metrics_rows, result_line, sweep_heat, sweep_progress};
use crate::tui::panes::common::{View, number, placeholder, row, scroll_offset};
use crate::tui::protocol::Job;
use crate::tui::theme::{ACCENT, DIM, WARN};
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Modifier, Style, Stylize};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Table, TableState};

/// A pane of the study's own analyses, on a graph run: where to find them.
pub fn study_only(frame: &mut Frame, area: Rect, title: &str) {
    placeholder(
        frame,
        area,
        &format!("The {title} pane {STUDY_ONLY}. On a graph run the CLI trains: train --preset or --arch."),
    );
}

fn selected_style() -> Style {
    Style::new().fg(ACCENT).add_modifier(Modifier::REVERSED)
}

/// A table with a cursor on `selected`, scrolled to keep it in view.
fn cursor_table(frame: &mut Frame, area: Rect, table: Table, selected: usize, len: usize) {
    let visible = area.height.saturating_sub(1) as usize;
    let mut state = TableState::new().with_offset(scroll_offset(selected, len, visible)).with_selected(Some(selected));
    frame.render_stateful_widget(table.row_highlight_style(selected_style()), area, &mut state);
}

pub fn layers(frame: &mut Frame, area: Rect, g: &GraphState) {
    let rows = g.layer_rows();
    let body: Vec<_> = rows
        .iter()
        .map(|r| match r {
            LayerRow::Container { path, depth, folded } => {
                let mark = if *folded { "▸" } else { "▾" };
                let inside = g.info.sites.iter().filter(|s| s.containers.contains(path));
                let ablated: usize = inside.map(|s| g.ablated(&s.name)).sum();
                let count = if ablated > 0 { ablated.to_string() } else { String::new() };
                row([format!("{}{mark} {path}", " ".repeat(*depth)), String::new(), count], 1)
                    .style(Style::new().fg(DIM))
            }
            LayerRow::Site { index, depth } => {
                let site = &g.info.sites[*index];
                let ablated = g.ablated(&site.name);
                let count = if ablated > 0 { ablated.to_string() } else { String::new() };
                let line = row([format!("{}{}", " ".repeat(*depth), site.name), site.shape_text(), count], 1);
                if *index == g.site { line.style(Style::new().fg(ACCENT).bold()) } else { line }
            }
        })
        .collect();
    let header = row(["node (Enter folds)", "output", "abl"].map(String::from), 1).style(Style::new().bold());
    let widths = [Constraint::Fill(1), Constraint::Length(8), Constraint::Length(3)];
    let table = Table::new(body, widths).header(header);
    cursor_table(frame, area, table, g.layer_row.min(rows.len().saturating_sub(1)), rows.len());
}

pub fn channels(frame: &mut Frame, area: Rect, view: &View, g: &GraphState) {
    let site = g.selected();
    let [caption, result, table_area] =
        area.layout(&Layout::vertical([Constraint::Length(1), Constraint::Length(1), Constraint::Fill(1)]));
    let sweep = g.sweeps.get(&site.name);
    let note = match (&view.study.find, sweep) {
        (Some(typed), _) => {
            Span::styled(format!("find unit: {typed}▏ Enter jumps, Esc cancels"), Style::new().fg(WARN))
        }
        (None, Some(s)) => {
            let order = if g.by_effect { "poison↑" } else { "unit" };
            format!("swept ({}) · s sorts ({order}) · / finds", s.mode).fg(DIM)
        }
        (None, None) => "w sweeps · / finds".fg(DIM),
    };
    draw_line(
        frame,
        Line::from(vec![format!("{} · {} · {} units · ", site.name, site.op, site.units()).bold(), note]),
        caption,
    );
    let set = if g.set.sites.is_empty() { String::new() } else { g.set.to_string() };
    let ablated = g.result.as_ref().filter(|r| r.set == g.set).map(|r| &r.metrics);
    let before = view.study.base.as_ref().and_then(|b| b.get(view.study.subject));
    draw_line(frame, result_line(&set, ablated, before, &view.study.asr_heading()), result);
    let norms = weight_change(g, [view.study.reference, view.study.subject]);
    let order = g.unit_order();
    let body: Vec<_> = order
        .iter()
        .map(|&u| {
            let ablated = g.set.sites.get(&site.name).is_some_and(|s| s.contains(&(u as i64)));
            let swept = |f: fn(&Metrics) -> f64| number(sweep.and_then(|s| s.rows.get(u)).map(f), 2);
            let cells = [
                if ablated { "✗".to_string() } else { String::new() },
                u.to_string(),
                number(norms.as_ref().and_then(|n| n.get(u)).map(|&v| v as f64), 4),
                swept(|m| m.clean_acc),
                swept(|m| m.poison_acc),
                swept(|m| m.rehab_acc),
            ];
            let line = row(cells, 1);
            if ablated { line.style(Style::new().fg(WARN)) } else { line }
        })
        .collect();
    let header = row(["", "unit", "‖Δw‖", "clean", "poison", "rehab"].map(String::from), 1).style(Style::new().bold());
    let table = Table::new(body, [1, 5, 8, 7, 7, 7].map(Constraint::Length)).header(header);
    cursor_table(frame, table_area, table, g.unit_row(), order.len());
}

/// ‖studied − compared‖ of each unit's incoming weights, once they are here.
fn weight_change(g: &GraphState, [reference, subject]: [ModelKind; 2]) -> Option<Vec<f32>> {
    let (site, weights) = g.weights.as_ref()?;
    let w = weights.as_ref().filter(|_| *site == g.selected().name)?;
    (0..w.shape[0])
        .map(|u| {
            let (r, s) = (w.unit(reference, u)?, w.unit(subject, u)?);
            Some(r.iter().zip(s).map(|(a, b)| (b - a) * (b - a)).sum::<f32>().sqrt())
        })
        .collect()
}

pub fn ablation(frame: &mut Frame, area: Rect, view: &View, g: &GraphState) {
    let study = view.study;
    let [status, metrics, interval, sweep, history] = area.layout(&Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(5),
        Constraint::Length(1),
        Constraint::Length(5),
        Constraint::Fill(1),
    ]));
    let empty = g.set.sites.is_empty();
    let result = g.result.as_ref().filter(|_| !empty);
    let state = if view.jobs.is_running(Job::Evaluate) {
        let waiting = match result {
            Some(r) if r.sample => format!(" · sample in {:.0} ms…", r.seconds * 1e3),
            _ => " · evaluating…".into(),
        };
        Span::styled(waiting, Style::new().fg(WARN))
    } else if !study.ready && !empty {
        Span::styled(" · waiting for the models", Style::new().fg(DIM))
    } else if let Some(r) = result {
        Span::styled(format!(" · {:.0} ms", r.seconds * 1e3), Style::new().fg(DIM))
    } else {
        Span::raw("")
    };
    let set = if empty { "none".to_string() } else { g.set.to_string() };
    draw_line(
        frame,
        Line::from(vec![
            "mode ".into(),
            Span::styled(g.mode.to_string(), Style::new().fg(ACCENT).bold()),
            " (m) · set ".into(),
            Span::styled(set, Style::new().fg(if empty { DIM } else { WARN }).bold()),
            if empty { " (Space adds, c clears)".fg(DIM) } else { "".into() },
            state,
        ]),
        status,
    );
    let base = study.base.as_ref();
    let models = [study.reference, study.subject].map(|k| (k.name(), base.and_then(|b| b.get(k))));
    metrics_rows(frame, metrics, models, result.map(|r| &r.metrics), (empty, study.asr_heading()));
    // Under the metrics' columns: the sample's 95 % interval, or what they were measured on.
    let cells = match result {
        Some(r) => {
            let m = &r.metrics;
            // Half of each Wilson interval's width (it is asymmetric near 0 and 100 %).
            let pm = |rate| m.half_width(rate).map_or(String::new(), |h| format!("±{h:.1}"));
            let label = if r.sample { format!("±95% of {}", m.count) } else { format!("{} images", m.count) };
            [label, pm(Rate::Clean), pm(Rate::Poison), pm(Rate::AsrNonTarget), pm(Rate::Rehab)]
        }
        // What a toggle is answered on first.
        None => [format!("sample {}", g.info.sample), String::new(), String::new(), String::new(), String::new()],
    };
    let style = if result.is_some_and(|r| r.sample) { Style::new().fg(WARN) } else { Style::new().fg(DIM) };
    let widths = std::iter::once(Constraint::Length(15)).chain([7, 7, 7, 7].map(Constraint::Length));
    frame.render_widget(Table::new([row(cells, 1).style(style)], widths), interval);
    let site = &g.selected().name;
    match (view.jobs.get(Job::Sweep), g.sweeps.get(site)) {
        (Some(running), _) => sweep_progress(frame, sweep, running, g.mode),
        (None, Some(s)) => {
            sweep_heat(frame, sweep, format!("sweep {site} ({})", s.mode), &s.rows.iter().collect::<Vec<_>>())
        }
        (None, None) => placeholder(frame, sweep, &format!("No sweep of {site} yet: w ablates each unit alone.")),
    }
    let rows = g.history.iter().rev().map(|e| (e.set.to_string(), e.model, e.mode, &e.metrics)).collect();
    history_rows(frame, history, rows, g.history_row);
}
