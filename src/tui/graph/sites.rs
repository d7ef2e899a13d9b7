//! Which nodes the explorer lists, and the containers (stages, blocks) they
//! belong to, read from module paths: `layer2.0.conv1` sits in `layer2` and
//! `layer2.0`. A function call torch.fx names after the function (`relu_4`,
//! `add_2`) has no path of its own: it belongs where the node before it does,
//! as it does in the module's `forward`.

use super::data::Site;
use crate::graph::shape::Shape;
use crate::graph::spec::{GraphSpec, Op, op_name};

/// The nodes with units worth showing (not the input normalisation, a flatten
/// or a dropout, which only pass values on), in graph order.
pub fn sites(spec: &GraphSpec, shapes: &[Shape]) -> Vec<Site> {
    let mut previous: Vec<String> = Vec::new();
    let mut out = Vec::new();
    for (node, shape) in spec.nodes.iter().zip(shapes) {
        let containers =
            if is_function_call(&node.name, &node.op) { previous.clone() } else { prefixes(node.module()) };
        previous = containers.clone();
        if matches!(node.op, Op::InputNorm { .. } | Op::Flatten | Op::Dropout { .. }) {
            continue;
        }
        out.push(Site { name: node.name.clone(), op: op_name(&node.op), shape: shape.clone(), containers });
    }
    // A container holding one site (`layer2.0.shortcut` around `.0`) is noise.
    let count = |c: &str| out.iter().filter(|s| s.containers.iter().any(|x| x == c)).count();
    let lonely: Vec<String> = out.iter().flat_map(|s| s.containers.iter().cloned()).filter(|c| count(c) < 2).collect();
    for site in &mut out {
        site.containers.retain(|c| !lonely.contains(c));
    }
    out
}

/// `layer2.0.conv1` → `layer2`, `layer2.0`.
fn prefixes(path: &str) -> Vec<String> {
    let parts: Vec<&str> = path.split('.').collect();
    (1..parts.len()).map(|n| parts[..n].join(".")).collect()
}

/// torch.fx's name for a call of a function: the function's name, with `_N`
/// after the first call (`relu`, `relu_3`, `add_1`).
fn is_function_call(name: &str, op: &Op) -> bool {
    let stem = match name.rsplit_once('_') {
        Some((stem, n)) if n.chars().all(|c| c.is_ascii_digit()) && !n.is_empty() => stem,
        _ => name,
    };
    !name.contains('.') && [op_name(op).as_str(), "view", "flatten", "add", "relu", "cat"].contains(&stem)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::dataset::Dataset;

    #[test]
    fn a_preact_resnet_lists_its_nodes_in_stages_and_blocks() {
        let spec = crate::graph::preset::preactresnet18(Dataset::FashionMnist, 8);
        let shapes = crate::graph::shape::infer(&spec).unwrap();
        let sites = sites(&spec, &shapes);
        let find = |name: &str| sites.iter().find(|s| s.name == name).unwrap_or_else(|| panic!("{name} listed"));
        assert!(sites.iter().all(|s| !matches!(s.op.as_str(), "input_norm" | "flatten")));
        assert_eq!(find("conv1").containers, Vec::<String>::new());
        assert_eq!(find("layer2.0.conv1").containers, ["layer2", "layer2.0"]);
        // The functional ReLU after a block's first batch norm and the block's
        // residual add belong to the block.
        assert_eq!(find("relu_4").containers, ["layer2", "layer2.0"]);
        assert_eq!(find("add_2").containers, ["layer2", "layer2.0"]);
        // A container of one node is left out.
        assert_eq!(find("layer2.0.shortcut.0").containers, ["layer2", "layer2.0"]);
        assert_eq!(find("linear").containers, Vec::<String>::new());
        assert_eq!(find("layer3.0.conv2").shape, [32, 7, 7]);
        assert_eq!(find("linear").units(), 10);
    }
}
