//! SCALE-UP (Guo et al., ICLR 2023): a poisoned input's prediction survives
//! amplifying its pixels, a clean one's does not. Each input is multiplied by
//! 3, 5, 7, 9 and 11 and clipped to the valid pixel range [0, 1] (before
//! normalisation, where the original code clips); the score is the share of
//! scaled predictions equal to the input's own, flagged above 0.5.

use super::values;
use crate::engine::classifier::Classifier;
use tch::{Kind, Tensor};

pub const SCALES: [f64; 5] = [3.0, 5.0, 7.0, 9.0, 11.0];
/// The paper's threshold on the consistency score.
pub const THRESHOLD: f64 = 0.5;

/// Inputs per pass (times six: the input and its five scalings).
const PASS: i64 = 500;

/// Each input's scaled prediction consistency, its scalings stacked into one pass.
pub fn consistency(net: &dyn Classifier, inputs: &Tensor) -> Vec<f64> {
    let _guard = tch::no_grad_guard();
    let mut out = Vec::new();
    for x in inputs.split(PASS, 0) {
        let x = x.to_device(net.device());
        let mut stacked = vec![x.shallow_clone()];
        stacked.extend(SCALES.iter().map(|&s| (&x * s).clamp(0.0, 1.0)));
        let b = x.size()[0];
        let predicted = net.logits(&Tensor::cat(&stacked, 0)).argmax(1, false).view([SCALES.len() as i64 + 1, b]);
        let same = predicted.narrow(0, 1, SCALES.len() as i64).eq_tensor(&predicted.get(0).unsqueeze(0));
        out.extend(values(&same.to_kind(Kind::Double).mean_dim(0, false, Kind::Double)));
    }
    out
}

/// The same scores one image and one scale at a time.
pub fn consistency_reference(net: &dyn Classifier, inputs: &Tensor) -> Vec<f64> {
    let _guard = tch::no_grad_guard();
    let predict = |x: &Tensor| net.logits(x).argmax(1, false).int64_value(&[0]);
    (0..inputs.size()[0])
        .map(|i| {
            let x = inputs.get(i).unsqueeze(0).to_device(net.device());
            let own = predict(&x);
            let same = SCALES.iter().filter(|&&s| predict(&(&x * s).clamp(0.0, 1.0)) == own).count();
            same as f64 / SCALES.len() as f64
        })
        .collect()
}
