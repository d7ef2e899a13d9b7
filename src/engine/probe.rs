//! Looking inside a model: per-layer activations of one digit, and the test images
//! that excite a unit most and least.

use super::layer::{Layer, PerLayer};
use super::model::{Net, channels_last};
use super::testset::{TestSet, chunk};
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

/// One layer's activation for one image, as plain data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerActivation {
    pub layer: Layer,
    /// `[channels, height, width]` for convolutions, `[units]` for linear layers.
    pub shape: Vec<usize>,
    pub values: Vec<f32>,
}

impl LayerActivation {
    /// One channel's map (a convolution) or one unit's value (a linear layer).
    pub fn channel(&self, unit: usize) -> &[f32] {
        let per = self.values.len() / self.shape[0];
        &self.values[unit * per..(unit + 1) * per]
    }
}

/// The maps a person looks at, per layer, for a batch: conv layers after ReLU and
/// before pooling (full resolution), fc1 after ReLU, fc2's logits.
pub fn activation_maps(net: &Net, x: &Tensor) -> Vec<Tensor> {
    let mut maps = Vec::with_capacity(4);
    let mut h = x.shallow_clone();
    for layer in Layer::ALL {
        let map = if layer.is_conv() {
            // Channels-last: libtorch's channels-first pooling is many times slower.
            channels_last(&h.conv2d(net.weight(layer), Some(net.bias(layer)), [1, 1], [0, 0], [1, 1], 1)).relu()
        } else {
            net.block(layer, &h)
        };
        h = if layer.is_conv() { map.max_pool2d([2, 2], [2, 2], [0, 0], [1, 1], false) } else { map.shallow_clone() };
        maps.push(map);
    }
    maps
}

/// Every layer's activation for one `[1, 28, 28]` (or `[1, 1, 28, 28]`) image.
pub fn activations(net: &Net, image: &Tensor) -> Vec<LayerActivation> {
    let _guard = tch::no_grad_guard();
    let x = image.view([1, 1, 28, 28]).to_device(net.device());
    activation_maps(net, &x)
        .into_iter()
        .zip(Layer::ALL)
        .map(|(map, layer)| {
            let map = map.squeeze_dim(0).to_device(Device::Cpu).contiguous();
            let shape = map.size().iter().map(|&d| d as usize).collect();
            let values = Vec::<f32>::try_from(map.flatten(0, -1)).expect("a float tensor");
            LayerActivation { layer, shape, values }
        })
        .collect()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureHit {
    /// Index in the test set.
    pub image: usize,
    pub triggered: bool,
    pub label: u8,
    /// The unit's mean activation on this image.
    pub score: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureReport {
    pub layer: Layer,
    pub unit: usize,
    pub top: Vec<FeatureHit>,
    pub bottom: Vec<FeatureHit>,
}

/// Per test image (clean and triggered pooled), each unit's mean activation:
/// `[2N, units]` on the CPU.
pub fn unit_scores(net: &Net, test: &TestSet, layer: Layer) -> Tensor {
    let _guard = tch::no_grad_guard();
    let parts: Vec<Tensor> = test
        .inputs
        .split(chunk(test.device()), 0)
        .iter()
        .map(|x| {
            let map = activation_maps(net, x).swap_remove(layer.position());
            let map = if layer.is_conv() { map.mean_dim([2i64, 3].as_slice(), false, Kind::Float) } else { map };
            map.to_device(Device::Cpu)
        })
        .collect();
    Tensor::cat(&parts, 0)
}

/// The `k` images that excite `unit` most and the `k` that excite it least.
pub fn features(net: &Net, test: &TestSet, layer: Layer, unit: usize, k: usize) -> FeatureReport {
    let (top, bottom) = extremes(&unit_scores(net, test, layer).select(1, unit as i64), &test.labels, k);
    FeatureReport { layer, unit, top, bottom }
}

/// The `k` highest and the `k` lowest of `scores` (`[2N]`: N clean images, then
/// their triggered twins), highest and lowest first, ties by index.
pub fn extremes(scores: &Tensor, labels: &[u8], k: usize) -> (Vec<FeatureHit>, Vec<FeatureHit>) {
    let scores = Vec::<f32>::try_from(scores.to_device(Device::Cpu).contiguous()).expect("a float tensor");
    let n = labels.len();
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    let hit = |i: usize| FeatureHit { image: i % n, triggered: i >= n, label: labels[i % n], score: scores[i] as f64 };
    let k = k.min(order.len());
    (order[..k].iter().map(|&i| hit(i)).collect(), order[order.len() - k..].iter().rev().map(|&i| hit(i)).collect())
}

/// Per layer and unit, how much the trigger changes its activation: the mean over
/// `test`'s images and positions of |map(triggered) − map(clean)|, maps as in
/// `activation_maps`. The backdoor's channels stand out here. One pass serves
/// every layer (each layer's maps need the layers before it anyway).
pub fn activation_changes(net: &Net, test: &TestSet) -> PerLayer<Vec<f64>> {
    let _guard = tch::no_grad_guard();
    let n = test.len() as i64;
    let mut totals = PerLayer::from_fn(|l| Tensor::zeros([l.units() as i64], (Kind::Double, test.device())));
    let mut start = 0;
    while start < n {
        let len = chunk(test.device()).min(n - start);
        let clean = activation_maps(net, &test.inputs.narrow(0, start, len));
        let triggered = activation_maps(net, &test.inputs.narrow(0, n + start, len));
        for ((layer, clean), triggered) in Layer::ALL.into_iter().zip(clean).zip(triggered) {
            let change = (triggered - clean).abs();
            let per_unit =
                if layer.is_conv() { change.mean_dim([2i64, 3].as_slice(), false, Kind::Float) } else { change };
            totals[layer] += per_unit.sum_dim_intlist(0, false, Kind::Double);
        }
        start += len;
    }
    PerLayer::from_fn(|l| {
        Vec::<f64>::try_from(totals[l].to_device(Device::Cpu) / n.max(1) as f64).expect("a 1-D tensor")
    })
}
