//! The attack as data: which backdoor a run plants and how a clean image becomes
//! a triggered one. Recorded in the run (`run.json`), so later commands and the
//! explorer need no flags. BackdoorBench's formulas, on raw pixels in [0, 1]
//! before normalisation; only the study's checkerboard is added in normalised
//! space (`data::trigger`), as the study did.

pub mod images;
pub mod poison;
pub mod poisoned_test;

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// The backdoor a run plants. `Study` is today's checkerboard (its geometry and
/// target in `TrainConfig::trigger`); the others follow BackdoorBench's defaults.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Attack {
    #[default]
    Study,
    Badnets(Patch),
    Blended(Blend),
    Sig(Sig),
    Wanet(Wanet),
    /// Poisoned test images brought as files (`poisoned_test`): no image
    /// function, so nothing is trained with it; imported models are scored on it.
    Images(PoisonedTest),
}

/// BadNets: a patch replacing (or added to) the pixels at a corner.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Patch {
    pub size: usize,
    /// Top row and left column; `None` puts the patch in the bottom-right corner
    /// of whatever image size the dataset has.
    pub row: Option<usize>,
    pub col: Option<usize>,
    pub pattern: PatchPattern,
    pub mode: PatchMode,
    /// The lit pixels' value in [0, 1] (1 = white).
    pub value: f64,
}

impl Default for Patch {
    fn default() -> Self {
        Patch { size: 3, row: None, col: None, pattern: PatchPattern::Solid, mode: PatchMode::Replace, value: 1.0 }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum PatchPattern {
    /// Every pixel lit.
    Solid,
    /// Lit where row + column is even (image coordinates).
    Checkerboard,
    /// An image's pixels (greyscale or RGB, values in [0, 1]) times `value`; its
    /// size is the patch's. Kept in the run so the run does not depend on the file.
    Image { file: PathBuf, side: usize, channels: usize, pixels: Vec<f32> },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum PatchMode {
    /// The patch's pixels replace the image's (BackdoorBench's BadNets).
    Replace,
    /// The patch is added, clipped to [0, 1].
    Add,
}

/// Blended: `(1 − α)·x + α·image`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Blend {
    pub alpha: f64,
    pub image: BlendImage,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum BlendImage {
    /// Uniform noise in [0, 1) drawn with `seed` at the dataset's image size
    /// (`images::blend_noise`), `[C, H, W]` row-major: drawn once when the run is
    /// made and kept, so building a test set never reseeds libtorch's generator.
    Noise { seed: i64, pixels: Vec<f32> },
    /// A picture (resized to the images' size at import), its pixels kept in the run.
    File { file: PathBuf, height: usize, width: usize, channels: usize, pixels: Vec<f32> },
}

/// SIG: `x + Δ·sin(2π·j·f / W)` along columns, clipped to [0, 1].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sig {
    pub delta: f64,
    pub freq: f64,
    /// Poison only images of the target class, keeping their labels.
    pub clean_label: bool,
}

impl Default for Sig {
    fn default() -> Self {
        Sig { delta: 40.0 / 255.0, freq: 6.0, clean_label: true }
    }
}

/// WaNet: a fixed warp from k×k uniform noise, upsampled bicubically.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Wanet {
    pub k: usize,
    pub s: f64,
    pub seed: i64,
    /// Images warped with an extra random field and their labels kept, per poisoned image.
    pub cross_ratio: f64,
    /// The sampling grid `[H, W, 2]` (x, y in [−1, 1]), row-major; drawn once from
    /// `seed` when the run is made and kept so every command warps alike.
    pub grid: Vec<f32>,
}

/// A folder in BackdoorBench's `bd_test_dataset` layout, read at each test set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PoisonedTest {
    /// Absolute, so later commands find it from any working directory.
    pub dir: PathBuf,
    /// Images it held when the run recorded it.
    pub count: usize,
}

/// The pixels a patch attack sets, to score a recovered mask against: its lit
/// pixels (row-major indices) and the square it lies in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Footprint {
    pub lit: Vec<usize>,
    pub row: usize,
    pub col: usize,
    pub size: usize,
}

impl Attack {
    /// The name `--attack` takes.
    pub fn name(&self) -> &'static str {
        match self {
            Attack::Study => "study",
            Attack::Badnets(_) => "badnets",
            Attack::Blended(_) => "blended",
            Attack::Sig(_) => "sig",
            Attack::Wanet(_) => "wanet",
            Attack::Images(_) => "images",
        }
    }

    /// One line for tables and reports: the attack and its parameters.
    pub fn describe(&self) -> String {
        match self {
            Attack::Study => "study (checkerboard added in normalised space)".into(),
            Attack::Badnets(p) => {
                let at = match (p.row, p.col) {
                    (Some(r), Some(c)) => format!("at row {r}, column {c}"),
                    _ => "bottom-right".into(),
                };
                let pattern = match &p.pattern {
                    PatchPattern::Solid => "solid".to_string(),
                    PatchPattern::Checkerboard => "checkerboard".into(),
                    PatchPattern::Image { file, .. } => file.display().to_string(),
                };
                let mode = if p.mode == PatchMode::Replace { "replacing" } else { "added to" };
                format!("badnets ({0}×{0} {pattern} patch of value {1} {mode} the pixels {at})", p.size, p.value)
            }
            Attack::Blended(b) => match &b.image {
                BlendImage::Noise { seed, .. } => format!("blended (α {} with uniform noise, seed {seed})", b.alpha),
                BlendImage::File { file, .. } => format!("blended (α {} with {})", b.alpha, file.display()),
            },
            Attack::Sig(s) => {
                format!("sig (Δ {:.4}, f {}{})", s.delta, s.freq, if s.clean_label { ", clean-label" } else { "" })
            }
            Attack::Wanet(w) => format!("wanet (k {}, s {}, seed {}, cross ratio {})", w.k, w.s, w.seed, w.cross_ratio),
            Attack::Images(t) => format!("images ({} poisoned test images from {})", t.count, t.dir.display()),
        }
    }

    /// Whether triggered images can be made from clean ones (training and the
    /// poisoned training set need it); `images` only has its files.
    pub fn has_image_function(&self) -> bool {
        !matches!(self, Attack::Images(_))
    }

    /// Where a BadNets patch lies in a `height`×`width` image (`None` for an
    /// attack that is no patch; the study's is `TriggerConfig::footprint`).
    pub fn patch_footprint(&self, height: usize, width: usize) -> Option<Footprint> {
        let Attack::Badnets(p) = self else { return None };
        let size = images::patch_side(p);
        let (row, col) = images::patch_corner(p, size, height, width);
        let lit = images::patch_lit(p, row, col);
        let lit = (0..size * size).filter(|&i| lit[i]).map(|i| (row + i / size) * width + col + i % size).collect();
        Some(Footprint { lit, row, col, size })
    }

    /// Rejects parameters that cannot make a triggered image of `[channels, height, width]`.
    pub fn validate(&self, shape: [usize; 3]) -> Result<(), String> {
        let [channels, height, width] = shape;
        match self {
            Attack::Study | Attack::Images(_) => Ok(()),
            Attack::Badnets(p) => {
                let side = images::patch_side(p);
                let (row, col) = images::patch_corner(p, side, height, width);
                if side == 0 || row + side > height || col + side > width {
                    return Err(format!(
                        "a {side}×{side} patch at row {row}, column {col} does not fit in a {height}×{width} image"
                    ));
                }
                if let PatchPattern::Image { channels: c, .. } = &p.pattern
                    && *c != 1
                    && *c != channels
                {
                    return Err(format!("the patch image has {c} channels; the images have {channels}"));
                }
                if !(0.0..=1.0).contains(&p.value) {
                    return Err(format!("--patch-value {} is not within 0..=1", p.value));
                }
                Ok(())
            }
            Attack::Blended(b) => {
                if !(0.0..=1.0).contains(&b.alpha) {
                    return Err(format!("--alpha {} is not within 0..=1", b.alpha));
                }
                if let BlendImage::Noise { pixels, .. } = &b.image
                    && pixels.len() != channels * height * width
                {
                    return Err(format!(
                        "the run's blend noise holds {} values; a {channels}×{height}×{width} image needs {}",
                        pixels.len(),
                        channels * height * width
                    ));
                }
                if let BlendImage::File { file, height: h, width: w, channels: c, .. } = &b.image
                    && ((*h, *w) != (height, width) || (*c != 1 && *c != channels))
                {
                    return Err(format!(
                        "{}: the blend image is {c}×{h}×{w} after loading; the images are {channels}×{height}×{width}",
                        file.display()
                    ));
                }
                Ok(())
            }
            Attack::Sig(s) => {
                if !(s.delta.is_finite() && s.freq.is_finite()) || s.delta < 0.0 {
                    return Err(format!("--sig-delta {} and --sig-freq {} must be finite, Δ ≥ 0", s.delta, s.freq));
                }
                Ok(())
            }
            Attack::Wanet(w) => {
                if w.k < 2 || w.k > height.min(width) {
                    return Err(format!("--wanet-k {} must be within 2..={}", w.k, height.min(width)));
                }
                if !(w.s.is_finite() && w.s >= 0.0 && w.cross_ratio.is_finite() && w.cross_ratio >= 0.0) {
                    return Err(format!("--wanet-s {} and the cross ratio must be finite and ≥ 0", w.s));
                }
                if w.grid.len() != height * width * 2 {
                    return Err(format!(
                        "the run's WaNet grid holds {} values; a {height}×{width} image needs {}",
                        w.grid.len(),
                        height * width * 2
                    ));
                }
                Ok(())
            }
        }
    }
}
