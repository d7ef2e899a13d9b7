//! Pictures of numbers: heatmaps with colour scales, tiled grids of maps, and how
//! they reach the screen — through ratatui-image (halfblocks, sixel, kitty, iTerm2)
//! or, on dumb terminals, as shade characters. Protocols are encoded once per
//! picture and size and cached, so a frame only copies cells.

use image::{Rgb, RgbImage};
use ratatui::buffer::Buffer;
use ratatui::layout::{Rect, Size};
use ratatui::widgets::Widget;
use ratatui_image::picker::{Picker, ProtocolType};
use ratatui_image::protocol::Protocol;
use ratatui_image::protocol::halfblocks::Halfblocks;
use ratatui_image::{FilterType, Image, Resize};
use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};

/// How values become colours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Palette {
    /// Negative blue, zero white, positive red; symmetric around zero.
    Diverging,
    /// Zero black through red and orange to pale yellow (activations, accuracies).
    Heat,
    /// Black to white over the value range (digits).
    Grey,
}

/// Row-major values; NaN marks background (gaps between tiles).
#[derive(Debug, Clone, PartialEq)]
pub struct Heatmap {
    pub width: usize,
    pub height: usize,
    pub values: Vec<f32>,
}

impl Heatmap {
    pub fn new(width: usize, height: usize, values: Vec<f32>) -> Heatmap {
        assert_eq!(values.len(), width * height, "a {width}×{height} map needs {} values", width * height);
        Heatmap { width, height, values }
    }

    /// The largest |value| (ignoring background), at least a tiny positive number.
    pub fn max_abs(&self) -> f32 {
        self.values.iter().filter(|v| v.is_finite()).fold(1e-12, |m, v| m.max(v.abs()))
    }

    /// Maps of equal size side by side, `columns` per row, one background pixel
    /// between them.
    pub fn tiled(maps: &[Heatmap], columns: usize) -> Heatmap {
        let (w, h) = maps.first().map(|m| (m.width, m.height)).unwrap_or((1, 1));
        let columns = columns.clamp(1, maps.len().max(1));
        let rows = maps.len().div_ceil(columns).max(1);
        let (width, height) = (columns * (w + 1) + 1, rows * (h + 1) + 1);
        let mut values = vec![f32::NAN; width * height];
        for (i, map) in maps.iter().enumerate() {
            let (x0, y0) = (1 + (i % columns) * (w + 1), 1 + (i / columns) * (h + 1));
            for y in 0..h {
                values[(y0 + y) * width + x0..(y0 + y) * width + x0 + w]
                    .copy_from_slice(&map.values[y * w..(y + 1) * w]);
            }
        }
        Heatmap { width, height, values }
    }

    /// Where tile `i` of `tiled(maps, columns)` sits, including its one-pixel frame.
    pub fn tile_frame(i: usize, columns: usize, tile: (usize, usize)) -> (usize, usize, usize, usize) {
        let columns = columns.max(1);
        ((i % columns) * (tile.0 + 1), (i / columns) * (tile.1 + 1), tile.0 + 2, tile.1 + 2)
    }
}

/// The column count that makes `n` tiles of `tile` pixels best fill an area whose
/// width / height (in pixels) is `aspect`.
pub fn grid_columns(n: usize, tile: (usize, usize), aspect: f64) -> usize {
    let score = |c: usize| {
        let rows = n.div_ceil(c);
        let (w, h) = ((c * (tile.0 + 1) + 1) as f64, (rows * (tile.1 + 1) + 1) as f64);
        // The scale at which the grid fits, in "area heights".
        (1.0 / h).min(aspect / w)
    };
    (1..=n.max(1)).max_by(|&a, &b| score(a).total_cmp(&score(b)).then(b.cmp(&a))).unwrap_or(1)
}

/// A coloured picture and, per pixel, how much "ink" it carries (−1..1, the sign
/// of diverging values) for the text fallback.
#[derive(Debug, Clone, PartialEq)]
pub struct Picture {
    pub rgb: RgbImage,
    pub ink: Vec<f32>,
}

const BACKGROUND: Rgb<u8> = Rgb([36, 36, 36]);
const FRAME: Rgb<u8> = Rgb([80, 250, 120]);

impl Picture {
    /// Colours `map`: Diverging spans ±`scale`, Heat 0..`scale`; Grey spans the
    /// map's own range and ignores `scale`.
    pub fn of(map: &Heatmap, palette: Palette, scale: f32) -> Picture {
        let finite = || map.values.iter().copied().filter(|v| v.is_finite());
        let low = finite().fold(f32::INFINITY, f32::min);
        let range = (finite().fold(f32::NEG_INFINITY, f32::max) - low).max(1e-12);
        let scale = scale.max(1e-12);
        let mut rgb = RgbImage::new(map.width as u32, map.height as u32);
        let mut ink = Vec::with_capacity(map.values.len());
        for (i, &v) in map.values.iter().enumerate() {
            let (colour, amount) = if !v.is_finite() {
                (BACKGROUND, 0.0)
            } else {
                match palette {
                    Palette::Diverging => {
                        let t = (v / scale).clamp(-1.0, 1.0);
                        (diverging(t), t)
                    }
                    Palette::Heat => {
                        let t = (v / scale).clamp(0.0, 1.0);
                        (heat(t), t)
                    }
                    Palette::Grey => {
                        let t = ((v - low) / range).clamp(0.0, 1.0);
                        let g = (t * 255.0) as u8;
                        (Rgb([g, g, g]), t)
                    }
                }
            };
            rgb.put_pixel((i % map.width) as u32, (i / map.width) as u32, colour);
            ink.push(amount);
        }
        Picture { rgb, ink }
    }

    /// Draws a one-pixel frame (the selected tile).
    pub fn outline(&mut self, (x, y, w, h): (usize, usize, usize, usize)) {
        let (width, height) = (self.rgb.width() as usize, self.rgb.height() as usize);
        for (px, py) in (x..x + w)
            .flat_map(|px| [(px, y), (px, y + h - 1)])
            .chain((y..y + h).flat_map(|py| [(x, py), (x + w - 1, py)]))
        {
            if px < width && py < height {
                self.rgb.put_pixel(px as u32, py as u32, FRAME);
                self.ink[py * width + px] = 1.0;
            }
        }
    }

    /// The same picture `factor` times larger (nearest neighbour), for export.
    pub fn enlarged(&self, factor: u32) -> RgbImage {
        image::imageops::resize(&self.rgb, self.rgb.width() * factor, self.rgb.height() * factor, FilterType::Nearest)
    }
}

/// Blue (−1) → white (0) → red (+1).
pub fn diverging(t: f32) -> Rgb<u8> {
    let a = t.abs().clamp(0.0, 1.0);
    let fade = |full: f32| (255.0 + (full - 255.0) * a) as u8;
    if t < 0.0 { Rgb([fade(33.0), fade(102.0), fade(172.0)]) } else { Rgb([fade(178.0), fade(24.0), fade(43.0)]) }
}

/// Black (0) → dark red → orange → pale yellow (1).
pub fn heat(t: f32) -> Rgb<u8> {
    let t = t.clamp(0.0, 1.0);
    let stops = [
        (0.0, [0.0, 0.0, 4.0]),
        (0.35, [120.0, 28.0, 109.0]),
        (0.7, [237.0, 105.0, 37.0]),
        (1.0, [252.0, 255.0, 164.0]),
    ];
    let i = stops.iter().rposition(|(s, _)| *s <= t).unwrap_or(0).min(stops.len() - 2);
    let ((s0, c0), (s1, c1)) = (stops[i], stops[i + 1]);
    let f = ((t - s0) / (s1 - s0)).clamp(0.0, 1.0);
    Rgb([0, 1, 2].map(|k| (c0[k] + (c1[k] - c0[k]) * f) as u8))
}

/// Shade characters for the text fallback: positive (or unsigned) ink, and negative.
const POSITIVE: [char; 7] = [' ', '.', ':', '+', '*', '#', '@'];
const NEGATIVE: [char; 7] = [' ', '.', ',', '~', 'o', 'O', '0'];

/// The shade character for one ink value.
pub fn shade(ink: f32) -> char {
    let ramp = if ink < 0.0 { &NEGATIVE } else { &POSITIVE };
    let i = (ink.abs().clamp(0.0, 1.0) * (ramp.len() - 1) as f32).round() as usize;
    ramp[i]
}

/// How pictures reach the terminal.
pub enum Renderer {
    /// ratatui-image with a protocol chosen by the picker.
    Graphics(Box<Picker>),
    /// Shade characters only (dumb terminals, `--image-protocol ascii`).
    Text,
}

struct Cached {
    key: u64,
    picture: Picture,
    protocol: Option<(Size, Protocol)>,
}

/// Pictures by slot, each rebuilt only when its key changes and re-encoded only
/// when its area changes.
pub struct ImageStore {
    renderer: Renderer,
    cache: HashMap<&'static str, Cached>,
}

impl ImageStore {
    pub fn new(renderer: Renderer) -> ImageStore {
        ImageStore { renderer, cache: HashMap::new() }
    }

    /// Halfblocks with no terminal query (tests, no TTY).
    pub fn halfblocks() -> ImageStore {
        ImageStore::new(Renderer::Graphics(Box::new(Picker::halfblocks())))
    }

    /// What the header reports.
    pub fn protocol_name(&self) -> &'static str {
        match &self.renderer {
            Renderer::Text => "text",
            Renderer::Graphics(p) => match p.protocol_type() {
                ProtocolType::Halfblocks => "halfblocks",
                ProtocolType::Sixel => "sixel",
                ProtocolType::Kitty => "kitty",
                ProtocolType::Iterm2 => "iterm2",
            },
        }
    }

    /// Draws the picture in `slot` into `area`, building it with `make` when `key`
    /// differs from the cached one.
    pub fn draw(&mut self, buf: &mut Buffer, area: Rect, slot: &'static str, key: u64, make: impl FnOnce() -> Picture) {
        if area.is_empty() {
            return;
        }
        let cached =
            self.cache.entry(slot).or_insert_with(|| Cached { key: key ^ 1, picture: empty(), protocol: None });
        if cached.key != key {
            *cached = Cached { key, picture: make(), protocol: None };
        }
        match &self.renderer {
            Renderer::Text => draw_text(&cached.picture, area, buf),
            Renderer::Graphics(picker) => {
                let size = area.as_size();
                if cached.protocol.as_ref().is_none_or(|(s, _)| *s != size) {
                    cached.protocol = encode(picker, &cached.picture, size).map(|p| (size, p));
                }
                match &cached.protocol {
                    Some((_, protocol)) => Image::new(protocol).render(area, buf),
                    None => draw_text(&cached.picture, area, buf),
                }
            }
        }
    }
}

/// The picture as a protocol filling as much of `size` as its proportions allow.
/// Halfblocks are built at their final resolution directly (one pixel per column,
/// two per row): going through the picker's pixel-sized resize costs milliseconds.
fn encode(picker: &Picker, picture: &Picture, size: Size) -> Option<Protocol> {
    if picker.protocol_type() != ProtocolType::Halfblocks {
        let image = image::DynamicImage::ImageRgb8(picture.rgb.clone());
        return picker.new_protocol(image, size, Resize::Scale(Some(FilterType::Nearest))).ok();
    }
    let (cols, rows, scale) = fit(picture, size);
    let filter = if scale < 1.0 { FilterType::Triangle } else { FilterType::Nearest };
    let pixels = image::imageops::resize(&picture.rgb, cols as u32, rows as u32 * 2, filter);
    Halfblocks::new(image::DynamicImage::ImageRgb8(pixels), Size::new(cols, rows)).ok().map(Protocol::Halfblocks)
}

/// The cells (columns, rows) a picture fills in `size` at its proportions, a cell
/// being one pixel wide and two tall, and the scale that takes.
fn fit(picture: &Picture, size: Size) -> (u16, u16, f64) {
    let (w, h) = (picture.rgb.width() as f64, picture.rgb.height() as f64);
    let scale = (size.width as f64 / w).min(size.height as f64 * 2.0 / h);
    ((w * scale).floor().max(1.0) as u16, (h * scale / 2.0).floor().max(1.0) as u16, scale)
}

fn empty() -> Picture {
    Picture { rgb: RgbImage::new(1, 1), ink: vec![0.0] }
}

/// A picture as shade characters, two pixel rows per cell like halfblocks, kept
/// in proportion.
fn draw_text(picture: &Picture, area: Rect, buf: &mut Buffer) {
    let w = picture.rgb.width() as f64;
    let h = picture.rgb.height() as f64;
    let (cols, rows, scale) = fit(picture, area.as_size());
    for cy in 0..rows.min(area.height) {
        for cx in 0..cols.min(area.width) {
            let px = (((cx as f64 + 0.5) / scale) as usize).min(w as usize - 1);
            let py = (((cy as f64 * 2.0 + 1.0) / scale) as usize).min(h as usize - 1);
            let ink = picture.ink[py * w as usize + px];
            if let Some(cell) = buf.cell_mut((area.x + cx, area.y + cy)) {
                cell.set_char(shade(ink));
            }
        }
    }
}

/// A cache key from anything hashable.
pub fn key_of(parts: impl Hash) -> u64 {
    let mut hasher = DefaultHasher::new();
    parts.hash(&mut hasher);
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn palettes_hit_their_ends() {
        assert_eq!(diverging(0.0), Rgb([255, 255, 255]));
        assert_eq!(diverging(1.0), Rgb([178, 24, 43]));
        assert_eq!(diverging(-1.0), Rgb([33, 102, 172]));
        assert_eq!(heat(0.0), Rgb([0, 0, 4]));
        assert_eq!(heat(1.0), Rgb([252, 255, 164]));
        assert_eq!(shade(0.0), ' ');
        assert_eq!(shade(1.0), '@');
        assert_eq!(shade(-1.0), '0');
    }

    #[test]
    fn tiles_keep_each_map_and_gaps_are_background() {
        let maps: Vec<Heatmap> = (0..5).map(|i| Heatmap::new(2, 2, vec![i as f32; 4])).collect();
        let grid = Heatmap::tiled(&maps, 3);
        assert_eq!((grid.width, grid.height), (10, 7));
        assert!(grid.values[0].is_nan());
        // Tile 4 sits in row 1, column 1.
        assert_eq!(grid.values[4 * 10 + 4], 4.0);
        assert_eq!(Heatmap::tile_frame(4, 3, (2, 2)), (3, 3, 4, 4));
        let mut picture = Picture::of(&grid, Palette::Heat, 4.0);
        picture.outline(Heatmap::tile_frame(4, 3, (2, 2)));
        assert_eq!(*picture.rgb.get_pixel(3, 3), FRAME);
        assert_eq!(picture.enlarged(3).width(), 30);
    }

    #[test]
    fn grid_columns_follow_the_area_shape() {
        assert_eq!(grid_columns(32, (26, 26), 1.0), 6);
        assert!(grid_columns(32, (26, 26), 4.0) >= 8);
        assert!(grid_columns(32, (26, 26), 0.25) <= 3);
    }

    #[test]
    fn text_fallback_draws_proportional_shades() {
        let map = Heatmap::new(4, 4, (0..16).map(|v| v as f32 - 8.0).collect());
        let picture = Picture::of(&map, Palette::Diverging, 8.0);
        let mut store = ImageStore::new(Renderer::Text);
        let mut buf = Buffer::empty(Rect::new(0, 0, 10, 4));
        store.draw(&mut buf, Rect::new(0, 0, 10, 4), "t", 1, || picture.clone());
        let text: String = (0..10).map(|x| buf[(x, 0)].symbol().to_string()).collect();
        // 4×4 pixels fill 8 columns × 4 rows (a cell is one pixel wide, two tall);
        // the top row holds the most negative values.
        assert_eq!(text, "00OOOOoo  ");
        // Same key: not rebuilt (the closure would panic).
        store.draw(&mut buf, Rect::new(0, 0, 10, 4), "t", 1, || unreachable!());
    }
}
