//! Every node's output shape, computed from the input shape and checked against
//! what each op needs, so a wrong graph fails at load naming its node rather
//! than deep inside libtorch.

use super::spec::{GraphSpec, INPUT, Node, Op, op_name};
use std::collections::HashMap;

/// One image's shape at a node: `[C, H, W]` or `[features]`.
pub type Shape = Vec<i64>;

/// Each node's output shape, in the graph's order.
pub fn infer(spec: &GraphSpec) -> Result<Vec<Shape>, String> {
    let mut known: HashMap<&str, Shape> = HashMap::from([(INPUT, spec.input.to_vec())]);
    let mut shapes = Vec::with_capacity(spec.nodes.len());
    for node in &spec.nodes {
        let inputs: Vec<&Shape> = node.inputs.iter().map(|i| &known[i.as_str()]).collect();
        let shape = output_shape(node, &inputs)
            .map_err(|e| format!("node '{}' ({}), input {}: {e}", node.name, op_name(&node.op), show(inputs[0])))?;
        known.insert(&node.name, shape.clone());
        shapes.push(shape);
    }
    let out = &shapes[spec.index_of(&spec.output).expect("checked at parse")];
    if out.len() != 1 {
        return Err(format!("the output '{}' is {}, not [classes]: logits must be flat", spec.output, show(out)));
    }
    Ok(shapes)
}

/// `[8, 14, 14]` as `8×14×14`.
pub fn show(shape: &[i64]) -> String {
    shape.iter().map(|d| d.to_string()).collect::<Vec<_>>().join("×")
}

fn image(shape: &Shape) -> Result<(i64, i64, i64), String> {
    match shape[..] {
        [c, h, w] => Ok((c, h, w)),
        _ => Err("needs an image (channels × height × width), not flat features".into()),
    }
}

/// PyTorch's output size of a window sliding over `size`.
fn slide(size: i64, kernel: i64, stride: i64, padding: i64, dilation: i64, ceil: bool) -> Result<i64, String> {
    if kernel < 1 || stride < 1 || dilation < 1 || padding < 0 {
        return Err(format!("kernel {kernel}, stride {stride}, padding {padding}, dilation {dilation} are not valid"));
    }
    let span = dilation * (kernel - 1) + 1;
    let room = size + 2 * padding - span;
    if room < 0 {
        return Err(format!("a window of {span} does not fit in {size} (padding {padding})"));
    }
    let mut out = if ceil { (room + stride - 1) / stride + 1 } else { room / stride + 1 };
    // PyTorch's rule: the last window must start inside the input or its left padding.
    if ceil && (out - 1) * stride >= size + padding {
        out -= 1;
    }
    Ok(out)
}

fn output_shape(node: &Node, inputs: &[&Shape]) -> Result<Shape, String> {
    let x = inputs[0];
    Ok(match &node.op {
        Op::Conv2d { in_channels, out_channels, kernel, stride, padding, dilation, groups, .. } => {
            let (c, h, w) = image(x)?;
            if c != *in_channels {
                return Err(format!("has {c} channels, the convolution expects {in_channels}"));
            }
            if *groups < 1 || in_channels % groups != 0 || out_channels % groups != 0 {
                return Err(format!("{groups} groups do not divide {in_channels} → {out_channels} channels"));
            }
            vec![
                *out_channels,
                slide(h, kernel[0], stride[0], padding[0], dilation[0], false)?,
                slide(w, kernel[1], stride[1], padding[1], dilation[1], false)?,
            ]
        }
        Op::BatchNorm2d { channels, .. } => {
            let (c, _, _) = image(x)?;
            if c != *channels {
                return Err(format!("has {c} channels, the batch norm {channels}"));
            }
            x.clone()
        }
        Op::MaxPool2d { kernel, stride, padding, dilation, ceil_mode } => {
            let (c, h, w) = image(x)?;
            if padding[0] * 2 > kernel[0] || padding[1] * 2 > kernel[1] {
                return Err("padding is more than half the kernel".into());
            }
            vec![
                c,
                slide(h, kernel[0], stride[0], padding[0], dilation[0], *ceil_mode)?,
                slide(w, kernel[1], stride[1], padding[1], dilation[1], *ceil_mode)?,
            ]
        }
        Op::AvgPool2d { kernel, stride, padding, ceil_mode, .. } => {
            let (c, h, w) = image(x)?;
            if padding[0] * 2 > kernel[0] || padding[1] * 2 > kernel[1] {
                return Err("padding is more than half the kernel".into());
            }
            vec![
                c,
                slide(h, kernel[0], stride[0], padding[0], 1, *ceil_mode)?,
                slide(w, kernel[1], stride[1], padding[1], 1, *ceil_mode)?,
            ]
        }
        Op::AdaptiveAvgPool2d { output } => {
            let (c, _, _) = image(x)?;
            if output.iter().any(|&d| d < 1) {
                return Err(format!("output size {output:?} has a dimension below 1"));
            }
            vec![c, output[0], output[1]]
        }
        Op::Flatten => vec![x.iter().product()],
        Op::Linear { in_features, out_features, .. } => match x[..] {
            [f] if f == *in_features => vec![*out_features],
            [f] => return Err(format!("has {f} features, the linear layer expects {in_features}")),
            _ => return Err("a linear layer needs flat features: put a flatten before it".into()),
        },
        Op::Relu | Op::LeakyRelu { .. } | Op::Dropout { .. } => x.clone(),
        Op::Add => {
            if inputs[0] != inputs[1] {
                return Err(format!("adds {} to {}: the shapes must be equal", show(inputs[0]), show(inputs[1])));
            }
            x.clone()
        }
        Op::InputNorm { mean, std } => {
            let channels = x.first().copied().unwrap_or(0) as usize;
            for (what, values) in [("mean", mean), ("std", std)] {
                if values.len() != 1 && values.len() != channels {
                    return Err(format!(
                        "{} {what} values for {channels} channels (give 1 or {channels})",
                        values.len()
                    ));
                }
            }
            if std.iter().any(|&s| s <= 0.0 || !s.is_finite()) || mean.iter().any(|m| !m.is_finite()) {
                return Err(format!("std {std:?} must be positive and mean {mean:?} finite"));
            }
            x.clone()
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_follow_pytorchs_size_rules() {
        // Conv 3×3 pad 1 keeps 28; a 2×2 pool halves; ceil mode rounds up 7 → 4.
        assert_eq!(slide(28, 3, 1, 1, 1, false), Ok(28));
        assert_eq!(slide(28, 2, 2, 0, 1, false), Ok(14));
        assert_eq!(slide(7, 2, 2, 0, 1, false), Ok(3));
        assert_eq!(slide(7, 2, 2, 0, 1, true), Ok(4));
        // Strided 1×1 shortcut, dilated 3×3.
        assert_eq!(slide(28, 1, 2, 0, 1, false), Ok(14));
        assert_eq!(slide(28, 3, 1, 0, 2, false), Ok(24));
        assert!(slide(2, 5, 1, 0, 1, false).unwrap_err().contains("does not fit"));
    }

    #[test]
    fn a_mismatch_names_the_node_and_both_shapes() {
        let text = format!(
            r#"{{"format": "{}", "input": [1, 8, 8], "output": "fc", "nodes": [
                {{"name": "conv", "op": "conv2d", "inputs": ["input"], "in_channels": 1, "out_channels": 4,
                  "kernel": [3, 3], "stride": [1, 1], "padding": [0, 0], "dilation": [1, 1], "groups": 1, "bias": true}},
                {{"name": "flat", "op": "flatten", "inputs": ["conv"]}},
                {{"name": "fc", "op": "linear", "inputs": ["flat"], "in_features": 256, "out_features": 10, "bias": true}}]}}"#,
            super::super::spec::FORMAT
        );
        let spec = GraphSpec::parse(&text).unwrap();
        let err = infer(&spec).unwrap_err();
        assert_eq!(err, "node 'fc' (linear), input 144: has 144 features, the linear layer expects 256");
        let fixed = GraphSpec::parse(&text.replace("256", "144")).unwrap();
        assert_eq!(infer(&fixed).unwrap(), vec![vec![4, 6, 6], vec![144], vec![10]]);
    }
}
