//! A graph node's output on one test image at whatever spatial size it has: the
//! image with the trigger, the compared model's map of the selected unit on the
//! clean image, the studied model's on the triggered one, their difference, and
//! every unit's difference at one scale; a flat node's units as a table.

use super::state::GraphState;
use crate::picture::{Picture, grid_columns};
use crate::tui::fit::draw_line;
use crate::tui::images::{ImageStore, key_of};
use crate::tui::panes::activations::units_table;
use crate::tui::panes::common::{Titled, View, placeholder, titled_pictures};
use crate::tui::pictures::{Maps, difference_grid, unit_pictures};
use crate::tui::theme::{DIM, WARN};
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Style, Stylize};
use ratatui::text::{Line, Span};

pub fn draw(frame: &mut Frame, area: Rect, view: &View, g: &GraphState, images: &mut ImageStore) {
    let study = view.study;
    let site = g.selected();
    let data = g.activations.as_deref().filter(|a| a.site == site.name);
    let pair = data.and_then(|a| Some((a.of(study.reference)?, a.of(study.subject)?)));
    let (Some(data), Some(((reference, said_reference), (subject, said_subject)))) = (data, pair) else {
        placeholder(
            frame,
            area,
            &format!("Computing {} on test image #{}… (n / p step through the images)", site.name, study.digit),
        );
        return;
    };
    let dataset = study.dataset();
    let unit = g.selected_unit();
    let loading = if study.digit != data.index { format!(" · loading #{}…", study.digit) } else { String::new() };
    let [caption, body] = area.layout(&Layout::vertical([Constraint::Length(1), Constraint::Fill(1)]));
    let said = said_subject[1];
    draw_line(
        frame,
        Line::from(vec![
            format!("{}:{unit} · ", site.name).bold(),
            format!("#{} ({})", data.index, dataset.label(data.label)).bold(),
            Span::raw(format!(
                " · {}: {} · {} +T: ",
                study.reference,
                dataset.label(said_reference[0] as u8),
                study.subject
            )),
            Span::styled(
                dataset.label(said as u8),
                Style::new().fg(if said == data.label as usize { DIM } else { WARN }).bold(),
            ),
            loading.fg(DIM),
        ]),
        caption,
    );
    let shape: Vec<usize> = site.shape.iter().map(|&d| d as usize).collect();
    let maps = (Maps { shape: &shape, values: &reference[0] }, Maps { shape: &shape, values: &subject[1] });
    let image = Picture::of_image(&data.pixels[1], data.image_shape);
    let key = key_of((&site.name, unit, study.generation));
    let spatial = matches!(shape[..], [_, h, w] if h * w > 1);
    if !spatial {
        let [image_area, table_area] =
            body.layout(&Layout::horizontal([Constraint::Percentage(30), Constraint::Fill(1)]));
        let [picture, ..] = unit_pictures(image, maps, unit);
        let title = dataset.noun().to_string();
        titled_pictures(
            frame,
            image_area,
            images,
            vec![Titled { title, slot: "act.digit", key, make: Box::new(move || picture) }],
        );
        units_table(
            frame,
            table_area,
            (&reference[0], &subject[1]),
            unit,
            [study.reference.name(), study.subject.name()],
        );
        return;
    }
    let [singles, grid_area] =
        body.layout(&Layout::horizontal([Constraint::Percentage(62), Constraint::Fill(1)]).spacing(1));
    let scale = crate::tui::pictures::difference_scale(maps);
    let titles = [
        dataset.noun().to_string(),
        study.reference.to_string(),
        format!("{} +T", study.subject),
        "model Δ".to_string(),
    ];
    let slots = ["act.digit", "act.reference", "act.subject", "act.diff"];
    let items = unit_pictures(image, maps, unit)
        .into_iter()
        .zip(titles.into_iter().zip(slots))
        .map(|(picture, (title, slot))| Titled { title, slot, key, make: Box::new(move || picture) })
        .collect();
    titled_pictures(frame, singles, images, items);
    let aspect = grid_area.width as f64 / (2.0 * grid_area.height.saturating_sub(1).max(1) as f64);
    let columns = grid_columns(shape[0], (shape[2], shape[1]), aspect);
    let grid = Titled {
        title: format!("±{scale:.2}: blue − red +, all {}", shape[0]),
        slot: "act.grid",
        key: key_of((key, columns)),
        make: Box::new(move || difference_grid(maps, unit, columns)),
    };
    titled_pictures(frame, grid_area, images, vec![grid]);
}
