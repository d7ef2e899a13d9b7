//! The fast ablation engine. Each model's activations on the test set (clean and
//! triggered) are computed once; an ablation then recomputes only what lies
//! downstream of its earliest layer. Every mode replaces a unit's output by a
//! constant, so its effect on the next layer's pre-activation is linear and exact:
//! Δpre = W_next[:, k] ⊛ (constant − actual), a small fraction of a full layer.

use super::ablation::{self, AblationMode, AblationSet};
use super::host;
use super::kernels;
use super::layer::Layer;
use super::lean;
use super::model::Net;
use super::testset::{TestSet, chunk};
use std::cell::OnceCell;
use std::ops::Range;
use tch::{Device, Tensor};

/// conv2's 11×11 pre-activation is pooled in floor mode, which never reads the last
/// row and column: only this 10×10 corner is kept.
const CONV2_POOLED: i64 = 10;
/// conv1's pooled output rows and columns that feed that 10×10 corner.
const CONV1_NEEDED: i64 = CONV2_POOLED + 2;

/// Activations are kept channels-last (`[image, row, column, channel]`) so that the
/// pooling after an ablation reduces over outer dimensions and streams the 64
/// channels of a position contiguously.
pub struct ActivationCache {
    /// A private copy of the model, so later edits to the caller's model cannot
    /// make the cache disagree with its weights.
    pub(super) net: Net,
    /// The clean test images, for `means`.
    clean: Tensor,
    /// Computed on first use: only the mean mode needs them, and they cost a
    /// forward pass over the clean images (a third of building the cache).
    means: OnceCell<Vec<Tensor>>,
    /// fc1's weight with its inputs reordered channels-last: `[16, 5·5·64]`.
    pub(super) fc1_weight: Tensor,
    /// Its transpose, `[5·5·64, 16]`, for the CPU kernel.
    fc1_rows: Tensor,
    /// conv2's kernels as a matrix per input channel: `[32, 9, 64]`.
    conv2_taps: Tensor,
    /// `[N, 10, 10, 64]` conv2 pre-activation of the clean images (the part the
    /// pool reads).
    pub(super) pre2: Tensor,
    /// `[N, rows, columns, 64]`: the triggered twins' conv2 pre-activation on the
    /// lines the trigger's pooled cells read. Elsewhere it equals the clean
    /// image's, so keeping the whole of it would hold (and write) half as much again.
    trigger_pre2: Tensor,
    /// `[2N, 5, 5, 64]` conv2 block output, pooled from `pre2` on first use: the
    /// conv1 kernel pools what it needs itself, so a conv1 sweep never writes it.
    h2: OnceCell<Tensor>,
    /// `[2N, 16]` fc1 pre-activation.
    pub(super) pre3: Tensor,
    /// `[2N, 10]`.
    pub(super) logits: Tensor,
    /// Pooled conv2 cells (rows, columns) that see the trigger.
    pub(super) trigger_cells: [Range<usize>; 2],
    /// Use libtorch's ops even on the CPU (they are what runs on a GPU; tests
    /// compare the two).
    torch_kernels: bool,
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
        let n = test.len() as i64;
        let units = Layer::Conv2.units() as i64;
        // Written in place chunk by chunk: concatenating chunks would copy the
        // largest tensor of the cache once more and hold it twice at the peak.
        let options = (tch::Kind::Float, test.device());
        let pre2 = Tensor::empty([n, CONV2_POOLED, CONV2_POOLED, units], options);
        let window = lean::TriggerWindow::of(test);
        let trigger_cells = window.as_ref().map(|w| w.pooled_cells()).unwrap_or([0..0, 0..0]);
        let [rows, cols] = window.as_ref().map(|w| w.cell_lines()).unwrap_or([0..0, 0..0]);
        let trigger_pre2 = Tensor::empty([n, rows.end - rows.start, cols.end - cols.start, units], options);
        // Per half (clean, triggered), chunk by chunk.
        let (mut pre3, mut logits): ([Vec<Tensor>; 2], [Vec<Tensor>; 2]) = Default::default();
        let fc1_weight = channels_last_fc1(&net);
        let (weights, biases) = net.weights_and_biases();
        let mut start = 0;
        lean::for_each_twin_chunk(test, window.as_ref(), weights, biases, |clean, triggered| {
            let len = clean.size()[0];
            // Channels-last and cropped to the part the pool reads already: the
            // permute is a view.
            let p2 = clean.narrow(2, 0, CONV2_POOLED).narrow(3, 0, CONV2_POOLED).permute([0, 2, 3, 1]);
            pre2.narrow(0, start, len).copy_(&p2);
            let cells_pre2 = triggered.map(|t| t.permute([0, 2, 3, 1]));
            if let Some(cells_pre2) = &cells_pre2 {
                trigger_pre2.narrow(0, start, len).copy_(cells_pre2);
            }
            for (half, a2) in twin_block_outputs(&p2, cells_pre2.as_ref(), &trigger_cells).into_iter().enumerate() {
                let p3 = a2.flatten(1, -1).linear::<Tensor>(&fc1_weight, None) + &biases[Layer::Fc1.position()];
                logits[half].push(net.block(Layer::Fc2, &p3.relu()));
                pre3[half].push(p3);
            }
            start += len;
        });
        let joined = |halves: [Vec<Tensor>; 2]| Tensor::cat(&halves.into_iter().flatten().collect::<Vec<_>>(), 0);
        ActivationCache {
            fc1_rows: fc1_weight.tr().contiguous(),
            fc1_weight,
            trigger_cells,
            conv2_taps: net.weight(Layer::Conv2).detach().permute([1, 2, 3, 0]).reshape([32, 9, 64]),
            net,
            clean: test.clean(),
            means: OnceCell::new(),
            pre2,
            trigger_pre2,
            h2: OnceCell::new(),
            pre3: joined(pre3),
            logits: joined(logits),
            torch_kernels: false,
        }
    }

    /// This cache with the mean mode's constants given (computed on a larger test
    /// set than this cache's), when `means` is `Some`.
    pub fn with_means(self, means: Option<&[Tensor]>) -> ActivationCache {
        if let Some(means) = means {
            let _ = self.means.set(means.iter().map(Tensor::shallow_clone).collect());
        }
        self
    }

    /// This cache, computing with libtorch's ops only (as on a GPU).
    pub fn with_torch_kernels(mut self) -> ActivationCache {
        self.torch_kernels = true;
        self
    }

    /// Bytes held by the cached activations.
    pub fn bytes(&self) -> usize {
        let held = [Some(&self.pre2), Some(&self.trigger_pre2), self.h2.get(), Some(&self.pre3), Some(&self.logits)];
        held.iter().flatten().map(|t| t.numel() * 4).sum()
    }

    /// Pools the conv2 block output now rather than on the first ablation that
    /// reads it: the explorer does this once it is ready, so that its first conv2
    /// toggle is as quick as the rest.
    pub fn pool_block_outputs(&self) {
        let _ = self.h2();
    }

    /// The conv2 block output `[2N, 5, 5, 64]` (clean images, then triggered).
    pub(super) fn h2(&self) -> &Tensor {
        self.h2.get_or_init(|| {
            let _guard = tch::no_grad_guard();
            let [n, _, _, units] = self.pre2.size()[..] else { unreachable!("a 4-D pre-activation") };
            let side = CONV2_POOLED / 2;
            let h2 = Tensor::empty([2 * n, side, side, units], (tch::Kind::Float, self.device()));
            let trigger_reaches = !self.trigger_cells.iter().any(Range::is_empty);
            let step = chunk(self.device());
            for start in (0..n).step_by(step as usize) {
                let len = step.min(n - start);
                let cells_pre2 = trigger_reaches.then(|| self.trigger_pre2.narrow(0, start, len));
                let halves =
                    twin_block_outputs(&self.pre2.narrow(0, start, len), cells_pre2.as_ref(), &self.trigger_cells);
                for (half, a2) in halves.into_iter().enumerate() {
                    h2.narrow(0, half as i64 * n + start, len).copy_(&a2);
                }
            }
            h2
        })
    }

    pub fn device(&self) -> Device {
        self.logits.device()
    }

    /// Mean block outputs over the clean test images (the "mean" mode constants).
    pub fn means(&self) -> &[Tensor] {
        self.means.get_or_init(|| ablation::clean_means(&self.net, &self.clean))
    }

    /// Predicted classes `[2N]` with `set` ablated; `test` must be the set the
    /// cache was built on.
    pub fn predict(&self, test: &TestSet, set: &AblationSet, mode: AblationMode) -> Tensor {
        self.predict_many(test, std::slice::from_ref(set), mode).remove(0)
    }

    pub fn evaluate(&self, test: &TestSet, set: &AblationSet, mode: AblationMode) -> super::metrics::Metrics {
        test.metrics(&self.predict(test, set, mode))
    }

    /// Predictions for several sets at once. Sets starting at conv1 go through the
    /// CPU kernel together (each image's activations are read once for all of
    /// them); the others are evaluated chunk by chunk, all sets per chunk, so each
    /// chunk of cached activations is read from memory once however many sets
    /// there are (a sweep).
    pub fn predict_many(&self, test: &TestSet, sets: &[AblationSet], mode: AblationMode) -> Vec<Tensor> {
        let _guard = tch::no_grad_guard();
        let plans: Vec<Vec<Option<Replacement>>> = sets.iter().map(|set| self.plans(set, mode)).collect();
        let pre3 = self.conv1_kernel_pre3(test, sets, &plans);
        let total = self.logits.size()[0];
        let mut per_set: Vec<Vec<Tensor>> = sets.iter().map(|_| Vec::new()).collect();
        let step = chunk(self.device());
        for start in (0..total).step_by(step as usize) {
            let len = step.min(total - start);
            for (((set, plan), pre3), out) in sets.iter().zip(&plans).zip(&pre3).zip(per_set.iter_mut()) {
                let logits = match (set.first_layer(), pre3) {
                    (None, _) => self.logits.narrow(0, start, len),
                    (Some(_), Some(pre3)) => self.fc_logits(pre3.narrow(0, start, len), plan),
                    (Some(first), None) => self.chunk_logits(test, start, len, first, plan),
                };
                out.push(logits.argmax(1, false));
            }
        }
        per_set.iter().map(|chunks| Tensor::cat(chunks, 0)).collect()
    }

    fn uses_cpu_kernel(&self) -> bool {
        self.device() == Device::Cpu && !self.torch_kernels && super::host::our_loops_run()
    }

    fn plans(&self, set: &AblationSet, mode: AblationMode) -> Vec<Option<Replacement>> {
        // Only the mean mode reads the means: the others never pay for them.
        let means: &[Tensor] = if mode == AblationMode::Mean { self.means() } else { &[] };
        Layer::ALL
            .iter()
            .map(|&layer| {
                let units = set.units_in(layer);
                (!units.is_empty()).then(|| {
                    let index = ablation::unit_index(&units, self.device());
                    let values = ablation::replacement(&self.net, means, layer, &index, mode);
                    Replacement { index, values }
                })
            })
            .collect()
    }

    /// For each set, fc1's pre-activation `[2N, 16]` from the CPU kernel where the
    /// set starts at conv1 and the kernel is used; `None` for the others.
    fn conv1_kernel_pre3(
        &self,
        test: &TestSet,
        sets: &[AblationSet],
        plans: &[Vec<Option<Replacement>>],
    ) -> Vec<Option<Tensor>> {
        let use_kernel = |set: &AblationSet| self.uses_cpu_kernel() && set.first_layer() == Some(Layer::Conv1);
        let ablations: Vec<kernels::Conv1Ablation> = sets
            .iter()
            .zip(plans)
            .filter(|(set, _)| use_kernel(set))
            .map(|(_, plan)| self.conv1_ablation(plan))
            .collect();
        // None on a GPU, whose tensors the kernel cannot borrow.
        let mut results = if ablations.is_empty() {
            Vec::new()
        } else {
            let inputs = kernels::Conv1Inputs {
                images: host::slice(&test.inputs),
                pre2: host::slice(&self.pre2),
                trigger_pre2: host::slice(&self.trigger_pre2),
                pre3: host::slice(&self.pre3),
                fc1_rows: host::slice(&self.fc1_rows),
                trigger_cells: self.trigger_cells.clone(),
            };
            kernels::conv1_ablated_pre3(&inputs, &ablations)
        }
        .into_iter();
        sets.iter()
            .map(|set| {
                use_kernel(set).then(|| Tensor::from_slice(&results.next().expect("one per set")).view([-1, 16]))
            })
            .collect()
    }

    /// A set's conv1 (and conv2) replacements as the CPU kernel reads them.
    fn conv1_ablation(&self, plan: &[Option<Replacement>]) -> kernels::Conv1Ablation {
        let r = plan[Layer::Conv1.position()].as_ref().expect("the set starts at conv1");
        let conv2 = plan[Layer::Conv2.position()].as_ref();
        kernels::Conv1Ablation {
            kernels: host::floats(&self.net.weight(Layer::Conv1).index_select(0, &r.index)),
            biases: host::floats(&self.net.bias(Layer::Conv1).index_select(0, &r.index)),
            constants: host::floats(&r.values.narrow(1, 0, CONV1_NEEDED).narrow(2, 0, CONV1_NEEDED)),
            taps: host::floats(&self.conv2_taps.index_select(0, &r.index)),
            conv2_channels: conv2
                .map(|c| Vec::<i64>::try_from(&c.index).expect("unit indices").iter().map(|&u| u as usize).collect())
                .unwrap_or_default(),
            conv2_values: conv2.map(|c| host::floats(&c.values)).unwrap_or_default(),
        }
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
                let h2 = match plan(Layer::Conv2) {
                    // Overwrite through a channels-first view of the fresh tensor.
                    Some(r) => {
                        let _ = ablation::overwrite_units(h2.permute([0, 3, 1, 2]), &r.index, &r.values);
                        h2
                    }
                    None => h2,
                };
                h2.flatten(1, -1).linear(&self.fc1_weight, Some(self.net.bias(Layer::Fc1)))
            }
            Layer::Conv2 => self.conv2_ablated_pre3(start, len, plan(Layer::Conv2).expect("first layer has a plan")),
            _ => self.pre3.narrow(0, start, len),
        };
        self.fc_logits(pre3, plans)
    }

    /// Logits from fc1's pre-activation, with the set's fc replacements.
    fn fc_logits(&self, pre3: Tensor, plans: &[Option<Replacement>]) -> Tensor {
        let plan = |layer: Layer| plans[layer.position()].as_ref();
        let h3 = apply(pre3.relu(), plan(Layer::Fc1));
        apply(self.net.block(Layer::Fc2, &h3), plan(Layer::Fc2))
    }

    /// conv2 block output `[B, 5, 5, 64]` with conv1 units replaced, with
    /// libtorch's ops (the GPU path): recompute only the ablated conv1 channels
    /// from the input and correct the cached conv2 pre-activation by their change,
    /// convolved with their slice of conv2's kernels.
    fn conv1_ablated_h2(&self, x: &Tensor, start: i64, len: i64, r: &Replacement) -> Tensor {
        let units = r.index.size()[0];
        let weights = self.net.weight(Layer::Conv1).index_select(0, &r.index);
        let biases = self.net.bias(Layer::Conv1).index_select(0, &r.index);
        let constant = r.values.narrow(1, 0, CONV1_NEEDED).narrow(2, 0, CONV1_NEEDED);
        // Δpre2 as one matrix product: the change's 3×3 patches at each of the 100
        // output positions, [B·100, units·9], times those units' taps, [units·9, 64],
        // accumulated onto the cached pre-activation by the same GEMM.
        let actual = x
            .conv2d(&weights, Some(&biases), [1, 1], [0, 0], [1, 1], 1)
            .relu()
            .max_pool2d([2, 2], [2, 2], [0, 0], [1, 1], false)
            .narrow(2, 0, CONV1_NEEDED)
            .narrow(3, 0, CONV1_NEEDED);
        let patches = (constant.unsqueeze(0) - actual).im2col([3, 3], [1, 1], [0, 0], [1, 1]); // [B, units·9, 100]
        let patches = patches.transpose(1, 2).reshape([len * 100, units * 9]);
        let taps = self.conv2_taps.index_select(0, &r.index).reshape([units * 9, 64]);
        let pre2 = self.pre2_rows(start, len).view([len * 100, 64]);
        lean::pool_relu_nhwc(&pre2.addmm(&patches, &taps).view([len, CONV2_POOLED, CONV2_POOLED, 64]))
    }

    /// conv2's cached pre-activation `[len, 10, 10, 64]` of images `start..` of the
    /// 2N: the clean images' as stored, a triggered twin's as its clean image's
    /// with the trigger's lines written in.
    pub(super) fn pre2_rows(&self, start: i64, len: i64) -> Tensor {
        let n = self.pre2.size()[0];
        let clean = (n - start).clamp(0, len);
        let mut parts = Vec::new();
        if clean > 0 {
            parts.push(self.pre2.narrow(0, start, clean));
        }
        if clean < len {
            let (twin, count) = (start + clean - n, len - clean);
            let rows = self.pre2.narrow(0, twin, count).copy();
            let lines = self.trigger_cells.clone().map(|c| 2 * c.start..2 * c.end);
            nhwc_region(&rows, &lines).copy_(&self.trigger_pre2.narrow(0, twin, count));
            parts.push(rows);
        }
        match parts.len() {
            1 => parts.remove(0),
            _ => Tensor::cat(&parts, 0),
        }
    }

    /// fc1 pre-activation with conv2 channels replaced: a rank-|set| correction.
    fn conv2_ablated_pre3(&self, start: i64, len: i64, r: &Replacement) -> Tensor {
        let units = r.index.size()[0];
        let actual = self.h2().narrow(0, start, len).view([len, 25, 64]).index_select(2, &r.index); // [B, 25, units]
        let constant = r.values.view([units, 25]).transpose(0, 1).unsqueeze(0); // [1, 25, units]
        let change = (constant - actual).reshape([len, 25 * units]);
        let w = self.fc1_weight.view([16, 25, 64]).index_select(2, &r.index).reshape([16, 25 * units]);
        self.pre3.narrow(0, start, len) + change.matmul(&w.tr())
    }
}

/// fc1's weight `[16, 64·5·5]` reordered to read a channels-last `[5, 5, 64]` input.
fn channels_last_fc1(net: &Net) -> Tensor {
    net.weight(Layer::Fc1).detach().view([16, 64, 5, 5]).permute([0, 2, 3, 1]).reshape([16, 1600])
}

/// The conv2 block outputs (pooled, ReLU) of clean images and of their triggered
/// twins, from the clean pre-activation `[B, 10, 10, 64]` and the twins' on the
/// lines the trigger's pooled `cells` read (`None` where the trigger reaches none).
fn twin_block_outputs(pre2: &Tensor, cells_pre2: Option<&Tensor>, cells: &[Range<usize>; 2]) -> [Tensor; 2] {
    let clean = lean::pool_relu_nhwc(pre2);
    let triggered = clean.copy();
    if let Some(cells_pre2) = cells_pre2 {
        nhwc_region(&triggered, cells).copy_(&lean::pool_relu_nhwc(cells_pre2));
    }
    [clean, triggered]
}

/// Rows `at[0]` and columns `at[1]` of a channels-last `[N, H, W, C]` map, a view.
fn nhwc_region(x: &Tensor, [rows, cols]: &[Range<usize>; 2]) -> Tensor {
    x.narrow(1, rows.start as i64, rows.len() as i64).narrow(2, cols.start as i64, cols.len() as i64)
}

fn apply(h: Tensor, plan: Option<&Replacement>) -> Tensor {
    match plan {
        Some(r) => ablation::overwrite_units(h, &r.index, &r.values),
        None => h,
    }
}
