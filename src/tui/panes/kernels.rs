//! The selected unit's incoming weights in the model it is compared with, the
//! model under study, and their difference: coloured numbers for single small
//! kernels (conv1's 3×3), tiles of input slices for the rest.

use super::common::{Titled, View, placeholder, titled_pictures};
use crate::engine::layer::Layer;
use crate::picture::diverging;
use crate::tui::fit::{draw_line, fit_lines};
use crate::tui::images::{ImageStore, key_of};
use crate::tui::keys::{Action, Binding, PaneKey, Scope, ch};
use crate::tui::pictures::{kernel_pictures, slice_shape, slices, unit_weights};
use crate::tui::theme::DIM;
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Style, Stylize};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;

pub const PREVIOUS_INPUT: PaneKey = PaneKey("kernels.previous");
pub const NEXT_INPUT: PaneKey = PaneKey("kernels.next");

/// On a graph run: which input channel's k×k slice is drawn.
pub const KEYS: &[Binding] = &[
    crate::bind!(&[ch('[')], "[", Action::Pane(PREVIOUS_INPUT), Scope::Focused, "previous input channel (graph)", None),
    crate::bind!(&[ch(']')], "]", Action::Pane(NEXT_INPUT), Scope::Focused, "next input channel (graph)", None),
];

pub fn draw(frame: &mut Frame, area: Rect, view: &View, images: &mut ImageStore) {
    let study = view.study;
    let Some(weights) = unit_weights(study) else {
        placeholder(frame, area, "The kernels appear once the models are loaded.");
        return;
    };
    let (layer, unit) = (study.layer, study.selected_unit());
    let [caption, body, notes] =
        area.layout(&Layout::vertical([Constraint::Length(1), Constraint::Fill(1), Constraint::Length(1)]));
    let bias = |kind| study.weights(kind).map(|w| w[layer].bias[unit]);
    let biases = bias(study.reference).zip(bias(study.subject));
    let bias_text = biases.map(|(r, s)| format!(" · bias {r:+.3} → {s:+.3}")).unwrap_or_default();
    let (reference, subject) = (study.reference.name(), study.subject.name());
    draw_line(
        frame,
        Line::from(vec![format!("{layer} unit {unit}").bold(), Span::raw(bias_text), "  blue − · red +".fg(DIM)]),
        caption,
    );
    // A single kernel small enough to read as numbers.
    let (count, w, h) = slice_shape(layer);
    if count == 1 && w * h <= 9 {
        numbers(frame, body, &weights, [reference, subject], w);
    } else {
        let (pictures, scale, diff_scale) = kernel_pictures(layer, &weights);
        let key = key_of((layer, unit, study.generation));
        let titles =
            [format!("{reference} ±{scale:.3}"), format!("{subject} ±{scale:.3}"), format!("Δ ±{diff_scale:.3}")];
        let slots = ["kernel.clean", "kernel.poisoned", "kernel.diff"];
        let items = pictures
            .into_iter()
            .zip(titles)
            .zip(slots)
            .map(|((picture, title), slot)| Titled { title, slot, key, make: Box::new(move || picture) })
            .collect();
        titled_pictures(frame, body, images, items);
    }
    draw_line(frame, Line::from(strongest_slices(layer, &weights[2])).fg(DIM), notes);
}

/// The input slices whose weights changed most (nothing for single-slice kernels).
fn strongest_slices(layer: Layer, diff: &[f32]) -> String {
    let slices = slices(layer, diff);
    if slices.len() < 2 {
        return String::new();
    }
    let mut change: Vec<(usize, f32)> =
        slices.iter().enumerate().map(|(i, s)| (i, s.values.iter().map(|v| v * v).sum::<f32>().sqrt())).collect();
    change.sort_by(|a, b| b.1.total_cmp(&a.1));
    let top: Vec<String> = change.iter().take(4).map(|(i, c)| format!("{i} ({c:.3})")).collect();
    format!("most-changed input slices: {}", top.join(", "))
}

/// conv1's 3×3 kernels as numbers on their colour.
pub fn numbers(frame: &mut Frame, area: Rect, weights: &[Vec<f32>; 3], names: [&str; 2], width_of_row: usize) {
    let [reference, subject] = names;
    let scale = weights[0].iter().chain(&weights[1]).fold(1e-12f32, |m, v| m.max(v.abs()));
    let diff_scale = weights[2].iter().fold(1e-12f32, |m, v| m.max(v.abs()));
    // Three decimals when they fit, else two.
    let decimals = if area.width >= 3 * 21 + 2 { 3 } else { 2 };
    let width = 3 * (decimals as u16 + 4);
    let columns = area.layout_vec(&Layout::horizontal(vec![Constraint::Length(width); 3]).spacing(1));
    let delta = format!("Δ {subject} − {reference}");
    let titles = [reference, subject, delta.as_str()];
    for (i, column) in columns.into_iter().enumerate() {
        let s = if i == 2 { diff_scale } else { scale };
        let mut lines = vec![Line::from(titles[i]).bold()];
        for row in weights[i].chunks(width_of_row) {
            let cells = row.iter().map(|&v| {
                let c = diverging(v / s);
                let fg = if (v / s).abs() > 0.55 { Color::White } else { Color::Black };
                Span::styled(format!("{v:+.decimals$} "), Style::new().bg(Color::Rgb(c[0], c[1], c[2])).fg(fg))
            });
            lines.push(Line::from(cells.collect::<Vec<_>>()));
        }
        frame.render_widget(Paragraph::new(fit_lines(lines, column.width)), column);
    }
}
