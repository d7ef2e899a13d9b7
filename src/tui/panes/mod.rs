//! The panes, one module each; each draws from the state and nothing else.

pub mod ablation;
pub mod activations;
pub mod channels;
pub mod circuit;
pub mod kernels;
pub mod layers;
pub mod training;
pub mod trigger;

use super::app::App;
use super::images::ImageStore;
use super::pane::Pane;
use super::render::{ACCENT, DIM};
use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::{Style, Stylize};
use ratatui::text::Line;
use ratatui::widgets::{Block, Cell, Paragraph, Row, Wrap};

pub fn draw(pane: Pane, frame: &mut Frame, area: Rect, app: &App, images: &mut ImageStore, focused: bool) {
    let block = Block::bordered()
        .title(Line::from(format!(" {} {} ", pane.number(), pane.title())).bold())
        .border_style(if focused { Style::new().fg(ACCENT) } else { Style::new().fg(DIM) });
    let inner = block.inner(area);
    frame.render_widget(block, area);
    match pane {
        Pane::Layers => layers::draw(frame, inner, app),
        Pane::Channels => channels::draw(frame, inner, app),
        Pane::Kernels => kernels::draw(frame, inner, app, images),
        Pane::Activations => activations::draw(frame, inner, app, images),
        Pane::Ablation => ablation::draw(frame, inner, app),
        Pane::Training => training::draw(frame, inner, app),
        Pane::Trigger => trigger::draw(frame, inner, app, images),
        Pane::Circuit => circuit::draw(frame, inner, app),
    }
}

/// A dim explanation where data is not there yet.
pub fn placeholder(frame: &mut Frame, area: Rect, text: &str) {
    frame.render_widget(Paragraph::new(text.to_string()).fg(DIM).wrap(Wrap { trim: true }), area);
}

/// A table row whose first `text` cells are text (left-aligned) and the rest
/// numbers (right-aligned).
pub fn row<'a>(cells: impl IntoIterator<Item = String>, text: usize) -> Row<'a> {
    Row::new(cells.into_iter().enumerate().map(|(i, c)| {
        let line = Line::from(c);
        Cell::from(if i < text { line } else { line.right_aligned() })
    }))
}

/// A number with `decimals`, or a dash when unknown.
pub fn number(value: Option<f64>, decimals: usize) -> String {
    value.map(|v| format!("{v:.decimals$}")).unwrap_or_else(|| "–".into())
}

/// A picture to show under a title: its image-store slot, its cache key, and how
/// to build it.
pub struct Titled<'a> {
    pub title: String,
    pub slot: &'static str,
    pub key: u64,
    pub make: Box<dyn FnOnce() -> crate::picture::Picture + 'a>,
}

/// Pictures side by side in equal columns, each under its title.
pub fn titled_pictures(frame: &mut Frame, area: Rect, images: &mut ImageStore, pictures: Vec<Titled>) {
    use ratatui::layout::{Constraint, Layout};
    let columns = area.layout_vec(&Layout::horizontal(vec![Constraint::Fill(1); pictures.len()]).spacing(1));
    for (picture, column) in pictures.into_iter().zip(columns) {
        let [title, body] = column.layout(&Layout::vertical([Constraint::Length(1), Constraint::Fill(1)]));
        frame.render_widget(Line::from(picture.title).bold(), title);
        images.draw(frame.buffer_mut(), body, picture.slot, picture.key, picture.make);
    }
}

/// One line of a chart, in the explorer's chart style.
pub fn line_dataset<'a>(
    name: String,
    colour: ratatui::style::Color,
    data: &'a [(f64, f64)],
) -> ratatui::widgets::Dataset<'a> {
    ratatui::widgets::Dataset::default()
        .name(name)
        .marker(ratatui::symbols::Marker::Braille)
        .graph_type(ratatui::widgets::GraphType::Line)
        .style(Style::new().fg(colour))
        .data(data)
}
