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

/// Whether our own CPU loops can stand in for libtorch's ops on `tensors`: all
/// f32 on the CPU, and no gradient to record (the loops are not differentiable).
pub fn for_our_loops(tensors: &[&Tensor]) -> bool {
    cpu_floats(tensors) && !(grad_enabled() && tensors.iter().any(|t| t.requires_grad()))
}

/// Whether every tensor is f32 on the CPU and our loops run at all (not lowered
/// to libtorch's ops by `cpu::VARIABLE`).
pub fn cpu_floats(tensors: &[&Tensor]) -> bool {
    our_loops_run() && tensors.iter().all(|t| t.device() == Device::Cpu && t.kind() == Kind::Float)
}

/// Whether our own CPU loops run in this process (`cpu::CpuPath::Portable` or
/// above), rather than libtorch's ops alone as on a GPU.
pub fn our_loops_run() -> bool {
    super::cpu::has(super::cpu::CpuPath::Portable)
}

/// Whether libtorch records operations for a gradient on this thread.
fn grad_enabled() -> bool {
    // SAFETY: sets libtorch's thread-local grad mode and restores it at once.
    unsafe {
        let was = torch_sys::at_grad_set_enabled(0);
        torch_sys::at_grad_set_enabled(was);
        was != 0
    }
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
