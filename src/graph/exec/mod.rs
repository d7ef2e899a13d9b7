//! The generic executor: runs a graph with libtorch ops on any device (it is
//! the GPU path), with interventions as data (a node, its units, what replaces
//! them) and a node's values cached so that only the nodes after it rerun.

mod delta;
pub mod lanes;
mod tail;
mod twin;

pub use delta::BasePass;

use super::shape::{self, Shape};
use super::spec::{GraphSpec, INPUT, Op};
use super::weights::Weights;
use crate::engine::model::channels_last;
use std::ops::Range;
use tch::{Device, Kind, Tensor};

/// Where a node reads one of its inputs from.
#[derive(Debug, Clone, Copy)]
enum Source {
    Input,
    Node(usize),
}

/// A node's weights, looked up once: the very tensors of `Weights`, so that
/// training them trains the executor.
#[derive(Default)]
struct Params {
    weight: Option<Tensor>,
    bias: Option<Tensor>,
    running_mean: Option<Tensor>,
    running_var: Option<Tensor>,
    /// `input_norm`'s mean and std shaped `[C or 1, 1, 1]`.
    norm: Option<(Tensor, Tensor)>,
    /// For a convolution read only by a batch norm: that node. Evaluation runs
    /// the two as one convolution with the batch norm folded into its weights.
    folds_into: Option<usize>,
    /// For a batch norm read only by a ReLU: that ReLU. Evaluation applies it in
    /// place on the norm's output: one tensor fewer to allocate and write per pass.
    relu_after: Option<usize>,
}

impl Params {
    fn shallow(&self) -> Params {
        let copy = |t: &Option<Tensor>| t.as_ref().map(Tensor::shallow_clone);
        Params {
            weight: copy(&self.weight),
            bias: copy(&self.bias),
            running_mean: copy(&self.running_mean),
            running_var: copy(&self.running_var),
            norm: self.norm.as_ref().map(|(m, s)| (m.shallow_clone(), s.shallow_clone())),
            folds_into: self.folds_into,
            relu_after: self.relu_after,
        }
    }
}

/// What ablated units output instead of their activation.
pub enum Replacement {
    Zero,
    /// One value map per ablated unit, `[units, …]` like the node's output without
    /// the batch (a mean map, or a bias broadcast).
    Values(Tensor),
    /// Values of each image, `[N, units, …]` for the N images of the pass
    /// (activation patching: another pass's activations).
    PerImage(Tensor),
}

/// Units of one node replaced during a forward pass (a PyTorch forward hook on it).
pub struct Intervention {
    pub node: usize,
    pub units: Vec<i64>,
    pub replace: Replacement,
}

/// A graph ready to run: its weights on one device.
pub struct Executor {
    pub spec: GraphSpec,
    pub shapes: Vec<Shape>,
    sources: Vec<Vec<Source>>,
    /// The last node reading each node's output (its value is freed after it).
    last_use: Vec<usize>,
    params: Vec<Params>,
    output: usize,
    /// The last convolution, pool and linear layer folded into one map, where
    /// the graph ends that way (`tail`).
    tail: Option<tail::Tail>,
    pub device: Device,
    pub weights: Weights,
}

/// The values of a pass stopped after one node: the node's output and every
/// earlier value a later node reads (a residual's shortcut), for the images it ran on.
pub struct Checkpoint {
    pub at: usize,
    values: Vec<Option<Tensor>>,
}

impl Checkpoint {
    /// The output of the node the pass stopped at.
    pub fn output(&self) -> &Tensor {
        self.values[self.at].as_ref().expect("a checkpoint keeps its node's output")
    }
}

impl Executor {
    /// Checks `spec`'s shapes and binds `weights` (already checked against it).
    pub fn new(spec: GraphSpec, weights: Weights, device: Device) -> Result<Executor, String> {
        let shapes = shape::infer(&spec)?;
        let index = |name: &str| if name == INPUT { Source::Input } else { Source::Node(spec.index_of(name).unwrap()) };
        let sources: Vec<Vec<Source>> =
            spec.nodes.iter().map(|n| n.inputs.iter().map(|i| index(i)).collect()).collect();
        let output = spec.index_of(&spec.output).expect("checked at parse");
        let mut last_use = vec![0; spec.nodes.len()];
        for (i, inputs) in sources.iter().enumerate() {
            for source in inputs {
                if let Source::Node(j) = source {
                    last_use[*j] = i;
                }
            }
        }
        last_use[output] = usize::MAX;
        let mut params: Vec<Params> = spec.nodes.iter().map(|node| bind(node, &weights, device)).collect();
        let all_readers: Vec<Vec<usize>> = (0..spec.nodes.len())
            .map(|i| {
                (0..spec.nodes.len())
                    .filter(|&j| sources[j].iter().any(|s| matches!(s, Source::Node(k) if *k == i)))
                    .collect()
            })
            .collect();
        for (i, node) in spec.nodes.iter().enumerate() {
            let readers = &all_readers[i];
            let into_norm = matches!(readers[..], [j] if matches!(spec.nodes[j].op, Op::BatchNorm2d { .. }));
            if matches!(node.op, Op::Conv2d { .. }) && into_norm && i != output {
                params[i].folds_into = Some(readers[0]);
            }
            let into_relu = matches!(readers[..], [j] if matches!(spec.nodes[j].op, Op::Relu));
            if matches!(node.op, Op::BatchNorm2d { .. }) && into_relu {
                params[i].relu_after = Some(readers[0]);
            }
        }
        let ops: Vec<&Op> = spec.nodes.iter().map(|n| &n.op).collect();
        let tail = tail::Tail::find(&ops, &sources, &all_readers, output);
        Ok(Executor { spec, shapes, sources, last_use, params, output, tail, device, weights })
    }

    /// `[N, classes]` logits of raw images `[N, C, H, W]`, with `interventions`.
    pub fn logits(&self, x: &Tensor, interventions: &[Intervention]) -> Tensor {
        let mut values = self.empty();
        self.run(&mut values, x, 0..self.spec.nodes.len(), interventions, &[], 0);
        values[self.output].take().expect("the output is computed")
    }

    /// Logits in training mode: batch norms normalise with the batch's statistics
    /// and update their running ones (PyTorch's `train()`), dropout drops. Gradients
    /// flow to every weight made trainable (`Weights::trainable`).
    pub fn logits_training(&self, x: &Tensor) -> Tensor {
        let mut values = self.empty();
        for i in 0..self.spec.nodes.len() {
            let args: Vec<&Tensor> = self.sources[i]
                .iter()
                .map(|s| match s {
                    Source::Input => x,
                    Source::Node(j) => values[*j].as_ref().expect("inputs come before their use"),
                })
                .collect();
            let out = match &self.spec.nodes[i].op {
                Op::BatchNorm2d { eps, momentum, .. } => {
                    let p = &self.params[i];
                    args[0].batch_norm(
                        p.weight.as_ref(),
                        p.bias.as_ref(),
                        p.running_mean.as_ref(),
                        p.running_var.as_ref(),
                        true,
                        *momentum,
                        *eps,
                        true,
                    )
                }
                Op::Dropout { p } => crate::engine::draw::dropped(args[0], *p),
                _ => self.compute(i, &args),
            };
            values[i] = Some(out);
        }
        values[self.output].take().expect("the output is computed")
    }

    /// The logits and the outputs of `nodes` (after any intervention on them).
    pub fn logits_and(&self, x: &Tensor, interventions: &[Intervention], nodes: &[usize]) -> (Tensor, Vec<Tensor>) {
        let mut values = self.empty();
        self.run(&mut values, x, 0..self.spec.nodes.len(), interventions, nodes, 0);
        let kept = nodes.iter().map(|&n| values[n].as_ref().expect("kept").shallow_clone()).collect();
        (values[self.output].take().expect("the output is computed"), kept)
    }

    /// Runs `x` up to node `at` (inclusive), keeping what the rest needs.
    pub fn checkpoint(&self, x: &Tensor, at: usize) -> Checkpoint {
        let mut values = self.empty();
        self.run(&mut values, x, 0..at + 1, &[], &[at], 0);
        // Values after `at` are never read by nodes up to `at`, so the ones left
        // are exactly the node's output and what later nodes read.
        for (j, value) in values.iter_mut().enumerate() {
            if j != at && self.last_use[j] <= at {
                *value = None;
            }
        }
        Checkpoint { at, values }
    }

    /// The logits from a checkpoint, with `interventions` at its node or later.
    /// `x` is only read when a later node reads the graph's input.
    pub fn resume(&self, checkpoint: &Checkpoint, x: &Tensor, interventions: &[Intervention]) -> Tensor {
        let at = checkpoint.at;
        let mut values: Vec<Option<Tensor>> =
            checkpoint.values.iter().map(|v| v.as_ref().map(Tensor::shallow_clone)).collect();
        if let Some(out) = values[at].take() {
            values[at] = Some(self.intervene(at, out, interventions));
        }
        self.run(&mut values, x, at + 1..self.spec.nodes.len(), interventions, &[], 0);
        values[self.output].take().expect("the output is computed")
    }

    /// Each of `nodes`' mean output over `images` (per unit and position): what
    /// mean ablation substitutes.
    pub fn mean_outputs(&self, images: &Tensor, chunk: i64, nodes: &[usize]) -> Vec<Tensor> {
        let _guard = tch::no_grad_guard();
        let mut sums: Vec<Tensor> =
            nodes.iter().map(|&n| Tensor::zeros(self.shapes[n].as_slice(), (Kind::Double, self.device))).collect();
        for x in images.split(chunk, 0) {
            let (_, outs) = self.logits_and(&x, &[], nodes);
            for (sum, out) in sums.iter_mut().zip(outs) {
                *sum += out.sum_dim_intlist(0, false, Kind::Double);
            }
        }
        let n = images.size()[0].max(1) as f64;
        sums.into_iter().map(|s| (s / n).to_kind(Kind::Float)).collect()
    }

    /// What a unit of `node` outputs with its weights zeroed: its bias, everywhere.
    pub fn bias_outputs(&self, node: usize) -> Option<Tensor> {
        if !self.spec.nodes[node].op.has_unit_weights() {
            return None;
        }
        let shape = &self.shapes[node];
        let bias = match &self.params[node].bias {
            Some(b) => b.shallow_clone(),
            None => Tensor::zeros([shape[0]], (Kind::Float, self.device)),
        };
        let mut view = vec![shape[0]];
        view.extend(std::iter::repeat_n(1, shape.len() - 1));
        Some(bias.view(view.as_slice()).expand(shape.as_slice(), false).contiguous())
    }

    fn empty(&self) -> Vec<Option<Tensor>> {
        (0..self.spec.nodes.len()).map(|_| None).collect()
    }

    /// Computes the nodes of `range` into `values`, freeing each value after its
    /// last reader unless it is in `keep` (which also computes it unfused) or
    /// before node `retain` (kept, for a triggered twin's pass to read).
    fn run(
        &self,
        values: &mut [Option<Tensor>],
        x: &Tensor,
        range: Range<usize>,
        interventions: &[Intervention],
        keep: &[usize],
        retain: usize,
    ) {
        // Channels-last throughout (weights too, per call: they are small), the
        // layout libtorch's CPU convolutions run fastest on at these widths.
        let x = channels_last(x);
        // Nodes neither kept nor intervened on may be computed fused with the next.
        let free = |n: usize| !keep.contains(&n) && !interventions.iter().any(|iv| iv.node == n);
        let mut fused = vec![false; values.len()];
        // Outputs computed by this call (not handed in): a sum may be added into one.
        let mut fresh = vec![false; values.len()];
        let end = range.end;
        for i in range {
            // The tail folded when every node of it runs here untouched and the
            // residual add's other input is already computed.
            let tail = self.tail.as_ref().filter(|t| t.conv == i && end > t.linear() && t.nodes().all(free));
            let other = tail.and_then(|t| t.other()).map(|s| match s {
                Source::Input => Some(&x),
                Source::Node(j) => values[j].as_ref(),
            });
            if let (Some(tail), None | Some(Some(_))) = (tail, other) {
                let input = match self.sources[i][0] {
                    Source::Input => &x,
                    Source::Node(j) => values[j].as_ref().expect("inputs come before their use"),
                };
                values[tail.linear()] = Some(self.tail_logits(tail, input, other.flatten()));
                tail.nodes().skip(1).for_each(|n| fused[n] = true);
            } else if let Some((mine, other)) =
                self.spare_summand(i, &fresh, keep, retain).filter(|_| values[i].is_none() && !fused[i])
            {
                let mut sum = values[mine].take().expect("inputs come before their use");
                sum += values[other].as_ref().expect("inputs come before their use");
                values[i] = Some(self.intervene(i, sum, interventions));
                fresh[i] = true;
            } else if values[i].is_none() && !fused[i] {
                // A batch norm computed with the convolution before it (folded), or a
                // ReLU with the batch norm before it, is done.
                let fold = self.params[i].folds_into.filter(|_| free(i));
                let args: Vec<&Tensor> = self.sources[i]
                    .iter()
                    .map(|s| match s {
                        Source::Input => &x,
                        Source::Node(j) => values[*j].as_ref().expect("inputs come before their use"),
                    })
                    .collect();
                let (at, mut out) = match fold {
                    Some(norm) => (norm, self.folded_conv(i, norm, args[0])),
                    None => (i, self.compute(i, &args)),
                };
                match self.params[at].relu_after.filter(|&relu| free(at) && free(relu)) {
                    Some(relu) => {
                        fused[at] = true;
                        values[relu] = Some(out.relu_());
                        fresh[relu] = true;
                    }
                    None => {
                        values[at] = Some(self.intervene(at, out, interventions));
                        fresh[at] = true;
                    }
                }
            }
            for source in &self.sources[i] {
                if let Source::Node(j) = *source
                    && self.last_use[j] == i
                    && !keep.contains(&j)
                    && j >= retain
                {
                    values[j] = None;
                }
            }
        }
    }

    /// For a residual add, an input this pass computed, read by nothing after
    /// it and not kept, whose op's gradient does not read its output: the sum is
    /// added into it (no new tensor), the other input being the second of the pair.
    fn spare_summand(&self, i: usize, fresh: &[bool], keep: &[usize], retain: usize) -> Option<(usize, usize)> {
        let (Op::Add, [Source::Node(a), Source::Node(b)]) = (&self.spec.nodes[i].op, &self.sources[i][..]) else {
            return None;
        };
        let spare = |j: usize| {
            fresh[j]
                && self.last_use[j] == i
                && !keep.contains(&j)
                && j >= retain
                && matches!(self.spec.nodes[j].op, Op::Conv2d { .. } | Op::BatchNorm2d { .. } | Op::Add)
        };
        match (*a, *b) {
            (a, b) if a != b && spare(a) => Some((a, b)),
            (a, b) if a != b && spare(b) => Some((b, a)),
            _ => None,
        }
    }

    /// Convolution `conv` followed by batch norm `norm` in evaluation, as one
    /// convolution (`conv_weights`).
    fn folded_conv(&self, conv: usize, norm: usize, x: &Tensor) -> Tensor {
        let Op::Conv2d { stride, padding, dilation, groups, .. } = &self.spec.nodes[conv].op else {
            unreachable!("only a convolution folds")
        };
        let (weight, bias) = self.conv_weights(conv, Some(norm));
        x.conv2d(&weight, bias.as_ref(), stride, padding, dilation, *groups)
    }

    /// Convolution `conv`'s weight (channels-last) and bias; with `norm`, the
    /// batch norm after it folded in: w·s and (b − μ)·s + β with s = γ/√(σ² + ε).
    /// Folded on each call (a few small ops) so that weights changed by training are used.
    fn conv_weights(&self, conv: usize, norm: Option<usize>) -> (Tensor, Option<Tensor>) {
        let c = &self.params[conv];
        let weight = c.weight.as_ref().expect("a convolution has weights");
        let Some(norm) = norm else {
            return (channels_last(weight), c.bias.as_ref().map(Tensor::shallow_clone));
        };
        let n = &self.params[norm];
        let mean = n.running_mean.as_ref().expect("a batch norm has running statistics");
        let scale = self.norm_scale(norm);
        let weight = channels_last(&(weight * scale.view([-1, 1, 1, 1])));
        let mut bias = match &c.bias {
            Some(b) => (b - mean) * &scale,
            None => -mean * &scale,
        };
        if let Some(beta) = &n.bias {
            bias += beta;
        }
        (weight, Some(bias))
    }

    /// A batch norm's per-channel scale in evaluation, s = γ/√(σ² + ε).
    fn norm_scale(&self, norm: usize) -> Tensor {
        let Op::BatchNorm2d { eps, .. } = &self.spec.nodes[norm].op else { unreachable!("a batch norm") };
        let n = &self.params[norm];
        let scale = (n.running_var.as_ref().expect("a batch norm has running statistics") + *eps).rsqrt();
        match &n.weight {
            Some(gamma) => scale * gamma,
            None => scale,
        }
    }

    fn intervene(&self, node: usize, mut out: Tensor, interventions: &[Intervention]) -> Tensor {
        for iv in interventions.iter().filter(|iv| iv.node == node) {
            let index = Tensor::from_slice(&iv.units).to_device(out.device());
            out = match &iv.replace {
                Replacement::Zero => out.index_fill(1, &index, 0.0),
                Replacement::Values(values) => {
                    let mut shape = out.size();
                    shape[1] = iv.units.len() as i64;
                    out.index_copy(1, &index, &values.unsqueeze(0).expand(shape.as_slice(), false))
                }
                Replacement::PerImage(values) => out.index_copy(1, &index, values),
            };
        }
        out
    }

    fn compute(&self, i: usize, args: &[&Tensor]) -> Tensor {
        let p = &self.params[i];
        let x = args[0];
        match &self.spec.nodes[i].op {
            Op::Conv2d { stride, padding, dilation, groups, .. } => {
                let (weight, bias) = self.conv_weights(i, None);
                x.conv2d(&weight, bias.as_ref(), stride, padding, dilation, *groups)
            }
            Op::BatchNorm2d { eps, momentum, .. } => x.batch_norm(
                p.weight.as_ref(),
                p.bias.as_ref(),
                p.running_mean.as_ref(),
                p.running_var.as_ref(),
                false,
                *momentum,
                *eps,
                true,
            ),
            Op::Relu => x.relu(),
            Op::LeakyRelu { negative_slope } => x.where_self(&x.gt(0.0), &(x * *negative_slope)),
            Op::MaxPool2d { kernel, stride, padding, dilation, ceil_mode } => {
                x.max_pool2d(kernel, stride, padding, dilation, *ceil_mode)
            }
            Op::AvgPool2d { kernel, stride, padding, ceil_mode, count_include_pad } => {
                x.avg_pool2d(kernel, stride, padding, *ceil_mode, *count_include_pad, None::<i64>)
            }
            Op::AdaptiveAvgPool2d { output } => x.adaptive_avg_pool2d(output),
            Op::Flatten => x.flatten(1, -1),
            Op::Linear { .. } => x.linear(p.weight.as_ref().unwrap(), p.bias.as_ref()),
            Op::Dropout { .. } => x.shallow_clone(),
            Op::Add => x + args[1],
            Op::InputNorm { .. } => {
                let (mean, std) = p.norm.as_ref().unwrap();
                (x - mean) / std
            }
        }
    }
}

fn bind(node: &super::spec::Node, weights: &Weights, device: Device) -> Params {
    let get = |suffix: &str| {
        node.op
            .weight_names()
            .contains(&suffix)
            .then(|| weights.get(&format!("{}.{suffix}", node.module())).shallow_clone())
    };
    let norm = match &node.op {
        Op::InputNorm { mean, std } => {
            let column = |v: &[f64]| Tensor::from_slice(v).to_kind(Kind::Float).view([-1, 1, 1]).to_device(device);
            Some((column(mean), column(std)))
        }
        _ => None,
    };
    Params {
        weight: get("weight"),
        bias: get("bias"),
        running_mean: get("running_mean"),
        running_var: get("running_var"),
        norm,
        folds_into: None,
        relu_after: None,
    }
}
