//! The one look every figure shares: the bundled font, text sizes, colours, the
//! value scales of heatmaps and the page sizes. A figure kind takes its sizes and
//! colours from here and nowhere else.

use crate::picture::{Heatmap, diverging, heat};
use image::{Rgb, RgbImage};
use plotters::style::{FontFamily, FontStyle, RGBColor, TextStyle};
use std::sync::Once;

/// DejaVu Sans (Bitstream Vera licence, beside it in assets/fonts/), compiled in
/// so no system font is needed.
static FONT: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");
/// The family every text element names; in an SVG the reader's own sans-serif.
pub const FAMILY: &str = "sans-serif";

/// Registers the bundled font once per process (plotters keeps a global table).
pub fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        plotters::style::register_font(FAMILY, FontStyle::Normal, FONT).unwrap_or_else(|_| panic!("DejaVu Sans parses"))
    });
}

/// Width of every figure in pixels (the PNG's size; the SVG's user units): a
/// full page width at 150 dpi.
pub const WIDTH: u32 = 1200;
/// The space around a chart, and between its parts.
pub const MARGIN: u32 = 24;
/// Room for tick labels and the axis label below the x axis and left of the y axis.
pub const X_LABEL_AREA: u32 = 80;
pub const Y_LABEL_AREA: u32 = 110;
/// Width of a colour bar with its values and label.
pub const COLOUR_BAR_AREA: u32 = 170;

pub const TITLE_SIZE: u32 = 30;
pub const LABEL_SIZE: u32 = 24;
pub const TICK_SIZE: u32 = 20;
pub const PANEL_TITLE_SIZE: u32 = 20;

pub const INK: RGBColor = RGBColor(25, 25, 25);
pub const GRID: RGBColor = RGBColor(225, 225, 225);
/// Cells with no value (a layer shorter than the widest, the gaps between tiles).
pub const EMPTY: Rgb<u8> = Rgb([200, 200, 200]);

/// Clean, poison (attack success) and rehab accuracy in every chart: the
/// Okabe–Ito bluish green, vermillion and blue, told apart with any colour vision.
pub const CLEAN: RGBColor = RGBColor(0, 158, 115);
pub const POISON: RGBColor = RGBColor(213, 94, 0);
pub const REHAB: RGBColor = RGBColor(0, 114, 178);
/// The three headline accuracies' colours, in `Metrics::HEADLINE`'s order.
pub const ACCURACY: [RGBColor; 3] = [CLEAN, POISON, REHAB];
/// Further series, in order (Okabe–Ito's others).
pub const SERIES: [RGBColor; 5] =
    [RGBColor(230, 159, 0), RGBColor(86, 180, 233), RGBColor(204, 121, 167), RGBColor(240, 228, 66), INK];
/// Points that are not the point of a scatter.
pub const MUTED: RGBColor = RGBColor(150, 150, 150);

pub fn text(size: u32) -> TextStyle<'static> {
    TextStyle::from((FontFamily::Name(FAMILY), size)).color(&INK)
}

/// About how wide `chars` characters of DejaVu Sans are at `size` (0.62 em each).
pub fn text_width(chars: usize, size: u32) -> u32 {
    (0.62 * chars as f64 * size as f64).ceil() as u32
}

/// Stroke width of a data line.
pub const LINE: u32 = 3;

/// How numbers become colours in heatmaps and image panels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Values {
    /// Low to high through black, purple, orange and pale yellow (magnitudes).
    Sequential { low: f32, high: f32 },
    /// Blue below zero, white at zero, red above, symmetric: ±`span` (changes).
    Diverging { span: f32 },
    /// Black to white (input images).
    Grey { low: f32, high: f32 },
}

/// A heatmap's colour scale: how values map to colours, and what they are.
#[derive(Debug, Clone, PartialEq)]
pub struct Scale {
    pub values: Values,
    /// What the colour bar measures, with its unit.
    pub label: String,
}

impl Scale {
    pub fn new(values: Values, label: impl Into<String>) -> Scale {
        Scale { values, label: label.into() }
    }

    /// The ends of the colour bar.
    pub fn range(&self) -> (f32, f32) {
        match self.values {
            Values::Sequential { low, high } | Values::Grey { low, high } => (low, high),
            Values::Diverging { span } => (-span, span),
        }
    }

    /// A map's values in this scale's colours, one pixel per value.
    pub fn paint(&self, map: &Heatmap) -> RgbImage {
        RgbImage::from_fn(map.width as u32, map.height as u32, |x, y| {
            self.colour(map.values[y as usize * map.width + x as usize])
        })
    }

    /// The colour of one value (clamped to the ends; not finite: `EMPTY`).
    pub fn colour(&self, v: f32) -> Rgb<u8> {
        if !v.is_finite() {
            return EMPTY;
        }
        let (low, high) = self.range();
        let t = ((v - low) / (high - low).max(1e-12)).clamp(0.0, 1.0);
        match self.values {
            Values::Sequential { .. } => heat(t),
            Values::Diverging { .. } => diverging(2.0 * t - 1.0),
            Values::Grey { .. } => Rgb([(t * 255.0).round() as u8; 3]),
        }
    }
}

/// A tick label for `v` on an axis spanning `span`: as many decimals as the span needs.
pub fn number(v: f64, span: f64) -> String {
    let decimals = match span.abs() {
        s if s >= 20.0 => 0,
        s if s >= 2.0 => 1,
        s if s >= 0.2 => 2,
        _ => 3,
    };
    let text = format!("{v:.decimals$}");
    // "-0.0" reads as a negative number.
    if text.trim_start_matches('-').chars().all(|c| c == '0' || c == '.') {
        text.trim_start_matches('-').to_string()
    } else {
        text.replace('-', "−")
    }
}

/// plotters' colour for an image pixel.
pub fn rgb(c: Rgb<u8>) -> RGBColor {
    RGBColor(c[0], c[1], c[2])
}
