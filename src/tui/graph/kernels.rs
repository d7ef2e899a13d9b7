//! A graph node's kernels: the selected unit's incoming weights per input
//! channel in the compared model and the model under study — each input's norm,
//! largest change first, and the k×k slice of the selected input as numbers.
//! `[` and `]` step through the inputs in that order.

use super::data::SiteWeights;
use super::state::GraphState;
use crate::engine::lab::ModelKind;
use crate::tui::fit::draw_line;
use crate::tui::panes::common::{View, number, placeholder, row, scroll_offset};
use crate::tui::panes::kernels::numbers;
use crate::tui::theme::{ACCENT, DIM};
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Modifier, Style, Stylize};
use ratatui::text::Line;
use ratatui::widgets::{Table, TableState};

/// One input channel of a unit's kernel: its number, ‖w‖ in the compared and
/// the studied model, and ‖Δ‖.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct InputNorm {
    pub input: usize,
    pub reference: f32,
    pub subject: f32,
    pub change: f32,
}

/// Every input channel of `unit`'s kernel, largest change first.
pub fn input_norms(w: &SiteWeights, unit: usize, [reference, subject]: [ModelKind; 2]) -> Vec<InputNorm> {
    let (Some(r), Some(s)) = (w.unit(reference, unit), w.unit(subject, unit)) else { return Vec::new() };
    let k = w.shape[2] * w.shape[3];
    let norm = |v: &mut dyn Iterator<Item = f32>| v.map(|x| x * x).sum::<f32>().sqrt();
    let mut out: Vec<InputNorm> = (0..w.shape[1])
        .map(|i| {
            let (r, s) = (&r[i * k..(i + 1) * k], &s[i * k..(i + 1) * k]);
            InputNorm {
                input: i,
                reference: norm(&mut r.iter().copied()),
                subject: norm(&mut s.iter().copied()),
                change: norm(&mut r.iter().zip(s).map(|(a, b)| b - a)),
            }
        })
        .collect();
    out.sort_by(|a, b| b.change.total_cmp(&a.change).then(a.input.cmp(&b.input)));
    out
}

/// The selected node's weights, when they are the selected node's.
pub fn selected_weights(g: &GraphState) -> Option<&SiteWeights> {
    let (site, weights) = g.weights.as_ref()?;
    weights.as_deref().filter(|_| *site == g.selected().name)
}

pub fn draw(frame: &mut Frame, area: Rect, view: &View, g: &GraphState) {
    let study = view.study;
    let site = g.selected();
    let loaded = g.weights.as_ref().is_some_and(|(s, _)| *s == site.name);
    let Some(w) = selected_weights(g) else {
        let text = if loaded {
            format!("{} is a {} node: it has no kernels (no weights per unit).", site.name, site.op)
        } else {
            format!("Reading {}'s weights…", site.name)
        };
        placeholder(frame, area, &text);
        return;
    };
    let unit = g.selected_unit();
    let models = [study.reference, study.subject];
    let norms = input_norms(w, unit, models);
    let row_of = |input: usize| norms.iter().position(|n| n.input == input).unwrap_or(0);
    let selected = g.input.map_or(0, row_of);
    let Some(chosen) = norms.get(selected) else { return };
    let (kh, kw) = (w.shape[2], w.shape[3]);
    let [caption, slice, table] =
        area.layout(&Layout::vertical([Constraint::Length(1), Constraint::Length(kh as u16 + 1), Constraint::Fill(1)]));
    let kind = if site.op == "linear" { "inputs".to_string() } else { format!("inputs of {kh}×{kw}") };
    draw_line(
        frame,
        Line::from(vec![
            format!("{} unit {unit} · {} {kind}", site.name, w.shape[1]).bold(),
            format!(" · input {} ([ ])", chosen.input).fg(ACCENT),
            "  blue − · red +".fg(DIM),
        ]),
        caption,
    );
    let k = kh * kw;
    let part = |model| w.unit(model, unit).map(|v| v[chosen.input * k..(chosen.input + 1) * k].to_vec());
    if let (Some(r), Some(s)) = (part(study.reference), part(study.subject)) {
        let diff = r.iter().zip(&s).map(|(a, b)| b - a).collect();
        numbers(frame, slice, &[r, s, diff], [study.reference.name(), study.subject.name()], kw);
    }
    let rows = norms.iter().map(|n| {
        row(
            [
                n.input.to_string(),
                number(Some(n.reference as f64), 4),
                number(Some(n.subject as f64), 4),
                number(Some(n.change as f64), 4),
            ],
            0,
        )
    });
    let names = [format!("‖{}‖", study.reference), format!("‖{}‖", study.subject)];
    let header =
        row(["input".to_string(), names[0].clone(), names[1].clone(), "‖Δ‖↓".into()], 0).style(Style::new().bold());
    let visible = table.height.saturating_sub(1) as usize;
    let mut state =
        TableState::new().with_offset(scroll_offset(selected, norms.len(), visible)).with_selected(Some(selected));
    let widget = Table::new(rows, [5, 12, 12, 9].map(Constraint::Length))
        .header(header)
        .row_highlight_style(Style::new().fg(ACCENT).add_modifier(Modifier::REVERSED));
    frame.render_stateful_widget(widget, table, &mut state);
}
