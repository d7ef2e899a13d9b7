//! What a map says about the trigger: the share of its mass (|attribution|
//! summed over channels) on the pixels the attack changed, where the stamped
//! image differs from its clean twin; and the mean map a figure draws.

use super::super::detect::values;
use tch::{Kind, Tensor};

/// `[N, H, W]`: the pixels where any channel of `triggered` differs from `clean`.
pub fn changed(clean: &Tensor, triggered: &Tensor) -> Tensor {
    triggered.ne_tensor(clean).any_dims([1i64].as_slice(), false)
}

/// `[N, H, W]` per-pixel |attribution| summed over channels.
fn magnitude(maps: &Tensor) -> Tensor {
    maps.abs().sum_dim_intlist(1, false, Kind::Double)
}

/// Each image's trigger mass; NaN where the map is all zero.
pub fn trigger_mass(maps: &Tensor, changed: &Tensor) -> Vec<f64> {
    let m = magnitude(maps);
    let on = (&m * changed.to_device(m.device()).to_kind(Kind::Double)).sum_dim_intlist(
        [1i64, 2].as_slice(),
        false,
        Kind::Double,
    );
    let total = m.sum_dim_intlist([1i64, 2].as_slice(), false, Kind::Double);
    values(&(on / total))
}

/// The mean of the finite values (and how many there were).
pub fn mean_finite(values: &[f64]) -> (f64, usize) {
    let finite: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    (finite.iter().sum::<f64>() / finite.len().max(1) as f64, finite.len())
}

/// The share of each image's pixels the attack changed, averaged.
pub fn changed_share(changed: &Tensor) -> f64 {
    changed.to_kind(Kind::Double).mean(Kind::Double).double_value(&[])
}

/// The mean per-pixel |attribution| over the images, `[H·W]` row-major.
pub fn mean_map(maps: &Tensor) -> Vec<f32> {
    values(&magnitude(maps).mean_dim(0, false, Kind::Double)).iter().map(|&v| v as f32).collect()
}
