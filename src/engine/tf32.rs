//! TF32 on NVIDIA GPUs: off unless `--allow-tf32`. libtorch 2.11 runs float32
//! convolutions through cuDNN in TF32 by default (inputs rounded to a 10-bit
//! mantissa on Ampere and later), so a GPU's metrics and gradients would part
//! from the CPU's by far more than rounding. tch 0.24 exposes no switch (only
//! cuDNN on/off and its benchmark mode), so this calls libtorch's own
//! `at::Context` setter and getter by their exported names: plain functions of
//! plain enums, linked from libtorch_cpu like tch's own calls, no C++ compiled.

use std::ffi::c_void;

/// `at::Float32Backend::CUDA` (ATen/Context.h).
const CUDA: i32 = 1;
/// `at::Float32Op::{CONV, RNN, MATMUL}`. All three are set together: libtorch
/// refuses to answer for cuDNN when its convolution and RNN flags differ.
const OPS: [(i32, &str); 3] = [(1, "convolutions"), (2, "recurrent layers"), (3, "matrix products")];
/// `at::Float32Precision::{IEEE, TF32}`.
const IEEE: i32 = 1;
const TF32: i32 = 2;

unsafe extern "C" {
    #[link_name = "_ZN2at13globalContextEv"]
    fn global_context() -> *mut c_void;
    #[link_name = "_ZN2at7Context19setFloat32PrecisionENS_14Float32BackendENS_9Float32OpENS_16Float32PrecisionE"]
    fn set_float32_precision(context: *mut c_void, backend: i32, op: i32, precision: i32);
    #[link_name = "_ZNK2at7Context16float32PrecisionENS_14Float32BackendENS_9Float32OpE"]
    fn float32_precision(context: *const c_void, backend: i32, op: i32) -> i32;
}

/// Lets CUDA's float32 convolutions and matrix products use TF32, or holds them
/// to full float32 (IEEE). Call it before any GPU work.
pub fn allow(allowed: bool) {
    let precision = if allowed { TF32 } else { IEEE };
    // SAFETY: the process-wide context libtorch creates on first use; the setter
    // takes three int-sized enums, each a value the header declares, which
    // libtorch accepts for the CUDA backend (it throws only for bf16 there).
    unsafe {
        let context = global_context();
        for (op, _) in OPS {
            set_float32_precision(context, CUDA, op, precision);
        }
    }
}

/// The GPU operations allowed TF32 now (empty: full float32 everywhere).
pub fn allowed_ops() -> Vec<&'static str> {
    // SAFETY: a const getter on libtorch's global context, taking two enums.
    let context = unsafe { global_context() };
    OPS.iter().filter(|(op, _)| unsafe { float32_precision(context, CUDA, *op) } == TF32).map(|(_, n)| *n).collect()
}

/// One line for `doctor`.
pub fn describe() -> String {
    let ops = allowed_ops();
    if ops.is_empty() {
        "off: full float32 on a GPU (--allow-tf32 allows it)".into()
    } else {
        format!("on for {} (--allow-tf32)", ops.join(", "))
    }
}
