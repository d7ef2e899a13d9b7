//! Choosing where tensors live: `auto`, `cpu`, `cuda` or `cuda:N`.

use std::path::Path;
use std::sync::OnceLock;
use tch::{Cuda, Device};

/// libtorch's CUDA half, opened at run time (build.rs does not link it).
const CUDA_LIBRARY: &str = "libtorch_cuda.so";

/// Whether `load_cuda_support` opened the library, or why not.
static CUDA_SUPPORT: OnceLock<Result<(), String>> = OnceLock::new();

/// Loads libtorch's CUDA support when `spec` may use a GPU: `cuda`/`cuda:N`, or
/// `auto` on a machine with an NVIDIA driver (`force`: always, for `doctor`).
/// Call it before any tensor work: libtorch decides once, on its first question
/// about CUDA, whether CUDA is there. Opening the library registers its kernels
/// and CUDA hooks, as linking it would; a CPU-only process never pays for it.
pub fn load_cuda_support(spec: &str, force: bool) {
    let spec = spec.trim().to_ascii_lowercase();
    let wanted = force
        || spec.starts_with("cuda")
        || (spec == "auto" && ["/dev/nvidiactl", "/proc/driver/nvidia/version"].iter().any(|p| Path::new(p).exists()));
    if wanted {
        CUDA_SUPPORT.get_or_init(open_cuda_library);
    }
}

/// `Ok` once CUDA support is loaded, else why not.
pub fn cuda_support() -> Result<(), String> {
    CUDA_SUPPORT.get().cloned().unwrap_or_else(|| Err("not loaded (no GPU asked for, no NVIDIA driver found)".into()))
}

fn open_cuda_library() -> Result<(), String> {
    let name = std::ffi::CString::new(CUDA_LIBRARY).expect("no NUL in the name");
    // SAFETY: dlopen with a valid C string; RTLD_GLOBAL as if it had been linked.
    let handle = unsafe { libc::dlopen(name.as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL) };
    if handle.is_null() {
        // SAFETY: dlerror returns a C string describing the failed dlopen, or NULL.
        let reason = unsafe { libc::dlerror() };
        let reason = if reason.is_null() {
            "unknown error".to_string()
        } else {
            // SAFETY: non-null, NUL-terminated, valid until the next dl* call.
            unsafe { std::ffi::CStr::from_ptr(reason) }.to_string_lossy().into_owned()
        };
        return Err(format!("cannot open {CUDA_LIBRARY}: {reason}"));
    }
    Ok(())
}

/// What libtorch answers when asked for a tensor on the first GPU: `Ok` with a
/// usable GPU, else the first sentence of its error (which tells a missing driver
/// from CUDA support that is not loaded).
pub fn probe_cuda_backend() -> Result<(), String> {
    tch::Tensor::f_zeros([1], (tch::Kind::Float, Device::Cuda(0))).map(|_| ()).map_err(|e| {
        let text = e.to_string();
        let text = text.trim_start_matches("Internal torch error: ");
        text.split(['\n', '.']).next().unwrap_or_default().to_string()
    })
}

/// Parses a device request and checks that it can be served.
pub fn parse_device(spec: &str) -> Result<Device, String> {
    let spec = spec.trim().to_ascii_lowercase();
    match spec.as_str() {
        "auto" => Ok(if Cuda::is_available() { Device::Cuda(0) } else { Device::Cpu }),
        "cpu" => Ok(Device::Cpu),
        _ => {
            let ordinal = match spec.strip_prefix("cuda") {
                Some("") => 0,
                Some(rest) => rest
                    .strip_prefix(':')
                    .and_then(|n| n.parse::<usize>().ok())
                    .ok_or_else(|| format!("unknown device '{spec}': use auto, cpu, cuda or cuda:N"))?,
                None => return Err(format!("unknown device '{spec}': use auto, cpu, cuda or cuda:N")),
            };
            let count = Cuda::device_count().max(0) as usize;
            if !Cuda::is_available() {
                let support = match cuda_support() {
                    Ok(()) => "loaded, but no usable GPU".to_string(),
                    Err(why) => why,
                };
                return Err(format!(
                    "device '{spec}' requested but CUDA is not available (libtorch CUDA support: {support}); use --device cpu"
                ));
            }
            if ordinal >= count {
                return Err(format!("device '{spec}' requested but only {count} CUDA device(s) exist"));
            }
            Ok(Device::Cuda(ordinal))
        }
    }
}

pub fn describe(device: Device) -> String {
    match device {
        Device::Cpu => format!("cpu ({} threads)", tch::get_num_threads()),
        Device::Cuda(i) => format!("cuda:{i}"),
        other => format!("{other:?}"),
    }
}
