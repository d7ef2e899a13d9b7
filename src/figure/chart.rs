//! Line and scatter charts on numeric axes: curves with a legend (pruning curves,
//! training curves, sweeps), point clouds (the circuit search's Pareto front),
//! and vertical markers for a point worth naming (the best DER).

use super::render::{Draw, Raster, failed};
use super::style::{self, INK, LINE};
use plotters::coord::Shift;
use plotters::prelude::*;

/// A figure's title and what its axes measure (with units).
#[derive(Debug, Clone, PartialEq)]
pub struct Labels {
    pub title: String,
    pub x: String,
    pub y: String,
}

impl Labels {
    pub fn new(title: impl Into<String>, x: impl Into<String>, y: impl Into<String>) -> Labels {
        Labels { title: title.into(), x: x.into(), y: y.into() }
    }
}

/// How a series is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mark {
    Line,
    Points,
    /// A line through its points, each point marked.
    LinePoints,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// The legend's entry.
    pub name: String,
    pub points: Vec<(f64, f64)>,
    pub colour: RGBColor,
    pub mark: Mark,
}

impl Series {
    pub fn line(name: impl Into<String>, points: Vec<(f64, f64)>, colour: RGBColor) -> Series {
        Series { name: name.into(), points, colour, mark: Mark::Line }
    }
}

/// A dashed vertical line at `x`, its label at the top.
#[derive(Debug, Clone, PartialEq)]
pub struct Marker {
    pub x: f64,
    pub label: String,
}

/// Where the legend sits inside the plot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Corner {
    UpperLeft,
    UpperRight,
    LowerLeft,
    LowerRight,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Chart {
    pub labels: Labels,
    pub series: Vec<Series>,
    pub markers: Vec<Marker>,
    /// The y axis' range; `None`: the data's, with a little room.
    pub y: Option<(f64, f64)>,
    pub legend: Corner,
}

impl Chart {
    pub fn new(labels: Labels, series: Vec<Series>) -> Chart {
        Chart { labels, series, markers: Vec::new(), y: None, legend: Corner::UpperRight }
    }

    /// The range of the points' x (or y) values, widened when empty or flat.
    fn range(&self, pick: fn(&(f64, f64)) -> f64) -> (f64, f64) {
        let values = self.series.iter().flat_map(|s| s.points.iter().map(pick)).filter(|v| v.is_finite());
        let (low, high) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), v| (l.min(v), h.max(v)));
        match (low, high) {
            (l, h) if l > h => (0.0, 1.0),
            (l, h) if h - l < 1e-12 => (l - 0.5, h + 0.5),
            (l, h) => (l, h),
        }
    }
}

impl Draw for Chart {
    fn height(&self) -> u32 {
        700
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<Vec<Raster>, String> {
        let (x0, x1) = self.range(|p| p.0);
        let (y0, y1) = self.y.unwrap_or_else(|| {
            let (l, h) = self.range(|p| p.1);
            (l - 0.05 * (h - l), h + 0.05 * (h - l))
        });
        let mut chart = ChartBuilder::on(root)
            .caption(&self.labels.title, style::text(style::TITLE_SIZE))
            .margin(style::MARGIN)
            .x_label_area_size(style::X_LABEL_AREA)
            .y_label_area_size(style::Y_LABEL_AREA)
            .build_cartesian_2d(x0..x1, y0..y1)
            .map_err(failed)?;
        let (x_span, y_span) = (x1 - x0, y1 - y0);
        chart
            .configure_mesh()
            .x_desc(&self.labels.x)
            .y_desc(&self.labels.y)
            .x_label_formatter(&|v| style::number(*v, x_span))
            .y_label_formatter(&|v| style::number(*v, y_span))
            .label_style(style::text(style::TICK_SIZE))
            .axis_desc_style(style::text(style::LABEL_SIZE))
            .light_line_style(style::GRID.mix(0.5))
            .bold_line_style(style::GRID)
            .axis_style(INK)
            .draw()
            .map_err(failed)?;
        for m in &self.markers {
            let dashed = DashedLineSeries::new([(m.x, y0), (m.x, y1)], 10, 6, INK.stroke_width(2));
            chart.draw_series(dashed).map_err(failed)?;
            let label = style::text(style::TICK_SIZE).pos(plotters::style::text_anchor::Pos::new(
                plotters::style::text_anchor::HPos::Left,
                plotters::style::text_anchor::VPos::Top,
            ));
            chart.draw_series([Text::new(format!(" {}", m.label), (m.x, y1), label)]).map_err(failed)?;
        }
        for s in &self.series {
            let (colour, points) = (s.colour, s.points.iter().copied().filter(|p| p.0.is_finite() && p.1.is_finite()));
            let drawn = match s.mark {
                Mark::Line => chart.draw_series(LineSeries::new(points, colour.stroke_width(LINE))),
                Mark::Points => chart.draw_series(points.map(|p| Circle::new(p, 5, colour.filled()))),
                Mark::LinePoints => {
                    chart.draw_series(LineSeries::new(points.clone(), colour.stroke_width(LINE))).map_err(failed)?;
                    chart.draw_series(points.map(|p| Circle::new(p, 6, colour.filled())))
                }
            };
            drawn
                .map_err(failed)?
                .label(&s.name)
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 30, y)], colour.stroke_width(LINE + 2)));
        }
        let position = match self.legend {
            Corner::UpperLeft => SeriesLabelPosition::UpperLeft,
            Corner::UpperRight => SeriesLabelPosition::UpperRight,
            Corner::LowerLeft => SeriesLabelPosition::LowerLeft,
            Corner::LowerRight => SeriesLabelPosition::LowerRight,
        };
        chart
            .configure_series_labels()
            .position(position)
            .margin(12)
            .legend_area_size(40)
            .label_font(style::text(style::TICK_SIZE))
            .background_style(WHITE.mix(0.9))
            .border_style(INK)
            .draw()
            .map_err(failed)?;
        Ok(Vec::new())
    }
}
