//! Graphs written in Rust for known families, with their PyTorch key names:
//! the study's CNN, BackdoorBench's PreActResNet-18, torchvision's VGG-BN and
//! TrojanZoo's MNIST net, each at a chosen width for the dataset's images.

use super::spec::{FORMAT, GraphSpec, INPUT, Node, Op};
use crate::data::dataset::ImageFormat;
use crate::engine::layer::Layer;
use std::collections::HashMap;

/// The presets by name, with their default width.
pub const PRESETS: [(&str, i64); 5] =
    [("study", 0), ("preactresnet18", 64), ("vgg19-bn", 64), ("vgg11-bn", 64), ("tz-mnist", 32)];

/// The preset `name` for a dataset's images (a `Dataset` or the format read from
/// its files: input shape, classes, normalisation) at `width` (the preset's
/// default when `None`), its shapes checked.
pub fn by_name(name: &str, format: impl Into<ImageFormat>, width: Option<i64>) -> Result<GraphSpec, String> {
    let format = format.into();
    let Some(&(_, default)) = PRESETS.iter().find(|(n, _)| *n == name) else {
        let names: Vec<&str> = PRESETS.iter().map(|(n, _)| *n).collect();
        return Err(format!("no preset '{name}'; the presets are {}", names.join(", ")));
    };
    if name == "study" {
        if format.shape != crate::data::dataset::Dataset::Mnist.image_shape() {
            return Err(format!(
                "the study's CNN takes 1×28×28 images, not {}: use another preset (preactresnet18, vgg11-bn, tz-mnist)",
                super::shape::show(&format.shape)
            ));
        }
        if width.is_some() {
            return Err("the study's CNN has fixed widths; --width is for the other presets".into());
        }
        return Ok(study(format));
    }
    let width = width.unwrap_or(default);
    if !(1..=4096).contains(&width) {
        return Err(format!("--width {width} is not within 1..=4096"));
    }
    let spec = match name {
        "preactresnet18" => preactresnet18(format, width),
        "vgg19-bn" => vgg_bn(format, width, &VGG19),
        "vgg11-bn" => vgg_bn(format, width, &VGG11),
        _ => tz_mnist(format, width),
    };
    super::shape::infer(&spec).map_err(|e| {
        format!("the preset {name} at width {width} does not fit {} images: {e}", super::shape::show(&format.shape))
    })?;
    Ok(spec)
}

/// Nodes in order, with torch.fx's names for functions called more than once
/// (`relu`, `relu_1`, …).
#[derive(Default)]
struct Builder {
    nodes: Vec<Node>,
    calls: HashMap<&'static str, usize>,
    /// Container modules and their output node, as `import` records them.
    containers: std::collections::BTreeMap<String, String>,
}

impl Builder {
    fn start(format: &ImageFormat) -> Builder {
        let mut b = Builder::default();
        let norm = format.normalisation;
        // As the importer writes them: the shortest decimal of the float32.
        let short = |v: &[f64]| v.iter().map(|&v| (v as f32).to_string().parse::<f64>().unwrap_or(v)).collect();
        b.push("input_norm", Op::InputNorm { mean: short(norm.mean()), std: short(norm.std()) }, &[INPUT]);
        b
    }

    fn push(&mut self, name: &str, op: Op, inputs: &[&str]) -> String {
        let inputs = inputs.iter().map(|s| s.to_string()).collect();
        self.nodes.push(Node { name: name.into(), op, inputs, module: None });
        name.to_string()
    }

    /// A function call named as torch.fx names it.
    fn call(&mut self, base: &'static str, op: Op, inputs: &[&str]) -> String {
        let n = self.calls.entry(base).or_insert(0);
        let name = if *n == 0 { base.to_string() } else { format!("{base}_{n}") };
        *n += 1;
        self.push(&name, op, inputs)
    }

    fn finish(self, format: &ImageFormat) -> GraphSpec {
        let output = self.nodes.last().map(|n| n.name.clone()).unwrap_or_default();
        GraphSpec { format: FORMAT.into(), input: format.shape, nodes: self.nodes, output, containers: self.containers }
    }
}

fn conv(in_channels: i64, out_channels: i64, kernel: i64, stride: i64, padding: i64, bias: bool) -> Op {
    Op::Conv2d {
        in_channels,
        out_channels,
        kernel: [kernel; 2],
        stride: [stride; 2],
        padding: [padding; 2],
        dilation: [1, 1],
        groups: 1,
        bias,
    }
}

fn batch_norm(channels: i64) -> Op {
    Op::BatchNorm2d { channels, eps: 1e-5, momentum: 0.1, affine: true }
}

fn max_pool(size: i64) -> Op {
    Op::MaxPool2d { kernel: [size; 2], stride: [size; 2], padding: [0, 0], dilation: [1, 1], ceil_mode: false }
}

/// The logits a classifier head needs: one per class.
fn classes(format: &ImageFormat) -> i64 {
    format.classes as i64
}

/// The spatial side after `pools` 2×2 max pools, from `side`.
fn pooled(side: i64, pools: usize) -> i64 {
    (0..pools).fold(side, |s, _| s / 2)
}

/// BackdoorBench's `models/preact_resnet.py` PreActResNet18 (two PreActBlocks per
/// stage, widths w, 2w, 4w, 8w), its functional ReLUs and residual adds named as
/// torch.fx traces them.
pub fn preactresnet18(format: impl Into<ImageFormat>, width: i64) -> GraphSpec {
    let format = format.into();
    let mut b = Builder::start(&format);
    let channels = format.shape[0];
    let mut x = b.push("conv1", conv(channels, width, 3, 1, 1, false), &["input_norm"]);
    let mut in_planes = width;
    for (stage, (planes, stride)) in
        [(width, 1), (2 * width, 2), (4 * width, 2), (8 * width, 2)].into_iter().enumerate()
    {
        for block in 0..2 {
            let stride = if block == 0 { stride } else { 1 };
            let p = format!("layer{}.{block}", stage + 1);
            let bn1 = b.push(&format!("{p}.bn1"), batch_norm(in_planes), &[&x]);
            let out = b.call("relu", Op::Relu, &[&bn1]);
            let shortcut = if stride != 1 || in_planes != planes {
                let conv = b.push(&format!("{p}.shortcut.0"), conv(in_planes, planes, 1, stride, 0, false), &[&out]);
                b.containers.insert(format!("{p}.shortcut"), conv.clone());
                conv
            } else {
                x.clone()
            };
            let conv1 = b.push(&format!("{p}.conv1"), conv(in_planes, planes, 3, stride, 1, false), &[&out]);
            let bn2 = b.push(&format!("{p}.bn2"), batch_norm(planes), &[&conv1]);
            let relu = b.call("relu", Op::Relu, &[&bn2]);
            let conv2 = b.push(&format!("{p}.conv2"), conv(planes, planes, 3, 1, 1, false), &[&relu]);
            x = b.call("add", Op::Add, &[&conv2, &shortcut]);
            b.containers.insert(p, x.clone());
            in_planes = planes;
        }
        b.containers.insert(format!("layer{}", stage + 1), x.clone());
    }
    let pool = b.push("avgpool", Op::AdaptiveAvgPool2d { output: [1, 1] }, &[&x]);
    let flat = b.call("view", Op::Flatten, &[&pool]);
    b.push("linear", Op::Linear { in_features: 8 * width, out_features: classes(&format), bias: true }, &[&flat]);
    b.finish(&format)
}

/// torchvision's VGG configurations: a channel count (at width 64), or 0 for a max pool.
const VGG11: [i64; 13] = [64, 0, 128, 0, 256, 256, 0, 512, 512, 0, 512, 512, 0];
const VGG19: [i64; 21] = [64, 64, 0, 128, 128, 0, 256, 256, 256, 256, 0, 512, 512, 512, 512, 0, 512, 512, 512, 512, 0];

/// torchvision's `vgg*_bn` (`features.N`, `avgpool` to 7×7, `classifier.0/3/6`
/// with ReLU and Dropout between), every width (classifier's too) scaled by width/64.
fn vgg_bn(format: ImageFormat, width: i64, config: &[i64]) -> GraphSpec {
    let scale = |c: i64| (c * width / 64).max(1);
    let mut b = Builder::start(&format);
    let mut x = "input_norm".to_string();
    let mut channels = format.shape[0];
    let mut index = 0;
    for &c in config {
        if c == 0 {
            x = b.push(&format!("features.{index}"), max_pool(2), &[&x]);
            index += 1;
            continue;
        }
        let out = scale(c);
        x = b.push(&format!("features.{index}"), conv(channels, out, 3, 1, 1, true), &[&x]);
        x = b.push(&format!("features.{}", index + 1), batch_norm(out), &[&x]);
        x = b.push(&format!("features.{}", index + 2), Op::Relu, &[&x]);
        index += 3;
        channels = out;
    }
    x = b.push("avgpool", Op::AdaptiveAvgPool2d { output: [7, 7] }, &[&x]);
    x = b.call("flatten", Op::Flatten, &[&x]);
    let hidden = scale(4096);
    let mut in_features = channels * 49;
    for (i, out) in [(0, hidden), (3, hidden)] {
        x = b.push(&format!("classifier.{i}"), Op::Linear { in_features, out_features: out, bias: true }, &[&x]);
        x = b.push(&format!("classifier.{}", i + 1), Op::Relu, &[&x]);
        x = b.push(&format!("classifier.{}", i + 2), Op::Dropout { p: 0.5 }, &[&x]);
        in_features = out;
    }
    b.push("classifier.6", Op::Linear { in_features, out_features: classes(&format), bias: true }, &[&x]);
    b.finish(&format)
}

/// TrojanZoo's MNIST `Net` (trojanvision/models/normal/net.py: conv 32 → conv 64 →
/// max pool → dropout → fc 128 → dropout → fc) with widths w, 2w, 4w (w = 32 there);
/// its normalisation inside is the `input_norm` node.
fn tz_mnist(format: ImageFormat, width: i64) -> GraphSpec {
    let [channels, h, w] = format.shape;
    let mut b = Builder::start(&format);
    let mut x = b.push("features.conv1", conv(channels, width, 3, 1, 0, true), &["input_norm"]);
    x = b.push("features.relu1", Op::Relu, &[&x]);
    x = b.push("features.conv2", conv(width, 2 * width, 3, 1, 0, true), &[&x]);
    x = b.push("features.relu2", Op::Relu, &[&x]);
    x = b.push("pool", max_pool(2), &[&x]);
    x = b.push("flatten", Op::Flatten, &[&x]);
    x = b.push("classifier.dropout1", Op::Dropout { p: 0.25 }, &[&x]);
    let in_features = 2 * width * pooled(h - 4, 1) * pooled(w - 4, 1);
    x = b.push("classifier.fc1", Op::Linear { in_features, out_features: 4 * width, bias: true }, &[&x]);
    x = b.push("classifier.relu1", Op::Relu, &[&x]);
    x = b.push("classifier.dropout2", Op::Dropout { p: 0.5 }, &[&x]);
    b.push("classifier.fc2", Op::Linear { in_features: 4 * width, out_features: classes(&format), bias: true }, &[&x]);
    b.finish(&format)
}

/// The node a report sweeps: `layer3.0.conv2` in a PreActResNet, else the
/// convolution in the middle of the graph's convolutions.
pub fn middle_node(spec: &GraphSpec) -> Option<String> {
    if spec.index_of("layer3.0.conv2").is_some() {
        return Some("layer3.0.conv2".into());
    }
    let convs: Vec<&Node> = spec.nodes.iter().filter(|n| matches!(n.op, Op::Conv2d { .. })).collect();
    convs.get(convs.len() / 2).map(|n| n.name.clone())
}

/// The node a pruning defence prunes by default: the last convolution, as Liu
/// et al. prune the last convolutional layer.
pub fn last_conv(spec: &GraphSpec) -> Option<String> {
    spec.nodes.iter().rev().find(|n| matches!(n.op, Op::Conv2d { .. })).map(|n| n.name.clone())
}

/// The study's CNN as a graph: `nn.Sequential` indices as names (`net.0` …
/// `net.9`, the names its checkpoints use), raw pixels normalised first.
pub fn study(format: impl Into<ImageFormat>) -> GraphSpec {
    let format = format.into();
    let norm = format.normalisation;
    let mut nodes =
        vec![node("input_norm", Op::InputNorm { mean: norm.mean().to_vec(), std: norm.std().to_vec() }, INPUT)];
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
    let containers = [("net".to_string(), "net.9".to_string())].into();
    GraphSpec { format: FORMAT.into(), input: format.shape, nodes, output: "net.9".into(), containers }
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
