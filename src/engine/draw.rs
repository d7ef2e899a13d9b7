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

/// A random order of `0..n` (an epoch's shuffle).
pub fn permutation(n: i64, device: Device) -> Tensor {
    Tensor::randperm(n, (Kind::Int64, Device::Cpu)).to_device(device)
}
