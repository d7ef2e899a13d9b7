//! Every random draw of the engine, made by the CPU's generator and then moved to
//! the device. libtorch keeps one generator per device: `manual_seed` seeds them
//! all, but each draws its own sequence, so drawing on a GPU would give other
//! initial weights and other batches than the CPU for the same seed. Drawn here,
//! a seed gives the same model and batches on any device.

use tch::{Device, Kind, Tensor};

/// Values uniform in `[lo, up)`, as PyTorch initialises Conv2d and Linear.
pub fn uniform(shape: &[i64], lo: f64, up: f64, device: Device) -> Tensor {
    Tensor::zeros(shape, (Kind::Float, Device::Cpu)).uniform_(lo, up).to_device(device)
}

/// Values uniform in `[0, 1)`, as `torch.rand` draws them.
pub fn unit_uniform(shape: &[i64], device: Device) -> Tensor {
    Tensor::rand(shape, (Kind::Float, Device::Cpu)).to_device(device)
}

/// Dropout while training, as PyTorch's: each value kept with probability
/// 1 − p and scaled by 1/(1 − p); the mask drawn on the CPU's generator.
pub fn dropped(x: &Tensor, p: f64) -> Tensor {
    if p <= 0.0 {
        return x.shallow_clone();
    }
    if p >= 1.0 {
        return x.zeros_like();
    }
    let keep = unit_uniform(&x.size(), x.device()).ge(p).to_kind(x.kind());
    x * keep / (1.0 - p)
}

/// A random order of `0..n` (an epoch's shuffle).
pub fn permutation(n: i64, device: Device) -> Tensor {
    Tensor::randperm(n, (Kind::Int64, Device::Cpu)).to_device(device)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dropped_keeps_about_one_minus_p_and_scales_what_it_keeps() {
        tch::manual_seed(5);
        let x = Tensor::ones([100_000], (Kind::Float, Device::Cpu));
        let y = dropped(&x, 0.25);
        let kept = y.ne(0.0).to_kind(Kind::Double).mean(Kind::Double).double_value(&[]);
        assert!((kept - 0.75).abs() < 0.01, "kept {kept}");
        let values = y.masked_select(&y.ne(0.0));
        assert!((values - 1.0 / 0.75).abs().max().double_value(&[]) < 1e-6);
        assert_eq!(dropped(&x, 0.0), x);
        assert_eq!(dropped(&x, 1.0).abs().sum(Kind::Double).double_value(&[]), 0.0);
    }
}
