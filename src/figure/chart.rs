//! Line and scatter charts on numeric axes: curves with a legend (pruning curves,
//! training curves, sweeps), point clouds (the circuit search's Pareto front),
//! and vertical markers for a point worth naming (the best DER).

use super::render::{Draw, Raster, failed};
use super::style::{self, INK, LINE};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

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
    /// A line with the area under it down to zero filled translucent, so that
    /// two overlap visibly (`Series::histogram`'s bars).
    Area,
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

    /// A histogram's bars as one filled outline: `counts[i]` between `edges[i]`
    /// and `edges[i + 1]`.
    pub fn histogram(name: impl Into<String>, edges: &[f64], counts: &[usize], colour: RGBColor) -> Series {
        let mut points = vec![(edges[0], 0.0)];
        for (bin, &count) in counts.iter().enumerate() {
            points.extend([(edges[bin], count as f64), (edges[bin + 1], count as f64)]);
        }
        points.push((edges[counts.len()], 0.0));
        Series { name: name.into(), points, colour, mark: Mark::Area }
    }
}

/// A dashed vertical line at `x`, its label at the top.
#[derive(Debug, Clone, PartialEq)]
pub struct Marker {
    pub x: f64,
    pub label: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Chart {
    pub labels: Labels,
    pub series: Vec<Series>,
    pub markers: Vec<Marker>,
    /// The y axis' range; `None`: the data's, with a little room.
    pub y: Option<(f64, f64)>,
    /// The x axis' range; `None`: the data's.
    pub x: Option<(f64, f64)>,
}

impl Chart {
    pub fn new(labels: Labels, series: Vec<Series>) -> Chart {
        Chart { labels, series, markers: Vec::new(), y: None, x: None }
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

/// The title's and the legend's band above the plot.
const HEAD: u32 = style::TITLE_SIZE + style::TICK_SIZE + 3 * style::MARGIN;
/// A legend entry's line sample, and the gap between entries.
const SAMPLE: u32 = 30;
const ENTRY_GAP: u32 = 36;
/// How opaque a filled area is.
const AREA_OPACITY: f64 = 0.3;

/// The series' names in one centred row under the title, each after a sample of
/// its line: outside the plot, so it never hides a curve.
fn legend<DB: DrawingBackend>(head: &DrawingArea<DB, Shift>, series: &[Series]) -> Result<(), String> {
    let width = |s: &Series| SAMPLE + 8 + style::text_width(s.name.chars().count(), style::TICK_SIZE);
    let total = series.iter().map(width).sum::<u32>() + ENTRY_GAP * series.len().saturating_sub(1) as u32;
    let mut x = (style::WIDTH.saturating_sub(total) / 2) as i32;
    let y = (style::TITLE_SIZE + 2 * style::MARGIN + style::TICK_SIZE / 2) as i32;
    let label = style::text(style::TICK_SIZE).pos(Pos::new(HPos::Left, VPos::Center));
    for s in series {
        let sample = PathElement::new([(x, y), (x + SAMPLE as i32, y)], s.colour.stroke_width(LINE + 2));
        head.draw(&sample).map_err(failed)?;
        if matches!(s.mark, Mark::Points | Mark::LinePoints) {
            head.draw(&Circle::new((x + SAMPLE as i32 / 2, y), 6, s.colour.filled())).map_err(failed)?;
        }
        head.draw(&Text::new(s.name.clone(), (x + SAMPLE as i32 + 8, y), label.clone())).map_err(failed)?;
        x += (width(s) + ENTRY_GAP) as i32;
    }
    Ok(())
}

impl Draw for Chart {
    fn height(&self) -> u32 {
        700
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<Vec<Raster>, String> {
        let (x0, x1) = self.x.unwrap_or_else(|| self.range(|p| p.0));
        let (y0, y1) = self.y.unwrap_or_else(|| {
            let (l, h) = self.range(|p| p.1);
            (l - 0.05 * (h - l), h + 0.05 * (h - l))
        });
        let (head, body) = root.split_vertically(HEAD);
        let centred = style::text(style::TITLE_SIZE).pos(Pos::new(HPos::Center, VPos::Top));
        let title = Text::new(self.labels.title.clone(), ((style::WIDTH / 2) as i32, style::MARGIN as i32), centred);
        head.draw(&title).map_err(failed)?;
        legend(&head, &self.series)?;
        let mut chart = ChartBuilder::on(&body)
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
            // The label on the side of the line with more room.
            let (side, text) = if m.x < (x0 + x1) / 2.0 {
                (HPos::Left, format!(" {}", m.label))
            } else {
                (HPos::Right, format!("{} ", m.label))
            };
            let label = style::text(style::TICK_SIZE).pos(Pos::new(side, VPos::Top));
            chart.draw_series([Text::new(text, (m.x, y1), label)]).map_err(failed)?;
        }
        for s in &self.series {
            let (colour, points) = (s.colour, s.points.iter().copied().filter(|p| p.0.is_finite() && p.1.is_finite()));
            let drawn = match s.mark {
                Mark::Line => chart.draw_series(LineSeries::new(points, colour.stroke_width(LINE))),
                Mark::Points => chart.draw_series(points.map(|p| Circle::new(p, 5, colour.filled()))),
                Mark::Area => {
                    let fill = Polygon::new(points.clone().collect::<Vec<_>>(), colour.mix(AREA_OPACITY).filled());
                    chart.draw_series([fill]).map_err(failed)?;
                    chart.draw_series(LineSeries::new(points, colour.stroke_width(LINE)))
                }
                Mark::LinePoints => {
                    chart.draw_series(LineSeries::new(points.clone(), colour.stroke_width(LINE))).map_err(failed)?;
                    chart.draw_series(points.map(|p| Circle::new(p, 6, colour.filled())))
                }
            };
            drawn.map_err(failed)?;
        }
        Ok(Vec::new())
    }
}
