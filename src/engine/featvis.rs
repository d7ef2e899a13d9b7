//! Feature visualisation: the input that most excites one unit, optimised as lucent
//! does (`optvis/param/spatial.py`, `transform.py`): the image is parameterised by
//! its Fourier spectrum (scaled by 1/frequency, so low frequencies move first and the
//! result is not high-frequency noise), squashed into [0, 1] by a sigmoid, shifted by
//! a small random jitter every step, normalised, and pushed up the unit's
//! pre-activation with total-variation and L1 penalties.

use super::inputopt::FrozenNet;
use super::layer::Layer;
use super::model::Net;
use super::optim::Adam;
use crate::data::dataset::Normalisation;
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct VisConfig {
    pub steps: usize,
    pub lr: f64,
    pub seed: u64,
    /// Largest shift of the jitter, in pixels, each way.
    pub jitter: i64,
    /// Weight of the mean absolute difference between neighbouring pixels.
    pub tv_weight: f64,
    /// Weight of the mean pixel value (the MNIST background is 0).
    pub l1_weight: f64,
    /// Spectrum scale 1/f^decay.
    pub decay_power: f64,
}

impl Default for VisConfig {
    fn default() -> Self {
        VisConfig { steps: 256, lr: 0.05, seed: 0, jitter: 2, tv_weight: 0.05, l1_weight: 0.05, decay_power: 1.0 }
    }
}

impl VisConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.steps == 0
            || self.lr.is_nan()
            || self.lr <= 0.0
            || self.jitter < 0
            || self.tv_weight < 0.0
            || self.l1_weight < 0.0
        {
            return Err("steps and the learning rate must be positive; jitter and the penalties non-negative".into());
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Visualization {
    pub layer: Layer,
    pub unit: usize,
    /// The image in raw pixels [0, 1], `side`² values, row-major.
    pub image: Vec<f32>,
    pub side: usize,
    /// The unit's pre-activation on the starting image and on the result (no jitter).
    pub start_activation: f64,
    pub activation: f64,
}

/// What an input optimisation reaches: the image in raw pixels [0, 1]
/// (`[channels, height, width]`, row-major) and the objective on the starting
/// image and on the result (no jitter).
#[derive(Debug, Clone, PartialEq)]
pub struct Optimum {
    pub image: Vec<f32>,
    pub start_activation: f64,
    pub activation: f64,
}

/// The spectrum's real and imaginary parts for a `[channels, height, width]` image.
fn spectrum_shape([channels, height, width]: [i64; 3]) -> [i64; 4] {
    [channels, height, width / 2 + 1, 2]
}

/// 1/max(f, 1/side)^decay over the rfft2 frequencies, `[height, width/2 + 1, 1]`
/// (`side` the longer one, as lucent has it).
fn spectrum_scale(height: i64, width: i64, decay: f64, device: Device) -> Tensor {
    let freq =
        |i: i64| if i <= (height - 1) / 2 { i as f64 / height as f64 } else { (i - height) as f64 / height as f64 };
    let cols = width / 2 + 1;
    let side = height.max(width) as f64;
    let mut scale = Vec::with_capacity((height * cols) as usize);
    for y in 0..height {
        for x in 0..cols {
            let f = (freq(y).powi(2) + (x as f64 / width as f64).powi(2)).sqrt();
            scale.push((1.0 / f.max(1.0 / side).powf(decay)) as f32);
        }
    }
    Tensor::from_slice(&scale).view([height, cols, 1]).to_device(device)
}

/// The image in [0, 1] (`[1, channels, height, width]`) that a spectrum stands for.
fn image_of(spectrum: &Tensor, scale: &Tensor, height: i64, width: i64) -> Tensor {
    let complex = (spectrum * scale).view_as_complex();
    // lucent's "magic" 4: keeps the sigmoid's input in its responsive range.
    let image = complex.fft_irfftn([height, width].as_slice(), [1i64, 2].as_slice(), "ortho") / 4.0;
    image.sigmoid().unsqueeze(0)
}

/// A small seeded generator for the jitter (libtorch's own is seeded separately).
struct Jitter(crate::splitmix::SplitMix64);

impl Jitter {
    fn next(&mut self, span: i64) -> i64 {
        self.0.below(span.max(1) as usize) as i64
    }

    /// A standard normal value (Box–Muller).
    fn normal(&mut self) -> f32 {
        let uniform = |z: i64| (z as f64 + 0.5) / (1u64 << 24) as f64;
        let (u, v) = (uniform(self.next(1 << 24)), uniform(self.next(1 << 24)));
        ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32
    }

    /// The image shifted by up to `d` pixels each way (edges padded with 0).
    fn shift(&mut self, image: &Tensor, d: i64) -> Tensor {
        if d == 0 {
            return image.shallow_clone();
        }
        let (height, width) = (image.size()[2], image.size()[3]);
        let padded = image.constant_pad_nd([d, d, d, d]);
        let (dy, dx) = (self.next(2 * d + 1), self.next(2 * d + 1));
        padded.narrow(2, dy, height).narrow(3, dx, width)
    }
}

/// The unit's pre-activation on a normalised batch, `[N]`.
fn objective(frozen: &FrozenNet, x: &Tensor, layer: Layer, unit: usize) -> Tensor {
    frozen.unit_preactivations(x, layer).select(1, unit as i64)
}

/// Optimises an image for `unit` of `layer` (a convolution's channel mean, an fc1
/// unit, or an fc2 logit). Deterministic for a seed at a fixed thread count.
pub fn visualize(
    net: &Net,
    (layer, unit): (Layer, usize),
    (side, normalisation): (usize, Normalisation),
    cfg: &VisConfig,
) -> Result<Visualization, String> {
    cfg.validate()?;
    if unit >= layer.units() {
        return Err(format!("{layer} has units 0..={}, not {unit}", layer.units() - 1));
    }
    let frozen = FrozenNet::of(net);
    let activation = |raw: &Tensor| objective(&frozen, &normalisation.normalise(raw), layer, unit);
    let shape = [1, side as i64, side as i64];
    let Optimum { image, start_activation, activation } = optimise_input(&activation, shape, net.device(), cfg);
    Ok(Visualization { layer, unit, image, side, start_activation, activation })
}

/// Optimises a `[channels, height, width]` image in raw pixels to raise
/// `activation` (a batch `[N, channels, height, width]` → one value per image,
/// `[N]`), with the jitter, the penalties and the Fourier parameterisation of
/// `cfg` (already validated). Any network serves: the study's, or a graph run
/// up to a node. Deterministic for a seed at a fixed thread count.
pub fn optimise_input(
    activation: &dyn Fn(&Tensor) -> Tensor,
    shape: [i64; 3],
    device: Device,
    cfg: &VisConfig,
) -> Optimum {
    let [_, height, width] = shape;
    // The start and the jitter come from our own seeded generator, not libtorch's
    // global one, so the result depends on the seed alone.
    let mut jitter = Jitter(crate::splitmix::SplitMix64(cfg.seed));
    let spectrum_shape = spectrum_shape(shape);
    let start: Vec<f32> = (0..spectrum_shape.iter().product::<i64>()).map(|_| 0.01 * jitter.normal()).collect();
    let spectrum = Tensor::from_slice(&start).view(spectrum_shape).to_device(device).set_requires_grad(true);
    let scale = spectrum_scale(height, width, cfg.decay_power, device);
    let mut adam = Adam::new(&spectrum, cfg.lr);
    let measure = |image: &Tensor| {
        let _guard = tch::no_grad_guard();
        activation(image).double_value(&[0])
    };
    let start_activation = measure(&image_of(&spectrum, &scale, height, width));
    for _ in 0..cfg.steps {
        let image = image_of(&spectrum, &scale, height, width);
        let reached = activation(&jitter.shift(&image, cfg.jitter));
        let tv = (image.narrow(2, 1, height - 1) - image.narrow(2, 0, height - 1)).abs().mean(Kind::Float)
            + (image.narrow(3, 1, width - 1) - image.narrow(3, 0, width - 1)).abs().mean(Kind::Float);
        let loss = -reached.sum(Kind::Float) + tv * cfg.tv_weight + image.mean(Kind::Float) * cfg.l1_weight;
        let grad = Tensor::run_backward(&[loss], &[&spectrum], false, false).remove(0);
        adam.step(&spectrum, &grad);
    }
    let _guard = tch::no_grad_guard();
    let image = image_of(&spectrum, &scale, height, width);
    Optimum { image: super::host::floats(&image), start_activation, activation: measure(&image) }
}
