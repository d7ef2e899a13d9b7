//! Tensors as plain Rust data on the host: what crosses threads to the UI, and
//! what the CPU kernel reads.

use tch::{Device, Kind, Tensor};

/// A tensor's values as a flat vector (any device, kind or layout).
pub fn floats(t: &Tensor) -> Vec<f32> {
    Vec::<f32>::try_from(t.to_device(Device::Cpu).to_kind(Kind::Float).contiguous().flatten(0, -1))
        .expect("a float tensor")
}

/// Whether `t` is a contiguous CPU f32 tensor: what `slice` and `slice_mut` lend.
pub fn is_plain(t: &Tensor) -> bool {
    t.device() == Device::Cpu && t.kind() == Kind::Float && t.is_contiguous()
}

/// A contiguous CPU f32 tensor's data, borrowed without a copy.
pub fn slice(t: &Tensor) -> &[f32] {
    assert!(is_plain(t), "a contiguous CPU f32 tensor");
    // SAFETY: the tensor is contiguous f32 on the CPU, and the slice borrows it.
    unsafe { std::slice::from_raw_parts(t.data_ptr() as *const f32, t.numel()) }
}

/// `slice`, writable. The caller holds no other view of the storage while it
/// writes (a tensor handle shares storage; `&mut` is the promise).
pub fn slice_mut(t: &mut Tensor) -> &mut [f32] {
    assert!(is_plain(t), "a contiguous CPU f32 tensor");
    // SAFETY: as `slice`, and the `&mut` borrow keeps this handle from being read meanwhile.
    unsafe { std::slice::from_raw_parts_mut(t.data_ptr() as *mut f32, t.numel()) }
}
