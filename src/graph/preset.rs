//! Graphs written in Rust for known families, with their PyTorch key names.

use super::spec::{FORMAT, GraphSpec, INPUT, Node, Op};
use crate::data::dataset::Dataset;
use crate::engine::layer::Layer;

/// The study's CNN as a graph: `nn.Sequential` indices as names (`net.0` …
/// `net.9`, the names its checkpoints use), raw pixels normalised first.
pub fn study(dataset: Dataset) -> GraphSpec {
    let norm = dataset.normalisation();
    let mut nodes = vec![node("input_norm", Op::InputNorm { mean: vec![norm.mean], std: vec![norm.std] }, INPUT)];
    let mut last = "input_norm".to_string();
    let mut push = |nodes: &mut Vec<Node>, index: usize, op: Op| {
        let name = format!("net.{index}");
        nodes.push(node(&name, op, &last));
        last = name;
    };
    for (conv, index) in [(Layer::Conv1, 0), (Layer::Conv2, 3)] {
        let shape = conv.weight_shape();
        let conv_op = Op::Conv2d {
            in_channels: shape[1],
            out_channels: shape[0],
            kernel: [3, 3],
            stride: [1, 1],
            padding: [0, 0],
            dilation: [1, 1],
            groups: 1,
            bias: true,
        };
        push(&mut nodes, index, conv_op);
        push(&mut nodes, index + 1, Op::Relu);
        let pool =
            Op::MaxPool2d { kernel: [2, 2], stride: [2, 2], padding: [0, 0], dilation: [1, 1], ceil_mode: false };
        push(&mut nodes, index + 2, pool);
    }
    push(&mut nodes, 6, Op::Flatten);
    for (fc, index) in [(Layer::Fc1, 7), (Layer::Fc2, 9)] {
        let shape = fc.weight_shape();
        push(&mut nodes, index, Op::Linear { in_features: shape[1], out_features: shape[0], bias: true });
        if fc == Layer::Fc1 {
            push(&mut nodes, 8, Op::Relu);
        }
    }
    GraphSpec { format: FORMAT.into(), input: dataset.image_shape(), nodes, output: "net.9".into() }
}

/// The node whose output is a study layer's block output (after its ReLU and
/// pooling): where the study's ablations act.
pub fn study_block_output(layer: Layer) -> &'static str {
    match layer {
        Layer::Conv1 => "net.2",
        Layer::Conv2 => "net.5",
        Layer::Fc1 => "net.8",
        Layer::Fc2 => "net.9",
    }
}

fn node(name: &str, op: Op, input: &str) -> Node {
    Node { name: name.into(), op, inputs: vec![input.into()], module: None }
}
