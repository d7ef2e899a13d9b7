//! Occlusion as Captum 0.9 computes it: a black window (every channel) slid
//! over the image; each pixel's attribution is the drop of the target logit,
//! averaged over the windows covering it. Captum's window positions: `⌈(H −
//! window) / stride⌉ + 1` per axis, the last one cut off at the edge. All
//! windows of a chunk of images run in one forward.

use super::{picked, target_logits};
use crate::engine::classifier::Classifier;
use tch::{Kind, Tensor};

/// The windows' top-left corners and sizes `(y, x, h, w)`, row-major.
pub fn windows(height: i64, width: i64, window: i64, stride: i64) -> Vec<(i64, i64, i64, i64)> {
    let starts = |side: i64| -> Vec<i64> {
        let shifts = (side - window + stride - 1).div_euclid(stride) + 1;
        (0..shifts).map(|k| k * stride).collect()
    };
    let (rows, columns) = (starts(height), starts(width));
    rows.iter()
        .flat_map(|&y| columns.iter().map(move |&x| (y, x, window.min(height - y), window.min(width - x))))
        .collect()
}

/// `[K, H, W]`: each window's pixels 1, the rest 0.
pub fn masks(height: i64, width: i64, window: i64, stride: i64) -> Tensor {
    let all = windows(height, width, window, stride);
    let masks = Tensor::zeros([all.len() as i64, height, width], (Kind::Float, tch::Device::Cpu));
    for (k, &(y, x, h, w)) in all.iter().enumerate() {
        let _ = masks.get(k as i64).narrow(0, y, h).narrow(1, x, w).fill_(1.0);
    }
    masks
}

/// Occlusion maps `[N, C, H, W]` (the same in every channel) of `raw` for `targets`.
pub fn occlusion(net: &dyn Classifier, raw: &Tensor, targets: &Tensor, window: i64, stride: i64) -> Tensor {
    let _guard = tch::no_grad_guard();
    let size = raw.size();
    let (n, height, width) = (size[0], size[2], size[3]);
    let masks = masks(height, width, window, stride).to_device(raw.device());
    let k = masks.size()[0];
    let kept = (masks.ones_like() - &masks).unsqueeze(1).unsqueeze(0);
    let occluded = (raw.unsqueeze(1) * kept).flatten(0, 1);
    let drops = target_logits(net, raw, targets).unsqueeze(1)
        - picked(&net.logits(&occluded), &targets.repeat_interleave_self_int(k, Some(0), None)).view([n, k]);
    let sums = drops.matmul(&masks.view([k, -1])).view([n, 1, height, width]);
    let covering = masks.sum_dim_intlist(0, false, Kind::Float).view([1, 1, height, width]);
    (sums / covering).expand(size.as_slice(), false).contiguous()
}
