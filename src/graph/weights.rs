//! A graph's weights: read from safetensors by PyTorch's state-dict names and
//! checked against the graph — every key it needs present with its shape, none
//! left over, every value finite — before any is used.

use super::spec::{GraphSpec, Op};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use tch::{Device, Kind, Tensor};

/// Weights by state-dict name (`layer1.0.conv1.weight`), float32 on one device.
pub struct Weights(BTreeMap<String, Tensor>);

impl Weights {
    /// Reads `path` and checks it against `spec`.
    pub fn load(path: &Path, spec: &GraphSpec, device: Device) -> Result<Weights, String> {
        let read =
            Tensor::read_safetensors(path).map_err(|e| format!("cannot read the weights {}: {e}", path.display()))?;
        let weights = Weights(read.into_iter().collect());
        weights.check(spec).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(weights.to(device))
    }

    /// A state dict as PyTorch saved it (safetensors): batch norms'
    /// `num_batches_tracked` dropped, a `module.` prefix on every key removed, the
    /// rest checked like `load`.
    pub fn load_state_dict(path: &Path, spec: &GraphSpec, device: Device) -> Result<Weights, String> {
        let read =
            Tensor::read_safetensors(path).map_err(|e| format!("cannot read the weights {}: {e}", path.display()))?;
        let prefixed = !read.is_empty() && read.iter().all(|(k, _)| k.starts_with("module."));
        let kept = read.into_iter().filter(|(k, _)| !k.ends_with("num_batches_tracked"));
        let named = kept.map(|(k, t)| (if prefixed { k["module.".len()..].to_string() } else { k }, t));
        let weights = Weights(named.collect());
        weights.check(spec).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(weights.to(device))
    }

    /// From tensors already in memory (tests, copies), checked like `load`.
    pub fn from_tensors(tensors: Vec<(String, Tensor)>, spec: &GraphSpec) -> Result<Weights, String> {
        let weights = Weights(tensors.into_iter().collect());
        weights.check(spec)?;
        Ok(weights)
    }

    fn to(self, device: Device) -> Weights {
        Weights(self.0.into_iter().map(|(k, t)| (k, t.to_kind(Kind::Float).to_device(device))).collect())
    }

    /// Makes every learned weight (not a batch norm's running statistics) collect
    /// gradients, in place (an executor already built on these weights sees it);
    /// returns them by name, for an optimiser.
    pub fn trainable(&self) -> Vec<(String, Tensor)> {
        let learned = self.0.iter().filter(|(key, _)| key.ends_with(".weight") || key.ends_with(".bias"));
        learned.map(|(key, tensor)| (key.clone(), tensor.set_requires_grad(true))).collect()
    }

    pub fn get(&self, key: &str) -> &Tensor {
        &self.0[key]
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &Tensor)> {
        self.0.iter()
    }

    /// Learned values (weights and biases; not a batch norm's running statistics).
    pub fn parameter_count(&self) -> i64 {
        let learned = self.0.iter().filter(|(key, _)| key.ends_with(".weight") || key.ends_with(".bias"));
        learned.map(|(_, t)| t.numel()).sum::<usize>() as i64
    }

    /// A copy whose keys for which `take` holds come from `donor`, the rest from
    /// these weights (tensors shared, not copied: neither is changed). Both must
    /// hold the same keys with the same shapes.
    pub fn with_replaced(&self, donor: &Weights, take: impl Fn(&str) -> bool) -> Result<Weights, String> {
        let mut out = BTreeMap::new();
        for (key, tensor) in &self.0 {
            let tensor = if take(key) {
                let theirs = donor.0.get(key).ok_or_else(|| format!("the donor has no weight {key}"))?;
                if theirs.size() != tensor.size() {
                    return Err(format!("{key} is {:?} in the donor and {:?} here", theirs.size(), tensor.size()));
                }
                theirs.to_device(tensor.device())
            } else {
                tensor.shallow_clone()
            };
            out.insert(key.clone(), tensor);
        }
        Ok(Weights(out))
    }

    /// Handles on the same tensors (for another thread).
    pub fn shallow(&self) -> Weights {
        Weights(self.0.iter().map(|(k, t)| (k.clone(), t.shallow_clone())).collect())
    }

    /// Whether `key` is one of the weights.
    pub fn contains(&self, key: &str) -> bool {
        self.0.contains_key(key)
    }

    /// Writes the weights as safetensors (what a run keeps).
    pub fn save(&self, path: &Path) -> Result<(), String> {
        let list: Vec<(&str, Tensor)> =
            self.0.iter().map(|(k, t)| (k.as_str(), t.to_device(Device::Cpu).contiguous())).collect();
        Tensor::write_safetensors(&list, path).map_err(|e| format!("cannot write {}: {e}", path.display()))
    }

    fn check(&self, spec: &GraphSpec) -> Result<(), String> {
        let expected = expected_shapes(spec);
        let missing: Vec<&String> = expected.keys().filter(|k| !self.0.contains_key(*k)).collect();
        if !missing.is_empty() {
            return Err(format!("missing weights the graph needs: {}", list(&missing)));
        }
        let unused: Vec<&String> = self.0.keys().filter(|k| !expected.contains_key(*k)).collect();
        if !unused.is_empty() {
            return Err(format!("weights no node of the graph uses: {}", list(&unused)));
        }
        for (key, shape) in &expected {
            let tensor = &self.0[key];
            if tensor.size() != *shape {
                return Err(format!("{key} is {:?}; the graph needs {shape:?}", tensor.size()));
            }
            if !tensor.is_floating_point() {
                return Err(format!("{key} holds {:?} values, not floating point", tensor.kind()));
            }
            let finite = tensor.isfinite().all().int64_value(&[]) == 1;
            if !finite {
                let bad = tensor.isfinite().logical_not().sum(Kind::Int64).int64_value(&[]);
                return Err(format!("{key} holds {bad} NaN or infinite values"));
            }
        }
        Ok(())
    }
}

/// At most ten names, then how many more.
fn list(names: &[&String]) -> String {
    let shown: Vec<&str> = names.iter().take(10).map(|s| s.as_str()).collect();
    let more = names.len().saturating_sub(10);
    if more > 0 { format!("{} and {more} more", shown.join(", ")) } else { shown.join(", ") }
}

/// Every weight the graph reads, with the shape its node needs.
pub fn expected_shapes(spec: &GraphSpec) -> BTreeMap<String, Vec<i64>> {
    let mut seen = BTreeSet::new();
    let mut shapes = BTreeMap::new();
    for node in &spec.nodes {
        if !seen.insert(node.module().to_string()) {
            continue;
        }
        let of = |suffix: &str| format!("{}.{suffix}", node.module());
        match &node.op {
            Op::Conv2d { in_channels, out_channels, kernel, groups, bias, .. } => {
                shapes.insert(of("weight"), vec![*out_channels, in_channels / groups.max(&1), kernel[0], kernel[1]]);
                if *bias {
                    shapes.insert(of("bias"), vec![*out_channels]);
                }
            }
            Op::Linear { in_features, out_features, bias } => {
                shapes.insert(of("weight"), vec![*out_features, *in_features]);
                if *bias {
                    shapes.insert(of("bias"), vec![*out_features]);
                }
            }
            Op::BatchNorm2d { channels, .. } => {
                for suffix in node.op.weight_names() {
                    shapes.insert(of(suffix), vec![*channels]);
                }
            }
            _ => {}
        }
    }
    shapes
}

/// The modules that hold weights (conv, linear, batch norm), once each, in the
/// order of their first node.
pub fn parametrised_modules(spec: &GraphSpec) -> Vec<String> {
    let mut seen = BTreeSet::new();
    spec.nodes
        .iter()
        .filter(|n| !n.op.weight_names().is_empty())
        .map(|n| n.module().to_string())
        .filter(|m| seen.insert(m.clone()))
        .collect()
}
