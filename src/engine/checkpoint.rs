//! Checkpoints: safetensors with PyTorch's names, plus a JSON sidecar, both written
//! atomically (temp file + rename) so an interrupted save never leaves a torn file.

use super::layer::Layer;
use super::model::Net;
use super::run::files::refuse_link;
use color_eyre::eyre::{Result, WrapErr, bail, eyre};
use serde::{Serialize, de::DeserializeOwned};
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};

/// Writes `net` to `path` (a `.safetensors` file) atomically.
pub fn save_net(net: &Net, path: &Path) -> Result<()> {
    let named: Vec<(String, Tensor)> = Layer::ALL
        .iter()
        .flat_map(|&l| {
            [
                (l.weight_name(), net.weight(l).to_device(Device::Cpu).contiguous()),
                (l.bias_name(), net.bias(l).to_device(Device::Cpu).contiguous()),
            ]
        })
        .collect();
    write_atomically(path, |tmp| {
        Tensor::write_safetensors(&named, tmp).map_err(|e| eyre!("{}: cannot write checkpoint: {e}", tmp.display()))
    })
}

/// Reads a safetensors state dict of the study's network (ours or PyTorch's) and
/// checks every name and shape before touching a model.
pub fn load_net(path: &Path, device: Device) -> Result<Net> {
    if !path.is_file() {
        bail!("{}: checkpoint not found", path.display());
    }
    let tensors = Tensor::read_safetensors(path)
        .map_err(|e| eyre!("{}: not a readable safetensors file ({e})", path.display()))?;
    let net = Net::blank(device);
    let expected: Vec<(String, Vec<i64>, &Tensor)> = Layer::ALL
        .iter()
        .flat_map(|&l| {
            [(l.weight_name(), l.weight_shape(), net.weight(l)), (l.bias_name(), vec![l.units() as i64], net.bias(l))]
        })
        .collect();
    let mut problems = Vec::new();
    for (name, tensor) in &tensors {
        if !expected.iter().any(|(n, _, _)| n == name) {
            problems.push(format!("unexpected tensor '{name}' {:?}", tensor.size()));
        }
    }
    for (name, shape, _) in &expected {
        match tensors.iter().find(|(n, _)| n == name) {
            None => problems.push(format!("missing tensor '{name}' (expected shape {shape:?})")),
            Some((_, t)) if &t.size() != shape => {
                problems.push(format!("'{name}' has shape {:?}, expected {shape:?}", t.size()))
            }
            Some(_) => {}
        }
    }
    if !problems.is_empty() {
        bail!(
            "{}: does not hold the study's network (conv1 1→32, conv2 32→64, fc1 1600→16, fc2 16→10): {}",
            path.display(),
            problems.join("; ")
        );
    }
    let non_finite: Vec<String> = expected
        .iter()
        .filter_map(|(name, _, _)| {
            let (_, t) = tensors.iter().find(|(n, _)| n == name).expect("checked above");
            non_finite_count(name, t)
        })
        .collect();
    if !non_finite.is_empty() {
        // A NaN anywhere makes every logit NaN, and argmax then reads class 0 for
        // every image: the metrics would say "no backdoor" instead of "broken file".
        bail!("{}: holds values that are not finite numbers: {}", path.display(), non_finite.join("; "));
    }
    let _guard = tch::no_grad_guard();
    for (name, _, target) in &expected {
        let (_, source) = tensors.iter().find(|(n, _)| n == name).expect("checked above");
        let mut target = target.shallow_clone();
        target.copy_(&source.to_kind(Kind::Float).to_device(device));
    }
    Ok(net)
}

/// `name: 3 NaN, 1 Inf` when `t` holds values that are not finite, else `None`.
/// Counted as the network will hold it (f32), so a finite f64 beyond f32's range
/// counts as Inf.
fn non_finite_count(name: &str, t: &Tensor) -> Option<String> {
    let t = t.to_kind(Kind::Float);
    let nan = t.isnan().sum(Kind::Int64).int64_value(&[]);
    let inf = t.isinf().sum(Kind::Int64).int64_value(&[]);
    let parts: Vec<String> =
        [(nan, "NaN"), (inf, "Inf")].iter().filter(|(n, _)| *n > 0).map(|(n, what)| format!("{n} {what}")).collect();
    (!parts.is_empty()).then(|| format!("{name}: {}", parts.join(", ")))
}

/// Writes a value as pretty JSON, atomically.
pub fn save_json<T: Serialize>(value: &T, path: &Path) -> Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    write_atomically(path, |tmp| std::fs::write(tmp, &text).wrap_err_with(|| format!("cannot write {}", tmp.display())))
}

pub fn load_json<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).wrap_err_with(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text).wrap_err_with(|| format!("{}: malformed JSON", path.display()))
}

/// Runs `write` on a temporary sibling of `path`, flushes it to the disk, renames it
/// into place and flushes the folder, so that neither a crash nor a power cut can
/// leave a torn or vanished file. Refuses a `path`, folder or temporary name that
/// is a symbolic link: nothing is written through one.
pub fn write_atomically(path: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    refuse_link(dir)?;
    std::fs::create_dir_all(dir).wrap_err_with(|| format!("cannot create {}", dir.display()))?;
    let tmp = temp_sibling(path);
    refuse_link(path)?;
    refuse_link(&tmp)?;
    let sync = |p: &Path| {
        std::fs::File::open(p).and_then(|f| f.sync_all()).wrap_err_with(|| format!("cannot sync {}", p.display()))
    };
    let outcome = write(&tmp).and_then(|()| sync(&tmp)).and_then(|()| {
        std::fs::rename(&tmp, path).wrap_err_with(|| format!("cannot move {} to {}", tmp.display(), path.display()))?;
        sync(dir)
    });
    if outcome.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    outcome
}

/// `dir/.name.tmp-<pid>.ext`: same folder (so rename is atomic), same extension
/// (libtorch picks the format from it).
fn temp_sibling(path: &Path) -> PathBuf {
    let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let ext = path.extension().map(|e| format!(".{}", e.to_string_lossy())).unwrap_or_default();
    path.with_file_name(format!(".{stem}.tmp-{}{ext}", std::process::id()))
}
