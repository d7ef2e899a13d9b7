//! The network's tail folded into one linear map. A convolution whose output
//! reaches the logits only through a residual add, a global average pool, a
//! flatten (and dropouts) and a linear layer is linear all the way to the
//! logits: the mean over positions of Σ_taps w·x is Σ_taps w·(the mean of x over
//! that tap's window), so the four ops become k×k window means of the
//! convolution's input and one small matrix product. In a pre-activation ResNet
//! that is the last 3×3 convolution: about a quarter of a sweep's multiply-adds
//! after `layer3`, replaced by under 2 % of them.

use super::{Executor, Source};
use crate::graph::spec::Op;
use tch::Tensor;

/// Where the fold applies: the convolution, the add after it (with the add's
/// other input) and the nodes from the pool to the linear layer.
#[derive(Debug, Clone)]
pub(super) struct Tail {
    pub conv: usize,
    add: Option<(usize, Source)>,
    /// The pool, any flattens and dropouts, then the linear layer (the output).
    chain: Vec<usize>,
}

impl Tail {
    /// The tail of a graph whose output is a linear layer fed as described
    /// above; `readers[n]` are the nodes reading node n.
    pub fn find(ops: &[&Op], sources: &[Vec<Source>], readers: &[Vec<usize>], output: usize) -> Option<Tail> {
        let only_source = |n: usize| match sources[n][..] {
            [Source::Node(j)] if readers[j] == [n] => Some(j),
            _ => None,
        };
        if !matches!(ops[output], Op::Linear { .. }) {
            return None;
        }
        let mut chain = vec![output];
        let mut at = only_source(output)?;
        while matches!(ops[at], Op::Flatten | Op::Dropout { .. }) {
            chain.push(at);
            at = only_source(at)?;
        }
        if !matches!(ops[at], Op::AdaptiveAvgPool2d { output: [1, 1] }) {
            return None;
        }
        chain.push(at);
        chain.reverse();
        let pool = at;
        let plain_conv = |n: usize, reader: usize| {
            matches!(ops[n], Op::Conv2d { stride: [1, 1], groups: 1, .. }) && readers[n] == [reader]
        };
        let before = only_source(pool)?;
        if plain_conv(before, pool) {
            return Some(Tail { conv: before, add: None, chain });
        }
        if !matches!(ops[before], Op::Add) {
            return None;
        }
        let conv_input = |k: usize| match sources[before][k] {
            Source::Node(j) if plain_conv(j, before) => Some(j),
            _ => None,
        };
        let (k, conv) = (0..2).find_map(|k| conv_input(k).map(|conv| (k, conv)))?;
        Some(Tail { conv, add: Some((before, sources[before][1 - k])), chain })
    }

    /// Every node the fold stands for, the convolution first.
    pub fn nodes(&self) -> impl Iterator<Item = usize> + '_ {
        std::iter::once(self.conv).chain(self.add.map(|(add, _)| add)).chain(self.chain.iter().copied())
    }

    /// The linear layer whose output the fold computes.
    pub fn linear(&self) -> usize {
        *self.chain.last().expect("a tail ends at its linear layer")
    }

    /// The residual add's other input, when the tail has an add.
    pub fn other(&self) -> Option<Source> {
        self.add.map(|(_, other)| other)
    }
}

impl Executor {
    /// The logits from the tail convolution's input `x` (and the residual add's
    /// other input): the linear layer's weights times the convolution's, applied to
    /// the input's window means, plus the other input's pooled contribution.
    /// Folded on each call (two small products) so that trained weights are used.
    pub(super) fn tail_logits(&self, tail: &Tail, x: &Tensor, other: Option<&Tensor>) -> Tensor {
        let Op::Conv2d { out_channels, padding, dilation, .. } = &self.spec.nodes[tail.conv].op else {
            unreachable!("a tail starts at a convolution")
        };
        let (conv, linear) = (&self.params[tail.conv], &self.params[tail.linear()]);
        let w_linear = linear.weight.as_ref().expect("a linear layer has weights");
        let w_conv = conv.weight.as_ref().expect("a convolution has weights");
        let folded = w_linear.matmul(&w_conv.reshape([*out_channels, -1]));
        let [_, out_h, out_w] = self.shapes[tail.conv][..] else { unreachable!("a convolution's output is [C, H, W]") };
        // Tap (i, j) reads, over all output positions, the out_h × out_w window of
        // the padded input starting at (i·dilation, j·dilation).
        let means = x.constant_pad_nd([padding[1], padding[1], padding[0], padding[0]]).avg_pool2d(
            [out_h, out_w],
            *dilation,
            [0, 0],
            false,
            true,
            None::<i64>,
        );
        let mut logits = means.flatten(1, -1).linear::<Tensor>(&folded, None);
        if let Some(b) = &linear.bias {
            logits += b;
        }
        if let Some(b) = &conv.bias {
            logits += w_linear.mv(b);
        }
        if let Some(other) = other {
            logits += other.adaptive_avg_pool2d([1, 1]).flatten(1, -1).linear::<Tensor>(w_linear, None);
        }
        logits
    }
}

#[cfg(test)]
mod tests {
    use super::super::Executor;
    use crate::data::dataset::Dataset;
    use crate::graph::preset;
    use tch::{Device, Kind, Tensor};

    fn executor(name: &str, width: i64) -> Executor {
        let spec = preset::by_name(name, Dataset::FashionMnist, Some(width)).unwrap();
        let weights = crate::graph::train::init(&spec, 5, Device::Cpu).unwrap();
        Executor::new(spec, weights, Device::Cpu).unwrap()
    }

    /// A pre-activation ResNet ends in a foldable tail; keeping the convolution's
    /// output (as `activations` does) runs it unfolded, to the same logits.
    #[test]
    fn the_folded_tail_gives_the_unfolded_logits() {
        tch::set_num_threads(1);
        let exec = executor("preactresnet18", 4);
        let tail = exec.tail.as_ref().expect("a pre-activation ResNet's tail folds");
        let names: Vec<&str> = tail.nodes().map(|n| exec.spec.nodes[n].name.as_str()).collect();
        assert_eq!(names, ["layer4.1.conv2", "add_7", "avgpool", "view", "linear"]);
        let _guard = tch::no_grad_guard();
        let x = Tensor::rand([8, 1, 28, 28], (Kind::Float, Device::Cpu));
        let folded = exec.logits(&x, &[]);
        let (unfolded, _) = exec.logits_and(&x, &[], &[tail.conv]);
        let scale = unfolded.abs().max().double_value(&[]);
        let diff = (&folded - &unfolded).abs().max().double_value(&[]);
        assert!(scale > 0.0 && diff < 1e-5 * scale, "{diff:e} apart at scale {scale}");
    }

    /// TrojanZoo's MNIST net ends in ReLU, max pool, dropout, linear: nothing folds.
    #[test]
    fn a_tail_with_a_relu_before_the_pool_does_not_fold() {
        assert!(executor("tz-mnist", 8).tail.is_none());
    }
}
