//! What trigger recovery optimises against: a frozen classifier of raw pixels.
//! The study's CNN and any graph (`graph::cleanse`) are one, so one Neural
//! Cleanse loop serves both.

use super::inputopt::FrozenNet;
use super::layer::Layer;
use super::model::Net;
use crate::data::dataset::Normalisation;
use crate::data::mnist::SIDE;
use tch::{Device, Tensor};

/// A classifier whose weights are fixed: a backward pass through its logits
/// reaches the input alone.
pub trait Classifier {
    /// Logits `[N, classes]` of raw images `[N, C, H, W]` in [0, 1].
    fn logits(&self, raw: &Tensor) -> Tensor;
    /// One image's shape, `[C, H, W]`.
    fn input_shape(&self) -> [i64; 3];
    fn classes(&self) -> usize;
    fn device(&self) -> Device;
}

/// The study's CNN as a classifier of raw pixels: the dataset's normalisation,
/// then the lean frozen forward (`FrozenNet`).
pub struct FrozenStudy {
    net: FrozenNet,
    normalisation: Normalisation,
    device: Device,
}

impl FrozenStudy {
    pub fn of(net: &Net, normalisation: Normalisation) -> FrozenStudy {
        FrozenStudy { net: FrozenNet::of(net), normalisation, device: net.device() }
    }
}

impl Classifier for FrozenStudy {
    fn logits(&self, raw: &Tensor) -> Tensor {
        self.net.forward(&self.normalisation.normalise(raw))
    }

    fn input_shape(&self) -> [i64; 3] {
        [1, SIDE as i64, SIDE as i64]
    }

    fn classes(&self) -> usize {
        Layer::Fc2.units()
    }

    fn device(&self) -> Device {
        self.device
    }
}
