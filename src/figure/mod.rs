//! Figures a paper can use, drawn with plotters in one style (`style`) and
//! written as SVG and PNG: line and scatter charts with legends (`chart`),
//! heatmaps with named rows, numbered columns and a colour bar (`heatmap`), and
//! grids of titled image panels (`grid`). Every figure has a title, and its axes
//! or colour bar say what they measure. Figures are plain data (built where the
//! numbers are, drawn on whichever thread writes them).

pub mod chart;
mod colour_bar;
pub mod grid;
pub mod heatmap;
pub mod render;
pub mod style;

pub use chart::{Chart, Labels, Mark, Marker, Series};
pub use grid::{ImageGrid, Panel};
pub use heatmap::HeatmapChart;
pub use style::{Scale, Values};

use plotters::coord::Shift;
use plotters::prelude::{DrawingArea, DrawingBackend};
use render::{Draw, Raster};
use std::path::{Path, PathBuf};

/// Any figure.
#[derive(Debug, Clone, PartialEq)]
pub enum Figure {
    Chart(Chart),
    Heatmap(HeatmapChart),
    Grid(ImageGrid),
}

impl Figure {
    pub fn title(&self) -> &str {
        match self {
            Figure::Chart(c) => &c.labels.title,
            Figure::Heatmap(h) => &h.labels.title,
            Figure::Grid(g) => &g.title,
        }
    }

    /// Writes `NAME.svg` and `NAME.png` into `dir`; returns both paths.
    pub fn save(&self, dir: &Path, name: &str) -> Result<[PathBuf; 2], String> {
        render::save(self, dir, name)
    }
}

impl Draw for Figure {
    fn height(&self) -> u32 {
        match self {
            Figure::Chart(c) => c.height(),
            Figure::Heatmap(h) => h.height(),
            Figure::Grid(g) => g.height(),
        }
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<Vec<Raster>, String> {
        match self {
            Figure::Chart(c) => c.draw(root),
            Figure::Heatmap(h) => h.draw(root),
            Figure::Grid(g) => g.draw(root),
        }
    }
}
