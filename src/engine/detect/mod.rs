//! Detecting a backdoor from the data's side, written once for any network:
//! poisoned test inputs (STRIP, SCALE-UP) through a `Classifier`'s logits, and
//! poisoned training images (spectral signatures, activation clustering) through
//! a `FeatureNet`'s features. Tensors stay here; plain numbers come out.

pub mod ac;
pub mod ica;
pub mod kmeans;
pub mod roc;
pub mod scaleup;
pub mod scan;
pub mod spectral;
pub mod strip;

use super::layer::Layer;
use super::model::Net;
use crate::data::dataset::Normalisation;
use tch::{Device, Kind, Tensor};

/// A network whose activations at one layer are read as features.
pub trait FeatureNet {
    /// `[N, D]` features of raw images `[N, C, H, W]` in [0, 1], flattened.
    fn features(&self, raw: &Tensor) -> Tensor;
    fn device(&self) -> Device;
}

/// The study's CNN read at a layer's block output (fc1's: the penultimate
/// features, what fc2 reads).
pub struct StudyFeatures<'a> {
    pub net: &'a Net,
    pub normalisation: Normalisation,
    pub layer: Layer,
}

impl FeatureNet for StudyFeatures<'_> {
    fn features(&self, raw: &Tensor) -> Tensor {
        let upto = &Layer::ALL[..=self.layer.position()];
        let x = self.normalisation.normalise(raw);
        upto.iter().fold(x, |h, &l| self.net.block(l, &h)).flatten(1, -1)
    }

    fn device(&self) -> Device {
        self.net.device()
    }
}

/// Features of every image of `raw`, in chunks, as `[N, D]` f64 on the CPU.
pub fn all_features(net: &dyn FeatureNet, raw: &Tensor) -> Tensor {
    let _guard = tch::no_grad_guard();
    let chunk = super::testset::chunk(net.device()) * 4;
    let parts: Vec<Tensor> = raw
        .split(chunk, 0)
        .iter()
        .map(|x| net.features(&x.to_device(net.device())).to_device(Device::Cpu).to_kind(Kind::Double))
        .collect();
    Tensor::cat(&parts, 0)
}

/// A tensor's values as f64s.
pub fn values(t: &Tensor) -> Vec<f64> {
    Vec::<f64>::try_from(t.to_device(Device::Cpu).to_kind(Kind::Double).flatten(0, -1)).expect("a float tensor")
}
