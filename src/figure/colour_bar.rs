//! The colour bar beside a heatmap or an image grid: the scale's colours from low
//! (bottom) to high (top), five values, and what they measure.

use super::render::failed;
use super::style::{self, INK, Scale};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

/// Steps the bar is drawn in.
const STEPS: i32 = 100;
/// The bar's width in pixels, and the values written beside it.
const BAR: i32 = 32;
const TICKS: usize = 5;

/// Draws `scale` into `area` (`style::COLOUR_BAR_AREA` wide), the bar spanning
/// its height less room for the end values.
pub fn draw<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, scale: &Scale) -> Result<(), String> {
    let (_, height) = area.dim_in_pixel();
    let (top, bottom) = (style::TICK_SIZE as i32, height as i32 - style::TICK_SIZE as i32);
    let (low, high) = scale.range();
    let y_of = |t: f32| bottom - ((bottom - top) as f32 * t).round() as i32;
    for i in 0..STEPS {
        let (a, b) = (i as f32 / STEPS as f32, (i + 1) as f32 / STEPS as f32);
        let colour = style::rgb(scale.colour(low + (high - low) * (a + b) / 2.0));
        area.draw(&Rectangle::new([(0, y_of(b)), (BAR, y_of(a))], colour.filled())).map_err(failed)?;
    }
    area.draw(&Rectangle::new([(0, top), (BAR, bottom)], INK.stroke_width(1))).map_err(failed)?;
    let tick = style::text(style::TICK_SIZE).pos(Pos::new(HPos::Left, VPos::Center));
    for i in 0..TICKS {
        let t = i as f32 / (TICKS - 1) as f32;
        let y = y_of(t);
        area.draw(&PathElement::new([(BAR, y), (BAR + 6, y)], INK.stroke_width(1))).map_err(failed)?;
        let value = style::number((low + (high - low) * t) as f64, (high - low) as f64);
        area.draw(&Text::new(value, (BAR + 10, y), tick.clone())).map_err(failed)?;
    }
    let label =
        style::text(style::LABEL_SIZE).transform(FontTransform::Rotate90).pos(Pos::new(HPos::Center, VPos::Top));
    let x = style::COLOUR_BAR_AREA as i32 - style::LABEL_SIZE as i32 - 4;
    area.draw(&Text::new(scale.label.clone(), (x, (top + bottom) / 2), label)).map_err(failed)?;
    Ok(())
}
