//! The study's key picture: a test digit with the trigger, the clean model's map on
//! the clean digit, the poisoned model's map on the triggered digit, their
//! difference, and the difference for every channel of the layer (the backdoor's
//! channel lights up).

use super::{Titled, number, placeholder, row, titled_pictures};
use crate::engine::layer::Layer;
use crate::engine::probe::LayerActivation;
use crate::picture::{Heatmap, Palette, Picture, grid_columns};
use crate::tui::app::App;
use crate::tui::images::{ImageStore, key_of};
use crate::tui::layout::scroll_offset;
use crate::tui::protocol::DigitData;
use crate::tui::render::{DIM, WARN};
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Style, Stylize};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Table, TableState};

/// One channel's map (or a linear layer's single value as a 1×1 map).
fn map(activation: &LayerActivation, unit: usize) -> Heatmap {
    let values = activation.channel(unit).to_vec();
    match activation.shape.as_slice() {
        [_, h, w] => Heatmap::new(*w, *h, values),
        _ => Heatmap::new(1, 1, values),
    }
}

/// Poisoned-on-triggered minus clean-on-clean, per channel of `layer`.
pub fn difference_maps(data: &DigitData, layer: Layer) -> Vec<Heatmap> {
    let (clean, poisoned) = (&data.clean[layer.position()], &data.poisoned[layer.position()]);
    (0..layer.units())
        .map(|u| {
            let (c, p) = (map(clean, u), map(poisoned, u));
            Heatmap::new(c.width, c.height, c.values.iter().zip(&p.values).map(|(a, b)| b - a).collect())
        })
        .collect()
}

/// The digit with the trigger, the clean map, the poisoned map and their difference.
pub fn channel_pictures(data: &DigitData, layer: Layer, unit: usize) -> [Picture; 4] {
    let digit = Heatmap::new(28, 28, data.triggered_pixels.clone());
    let (clean, poisoned) = (map(&data.clean[layer.position()], unit), map(&data.poisoned[layer.position()], unit));
    let scale = clean.max_abs().max(poisoned.max_abs());
    let diff = difference_maps(data, layer).swap_remove(unit);
    [
        Picture::of(&digit, Palette::Grey, 1.0),
        Picture::of(&clean, Palette::Heat, scale),
        Picture::of(&poisoned, Palette::Heat, scale),
        Picture::of(&diff, Palette::Diverging, diff.max_abs()),
    ]
}

/// Every channel's difference map in a grid, the selected one framed.
pub fn grid_picture(data: &DigitData, layer: Layer, unit: usize, columns: usize) -> Picture {
    let maps = difference_maps(data, layer);
    let tile = (maps[0].width, maps[0].height);
    let grid = Heatmap::tiled(&maps, columns);
    let mut picture = Picture::of(&grid, Palette::Diverging, grid.max_abs());
    picture.outline(Heatmap::tile_frame(unit, columns, tile));
    picture
}

pub fn draw(frame: &mut Frame, area: Rect, app: &App, images: &mut ImageStore) {
    let Some(data) = app.digit_data.as_deref() else {
        placeholder(
            frame,
            area,
            "The activations appear once the models are loaded (n / p step through the test digits).",
        );
        return;
    };
    let (layer, unit) = (app.layer, app.selected_unit());
    let [caption, body] = area.layout(&Layout::vertical([Constraint::Length(1), Constraint::Fill(1)]));
    let (said_clean, said_poisoned) = (DigitData::prediction(&data.clean), DigitData::prediction(&data.poisoned));
    let loading = if app.digit != data.index { format!(" · loading #{}…", app.digit) } else { String::new() };
    frame.render_widget(
        Line::from(vec![
            format!("digit #{} ({})", data.index, data.label).bold(),
            Span::raw(format!(" · clean says {said_clean} · poisoned + trigger says ")),
            Span::styled(
                said_poisoned.to_string(),
                Style::new().fg(if said_poisoned == data.label as usize { DIM } else { WARN }).bold(),
            ),
            format!(" · {layer} unit {unit}{loading}").fg(DIM),
        ]),
        caption,
    );
    let key = key_of((layer, unit, app.generation));
    if !layer.is_conv() {
        let [digit_area, table_area] =
            body.layout(&Layout::horizontal([Constraint::Percentage(30), Constraint::Fill(1)]));
        let [digit, ..] = channel_pictures(data, layer, unit);
        titled_pictures(
            frame,
            digit_area,
            images,
            vec![Titled { title: "digit".into(), slot: "act.digit", key, make: Box::new(move || digit) }],
        );
        units_table(frame, table_area, data, layer, unit);
        return;
    }
    let [singles, grid_area] =
        body.layout(&Layout::horizontal([Constraint::Percentage(62), Constraint::Fill(1)]).spacing(1));
    let titles = ["digit", "clean", "poisoned", "Δ"];
    let slots = ["act.digit", "act.clean", "act.poisoned", "act.diff"];
    let items = channel_pictures(data, layer, unit)
        .into_iter()
        .zip(titles.into_iter().zip(slots))
        .map(|(picture, (title, slot))| Titled { title: title.into(), slot, key, make: Box::new(move || picture) })
        .collect();
    titled_pictures(frame, singles, images, items);
    let tile = data.clean[layer.position()].shape[1..].to_vec();
    let aspect = grid_area.width as f64 / (2.0 * grid_area.height.saturating_sub(1).max(1) as f64);
    let columns = grid_columns(layer.units(), (tile[1], tile[0]), aspect);
    let grid = Titled {
        title: format!("Δ, all {} channels", layer.units()),
        slot: "act.grid",
        key: key_of((key, columns)),
        make: Box::new(move || grid_picture(data, layer, unit, columns)),
    };
    titled_pictures(frame, grid_area, images, vec![grid]);
}

/// A linear layer's units on the digit: clean, poisoned (with trigger), difference.
fn units_table(frame: &mut Frame, area: Rect, data: &DigitData, layer: Layer, unit: usize) {
    let (clean, poisoned) = (&data.clean[layer.position()].values, &data.poisoned[layer.position()].values);
    let rows = (0..layer.units()).map(|u| {
        row(
            [
                u.to_string(),
                number(Some(clean[u] as f64), 3),
                number(Some(poisoned[u] as f64), 3),
                format!("{:+.3}", poisoned[u] - clean[u]),
            ],
            0,
        )
    });
    let header = row(["unit", "clean", "poisoned", "Δ"].map(String::from), 0).style(Style::new().bold());
    let table = Table::new(rows, [4, 9, 9, 9].map(Constraint::Length))
        .header(header)
        .row_highlight_style(Style::new().reversed());
    let visible = area.height.saturating_sub(1) as usize;
    let mut state =
        TableState::new().with_offset(scroll_offset(unit, layer.units(), visible)).with_selected(Some(unit));
    frame.render_stateful_widget(table, area, &mut state);
}
