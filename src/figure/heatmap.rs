//! Heatmaps of named rows over numbered columns (layers × units, metrics ×
//! units), with every row named, column numbers on the x axis and a colour bar
//! with values.

use super::chart::Labels;
use super::colour_bar;
use super::render::{Draw, Raster, failed};
use super::style::{self, INK, Scale};
use plotters::coord::Shift;
use plotters::prelude::*;

#[derive(Debug, Clone, PartialEq)]
pub struct HeatmapChart {
    /// `x` names what the columns number (units), `y` what the rows are.
    pub labels: Labels,
    /// The rows' names, top to bottom.
    pub rows: Vec<String>,
    pub columns: usize,
    /// Row-major, `rows × columns`; not finite: no cell (a shorter row).
    pub values: Vec<f32>,
    pub scale: Scale,
}

impl HeatmapChart {
    pub fn new(labels: Labels, rows: Vec<String>, columns: usize, values: Vec<f32>, scale: Scale) -> HeatmapChart {
        assert_eq!(values.len(), rows.len() * columns, "{} rows of {columns} columns", rows.len());
        HeatmapChart { labels, rows, columns, values, scale }
    }

    /// Room left of the cells for the longest row name and the axis label.
    fn row_label_area(&self) -> u32 {
        let longest = self.rows.iter().map(|r| r.chars().count()).max().unwrap_or(1);
        let names = style::text_width(longest, style::TICK_SIZE) + 16;
        names + if self.labels.y.is_empty() { 0 } else { style::LABEL_SIZE + 24 }
    }

    /// The row height: roomy for a few rows, at least a line of text for many.
    fn row_height(&self) -> u32 {
        (480 / self.rows.len().max(1) as u32).clamp(style::TICK_SIZE + 8, 90)
    }
}

impl Draw for HeatmapChart {
    fn height(&self) -> u32 {
        self.row_height() * self.rows.len().max(1) as u32 + 2 * style::MARGIN + style::X_LABEL_AREA + 60
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<Vec<Raster>, String> {
        let root = root.titled(&self.labels.title, style::text(style::TITLE_SIZE)).map_err(failed)?;
        let (width, _) = root.dim_in_pixel();
        let (plot, bar) = root.split_horizontally(width - style::COLOUR_BAR_AREA - style::MARGIN);
        let (rows, columns) = (self.rows.len() as i32, self.columns as i32);
        let mut chart = ChartBuilder::on(&plot)
            .margin(style::MARGIN)
            .x_label_area_size(style::X_LABEL_AREA)
            .y_label_area_size(self.row_label_area())
            // A segmented range of 0..n has n + 1 segments: 0..n - 1 has one per cell.
            .build_cartesian_2d((0..columns - 1).into_segmented(), (0..rows - 1).into_segmented())
            .map_err(failed)?;
        let row_name = |v: &SegmentValue<i32>| match v {
            SegmentValue::CenterOf(r) if (0..rows).contains(r) => self.rows[(rows - 1 - r) as usize].clone(),
            _ => String::new(),
        };
        let column_number = |v: &SegmentValue<i32>| match v {
            SegmentValue::CenterOf(c) if (0..columns).contains(c) => c.to_string(),
            _ => String::new(),
        };
        chart
            .configure_mesh()
            .disable_mesh()
            .x_desc(&self.labels.x)
            .y_desc(&self.labels.y)
            .x_labels(self.columns.min(24))
            .y_labels(self.rows.len())
            .x_label_formatter(&column_number)
            .y_label_formatter(&row_name)
            .label_style(style::text(style::TICK_SIZE))
            .axis_desc_style(style::text(style::LABEL_SIZE))
            .axis_style(INK)
            .draw()
            .map_err(failed)?;
        let cells = self.values.iter().enumerate().map(|(i, &v)| {
            let (r, c) = ((rows - 1) - (i / self.columns) as i32, (i % self.columns) as i32);
            let corners = [
                (SegmentValue::Exact(c), SegmentValue::Exact(r)),
                (SegmentValue::Exact(c + 1), SegmentValue::Exact(r + 1)),
            ];
            Rectangle::new(corners, style::rgb(self.scale.colour(v)).filled())
        });
        chart.draw_series(cells).map_err(failed)?;
        let bar = bar.margin(style::MARGIN, style::MARGIN + style::X_LABEL_AREA, 0, 0);
        colour_bar::draw(&bar, &self.scale)?;
        Ok(Vec::new())
    }
}
