//! Units of a graph addressed as `NODE:UNITS` with PyTorch's module names
//! (`layer2.1.conv2:1,2 features.2:7`), resolved against the graph's nodes.

use super::exec::{Executor, Intervention, Replacement};
use crate::engine::ablation::AblationMode;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use tch::Tensor;

/// Units ablated together, by node name as written.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct UnitSet {
    pub sites: BTreeMap<String, BTreeSet<i64>>,
}

impl UnitSet {
    /// Parses `NODE:UNIT[,UNIT…]` parts separated by spaces or `;` and checks
    /// each against the graph: the node exists (by name, or by module path for
    /// every call of a module) and has the unit.
    pub fn parse(text: &str, exec: &Executor) -> Result<UnitSet, String> {
        let mut set = UnitSet::default();
        for part in text.split([' ', ';']).filter(|p| !p.trim().is_empty()) {
            let (site, units) = part
                .rsplit_once(':')
                .ok_or_else(|| format!("'{part}' is not NODE:UNIT[,UNIT…] (e.g. layer2.1.conv2:1,2)"))?;
            let nodes = nodes_named(site, exec)?;
            let count = exec.shapes[nodes[0]][0];
            for unit in units.split(',').filter(|u| !u.trim().is_empty()) {
                let unit: i64 =
                    unit.trim().parse().map_err(|_| format!("'{unit}' in '{part}' is not a unit number"))?;
                if !(0..count).contains(&unit) {
                    return Err(format!("{site} has units 0..{}, not {unit}", count - 1));
                }
                set.sites.entry(site.to_string()).or_default().insert(unit);
            }
        }
        if set.sites.is_empty() {
            return Err("no units given: write NODE:UNIT[,UNIT…], e.g. layer2.1.conv2:1,2".into());
        }
        Ok(set)
    }

    /// The interventions that remove these units in `mode`; `means` gives a
    /// node's mean output (asked only in mean mode).
    pub fn interventions(
        &self,
        exec: &Executor,
        mode: AblationMode,
        mut means: impl FnMut(usize) -> Tensor,
    ) -> Result<Vec<Intervention>, String> {
        let mut out = Vec::new();
        for (site, units) in &self.sites {
            for node in nodes_named(site, exec)? {
                let units: Vec<i64> = units.iter().copied().collect();
                let replace = match mode {
                    AblationMode::Zero => Replacement::Zero,
                    AblationMode::Mean => Replacement::Values(select(&means(node), &units)),
                    AblationMode::Weight => {
                        let bias = exec.bias_outputs(node).ok_or_else(|| {
                            format!(
                                "{site} is a {} node: it has no weights per unit, so weight mode does not apply \
                                 (use --mode zero or --mode mean)",
                                super::spec::op_name(&exec.spec.nodes[node].op)
                            )
                        })?;
                        Replacement::Values(select(&bias, &units))
                    }
                };
                out.push(Intervention { node, units, replace });
            }
        }
        Ok(out)
    }
}

fn select(values: &Tensor, units: &[i64]) -> Tensor {
    values.index_select(0, &Tensor::from_slice(units).to_device(values.device()))
}

/// The nodes a name addresses: the node of that name, else every call of the
/// module of that path.
pub fn nodes_named(site: &str, exec: &Executor) -> Result<Vec<usize>, String> {
    let nodes = &exec.spec.nodes;
    if let Some(i) = exec.spec.index_of(site) {
        return Ok(vec![i]);
    }
    let calls: Vec<usize> = (0..nodes.len()).filter(|&i| nodes[i].module() == site).collect();
    let container = exec.spec.containers.get(site).and_then(|node| exec.spec.index_of(node));
    if let (true, Some(i)) = (calls.is_empty(), container) {
        return Ok(vec![i]);
    }
    if calls.is_empty() {
        let close: Vec<&str> = nodes.iter().map(|n| n.name.as_str()).filter(|n| n.contains(site)).take(5).collect();
        let hint = if close.is_empty() {
            String::new()
        } else {
            format!(" (nodes with that in their name: {})", close.join(", "))
        };
        return Err(format!("the graph has no node '{site}'{hint}"));
    }
    Ok(calls)
}

/// Every convolution's and linear layer's output but the logits (patching or
/// ablating a logit says only that it is one): what patch and circuit look at
/// when no node is named.
pub fn parametrised_outputs(exec: &Executor) -> Vec<usize> {
    let spec = &exec.spec;
    let output = spec.index_of(&spec.output);
    (0..spec.nodes.len()).filter(|&i| spec.nodes[i].op.has_unit_weights() && Some(i) != output).collect()
}

impl fmt::Display for UnitSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .sites
            .iter()
            .map(|(site, units)| {
                format!("{site}:{}", units.iter().map(|u| u.to_string()).collect::<Vec<_>>().join(","))
            })
            .collect();
        f.write_str(&parts.join(" "))
    }
}
