//! Each attack's image function on raw pixels `[N, C, H, W]` in [0, 1], with its
//! tensors made once per device. benches/attacks_pytorch.py writes the same
//! formulas in PyTorch; tests hold the two to 1e-6.

use super::{Attack, BlendImage, Patch, PatchMode, PatchPattern, Wanet};
use crate::engine::draw;
use tch::{Device, Kind, Tensor};

/// The patch's top-left corner: as given, else the bottom-right corner.
pub fn patch_corner(patch: &Patch, side: usize, height: usize, width: usize) -> (usize, usize) {
    (patch.row.unwrap_or(height.saturating_sub(side)), patch.col.unwrap_or(width.saturating_sub(side)))
}

/// A raw-pixel attack ready on a device.
pub enum RawTrigger {
    /// `x·(1 − m) + v` (replace) or `clip(x + v)` (add), `m` and `v` full-size.
    Patch { keep: Tensor, value: Tensor, mode: PatchMode },
    /// `(1 − α)·x + α·image`.
    Blend { alpha: f64, image: Tensor },
    /// `clip(x + pattern)`, the pattern `[1, 1, 1, W]` constant down columns.
    Sig { pattern: Tensor },
    /// `grid_sample(x, grid)`; `cross` images per poisoned one get an extra random warp.
    Warp { grid: Tensor, cross_ratio: f64 },
}

impl RawTrigger {
    /// `attack` for images of `[channels, height, width]`; `None` for the study's,
    /// which is added in normalised space, and for `images`, which has no function.
    pub fn new(attack: &Attack, shape: [usize; 3], device: Device) -> Option<RawTrigger> {
        let [channels, height, width] = shape;
        let (h, w) = (height as i64, width as i64);
        Some(match attack {
            Attack::Study | Attack::Images(_) => return None,
            Attack::Badnets(p) => {
                let side = patch_side(p);
                let (row, col) = patch_corner(p, side, height, width);
                let pattern = patch_pattern(p, channels, row, col);
                let lit = pattern.gt(0.0).any_dims([1].as_slice(), true).to_kind(Kind::Float);
                let pad = [col as i64, w - (col + side) as i64, row as i64, h - (row + side) as i64];
                let keep: Tensor = 1.0 - lit.constant_pad_nd(pad);
                let value = (pattern * p.value).constant_pad_nd(pad);
                RawTrigger::Patch { keep: keep.to_device(device), value: value.to_device(device), mode: p.mode }
            }
            Attack::Blended(b) => {
                let image = match &b.image {
                    BlendImage::Noise { pixels, .. } => Tensor::from_slice(pixels).view([1, channels as i64, h, w]),
                    BlendImage::File { height, width, channels, pixels, .. } => {
                        Tensor::from_slice(pixels).view([1, *channels as i64, *height as i64, *width as i64])
                    }
                };
                RawTrigger::Blend { alpha: b.alpha, image: image.to_device(device) }
            }
            Attack::Sig(s) => {
                let columns: Vec<f32> = (0..width)
                    .map(|j| {
                        let phase = 2.0 * std::f64::consts::PI * j as f64 * s.freq / width as f64;
                        (s.delta * phase.sin()) as f32
                    })
                    .collect();
                RawTrigger::Sig { pattern: Tensor::from_slice(&columns).view([1, 1, 1, w]).to_device(device) }
            }
            Attack::Wanet(wanet) => RawTrigger::Warp {
                grid: Tensor::from_slice(&wanet.grid).view([1, h, w, 2]).to_device(device),
                cross_ratio: wanet.cross_ratio,
            },
        })
    }

    /// The triggered twins of raw images `[N, C, H, W]`.
    pub fn apply(&self, raw: &Tensor) -> Tensor {
        match self {
            RawTrigger::Patch { keep, value, mode: PatchMode::Replace } => raw * keep + value,
            RawTrigger::Patch { value, mode: PatchMode::Add, .. } => (raw + value).clamp(0.0, 1.0),
            RawTrigger::Blend { alpha, image } => raw * (1.0 - alpha) + image * *alpha,
            RawTrigger::Sig { pattern } => (raw + pattern).clamp(0.0, 1.0),
            RawTrigger::Warp { grid, .. } => warp(raw, &grid.expand([raw.size()[0], -1, -1, -1], false)),
        }
    }

    /// WaNet's "noise mode": images warped by the attack's grid plus a random
    /// field of at most one pixel, which keep their labels (so the network learns
    /// the exact warp, not any warp). `None` for the other attacks.
    pub fn cross(&self, raw: &Tensor) -> Option<Tensor> {
        let RawTrigger::Warp { grid, .. } = self else { return None };
        let size = grid.size();
        let n = raw.size()[0];
        let noise = draw::unit_uniform(&[n, size[1], size[2], 2], raw.device()) * 2.0 - 1.0;
        let noisy = (grid.expand([n, -1, -1, -1], false) + noise / size[1] as f64).clamp(-1.0, 1.0);
        Some(warp(raw, &noisy))
    }

    /// Cross images per poisoned image (WaNet's cross ratio, 0 for the others).
    pub fn cross_ratio(&self) -> f64 {
        match self {
            RawTrigger::Warp { cross_ratio, .. } => *cross_ratio,
            _ => 0.0,
        }
    }
}

/// Bilinear sampling, zeros outside, corners aligned (WaNet's `F.grid_sample`).
fn warp(raw: &Tensor, grid: &Tensor) -> Tensor {
    raw.grid_sampler(grid, 0, 0, true)
}

/// The patch's side: its image's, else `--patch-size`.
pub fn patch_side(p: &Patch) -> usize {
    match &p.pattern {
        PatchPattern::Image { side, .. } => *side,
        _ => p.size,
    }
}

/// Which of the patch's pixels are lit (any channel above 0), row-major.
pub fn patch_lit(p: &Patch, row: usize, col: usize) -> Vec<bool> {
    let pattern = patch_pattern(p, 1, row, col).gt(0.0).any_dims([1].as_slice(), false).view([-1]);
    Vec::<bool>::try_from(pattern).expect("a boolean pattern")
}

/// The patch's pixels `[1, C, side, side]` in [0, 1] (before `value`), its
/// top-left corner at `row`, `col`.
fn patch_pattern(p: &Patch, channels: usize, row: usize, col: usize) -> Tensor {
    let side = p.size as i64;
    match &p.pattern {
        PatchPattern::Solid => Tensor::ones([1, 1, side, side], (Kind::Float, Device::Cpu)),
        PatchPattern::Checkerboard => {
            // Lit where row + column is even in image coordinates, as the study counts.
            let lit: Vec<f32> = (0..p.size * p.size)
                .map(|i| f32::from(u8::from((row + i / p.size + col + i % p.size).is_multiple_of(2))))
                .collect();
            Tensor::from_slice(&lit).view([1, 1, side, side])
        }
        PatchPattern::Image { side, channels: c, pixels, .. } => {
            let s = *side as i64;
            let image = Tensor::from_slice(pixels).view([1, *c as i64, s, s]);
            if *c == 1 && channels > 1 { image.repeat([1, channels as i64, 1, 1]) } else { image }
        }
    }
}

/// WaNet's grid for `[height, width]` images: k×k noise in [−1, 1] drawn with
/// `seed`, scaled so its mean |·| is 1, upsampled bicubically (corners aligned),
/// added to the identity grid with strength `s / height`, clipped to [−1, 1]
/// (BackdoorBench's grid_rescale 1). Row-major `[H, W, 2]`, x (column) first.
pub fn wanet_grid(k: usize, s: f64, seed: i64, height: usize, width: usize) -> Vec<f32> {
    tch::manual_seed(seed);
    let k = k as i64;
    let (h, w) = (height as i64, width as i64);
    let noise = draw::unit_uniform(&[1, 2, k, k], Device::Cpu) * 2.0 - 1.0;
    let noise = &noise / noise.abs().mean(Kind::Float);
    let field = noise.upsample_bicubic2d([h, w], true, None, None).permute([0, 2, 3, 1]);
    let rows = Tensor::linspace(-1.0, 1.0, h, (Kind::Float, Device::Cpu));
    let cols = Tensor::linspace(-1.0, 1.0, w, (Kind::Float, Device::Cpu));
    let mesh = Tensor::meshgrid_indexing(&[rows, cols], "ij");
    let identity = Tensor::stack(&[&mesh[1], &mesh[0]], 2).unsqueeze(0);
    let grid = (identity + field * s / h as f64).clamp(-1.0, 1.0);
    Vec::<f32>::try_from(grid.contiguous().view([-1])).expect("a float grid")
}

/// Blended's noise image for `[channels, height, width]` images: `torch.rand`'s
/// values after `torch.manual_seed(seed)`.
pub fn blend_noise(seed: i64, [channels, height, width]: [usize; 3]) -> BlendImage {
    tch::manual_seed(seed);
    let noise = draw::unit_uniform(&[1, channels as i64, height as i64, width as i64], Device::Cpu);
    BlendImage::Noise { seed, pixels: Vec::<f32>::try_from(noise.view([-1])).expect("float noise") }
}

/// A WaNet attack with its grid drawn for `[height, width]` images.
pub fn wanet(k: usize, s: f64, seed: i64, cross_ratio: f64, height: usize, width: usize) -> Wanet {
    Wanet { k, s, seed, cross_ratio, grid: wanet_grid(k, s, seed, height, width) }
}
