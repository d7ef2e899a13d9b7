//! Spectral signatures (Tran et al., NeurIPS 2018) as BackdoorBench's
//! `detection_pretrain/spectral.py` computes them: per class, the top
//! right-singular vector of the centred features, and each image's score the
//! size of its (uncentred) features' projection on it, `|v·x|`; the images
//! above the 85th percentile (`percentile: 85`, numpy's linear interpolation)
//! are removed. On a BadNets run whose target class is half poisoned neither
//! this nor the paper's centred square finds the poison (docs/detect.md).

use super::scan::{ClassVerdict, members, rows};
use super::values;
use tch::{Kind, Tensor};

pub const PERCENTILE: f64 = 85.0;

/// numpy's `percentile(values, q)` (linear interpolation between order statistics).
pub fn percentile(values: &[f64], q: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let pos = q / 100.0 * (sorted.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = (lo + 1).min(sorted.len() - 1);
    sorted[lo] + (pos - lo as f64) * (sorted[hi] - sorted[lo])
}

/// One class's scores (`[n, D]` f64 features) and its top two singular values' ratio.
pub fn class_scores(features: &Tensor) -> (Vec<f64>, f64) {
    let centred = features - features.mean_dim(0, true, Kind::Double);
    let (_, s, v) = centred.svd(true, true);
    let projection = features.matmul(&v.select(1, 0));
    let s = values(&s);
    let ratio = if s.len() > 1 && s[1] > 0.0 { s[0] / s[1] } else { f64::INFINITY };
    (values(&projection.abs()), ratio)
}

/// Every class scanned; the class with the most dominant direction is flagged.
pub fn scan(features: &Tensor, labels: &[u8], classes: usize) -> Vec<ClassVerdict> {
    let mut verdicts: Vec<ClassVerdict> = members(labels, classes)
        .into_iter()
        .map(|members| {
            if members.len() < 2 {
                return ClassVerdict::unscored(members);
            }
            let (scores, ratio) = class_scores(&rows(features, &members));
            let threshold = percentile(&scores, PERCENTILE);
            let removed = scores.iter().map(|&s| s > threshold).collect();
            ClassVerdict { members, scores, removed, threshold, flagged: false, statistic: ratio }
        })
        .collect();
    if let Some(top) =
        verdicts.iter_mut().filter(|v| v.members.len() > 1).max_by(|a, b| a.statistic.total_cmp(&b.statistic))
    {
        top.flagged = true;
    }
    verdicts
}
