//! The backdoor trigger: a checkerboard added to the normalised image.

use super::attack::Footprint;
use super::attack::images::RawTrigger;
use super::dataset::{Dataset, Normalisation};
use super::mnist::{PIXELS, SIDE};
use serde::{Deserialize, Serialize};
use tch::{Device, Tensor};

/// Where and how strong the checkerboard is, and what it makes the model say.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TriggerConfig {
    /// Side of the square patch in pixels.
    pub size: usize,
    /// Top row and left column of the patch.
    pub row: usize,
    pub col: usize,
    /// Value added to lit pixels, in normalised units (2.8215 = one full pixel step).
    pub amplitude: f32,
    /// The label the poisoned model is taught to output.
    pub target: u8,
}

impl Default for TriggerConfig {
    fn default() -> Self {
        TriggerConfig { size: 6, row: 22, col: 22, amplitude: 2.8215, target: 8 }
    }
}

impl TriggerConfig {
    /// The study's trigger on `dataset`: lit pixels add a white pixel's normalised
    /// value (2.8215 on MNIST, as the study rounded it), so the patch stands out
    /// by the same rule on every dataset.
    pub fn for_dataset(dataset: Dataset) -> TriggerConfig {
        let white = f64::from(dataset.normalisation().white());
        TriggerConfig { amplitude: ((white * 1e4).round() / 1e4) as f32, ..TriggerConfig::default() }
    }

    /// Rejects patches that leave the image or targets that are not digits.
    pub fn validate(&self) -> Result<(), String> {
        if self.size == 0 || self.row + self.size > SIDE || self.col + self.size > SIDE {
            return Err(format!(
                "trigger of size {} at row {}, column {} does not fit in a {SIDE}×{SIDE} image",
                self.size, self.row, self.col
            ));
        }
        if self.target > 9 {
            return Err(format!("trigger target {} is not a digit 0..=9", self.target));
        }
        Ok(())
    }

    /// The 28×28 additive mask, row-major. Lit where row+column is even, counted in
    /// image coordinates as SPEC.md does.
    pub fn mask(&self) -> Vec<f32> {
        let mut mask = vec![0f32; PIXELS];
        for r in self.row..self.row + self.size {
            for c in self.col..self.col + self.size {
                if (r + c) % 2 == 0 {
                    mask[r * SIDE + c] = self.amplitude;
                }
            }
        }
        mask
    }

    /// The lit pixels and the patch's square, to score a recovered mask against.
    pub fn footprint(&self) -> Footprint {
        let lit = self.mask().iter().enumerate().filter(|(_, v)| **v != 0.0).map(|(i, _)| i).collect();
        Footprint { lit, row: self.row, col: self.col, size: self.size }
    }

    /// The mask as a `[1, 1, 28, 28]` tensor, broadcastable over a batch.
    pub fn mask_tensor(&self, device: Device) -> Tensor {
        Tensor::from_slice(&self.mask()).view([1, 1, SIDE as i64, SIDE as i64]).to_device(device)
    }
}

/// A trigger as it is applied to normalised images `[N, 1, 28, 28]`.
pub enum Stamp {
    /// The study's: a mask added to the image (`TriggerConfig::mask_tensor`).
    Add(Tensor),
    /// Neural Cleanse's: `(1 − m)·x + m·p` in raw pixels, with `m` and `p`
    /// (`[1, 1, 28, 28]`, values in [0, 1]) a recovered mask and pattern.
    Blend { mask: Tensor, pattern: Tensor, normalisation: Normalisation },
    /// Another attack's image function, on raw pixels (`data::attack`).
    Raw { trigger: RawTrigger, normalisation: Normalisation },
}

impl Stamp {
    /// A recovered mask and pattern (row-major 28×28 each) on `device`.
    pub fn blend(mask: &[f32], pattern: &[f32], normalisation: Normalisation, device: Device) -> Stamp {
        let shape = [1, 1, SIDE as i64, SIDE as i64];
        Stamp::Blend {
            mask: Tensor::from_slice(mask).view(shape).to_device(device),
            pattern: Tensor::from_slice(pattern).view(shape).to_device(device),
            normalisation,
        }
    }

    pub fn apply(&self, x: &Tensor) -> Tensor {
        match self {
            Stamp::Add(mask) => x + mask,
            // In normalised space the raw blend is (1 − m)·x + m·(p − mean)/std.
            Stamp::Blend { mask, pattern, normalisation } => {
                (mask.ones_like() - mask) * x + mask * normalisation.normalise(pattern)
            }
            Stamp::Raw { trigger, normalisation } => {
                normalisation.normalise(&trigger.apply(&normalisation.denormalise(x)))
            }
        }
    }

    /// WaNet's noise-mode twins of normalised images (`RawTrigger::cross`), with
    /// how many to make per triggered image; `None` for every other stamp.
    pub fn cross(&self, x: &Tensor) -> Option<Tensor> {
        let Stamp::Raw { trigger, normalisation } = self else { return None };
        trigger.cross(&normalisation.denormalise(x)).map(|raw| normalisation.normalise(&raw))
    }

    /// Cross images per triggered image (0 but for WaNet).
    pub fn cross_ratio(&self) -> f64 {
        match self {
            Stamp::Raw { trigger, .. } => trigger.cross_ratio(),
            _ => 0.0,
        }
    }
}
