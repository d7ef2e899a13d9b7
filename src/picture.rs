//! Pictures of numbers as pixels: heatmaps with colour scales, tiled grids of
//! maps, input images and raw PNGs, for the explorer's image panes and the
//! figures' panels (`crate::figure` draws the figures). Nothing here knows about
//! terminals.

use image::imageops::FilterType;
use image::{Rgb, RgbImage};
use std::path::Path;

/// How values become colours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Palette {
    /// Negative blue, zero white, positive red; symmetric around zero.
    Diverging,
    /// Negative blue, zero mid grey, positive red: a zero that stands out from a
    /// dark and from a light terminal background alike (the explorer's Δ maps).
    Signed,
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
                    Palette::Diverging | Palette::Signed => {
                        let t = (v / scale).clamp(-1.0, 1.0);
                        (if palette == Palette::Signed { signed(t) } else { diverging(t) }, t)
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

/// −1 blue → 0 mid grey → +1 red.
pub fn signed(t: f32) -> Rgb<u8> {
    let a = t.abs().clamp(0.0, 1.0);
    let end = if t < 0.0 { [30.0, 100.0, 255.0] } else { [255.0, 50.0, 30.0] };
    Rgb(end.map(|e| (128.0 + (e - 128.0) * a).round() as u8))
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

/// Raw pixels in [0, 1] (`[channels, height, width]`) as a PNG, `factor` times
/// larger: grey for one channel, colour for three, pinned to [0, 1] (not the
/// image's own range) so files compare by eye.
pub fn save_image_png(values: &[f32], shape: [usize; 3], factor: u32, path: &Path) -> Result<(), String> {
    save_png(&input_picture(values, shape, factor)?, path)
}

/// A recovered trigger as the stamp paints it: the mask (one `height × width`
/// plane) times each of the pattern's channel planes.
pub fn painted(mask: &[f32], pattern: &[f32]) -> Vec<f32> {
    pattern.chunks(mask.len().max(1)).flat_map(|plane| mask.iter().zip(plane).map(|(m, p)| m * p)).collect()
}

/// Per pixel, the mean of an image's channel planes (a grey image is itself).
pub fn channel_mean(values: &[f32], plane: usize) -> Vec<f32> {
    let channels = (values.len() / plane.max(1)).max(1);
    if channels == 1 {
        return values.to_vec();
    }
    (0..plane).map(|i| (0..channels).map(|c| values[c * plane + i]).sum::<f32>() / channels as f32).collect()
}

/// An image in raw pixels [0, 1] (`[channels, height, width]`, row-major): grey
/// for one channel, RGB for three (a graph's input), `factor` times larger.
pub fn input_picture(values: &[f32], [channels, height, width]: [usize; 3], factor: u32) -> Result<RgbImage, String> {
    if !matches!(channels, 1 | 3) || values.len() != channels * height * width {
        return Err(format!("{} values are not an image of 1 or 3 channels of {height}×{width}", values.len()));
    }
    let plane = height * width;
    let level = |c: usize, i: usize| (values[(c % channels) * plane + i].clamp(0.0, 1.0) * 255.0).round() as u8;
    let rgb = RgbImage::from_fn(width as u32, height as u32, |x, y| {
        let i = y as usize * width + x as usize;
        Rgb([level(0, i), level(1, i), level(2, i)])
    });
    Ok(image::imageops::resize(&rgb, width as u32 * factor, height as u32 * factor, FilterType::Nearest))
}

impl Picture {
    /// An input image in raw pixels (`[channels, height, width]`): grey over its own
    /// range for one channel, its colours for three, with the luminance as ink for
    /// the text fallback (`--image-protocol ascii`).
    pub fn of_image(values: &[f32], [channels, height, width]: [usize; 3]) -> Picture {
        if channels != 3 || values.len() != 3 * height * width {
            return Picture::of(&Heatmap::new(width, height, values[..height * width].to_vec()), Palette::Grey, 1.0);
        }
        let rgb = input_picture(values, [channels, height, width], 1).expect("three planes of height × width");
        let ink = rgb.pixels().map(|p| (0.299 * p[0] as f32 + 0.587 * p[1] as f32 + 0.114 * p[2] as f32) / 255.0);
        Picture { ink: ink.collect(), rgb }
    }
}

/// Writes a PNG, creating its folder; atomically and never through a link (most
/// pictures land in a run folder).
pub fn save_png(image: &RgbImage, path: &Path) -> Result<(), String> {
    crate::engine::checkpoint::write_atomically(path, |tmp| {
        image.save(tmp).map_err(|e| color_eyre::eyre::eyre!("cannot write {}: {e}", path.display()))
    })
    .map_err(|e| e.to_string())
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
}
