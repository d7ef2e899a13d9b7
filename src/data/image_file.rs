//! One image file of a dataset: read and recorded, decoded, made grey or RGB, resized
//! as torchvision resizes a PIL image, and laid out in planes.

use super::checksum::FileListDigest;
use super::images::{self, DatasetError};
use image::DynamicImage;
use image::imageops::FilterType;
use std::path::Path;

/// Reads and decodes the image at `path` (PNG, JPEG, PPM, whatever its bytes say it
/// is), recording it in `digest` under its path relative to `root`.
pub fn read_image(path: &Path, root: &Path, digest: &mut FileListDigest) -> Result<DynamicImage, DatasetError> {
    let bytes = read_listed(path, root, digest)?;
    image::load_from_memory(&bytes).map_err(|e| DatasetError::new(path, format!("not a readable image: {e}")))
}

/// Reads any file of a dataset, recording it in `digest` under its path relative to
/// `root` (with `/` between parts, the same on every system).
pub fn read_listed(path: &Path, root: &Path, digest: &mut FileListDigest) -> Result<Vec<u8>, DatasetError> {
    let bytes = images::read_file(path)?;
    let relative = path.strip_prefix(root).unwrap_or(path);
    let relative: Vec<String> = relative.iter().map(|part| part.to_string_lossy().into_owned()).collect();
    digest.add(&relative.join("/"), &bytes);
    Ok(bytes)
}

/// Whether an image is stored grey (one colour channel, with or without alpha).
pub fn is_grey(image: &DynamicImage) -> bool {
    !image.color().has_color()
}

/// The image as grey (1 channel) or RGB (3), alpha dropped as PIL's `convert` drops
/// it, resized to `side` × `side`.
///
/// The resize is image's Triangle filter: a separable convolution whose support widens
/// by the shrink factor and whose taps are weighed at pixel centres, which is PIL's
/// BILINEAR, what torchvision's `Resize((32, 32))` applies to PIL images (antialiased).
/// A 2×2 image therefore keeps its four colours exactly in the corners; other values
/// may differ from PIL's by a rounding step (PIL's weights are fixed-point).
pub fn resized(image: &DynamicImage, grey: bool, side: u32) -> DynamicImage {
    let converted =
        if grey { DynamicImage::ImageLuma8(image.to_luma8()) } else { DynamicImage::ImageRgb8(image.to_rgb8()) };
    converted.resize_exact(side, side, FilterType::Triangle)
}

/// Appends the image's planes (channel by channel, rows top to bottom) to `pixels`:
/// its grey values for 1 channel, red, green and blue for 3.
pub fn push_planes(pixels: &mut Vec<u8>, image: &DynamicImage, channels: usize) {
    let interleaved = if channels == 1 { image.to_luma8().into_raw() } else { image.to_rgb8().into_raw() };
    for c in 0..channels {
        pixels.extend(interleaved.iter().skip(c).step_by(channels));
    }
}
