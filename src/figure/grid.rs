//! Grids of titled image panels (kernels, activation maps, recovered triggers,
//! feature visualisations), with the colour bar their colours share.

use super::colour_bar;
use super::render::{Draw, Raster, failed};
use super::style::{self, Scale};
use image::RgbImage;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

#[derive(Debug, Clone, PartialEq)]
pub struct Panel {
    /// One line, or several separated by `\n`.
    pub title: String,
    pub image: RgbImage,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ImageGrid {
    pub title: String,
    pub panels: Vec<Panel>,
    pub columns: usize,
    /// The scale the panels were coloured with; `None` for images in their own
    /// colours (inputs, triggers as the stamp paints them).
    pub scale: Option<Scale>,
    /// One line under the panels: what a pixel is, what the tiles are.
    pub note: String,
}

/// Space for the figure's title, a panel's title, between panels and for the note.
const TITLE_BAND: u32 = style::TITLE_SIZE + 2 * style::MARGIN;
const PANEL_TITLE_LINE: u32 = style::PANEL_TITLE_SIZE + 6;
const GAP: u32 = 16;
const NOTE_BAND: u32 = style::TICK_SIZE + 2 * style::MARGIN;

impl ImageGrid {
    fn columns(&self) -> u32 {
        self.columns.clamp(1, self.panels.len().max(1)) as u32
    }

    fn rows(&self) -> u32 {
        (self.panels.len() as u32).div_ceil(self.columns()).max(1)
    }

    /// The panels' title band: as many lines as the longest title has.
    fn title_band(&self) -> u32 {
        let lines = self.panels.iter().map(|p| p.title.lines().count()).max().unwrap_or(1).max(1);
        lines as u32 * PANEL_TITLE_LINE + 4
    }

    /// Each panel's box: the column width, and as tall as the tallest panel's shape needs.
    fn cell(&self) -> (u32, u32) {
        let bar = if self.scale.is_some() { style::COLOUR_BAR_AREA + GAP } else { 0 };
        let usable = style::WIDTH - 2 * style::MARGIN - bar;
        let width = (usable - (self.columns() - 1) * GAP) / self.columns();
        let tallest =
            self.panels.iter().map(|p| p.image.height() as f64 / p.image.width().max(1) as f64).fold(0.0, f64::max);
        // Never taller than a page: wide grids of tall panels shrink.
        let height = ((width as f64 * tallest).round() as u32).clamp(1, 900);
        (width, height)
    }
}

/// The panel title's size: `PANEL_TITLE_SIZE`, smaller where the title would
/// reach into its neighbour's.
fn title_size(title: &str, width: u32) -> u32 {
    let chars = title.chars().count().max(1);
    (10..=style::PANEL_TITLE_SIZE).rev().find(|&size| style::text_width(chars, size) <= width).unwrap_or(10)
}

impl Draw for ImageGrid {
    fn height(&self) -> u32 {
        let (_, cell) = self.cell();
        TITLE_BAND + self.rows() * (self.title_band() + cell + GAP) + NOTE_BAND
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<Vec<Raster>, String> {
        let centred = |size: u32| style::text(size).pos(Pos::new(HPos::Center, VPos::Top));
        let title = Text::new(
            self.title.clone(),
            ((style::WIDTH / 2) as i32, style::MARGIN as i32),
            centred(style::TITLE_SIZE),
        );
        root.draw(&title).map_err(failed)?;
        let (cell_w, cell_h) = self.cell();
        let mut rasters = Vec::new();
        for (i, panel) in self.panels.iter().enumerate() {
            let (column, row) = (i as u32 % self.columns(), i as u32 / self.columns());
            let x = style::MARGIN + column * (cell_w + GAP);
            let y = TITLE_BAND + row * (self.title_band() + cell_h + GAP);
            let longest = panel.title.lines().max_by_key(|l| l.chars().count()).unwrap_or("");
            let size = title_size(longest, cell_w);
            for (k, line) in panel.title.lines().enumerate() {
                let at = ((x + cell_w / 2) as i32, (y + k as u32 * PANEL_TITLE_LINE) as i32);
                root.draw(&Text::new(line.to_string(), at, centred(size))).map_err(failed)?;
            }
            // The panel's shape kept, centred in its box.
            let (w, h) = (panel.image.width().max(1) as f64, panel.image.height().max(1) as f64);
            let scale = (cell_w as f64 / w).min(cell_h as f64 / h);
            let (width, height) = ((w * scale).round() as u32, (h * scale).round() as u32);
            let (px, py) = (x + (cell_w - width) / 2, y + self.title_band() + (cell_h - height) / 2);
            let frame = [(px as i32 - 1, py as i32 - 1), ((px + width) as i32, (py + height) as i32)];
            root.draw(&Rectangle::new(frame, style::INK.stroke_width(1))).map_err(failed)?;
            rasters.push(Raster { x: px as i32, y: py as i32, width, height, image: panel.image.clone() });
        }
        let bottom = self.height() - NOTE_BAND;
        if let Some(scale) = &self.scale {
            let left = (style::WIDTH - style::MARGIN - style::COLOUR_BAR_AREA) as i32;
            let area = root.clone().shrink((left, TITLE_BAND as i32), (style::COLOUR_BAR_AREA, bottom - TITLE_BAND));
            colour_bar::draw(&area, scale)?;
        }
        let note = style::text(style::TICK_SIZE).pos(Pos::new(HPos::Left, VPos::Top));
        root.draw(&Text::new(self.note.clone(), (style::MARGIN as i32, (bottom + style::MARGIN / 2) as i32), note))
            .map_err(failed)?;
        Ok(rasters)
    }
}
