//! One unit of one node replaced, computed as a change to the unablated pass:
//! until the first op that mixes channels only the unit's channel differs, so
//! batch norms, ReLUs, pools and residual adds there run on that one channel,
//! and the first convolution after it adds the convolution of that channel's
//! change alone (linearity: 1/C of its arithmetic). Everything after is computed
//! in full. A sweep pays for the unablated pass once per chunk of images.

use super::{Executor, Source};
use crate::graph::spec::Op;
use tch::Tensor;

/// How a node's output differs from the unablated pass.
enum Change {
    None,
    /// Only channel `unit` differs: its new values, `[N, 1, …]`.
    Channel(Tensor),
    /// Anything may differ: the whole new output.
    Dense(Tensor),
}

/// Every node's output in the unablated pass over one chunk of images.
pub struct BasePass {
    input: Tensor,
    values: Vec<Tensor>,
}

impl Executor {
    /// Runs `x` keeping every node's output (for `logits_with_unit`).
    pub fn base_pass(&self, x: &Tensor) -> BasePass {
        let mut values = self.empty();
        let all: Vec<usize> = (0..self.spec.nodes.len()).collect();
        self.run(&mut values, x, 0..all.len(), &[], &all, 0);
        let values = values.into_iter().map(|v| v.expect("every node's output is kept")).collect();
        BasePass { input: crate::engine::model::channels_last(x), values }
    }

    /// The logits with channel `unit` of `node`'s output replaced by `values`
    /// (`[unit's shape]` broadcast over the images, or `[N, 1, …]` per image), from `base`.
    pub fn logits_with_unit(&self, base: &BasePass, node: usize, unit: i64, values: &Tensor) -> Tensor {
        let mut shape = base.values[node].size();
        shape[1] = 1;
        let mut changes: Vec<Change> = (0..self.spec.nodes.len()).map(|_| Change::None).collect();
        changes[node] = Change::Channel(values.expand(shape.as_slice(), false).contiguous());
        let mut i = node + 1;
        while i < self.spec.nodes.len() {
            let (at, change) = self.changed(i, base, &changes, unit);
            changes[at] = change;
            // From the first node whose whole output changed on, the pass is an
            // ordinary one (batch norms folded, values freed after their last use).
            if matches!(changes[at], Change::Dense(_)) {
                return self.finish(at, base, changes, unit);
            }
            i = at + 1;
        }
        match &changes[self.output] {
            Change::None => base.values[self.output].shallow_clone(),
            _ => unreachable!("a changed output is dense, and the pass finished there"),
        }
    }

    /// The rest of the pass after node `at`, from the changed values up to it.
    fn finish(&self, at: usize, base: &BasePass, changes: Vec<Change>, unit: i64) -> Tensor {
        let mut values: Vec<Option<Tensor>> = (0..self.spec.nodes.len()).map(|_| None).collect();
        for (j, change) in changes.into_iter().enumerate().take(at + 1) {
            if j != at && self.last_use[j] <= at {
                continue;
            }
            values[j] = Some(match change {
                Change::None => base.values[j].shallow_clone(),
                Change::Dense(t) => t,
                Change::Channel(t) => {
                    let index = Tensor::from_slice(&[unit]).to_device(t.device());
                    base.values[j].index_copy(1, &index, &t)
                }
            });
        }
        self.run(&mut values, &base.input, at + 1..self.spec.nodes.len(), &[], &[], 0);
        values[self.output].take().expect("the output is computed")
    }

    /// How node `i`'s output changes, given how its inputs changed: the node
    /// whose change it is (a convolution's batch norm when the two fold) and the change.
    fn changed(&self, i: usize, base: &BasePass, changes: &[Change], unit: i64) -> (usize, Change) {
        let input = match self.sources[i][..] {
            [Source::Node(j)] => Some(&changes[j]),
            _ => None,
        };
        let ungrouped = matches!(self.spec.nodes[i].op, Op::Conv2d { groups: 1, .. });
        match (self.params[i].folds_into, input) {
            (Some(norm), Some(Change::Channel(t))) if ungrouped => {
                let mut out = self.conv_change(i, base, t, unit, Some(norm));
                // A ReLU reading only the batch norm: in place on the new tensor, as a pass does.
                match self.params[norm].relu_after {
                    Some(relu) => (relu, Change::Dense(out.relu_())),
                    None => (norm, Change::Dense(out)),
                }
            }
            _ => (i, self.change_of(i, base, changes, unit)),
        }
    }

    fn change_of(&self, i: usize, base: &BasePass, changes: &[Change], unit: i64) -> Change {
        let inputs: Vec<Option<&Change>> = self.sources[i]
            .iter()
            .map(|s| match s {
                Source::Input => None,
                Source::Node(j) => Some(&changes[*j]),
            })
            .collect();
        let channel = |k: usize| match inputs[k] {
            Some(Change::Channel(t)) => Some(t),
            _ => None,
        };
        if inputs.iter().all(|c| matches!(c, None | Some(Change::None))) {
            return Change::None;
        }
        let op = &self.spec.nodes[i].op;
        match (op, channel(0)) {
            (Op::Relu | Op::LeakyRelu { .. } | Op::Dropout { .. } | Op::MaxPool2d { .. }, Some(t))
            | (Op::AvgPool2d { .. } | Op::AdaptiveAvgPool2d { .. }, Some(t)) => Change::Channel(self.compute(i, &[t])),
            (Op::BatchNorm2d { eps, momentum, .. }, Some(t)) => {
                let p = &self.params[i];
                let one = |w: &Option<Tensor>| w.as_ref().map(|w| w.narrow(0, unit, 1));
                Change::Channel(t.batch_norm(
                    one(&p.weight),
                    one(&p.bias),
                    one(&p.running_mean),
                    one(&p.running_var),
                    false,
                    *momentum,
                    *eps,
                    true,
                ))
            }
            (Op::InputNorm { .. }, Some(t)) => {
                let (mean, std) = self.params[i].norm.as_ref().expect("input_norm has its statistics");
                let one = |v: &Tensor| if v.size()[0] > 1 { v.narrow(0, unit, 1) } else { v.shallow_clone() };
                Change::Channel((t - one(mean)) / one(std))
            }
            (Op::Add, _) => {
                let side = |k: usize| -> Option<Tensor> {
                    match inputs[k] {
                        Some(Change::Channel(t)) => Some(t.shallow_clone()),
                        Some(Change::None) => Some(self.input_of(i, k, base).narrow(1, unit, 1)),
                        _ => None,
                    }
                };
                match (side(0), side(1)) {
                    (Some(a), Some(b)) => Change::Channel(a + b),
                    _ => Change::Dense(self.whole(i, base, changes, unit)),
                }
            }
            (Op::Conv2d { groups: 1, .. }, Some(t)) => Change::Dense(self.conv_change(i, base, t, unit, None)),
            _ => Change::Dense(self.whole(i, base, changes, unit)),
        }
    }

    /// Convolution `i`'s output when only channel `unit` of its input changed to
    /// `t`: the unablated output plus the convolution of that channel's change
    /// (linearity). With `norm`, the batch norm it folds into: its output, the
    /// change scaled by the norm's per-channel scale.
    fn conv_change(&self, i: usize, base: &BasePass, t: &Tensor, unit: i64, norm: Option<usize>) -> Tensor {
        let Op::Conv2d { stride, padding, dilation, .. } = &self.spec.nodes[i].op else {
            unreachable!("only a convolution's change is computed by linearity")
        };
        let before = self.input_of(i, 0, base).narrow(1, unit, 1);
        let slice = self.params[i].weight.as_ref().expect("a convolution has weights").narrow(1, unit, 1);
        // A new tensor, not `*=`: the slice is a view of the model's weights.
        let weight = match norm {
            Some(norm) => slice * self.norm_scale(norm).view([-1, 1, 1, 1]),
            None => slice,
        };
        let mut out = (t - before).conv2d::<Tensor>(&weight, None, stride, padding, dilation, 1);
        out += &base.values[norm.unwrap_or(i)];
        out
    }

    /// Node `i` computed in full from its inputs as changed.
    fn whole(&self, i: usize, base: &BasePass, changes: &[Change], unit: i64) -> Tensor {
        let args: Vec<Tensor> = self.sources[i]
            .iter()
            .enumerate()
            .map(|(k, s)| match s {
                Source::Input => base.input.shallow_clone(),
                Source::Node(j) => match &changes[*j] {
                    Change::None => base.values[*j].shallow_clone(),
                    Change::Dense(t) => t.shallow_clone(),
                    Change::Channel(t) => {
                        let index = Tensor::from_slice(&[unit]).to_device(t.device());
                        self.input_of(i, k, base).index_copy(1, &index, t)
                    }
                },
            })
            .collect();
        let refs: Vec<&Tensor> = args.iter().collect();
        self.compute(i, &refs)
    }

    /// Input `k` of node `i` in the unablated pass.
    fn input_of<'a>(&self, i: usize, k: usize, base: &'a BasePass) -> &'a Tensor {
        match self.sources[i][k] {
            Source::Input => &base.input,
            Source::Node(j) => &base.values[j],
        }
    }
}
