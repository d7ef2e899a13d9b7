//! Detecting a backdoor from the data's side, written once for any network:
//! poisoned test inputs (STRIP, SCALE-UP) through a `Classifier`'s logits, and
//! poisoned training images (spectral signatures, activation clustering) through
//! a `FeatureNet`'s features. Tensors stay here; plain numbers come out.

pub mod ac;
pub mod figures;
pub mod ica;
pub mod kmeans;
pub mod retrain;
pub mod roc;
pub mod scaleup;
pub mod scan;
pub mod spectral;
pub mod strip;

use super::layer::Layer;
use super::lean::{lean_input, net_block};
use super::model::Net;
use super::testset::TestSet;
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
        // The lean forward (cropped, channels-last, pooling before ReLU): the
        // same values; 60,000 images' features took 51 s through `Net::block`
        // and 10–12 s so on the same loaded machine.
        let upto = &Layer::ALL[..=self.layer.position()];
        let x = lean_input(&self.normalisation.normalise(raw));
        upto.iter().fold(x, |h, &l| net_block(self.net, l, &h)).flatten(1, -1)
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

/// The two populations scored: clean test images, and the triggered twins of
/// those the attack relabels (an all-to-one attack's target class left out).
pub struct Populations {
    pub clean: Tensor,
    pub triggered: Tensor,
}

impl Populations {
    pub fn of(raw: &TestSet, limit: Option<usize>) -> Populations {
        let n = raw.len();
        let keep = limit.unwrap_or(n);
        let relabelled: Vec<i64> = relabelled(raw).into_iter().take(keep).map(|i| (n + i) as i64).collect();
        Populations {
            clean: raw.clean_images(0, keep.min(n) as i64),
            triggered: raw.inputs.index_select(0, &Tensor::from_slice(&relabelled).to_device(raw.device())),
        }
    }
}

/// The test images whose triggered twins the attack relabels (an all-to-one
/// attack's target class left out): the triggered test set's indices.
pub fn relabelled(raw: &TestSet) -> Vec<usize> {
    (0..raw.len()).filter(|&i| raw.relabel.single() != Some(raw.labels[i])).collect()
}
