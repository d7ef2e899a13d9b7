//! The fast ablation engine. Each model's activations on the test set (clean and
//! triggered) are computed once; an ablation then recomputes only what lies
//! downstream of its earliest layer. Every mode replaces a unit's output by a
//! constant, so its effect on the next layer's pre-activation is linear and exact:
//! Δpre = W_next[:, k] ⊛ (constant − actual), a small fraction of a full layer.

use super::ablation::{self, AblationMode, AblationSet};
use super::layer::Layer;
use super::model::Net;
use super::testset::{CHUNK, TestSet};
use tch::{Device, Tensor};

/// conv2's 11×11 pre-activation is pooled in floor mode, which never reads the last
/// row and column: only this 10×10 corner is kept.
const CONV2_POOLED: i64 = 10;

pub struct ActivationCache {
    /// A private copy of the model, so later edits to the caller's model cannot
    /// make the cache disagree with its weights.
    net: Net,
    means: Vec<Tensor>,
    /// `[2N, 64, 10, 10]` conv2 pre-activation (the part the pool reads).
    pre2: Tensor,
    /// `[2N, 64, 5, 5]` conv2 block output.
    h2: Tensor,
    /// `[2N, 16]` fc1 pre-activation.
    pre3: Tensor,
    /// `[2N, 10]`.
    logits: Tensor,
}

/// One layer's ablated units and what they output instead.
struct Replacement {
    index: Tensor,
    values: Tensor,
}

impl ActivationCache {
    /// Runs `net` once over `test` and keeps every activation an ablation needs.
    pub fn build(net: &Net, test: &TestSet) -> ActivationCache {
        let _guard = tch::no_grad_guard();
        let net = net.duplicate();
        let means = ablation::clean_means(&net, test);
        let (mut pre2, mut h2, mut pre3, mut logits) = (vec![], vec![], vec![], vec![]);
        for x in test.inputs.split(CHUNK, 0) {
            let h1 = net.block(Layer::Conv1, &x);
            let p2 = h1
                .conv2d(net.weight(Layer::Conv2), Some(net.bias(Layer::Conv2)), [1, 1], [0, 0], [1, 1], 1)
                .narrow(2, 0, CONV2_POOLED)
                .narrow(3, 0, CONV2_POOLED)
                .contiguous();
            let a2 = p2.relu().max_pool2d([2, 2], [2, 2], [0, 0], [1, 1], false);
            let p3 = a2.flatten(1, -1).linear(net.weight(Layer::Fc1), Some(net.bias(Layer::Fc1)));
            logits.push(net.block(Layer::Fc2, &p3.relu()));
            pre2.push(p2);
            h2.push(a2);
            pre3.push(p3);
        }
        ActivationCache {
            net,
            means,
            pre2: Tensor::cat(&pre2, 0),
            h2: Tensor::cat(&h2, 0),
            pre3: Tensor::cat(&pre3, 0),
            logits: Tensor::cat(&logits, 0),
        }
    }

    /// Bytes held by the cached activations.
    pub fn bytes(&self) -> usize {
        [&self.pre2, &self.h2, &self.pre3, &self.logits].iter().map(|t| t.numel() * 4).sum()
    }

    pub fn device(&self) -> Device {
        self.logits.device()
    }

    /// Mean block outputs over the clean test images (the "mean" mode constants).
    pub fn means(&self) -> &[Tensor] {
        &self.means
    }

    /// Predicted classes `[2N]` with `set` ablated; `test` must be the set the
    /// cache was built on.
    pub fn predict(&self, test: &TestSet, set: &AblationSet, mode: AblationMode) -> Tensor {
        let _guard = tch::no_grad_guard();
        let Some(first) = set.first_layer() else {
            return self.logits.argmax(1, false);
        };
        let plans: Vec<Option<Replacement>> = Layer::ALL
            .iter()
            .map(|&layer| {
                let units = set.units_in(layer);
                (!units.is_empty()).then(|| {
                    let index = ablation::unit_index(&units, self.device());
                    let values = ablation::replacement(&self.net, &self.means, layer, &index, mode);
                    Replacement { index, values }
                })
            })
            .collect();
        let total = self.logits.size()[0];
        let chunks: Vec<Tensor> = (0..total)
            .step_by(CHUNK as usize)
            .map(|start| {
                let len = CHUNK.min(total - start);
                self.chunk_logits(test, start, len, first, &plans).argmax(1, false)
            })
            .collect();
        Tensor::cat(&chunks, 0)
    }

    pub fn evaluate(&self, test: &TestSet, set: &AblationSet, mode: AblationMode) -> super::metrics::Metrics {
        test.metrics(&self.predict(test, set, mode))
    }

    fn chunk_logits(
        &self,
        test: &TestSet,
        start: i64,
        len: i64,
        first: Layer,
        plans: &[Option<Replacement>],
    ) -> Tensor {
        let plan = |layer: Layer| plans[layer.position()].as_ref();
        if first == Layer::Fc2 {
            return apply(self.logits.narrow(0, start, len).copy(), plan(Layer::Fc2));
        }
        let pre3 = match first {
            Layer::Conv1 => {
                let x = test.inputs.narrow(0, start, len);
                let h2 = self.conv1_ablated_h2(&x, start, len, plan(Layer::Conv1).expect("first layer has a plan"));
                apply(h2, plan(Layer::Conv2))
                    .flatten(1, -1)
                    .linear(self.net.weight(Layer::Fc1), Some(self.net.bias(Layer::Fc1)))
            }
            Layer::Conv2 => self.conv2_ablated_pre3(start, len, plan(Layer::Conv2).expect("first layer has a plan")),
            _ => self.pre3.narrow(0, start, len),
        };
        let h3 = apply(pre3.relu(), plan(Layer::Fc1));
        apply(self.net.block(Layer::Fc2, &h3), plan(Layer::Fc2))
    }

    /// conv2 block output with conv1 units replaced: recompute only the ablated conv1
    /// channels from the input and correct the cached conv2 pre-activation by their
    /// change, convolved with their slice of conv2's kernels.
    fn conv1_ablated_h2(&self, x: &Tensor, start: i64, len: i64, r: &Replacement) -> Tensor {
        let (w1, b1, w2) = (self.net.weight(Layer::Conv1), self.net.bias(Layer::Conv1), self.net.weight(Layer::Conv2));
        let needed = CONV2_POOLED + 2;
        let actual = x
            .conv2d(&w1.index_select(0, &r.index), Some(&b1.index_select(0, &r.index)), [1, 1], [0, 0], [1, 1], 1)
            .relu()
            .max_pool2d([2, 2], [2, 2], [0, 0], [1, 1], false)
            .narrow(2, 0, needed)
            .narrow(3, 0, needed);
        let constant = r.values.narrow(1, 0, needed).narrow(2, 0, needed).unsqueeze(0);
        let delta =
            (constant - actual).conv2d::<Tensor>(&w2.index_select(1, &r.index), None, [1, 1], [0, 0], [1, 1], 1);
        (self.pre2.narrow(0, start, len) + delta).relu().max_pool2d([2, 2], [2, 2], [0, 0], [1, 1], false)
    }

    /// fc1 pre-activation with conv2 channels replaced: a rank-|set| correction.
    fn conv2_ablated_pre3(&self, start: i64, len: i64, r: &Replacement) -> Tensor {
        let units = r.index.size()[0];
        let actual = self.h2.narrow(0, start, len).index_select(1, &r.index);
        let change = (r.values.unsqueeze(0) - actual).reshape([len, units * 25]);
        let w = self.net.weight(Layer::Fc1).view([16, 64, 25]).index_select(1, &r.index).reshape([16, units * 25]);
        self.pre3.narrow(0, start, len) + change.matmul(&w.tr())
    }
}

fn apply(h: Tensor, plan: Option<&Replacement>) -> Tensor {
    match plan {
        Some(r) => ablation::overwrite_units(h, &r.index, &r.values),
        None => h,
    }
}
