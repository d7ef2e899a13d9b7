//! The graph file (`docs/graph.md`): nodes, their ops and settings, read with an
//! error that names the node for anything unknown or malformed.

use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::path::Path;

/// The format line every graph file starts with.
pub const FORMAT: &str = "trojanscope-graph/1";

/// The name that refers to the graph's input in a node's `inputs`.
pub const INPUT: &str = "input";

/// What a node computes, with its settings (never its weights).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Op {
    Conv2d {
        in_channels: i64,
        out_channels: i64,
        kernel: [i64; 2],
        stride: [i64; 2],
        padding: [i64; 2],
        dilation: [i64; 2],
        groups: i64,
        bias: bool,
    },
    BatchNorm2d {
        channels: i64,
        eps: f64,
        momentum: f64,
        affine: bool,
    },
    Relu,
    LeakyRelu {
        negative_slope: f64,
    },
    MaxPool2d {
        kernel: [i64; 2],
        stride: [i64; 2],
        padding: [i64; 2],
        dilation: [i64; 2],
        ceil_mode: bool,
    },
    AvgPool2d {
        kernel: [i64; 2],
        stride: [i64; 2],
        padding: [i64; 2],
        ceil_mode: bool,
        count_include_pad: bool,
    },
    AdaptiveAvgPool2d {
        output: [i64; 2],
    },
    Flatten,
    Linear {
        in_features: i64,
        out_features: i64,
        bias: bool,
    },
    Dropout {
        p: f64,
    },
    Add,
    InputNorm {
        mean: Vec<f64>,
        std: Vec<f64>,
    },
}

/// The ops a graph may use, as the file spells them.
pub const SUPPORTED: [&str; 12] = [
    "conv2d",
    "batch_norm2d",
    "relu",
    "leaky_relu",
    "max_pool2d",
    "avg_pool2d",
    "adaptive_avg_pool2d",
    "flatten",
    "linear",
    "dropout",
    "add",
    "input_norm",
];

impl Op {
    /// How many inputs the op takes.
    pub fn arity(&self) -> usize {
        if matches!(self, Op::Add) { 2 } else { 1 }
    }

    /// The weights the op reads, by suffix after the module's path.
    pub fn weight_names(&self) -> Vec<&'static str> {
        match self {
            Op::Conv2d { bias, .. } | Op::Linear { bias, .. } => {
                if *bias {
                    vec!["weight", "bias"]
                } else {
                    vec!["weight"]
                }
            }
            Op::BatchNorm2d { affine, .. } => {
                let mut names = vec!["running_mean", "running_var"];
                if *affine {
                    names.extend(["weight", "bias"]);
                }
                names
            }
            _ => Vec::new(),
        }
    }

    /// Whether ablating a unit in weight mode (zero its weights, keep its bias)
    /// means something here.
    pub fn has_unit_weights(&self) -> bool {
        matches!(self, Op::Conv2d { .. } | Op::Linear { .. })
    }
}

/// One node: a unique name, what it computes, and what it reads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Node {
    pub name: String,
    #[serde(flatten)]
    pub op: Op,
    pub inputs: Vec<String>,
    /// The prefix of the node's weights (default: its name); a module called twice
    /// gives two nodes with one `module`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub module: Option<String>,
}

impl Node {
    /// The module path the node's weights and hooks belong to.
    pub fn module(&self) -> &str {
        self.module.as_deref().unwrap_or(&self.name)
    }
}

/// A whole graph file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GraphSpec {
    pub format: String,
    /// One image: `[channels, height, width]`.
    pub input: [i64; 3],
    pub nodes: Vec<Node>,
    pub output: String,
    /// Container modules (a block, a stage) by path, each with the node that is
    /// its output: `layer2.1` → `add_3`. Written by `import` from torch.fx's module
    /// stack; a unit of a container is a channel of that node.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub containers: std::collections::BTreeMap<String, String>,
}

impl GraphSpec {
    /// Reads and checks a graph file (names, order, arity; shapes are `Shapes`').
    pub fn load(path: &Path) -> Result<GraphSpec, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        GraphSpec::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Parses the JSON of a graph file. Nodes are read one by one so that an
    /// unknown op or a bad field names its node.
    pub fn parse(text: &str) -> Result<GraphSpec, String> {
        let value: serde_json::Value = serde_json::from_str(text).map_err(|e| format!("not a graph file: {e}"))?;
        let format = value.get("format").and_then(|f| f.as_str()).unwrap_or("");
        if format != FORMAT {
            return Err(format!("the format is '{format}', not '{FORMAT}' (docs/graph.md)"));
        }
        let nodes = value.get("nodes").and_then(|n| n.as_array()).ok_or("no 'nodes' list")?;
        let mut parsed = Vec::with_capacity(nodes.len());
        for (i, node) in nodes.iter().enumerate() {
            parsed.push(parse_node(i, node)?);
        }
        let mut head = value.clone();
        head["nodes"] = serde_json::Value::Array(Vec::new());
        let mut spec: GraphSpec = serde_json::from_value(head).map_err(|e| format!("the graph's header: {e}"))?;
        spec.nodes = parsed;
        spec.check()?;
        Ok(spec)
    }

    /// Every name unique, every input defined before its use, the right number of
    /// inputs, an output that exists.
    fn check(&self) -> Result<(), String> {
        if self.input.iter().any(|&d| d <= 0) {
            return Err(format!("the input shape {:?} has a dimension below 1", self.input));
        }
        let mut defined: HashSet<&str> = HashSet::from([INPUT]);
        for node in &self.nodes {
            if node.name.is_empty() || node.name.contains([':', ' ', ';', ',']) {
                return Err(format!(
                    "node '{}': a name may not be empty or contain ':', ',', ';' or spaces",
                    node.name
                ));
            }
            if node.inputs.len() != node.op.arity() {
                return Err(format!(
                    "node '{}': {} takes {} input(s), not {}",
                    node.name,
                    op_name(&node.op),
                    node.op.arity(),
                    node.inputs.len()
                ));
            }
            if let Some(missing) = node.inputs.iter().find(|i| !defined.contains(i.as_str())) {
                return Err(format!(
                    "node '{}' reads '{missing}', which no earlier node defines (nodes are listed inputs first)",
                    node.name
                ));
            }
            if !defined.insert(&node.name) {
                return Err(format!("node '{}' is defined twice", node.name));
            }
        }
        if !self.nodes.iter().any(|n| n.name == self.output) {
            return Err(format!("the output '{}' is not a node", self.output));
        }
        if let Some((path, node)) = self.containers.iter().find(|(_, node)| !defined.contains(node.as_str())) {
            return Err(format!("the container '{path}' names '{node}' as its output, which is not a node"));
        }
        Ok(())
    }

    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.name == name)
    }

    /// The graph as it is written to a run.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a graph serialises")
    }
}

/// The op's name as the file spells it.
pub fn op_name(op: &Op) -> String {
    match serde_json::to_value(op) {
        Ok(serde_json::Value::Object(map)) => map.get("op").and_then(|o| o.as_str()).unwrap_or("?").to_string(),
        _ => "?".into(),
    }
}

fn parse_node(i: usize, node: &serde_json::Value) -> Result<Node, String> {
    let name = node.get("name").and_then(|n| n.as_str()).map(str::to_string);
    let label = name.clone().unwrap_or_else(|| format!("#{i}"));
    let op = node.get("op").and_then(|o| o.as_str()).unwrap_or("");
    if !SUPPORTED.contains(&op) {
        return Err(format!("node '{label}': op '{op}' is not supported (supported: {})", SUPPORTED.join(", ")));
    }
    let parsed: Node = serde_json::from_value(node.clone()).map_err(|e| format!("node '{label}' ({op}): {e}"))?;
    // serde cannot deny unknown fields through a flattened enum: a field the op
    // does not have (a typo, a setting trojanscope ignores) is found here.
    let known = serde_json::to_value(&parsed).expect("a node serialises");
    if let (Some(given), Some(known)) = (node.as_object(), known.as_object())
        && let Some(extra) = given.keys().find(|k| !known.contains_key(*k))
    {
        return Err(format!("node '{label}' ({op}): unknown field `{extra}`"));
    }
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph(nodes: &str) -> String {
        format!(r#"{{"format": "{FORMAT}", "input": [1, 4, 4], "nodes": [{nodes}], "output": "fc"}}"#)
    }

    #[test]
    fn a_small_graph_reads_and_round_trips() {
        let text = graph(
            r#"{"name": "flat", "op": "flatten", "inputs": ["input"]},
               {"name": "fc", "op": "linear", "inputs": ["flat"], "in_features": 16, "out_features": 3, "bias": true}"#,
        );
        let spec = GraphSpec::parse(&text).unwrap();
        assert_eq!(spec.nodes.len(), 2);
        assert_eq!(spec.nodes[1].op, Op::Linear { in_features: 16, out_features: 3, bias: true });
        assert_eq!(GraphSpec::parse(&spec.to_json()).unwrap(), spec);
    }

    #[test]
    fn bad_graphs_name_the_node_and_what_is_wrong() {
        let cases = [
            (r#"{"name": "s", "op": "sigmoid", "inputs": ["input"]}"#, "node 's': op 'sigmoid' is not supported"),
            (
                r#"{"name": "fc", "op": "linear", "inputs": ["nowhere"], "in_features": 1, "out_features": 1, "bias": true}"#,
                "node 'fc' reads 'nowhere'",
            ),
            (r#"{"name": "fc", "op": "add", "inputs": ["input"]}"#, "node 'fc': add takes 2 input(s), not 1"),
            (
                r#"{"name": "fc", "op": "linear", "inputs": ["input"], "in_features": 1, "bias": true}"#,
                "node 'fc' (linear): missing field `out_features`",
            ),
            (
                r#"{"name": "fc", "op": "relu", "inputs": ["input"], "slope": 2}"#,
                "node 'fc' (relu): unknown field `slope`",
            ),
            (
                r#"{"name": "fc", "op": "relu", "inputs": ["input"]}, {"name": "fc", "op": "relu", "inputs": ["input"]}"#,
                "node 'fc' is defined twice",
            ),
            (r#"{"name": "a:b", "op": "relu", "inputs": ["input"]}"#, "node 'a:b': a name may not"),
            (r#"{"name": "x", "op": "relu", "inputs": ["input"]}"#, "the output 'fc' is not a node"),
        ];
        for (nodes, needle) in cases {
            let err = GraphSpec::parse(&graph(nodes)).unwrap_err();
            assert!(err.contains(needle), "expected '{needle}' in: {err}");
        }
        let err = GraphSpec::parse(r#"{"format": "other"}"#).unwrap_err();
        assert!(err.contains("not 'trojanscope-graph/1'"), "{err}");
    }
}
