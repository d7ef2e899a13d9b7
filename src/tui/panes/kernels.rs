//! The selected unit's incoming weights in the clean and poisoned models and their
//! difference: coloured numbers for conv1's 3×3 kernels, tiles for the rest
//! (conv2: 32 input slices of 3×3; fc1: 64 slices of 5×5; fc2: 16 weights).

use super::{Titled, placeholder, titled_pictures};
use crate::engine::layer::Layer;
use crate::picture::{Heatmap, Palette, Picture, diverging};
use crate::tui::app::App;
use crate::tui::images::{ImageStore, key_of};
use crate::tui::render::DIM;
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Style, Stylize};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;

/// A unit's incoming weights as maps: one per input slice.
pub fn slices(layer: Layer, weights: &[f32]) -> Vec<Heatmap> {
    let (count, w, h) = match layer {
        Layer::Conv1 => (1, 3, 3),
        Layer::Conv2 => (32, 3, 3),
        Layer::Fc1 => (64, 5, 5),
        Layer::Fc2 => (1, 4, 4),
    };
    weights.chunks(w * h).take(count).map(|c| Heatmap::new(w, h, c.to_vec())).collect()
}

/// Tiles per row for a layer's slices.
pub fn tile_columns(layer: Layer) -> usize {
    match layer {
        Layer::Conv2 | Layer::Fc1 => 8,
        _ => 1,
    }
}

/// The clean and poisoned weights of the selected unit and their difference.
pub fn unit_weights(app: &App) -> Option<[Vec<f32>; 3]> {
    let models = app.models.as_ref()?;
    let (layer, unit) = (app.layer, app.selected_unit());
    let clean = models.weights[0][layer.position()].unit(layer, unit).to_vec();
    let poisoned = models.weights[1][layer.position()].unit(layer, unit).to_vec();
    let diff = clean.iter().zip(&poisoned).map(|(c, p)| p - c).collect();
    Some([clean, poisoned, diff])
}

/// The three pictures (clean, poisoned, difference) and the scales they use.
pub fn pictures(layer: Layer, weights: &[Vec<f32>; 3]) -> ([Picture; 3], f32, f32) {
    let tiles = weights.clone().map(|w| Heatmap::tiled(&slices(layer, &w), tile_columns(layer)));
    let scale = tiles[0].max_abs().max(tiles[1].max_abs());
    let diff_scale = tiles[2].max_abs();
    let [c, p, d] = tiles;
    (
        [
            Picture::of(&c, Palette::Diverging, scale),
            Picture::of(&p, Palette::Diverging, scale),
            Picture::of(&d, Palette::Diverging, diff_scale),
        ],
        scale,
        diff_scale,
    )
}

pub fn draw(frame: &mut Frame, area: Rect, app: &App, images: &mut ImageStore) {
    let Some(weights) = unit_weights(app) else {
        placeholder(frame, area, "The kernels appear once the models are loaded.");
        return;
    };
    let (layer, unit) = (app.layer, app.selected_unit());
    let [caption, body, notes] =
        area.layout(&Layout::vertical([Constraint::Length(1), Constraint::Fill(1), Constraint::Length(1)]));
    let biases = app.models.as_ref().map(|m| [0, 1].map(|i| m.weights[i][layer.position()].bias[unit]));
    let bias_text = biases.map(|[c, p]| format!(" · bias {c:+.3} → {p:+.3}")).unwrap_or_default();
    frame.render_widget(
        Line::from(vec![format!("{layer} unit {unit}").bold(), Span::raw(bias_text), "  blue − · red +".fg(DIM)]),
        caption,
    );
    if layer == Layer::Conv1 {
        numbers(frame, body, &weights);
    } else {
        let (pictures, scale, diff_scale) = pictures(layer, &weights);
        let key = key_of((layer, unit, app.generation));
        let titles = [format!("clean ±{scale:.3}"), format!("poisoned ±{scale:.3}"), format!("Δ ±{diff_scale:.3}")];
        let slots = ["kernel.clean", "kernel.poisoned", "kernel.diff"];
        let items = pictures
            .into_iter()
            .zip(titles)
            .zip(slots)
            .map(|((picture, title), slot)| Titled { title, slot, key, make: Box::new(move || picture) })
            .collect();
        titled_pictures(frame, body, images, items);
    }
    frame.render_widget(Line::from(strongest_slices(layer, &weights[2])).fg(DIM), notes);
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
fn numbers(frame: &mut Frame, area: Rect, weights: &[Vec<f32>; 3]) {
    let scale = weights[0].iter().chain(&weights[1]).fold(1e-12f32, |m, v| m.max(v.abs()));
    let diff_scale = weights[2].iter().fold(1e-12f32, |m, v| m.max(v.abs()));
    // Three decimals when they fit, else two.
    let decimals = if area.width >= 3 * 21 + 2 { 3 } else { 2 };
    let width = 3 * (decimals as u16 + 4);
    let columns = area.layout_vec(&Layout::horizontal(vec![Constraint::Length(width); 3]).spacing(1));
    let titles = ["clean", "poisoned", "Δ poisoned − clean"];
    for (i, column) in columns.into_iter().enumerate() {
        let s = if i == 2 { diff_scale } else { scale };
        let mut lines = vec![Line::from(titles[i]).bold()];
        for row in weights[i].chunks(3) {
            let cells = row.iter().map(|&v| {
                let c = diverging(v / s);
                let fg = if (v / s).abs() > 0.55 { Color::White } else { Color::Black };
                Span::styled(format!("{v:+.decimals$} "), Style::new().bg(Color::Rgb(c[0], c[1], c[2])).fg(fg))
            });
            lines.push(Line::from(cells.collect::<Vec<_>>()));
        }
        frame.render_widget(Paragraph::new(lines), column);
    }
}
