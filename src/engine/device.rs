//! Choosing where tensors live: `auto`, `cpu`, `cuda` or `cuda:N`.

use tch::{Cuda, Device};

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
                return Err(format!(
                    "device '{spec}' requested but CUDA is not available (libtorch CUDA support linked: {}); use --device cpu",
                    if tch::utils::has_cuda() { "yes, but no usable GPU" } else { "no" }
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
