//! The attack flags `run`, `train` and `import` share, turned into the
//! `Attack` a run records (docs/attacks.md).

use crate::data::attack::images::{blend_noise, wanet};
use crate::data::attack::{Attack, Blend, BlendImage, Patch, PatchMode, PatchPattern, PoisonedTest, Sig};
use crate::data::dataset::Dataset;
use crate::engine::train::TrainConfig;
use clap::{Args, ValueEnum};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AttackName {
    /// The study's checkerboard, added in normalised space (label 8).
    Study,
    /// A patch replacing the bottom-right pixels (BackdoorBench: 3×3 white).
    Badnets,
    /// (1 − α)·x + α·image.
    Blended,
    /// x + Δ·sin(2π·j·f/W) along columns, clean-label.
    Sig,
    /// A fixed smooth warp (grid_sample), with noise-mode images.
    Wanet,
    /// Poisoned test images as files (--poisoned-test DIR), for imported models.
    Images,
}

/// Which backdoor the run plants; BackdoorBench's defaults (all-to-one, target 0,
/// 10 % of the training set) for every attack but the study's.
#[derive(Debug, Args, Clone)]
pub struct AttackArgs {
    /// The attack (default: the study's for a new run; `import` keeps the run's).
    #[arg(long, value_enum)]
    pub attack: Option<AttackName>,
    /// The label triggered images are taught (default: 8 for the study's attack, else 0).
    #[arg(long, conflicts_with = "all_to_all")]
    pub target: Option<u8>,
    /// Every triggered image of class y is taught y + 1 (mod classes).
    #[arg(long)]
    pub all_to_all: bool,
    /// Share of the training set poisoned once before training (BackdoorBench's
    /// convention; default 0.1 for every attack but the study's, which poisons
    /// --poison-fraction of each batch).
    #[arg(long)]
    pub poison_ratio: Option<f64>,
    /// BadNets: the patch's side in pixels.
    #[arg(long, default_value_t = 3)]
    pub patch_size: usize,
    /// BadNets: the patch's top row and left column (default: bottom-right corner).
    #[arg(long, value_name = "ROW,COL")]
    pub patch_pos: Option<String>,
    /// BadNets: solid, checkerboard, or a PNG whose pixels are the patch.
    #[arg(long, default_value = "solid")]
    pub patch_pattern: String,
    #[arg(long, value_enum, default_value_t = PatchMode::Replace)]
    pub patch_mode: PatchMode,
    /// BadNets: the lit pixels' value in [0, 1] (1 = white).
    #[arg(long, default_value_t = 1.0)]
    pub patch_value: f64,
    /// Blended: a PNG (resized to the images) or noise:SEED.
    #[arg(long, default_value = "noise:0")]
    pub blend_image: String,
    /// Blended: the image's weight α.
    #[arg(long, default_value_t = 0.2)]
    pub alpha: f64,
    /// SIG: the sine's amplitude Δ in pixel units [0, 1] (40/255).
    #[arg(long, default_value_t = 40.0 / 255.0)]
    pub sig_delta: f64,
    /// SIG: periods across the image's width.
    #[arg(long, default_value_t = 6.0)]
    pub sig_freq: f64,
    /// SIG: poison only the target class and keep its labels (`--clean-label false` relabels).
    #[arg(long, default_value_t = true, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub clean_label: bool,
    /// WaNet: the noise grid's side k.
    #[arg(long, default_value_t = 4)]
    pub wanet_k: usize,
    /// WaNet: the warp's strength s.
    #[arg(long, default_value_t = 0.5)]
    pub wanet_s: f64,
    /// WaNet: the seed the noise grid is drawn with.
    #[arg(long, default_value_t = 0)]
    pub wanet_seed: i64,
    /// WaNet: noise-mode images (random extra warp, labels kept) per poisoned image.
    #[arg(long, default_value_t = 2.0)]
    pub wanet_cross_ratio: f64,
    /// Images: BackdoorBench's bd_test_dataset folder (<label>/<test index>.png).
    #[arg(long, value_name = "DIR")]
    pub poisoned_test: Option<PathBuf>,
}

impl AttackArgs {
    /// The study's recipe on `dataset` (images of `shape`) with this attack: what
    /// `import` records.
    pub fn recipe(&self, dataset: Dataset, shape: [usize; 3]) -> Result<TrainConfig, String> {
        let args = self.for_dataset(dataset);
        let mut config = TrainConfig::for_dataset(dataset);
        config.trigger.target = args.target();
        config.attack = args.attack(shape)?;
        config.all_to_all = args.all_to_all;
        config.poison_ratio = args.poison_ratio();
        config.validate()?;
        Ok(config)
    }

    /// The attack for images of `[channels, height, width]` (a folder's as
    /// `--image-size` makes them), files read and kept in it.
    pub fn attack(&self, shape: [usize; 3]) -> Result<Attack, String> {
        let [channels, height, width] = shape;
        Ok(match self.name() {
            AttackName::Study => Attack::Study,
            AttackName::Badnets => {
                let (row, col) = match &self.patch_pos {
                    None => (None, None),
                    Some(text) => {
                        let (r, c) = parse_pair(text).ok_or_else(|| format!("--patch-pos {text}: expected ROW,COL"))?;
                        (Some(r), Some(c))
                    }
                };
                let pattern = match self.patch_pattern.as_str() {
                    "solid" => PatchPattern::Solid,
                    "checkerboard" => PatchPattern::Checkerboard,
                    file => {
                        let picture = read_picture(Path::new(file), None, channels)?;
                        if picture.height != picture.width {
                            return Err(format!(
                                "{file}: a patch image must be square, not {}×{}",
                                picture.height, picture.width
                            ));
                        }
                        PatchPattern::Image {
                            file: PathBuf::from(file),
                            side: picture.height,
                            channels: picture.channels,
                            pixels: picture.pixels,
                        }
                    }
                };
                Attack::Badnets(Patch {
                    size: self.patch_size,
                    row,
                    col,
                    pattern,
                    mode: self.patch_mode,
                    value: self.patch_value,
                })
            }
            AttackName::Blended => {
                let image = match self.blend_image.strip_prefix("noise:") {
                    Some(seed) => blend_noise(
                        seed.parse()
                            .map_err(|_| format!("--blend-image {}: noise:SEED takes an integer", self.blend_image))?,
                        [channels, height, width],
                    ),
                    None => {
                        let picture = read_picture(Path::new(&self.blend_image), Some((height, width)), channels)?;
                        BlendImage::File {
                            file: PathBuf::from(&self.blend_image),
                            height,
                            width,
                            channels: picture.channels,
                            pixels: picture.pixels,
                        }
                    }
                };
                Attack::Blended(Blend { alpha: self.alpha, image })
            }
            AttackName::Sig => {
                Attack::Sig(Sig { delta: self.sig_delta, freq: self.sig_freq, clean_label: self.clean_label })
            }
            AttackName::Wanet => {
                Attack::Wanet(wanet(self.wanet_k, self.wanet_s, self.wanet_seed, self.wanet_cross_ratio, height, width))
            }
            AttackName::Images => {
                let dir = self.poisoned_test.as_deref().ok_or("--attack images needs --poisoned-test DIR")?;
                if self.poison_ratio.is_some() {
                    return Err("--poison-ratio: --attack images poisons no training set".into());
                }
                Attack::Images(PoisonedTest::scan(dir)?)
            }
        })
    }

    /// These flags with the attack defaulted for `dataset`: the study's trigger is
    /// for 28×28 grey images, BadNets elsewhere.
    pub fn for_dataset(&self, dataset: Dataset) -> AttackArgs {
        let mut args = self.clone();
        if !dataset.is_study_shaped() {
            args.attack = args.attack.or(Some(AttackName::Badnets));
        }
        args
    }

    fn name(&self) -> AttackName {
        self.attack.unwrap_or(AttackName::Study)
    }

    /// Whether any flag of the attack was given (`import` otherwise keeps the run's).
    pub fn given(&self) -> bool {
        self.attack.is_some() || self.target.is_some() || self.all_to_all || self.poison_ratio.is_some()
    }

    /// The target: as given, else the study's 8 or BackdoorBench's 0.
    pub fn target(&self) -> u8 {
        self.target.unwrap_or(if self.name() == AttackName::Study { 8 } else { 0 })
    }

    /// The share of the training set poisoned: as given, else BackdoorBench's
    /// 10 % for its attacks (the study's poisons each batch instead; `images`
    /// poisons none).
    pub fn poison_ratio(&self) -> Option<f64> {
        let poisons_training = !matches!(self.name(), AttackName::Study | AttackName::Images);
        self.poison_ratio.or(poisons_training.then_some(0.1))
    }
}

fn parse_pair(text: &str) -> Option<(usize, usize)> {
    let (a, b) = text.split_once(',')?;
    Some((a.trim().parse().ok()?, b.trim().parse().ok()?))
}

/// A picture's pixels in [0, 1], planes order.
struct Picture {
    height: usize,
    width: usize,
    channels: usize,
    pixels: Vec<f32>,
}

/// Reads a picture for an attack: resized to `size` if given (bilinear), grey
/// (PIL's "L", its integer weights 19595/38470/7471 of 65536) when the images
/// have one channel, else RGB.
fn read_picture(path: &Path, size: Option<(usize, usize)>, channels: usize) -> Result<Picture, String> {
    let image = image::open(path).map_err(|e| format!("{}: cannot read the image: {e}", path.display()))?;
    let image = match size {
        Some((h, w)) if (image.height() as usize, image.width() as usize) != (h, w) => {
            image.resize_exact(w as u32, h as u32, image::imageops::FilterType::Triangle)
        }
        _ => image,
    };
    let rgb = image.to_rgb8();
    let (width, height) = (rgb.width() as usize, rgb.height() as usize);
    let plane = width * height;
    let pixels: Vec<f32> = if channels == 1 {
        rgb.pixels()
            .map(|p| {
                let [r, g, b] = p.0.map(u32::from);
                ((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16) as f32 / 255.0
            })
            .collect()
    } else {
        (0..3).flat_map(|c| rgb.pixels().map(move |p| f32::from(p.0[c]) / 255.0)).collect()
    };
    debug_assert_eq!(pixels.len(), plane * channels.min(3));
    Ok(Picture { height, width, channels: if channels == 1 { 1 } else { 3 }, pixels })
}
