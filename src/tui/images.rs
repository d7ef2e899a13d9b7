//! Pictures of numbers: heatmaps with colour scales, tiled grids of maps, and how
//! they reach the screen — through ratatui-image (halfblocks, sixel, kitty, iTerm2)
//! or, on dumb terminals, as shade characters. Protocols are encoded once per
//! picture and size and cached, so a frame only copies cells.

use crate::picture::{Picture, shade};
use image::RgbImage;
use image::imageops::FilterType;
use ratatui::buffer::Buffer;
use ratatui::layout::{Rect, Size};
use ratatui::widgets::Widget;
use ratatui_image::picker::{Picker, ProtocolType};
use ratatui_image::protocol::Protocol;
use ratatui_image::protocol::halfblocks::Halfblocks;
use ratatui_image::{Image, Resize};
use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};

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
    use crate::picture::{Heatmap, Palette};

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
