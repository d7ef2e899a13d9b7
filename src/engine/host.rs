//! Tensors as plain Rust data on the host: what crosses threads to the UI, and
//! what the CPU kernel reads.

use tch::{Device, Kind, Tensor};

/// A tensor's values as a flat vector (any device, kind or layout).
pub fn floats(t: &Tensor) -> Vec<f32> {
    Vec::<f32>::try_from(t.to_device(Device::Cpu).to_kind(Kind::Float).contiguous().flatten(0, -1))
        .expect("a float tensor")
}

/// A contiguous CPU f32 tensor's data, borrowed without a copy.
pub fn slice(t: &Tensor) -> &[f32] {
    assert!(t.device() == Device::Cpu && t.kind() == Kind::Float && t.is_contiguous(), "a contiguous CPU f32 tensor");
    // SAFETY: the tensor is contiguous f32 on the CPU, and the slice borrows it.
    unsafe { std::slice::from_raw_parts(t.data_ptr() as *const f32, t.numel()) }
}
