//! What every pane module shares: the view it draws from, the context its keys
//! act on, and the small widgets they are drawn with.

use crate::tui::images::ImageStore;
use crate::tui::jobs::Jobs;
use crate::tui::keys::Action;
use crate::tui::study::Study;
use crate::tui::theme::DIM;
use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::{Color, Style, Stylize};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Cell, Paragraph, Row};

/// What a pane draws from.
pub struct View<'a> {
    pub study: &'a Study,
    pub jobs: &'a Jobs,
    pub focused: bool,
}

/// What a pane's key handler may read and change besides its own state.
pub struct Cx<'a> {
    pub study: &'a mut Study,
    pub jobs: &'a Jobs,
    /// The pane handling the key has the focus.
    pub focused: bool,
}

impl Cx<'_> {
    /// Why a key that writes into the run cannot, on a run the explorer only
    /// reads: said at once, not after a question or a job's start.
    pub fn refuse_write(&self) -> Option<String> {
        let run = self.study.run.as_ref().filter(|run| run.read_only)?;
        Some(format!("{} cannot be written: the explorer opened it read-only", run.root))
    }
}

/// How many rows a movement key moves a cursor (each pane clamps it), or `None`
/// for any other action.
pub fn rows_moved(action: Action) -> Option<i64> {
    Some(match action {
        Action::Up => -1,
        Action::Down => 1,
        Action::PageUp => -10,
        Action::PageDown => 10,
        Action::Top => -10_000,
        Action::Bottom => 10_000,
        _ => return None,
    })
}

/// The first visible row of a list of `len` rows, `height` of them visible, with
/// `selected` kept in view (the same rule the table widget follows from offset 0).
pub fn scroll_offset(selected: usize, len: usize, height: usize) -> usize {
    if height == 0 || len <= height { 0 } else { selected.saturating_sub(height - 1).min(len - height) }
}

/// A chart's legend as one line: a coloured mark and the name of each series.
pub fn legend(series: &[(&str, Color)]) -> Line<'static> {
    let spans = series
        .iter()
        .flat_map(|&(name, colour)| [Span::styled(" ━ ", Style::new().fg(colour).bold()), Span::raw(name.to_string())]);
    Line::from(spans.collect::<Vec<_>>())
}

/// A dim explanation where data is not there yet.
pub fn placeholder(frame: &mut Frame, area: Rect, text: &str) {
    let lines = crate::tui::fit::wrapped(text, area.width as usize, area.height as usize);
    frame.render_widget(Paragraph::new(lines.into_iter().map(Line::from).collect::<Vec<_>>()).fg(DIM), area);
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
        crate::tui::fit::draw_line(frame, Line::from(picture.title).bold(), title);
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
