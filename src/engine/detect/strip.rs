//! STRIP (Gao et al., ACSAC 2019) as BackdoorBench's `detection_infer/strip.py`
//! runs it: each input is superimposed with N clean images, `x + α·x′` in the
//! model's normalised input space (α = 1), and scored by the softmax entropy
//! (`p + 1e-8`, summed over classes) averaged over the N. A trigger that
//! survives the blend keeps the prediction, so poisoned inputs score low.
//!
//! BackdoorBench draws the N images once per loader batch of 128 inputs; so do
//! we, with a seeded SplitMix64, and the draws are plain data a reference reads.

use super::values;
use crate::data::attack::poison::draw;
use crate::data::dataset::Normalisation;
use crate::engine::classifier::Classifier;
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

/// BackdoorBench's loader batch: one draw of N clean images per batch.
pub const BATCH: usize = 128;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StripConfig {
    /// Clean images superimposed on each input.
    pub n: usize,
    /// Weight of the superimposed image (BackdoorBench calls STRIP with 1).
    pub alpha: f64,
    pub seed: u64,
}

impl Default for StripConfig {
    fn default() -> Self {
        StripConfig { n: 100, alpha: 1.0, seed: 0 }
    }
}

/// For each batch of `BATCH` of `inputs` inputs, the `n` pool images drawn.
/// `stream` keeps populations scored separately on separate draws.
pub fn draws(pool: usize, inputs: usize, cfg: &StripConfig, stream: u64) -> Vec<Vec<usize>> {
    (0..inputs.div_ceil(BATCH))
        .map(|b| draw((0..pool).collect(), cfg.n, (cfg.seed ^ (stream << 32)).wrapping_add(b as u64) as i64))
        .collect()
}

/// What is added to an input in raw pixels so that the model sees
/// `normalise(x) + α·normalise(x′)`: `α·(x′ − μ)` (the std divides both).
pub fn overlays(pool: &Tensor, normalisation: Normalisation, alpha: f64) -> Tensor {
    // `denormalise(0)` is the mean, broadcast per channel.
    let mean = normalisation.denormalise(&pool.get(0).zeros_like());
    (pool - mean) * alpha
}

/// Softmax entropy per row of `logits`, BackdoorBench's way (`p + 1e-8`).
fn entropy(logits: &Tensor) -> Tensor {
    let p = logits.softmax(1, Kind::Float) + 1e-8;
    -(&p * p.log()).sum_dim_intlist(1, false, Kind::Float)
}

/// Images per forward pass of superimposed inputs.
const PASS: i64 = 3200;

/// Mean entropy of each input (raw, `[M, C, H, W]`) over its batch's draw of
/// `overlays`: every superimposition of a batch stacked into few forward passes.
pub fn entropies(net: &dyn Classifier, inputs: &Tensor, overlays: &Tensor, draws: &[Vec<usize>]) -> Vec<f64> {
    let _guard = tch::no_grad_guard();
    let device = net.device();
    let mut out = Vec::with_capacity(inputs.size()[0] as usize);
    for (batch, drawn) in inputs.split(BATCH as i64, 0).iter().zip(draws) {
        let idx: Vec<i64> = drawn.iter().map(|&i| i as i64).collect();
        let chosen = overlays.index_select(0, &Tensor::from_slice(&idx).to_device(overlays.device())).to_device(device);
        let (b, n) = (batch.size()[0], idx.len() as i64);
        let stacked = (batch.to_device(device).unsqueeze(1) + chosen.unsqueeze(0)).flatten(0, 1);
        let parts: Vec<Tensor> = stacked.split(PASS, 0).iter().map(|x| entropy(&net.logits(x))).collect();
        out.extend(values(&Tensor::cat(&parts, 0).view([b, n]).mean_dim(1, false, Kind::Float)));
    }
    out
}

/// The same scores the slow, obvious way: one superimposed image per forward.
pub fn entropies_reference(net: &dyn Classifier, inputs: &Tensor, overlays: &Tensor, draws: &[Vec<usize>]) -> Vec<f64> {
    let _guard = tch::no_grad_guard();
    let mut out = Vec::new();
    for i in 0..inputs.size()[0] {
        let x = inputs.get(i).unsqueeze(0).to_device(net.device());
        let drawn = &draws[i as usize / BATCH];
        let sum: f64 = drawn
            .iter()
            .map(|&j| {
                let superimposed = &x + overlays.get(j as i64).unsqueeze(0).to_device(net.device());
                entropy(&net.logits(&superimposed)).double_value(&[0])
            })
            .sum();
        out.push(sum / drawn.len() as f64);
    }
    out
}
