//! Triggered images computed from their clean twins' pass. A patch trigger
//! changes a few pixels, and until the receptive fields have grown over most of
//! a map only the outputs whose field holds one of them differ from the clean
//! image's. Those rows and columns (a window) are computed from the clean values
//! around them; everything else is the clean pass's. From the first node whose
//! window covers most of its output the pass is an ordinary one. On the width-8
//! pre-activation ResNet with the study's 6×6 corner trigger the first two
//! stages (half of an evaluation's time) run on 6–41 % of their maps.

use super::{Executor, Intervention, Source};
use crate::graph::spec::Op;
use std::ops::Range;
use tch::Tensor;

/// A window over more than 1/MAP_PER_WINDOW of its map saves less than its
/// halo and copies cost: from there the pass is an ordinary one.
const MAP_PER_WINDOW: i64 = 2;

/// The rows and columns of a map (a node's output, or the input) that may
/// differ from the clean twin's.
#[derive(Debug, Clone, PartialEq)]
struct Window {
    rows: Range<i64>,
    cols: Range<i64>,
}

impl Window {
    fn area(&self) -> i64 {
        (self.rows.end - self.rows.start) * (self.cols.end - self.cols.start)
    }

    fn union(&self, other: &Window) -> Window {
        let span = |a: &Range<i64>, b: &Range<i64>| a.start.min(b.start)..a.end.max(b.end);
        Window { rows: span(&self.rows, &other.rows), cols: span(&self.cols, &other.cols) }
    }

    fn intersection(&self, other: &Window) -> Option<Window> {
        let span = |a: &Range<i64>, b: &Range<i64>| a.start.max(b.start)..a.end.min(b.end);
        let (rows, cols) = (span(&self.rows, &other.rows), span(&self.cols, &other.cols));
        (rows.start < rows.end && cols.start < cols.end).then_some(Window { rows, cols })
    }

    /// The part of `[N, C, H, W]` `t` at this window, when `t` covers `origin`.
    fn of(&self, t: &Tensor, origin: &Window) -> Tensor {
        t.narrow(2, self.rows.start - origin.rows.start, self.rows.end - self.rows.start).narrow(
            3,
            self.cols.start - origin.cols.start,
            self.cols.end - self.cols.start,
        )
    }

    /// Where the images `[N, C, H, W]` in `a` and `b` differ; `None` if nowhere.
    fn of_difference(a: &Tensor, b: &Tensor) -> Option<Window> {
        let differs = (a - b).abs().amax([0, 1], false).gt(0.0);
        let lines = |dim: i64| -> Option<Range<i64>> {
            let lit: Vec<bool> = Vec::try_from(differs.any_dim(dim, false)).expect("a bool vector");
            let first = lit.iter().position(|&b| b)? as i64;
            Some(first..lit.iter().rposition(|&b| b).expect("one is lit") as i64 + 1)
        };
        Some(Window { rows: lines(1)?, cols: lines(0)? })
    }
}

/// A sliding op's geometry along one axis.
#[derive(Clone, Copy)]
struct Slide {
    kernel: i64,
    stride: i64,
    padding: i64,
    dilation: i64,
}

impl Slide {
    /// The outputs (of `size`) whose inputs include one in `changed`.
    fn affected(&self, changed: &Range<i64>, size: i64) -> Range<i64> {
        let reach = self.dilation * (self.kernel - 1);
        let first = (changed.start + self.padding - reach).max(0);
        let first = (first + self.stride - 1) / self.stride;
        let last = ((changed.end - 1 + self.padding) / self.stride).min(size - 1);
        first..last + 1
    }

    /// The input lines outputs `out` read, unclipped (negative or past the map
    /// where they fall in the padding).
    fn reads(&self, out: &Range<i64>) -> Range<i64> {
        out.start * self.stride - self.padding
            ..(out.end - 1) * self.stride - self.padding + self.dilation * (self.kernel - 1) + 1
    }

    fn unpadded(&self) -> Slide {
        Slide { padding: 0, ..*self }
    }
}

/// A node's sliding geometry per axis, for the ops a window passes through.
fn slides(op: &Op) -> Option<[Slide; 2]> {
    let axes = |k: &[i64; 2], s: &[i64; 2], p: &[i64; 2], d: &[i64; 2]| {
        [0, 1].map(|a| Slide { kernel: k[a], stride: s[a], padding: p[a], dilation: d[a] })
    };
    match op {
        Op::Conv2d { kernel, stride, padding, dilation, .. } => Some(axes(kernel, stride, padding, dilation)),
        Op::MaxPool2d { kernel, stride, padding, dilation, ceil_mode: false } => {
            Some(axes(kernel, stride, padding, dilation))
        }
        // Without padding, or padding that counts as zeros: a zero-padded window is the same.
        Op::AvgPool2d { kernel, stride, padding, ceil_mode: false, count_include_pad }
            if *count_include_pad || *padding == [0, 0] =>
        {
            Some(axes(kernel, stride, padding, &[1, 1]))
        }
        _ => None,
    }
}

/// How a triggered twin's node output differs from the clean one's.
enum Change {
    Same,
    /// The new values at the window, `[N, C, rows, cols]`.
    At(Window, Tensor),
}

impl Executor {
    /// The logits of `clean` `[N, C, H, W]` and of `triggered`, its twins, with
    /// `interventions`: the twins' early nodes computed on the windows where
    /// they differ (`None` where no window saves work).
    pub fn twin_logits(&self, clean: &Tensor, triggered: &Tensor, interventions: &[Intervention]) -> (Tensor, Tensor) {
        let plain = || (self.logits(clean, interventions), self.logits(triggered, interventions));
        let Some(input) = Window::of_difference(clean, triggered) else {
            let logits = self.logits(clean, interventions);
            return (logits.shallow_clone(), logits);
        };
        let (windows, dense) = self.plan(input.clone());
        if dense == 0 || interventions.iter().any(|iv| iv.node < dense) {
            return plain();
        }
        let mut values = self.empty();
        self.run(&mut values, clean, 0..self.spec.nodes.len(), interventions, &[], dense);
        let clean_logits = values[self.output].take().expect("the output is computed");
        let triggered = crate::engine::model::channels_last(triggered);
        let changes = self.twin_changes(&values, &triggered, &windows, dense);
        let mut twin: Vec<Option<Tensor>> = self.empty();
        for j in 0..dense {
            if self.last_use[j] < dense || values[j].is_none() {
                continue;
            }
            let clean = values[j].as_ref().expect("checked");
            twin[j] = Some(match &changes[j] {
                Change::Same => clean.shallow_clone(),
                Change::At(window, t) => {
                    let whole = clean.copy();
                    window.of(&whole, &full(clean)).copy_(t);
                    whole
                }
            });
        }
        self.run(&mut twin, &triggered, dense..self.spec.nodes.len(), interventions, &[], 0);
        (clean_logits, twin[self.output].take().expect("the output is computed"))
    }

    /// Each node's window for a change of the input at `input`, and the first
    /// node computed whole (moved back to the start of a fused convolution, batch
    /// norm and ReLU, which the clean pass stores as one value).
    fn plan(&self, input: Window) -> (Vec<Option<Window>>, usize) {
        let mut windows: Vec<Option<Window>> = vec![None; self.spec.nodes.len()];
        let mut dense = self.spec.nodes.len();
        for (i, node) in self.spec.nodes.iter().enumerate() {
            let inputs: Vec<Option<&Window>> = self.sources[i]
                .iter()
                .map(|s| match s {
                    Source::Input => Some(&input),
                    Source::Node(j) => windows[*j].as_ref(),
                })
                .collect();
            let changed: Vec<&Window> = inputs.iter().flatten().copied().collect();
            let Some(first) = changed.first() else { continue };
            let [_, height, width] = self.shapes[i][..] else {
                dense = i;
                break;
            };
            let window = match (&node.op, slides(&node.op)) {
                (_, Some([rows, cols])) => {
                    Some(Window { rows: rows.affected(&first.rows, height), cols: cols.affected(&first.cols, width) })
                }
                (Op::Add, _) => Some(changed.iter().skip(1).fold((*first).clone(), |u, w| u.union(w))),
                (Op::BatchNorm2d { .. } | Op::Relu | Op::LeakyRelu { .. } | Op::Dropout { .. }, _)
                | (Op::InputNorm { .. }, _) => Some((*first).clone()),
                _ => None,
            };
            match window {
                Some(w) if w.area() * MAP_PER_WINDOW <= height * width => windows[i] = Some(w),
                _ => {
                    dense = i;
                    break;
                }
            }
        }
        let straddles = |j: usize, dense: usize| {
            [self.params[j].folds_into, self.params[j].relu_after].iter().flatten().any(|&n| n >= dense)
        };
        while let Some(start) = (0..dense).find(|&j| straddles(j, dense)) {
            dense = start;
        }
        (windows, dense)
    }

    /// The twin's changes at every node before `dense`, from the clean pass's
    /// `values` (kept up to `dense`) and the triggered input.
    fn twin_changes(
        &self,
        values: &[Option<Tensor>],
        triggered: &Tensor,
        windows: &[Option<Window>],
        dense: usize,
    ) -> Vec<Change> {
        let mut changes: Vec<Change> = (0..self.spec.nodes.len()).map(|_| Change::Same).collect();
        let mut done = vec![false; self.spec.nodes.len()];
        for i in 0..dense {
            let Some(window) = windows[i].clone() else { continue };
            if done[i] {
                continue;
            }
            let op = &self.spec.nodes[i].op;
            let read = |k: usize, at: &Window| self.twin_input(values, &changes, triggered, self.sources[i][k], at);
            // A convolution folded into its batch norm (and a ReLU after it) yields
            // the value the clean pass stores, at the last of them.
            let fold = self.params[i].folds_into.filter(|&n| n < dense);
            let (mut at, mut out) = match (op, slides(op)) {
                (Op::Add, _) => (i, read(0, &window) + read(1, &window)),
                (_, Some([rows, cols])) => {
                    let [x_rows, x_cols] = [input_size(self, i, 2), input_size(self, i, 3)];
                    let need = Window { rows: rows.reads(&window.rows), cols: cols.reads(&window.cols) };
                    let inside = Window {
                        rows: need.rows.start.max(0)..need.rows.end.min(x_rows),
                        cols: need.cols.start.max(0)..need.cols.end.min(x_cols),
                    };
                    let pads = [
                        inside.cols.start - need.cols.start,
                        need.cols.end - inside.cols.end,
                        inside.rows.start - need.rows.start,
                        need.rows.end - inside.rows.end,
                    ];
                    let fill = if matches!(op, Op::MaxPool2d { .. }) { f64::NEG_INFINITY } else { 0.0 };
                    let x = read(0, &inside).pad(pads, "constant", fill);
                    let [rows, cols] = [rows.unpadded(), cols.unpadded()];
                    match op {
                        Op::Conv2d { groups, .. } => {
                            let (weight, bias) = self.conv_weights(i, fold);
                            let out = x.conv2d(
                                &weight,
                                bias.as_ref(),
                                [rows.stride, cols.stride],
                                [0, 0],
                                [rows.dilation, cols.dilation],
                                *groups,
                            );
                            (fold.unwrap_or(i), out)
                        }
                        Op::MaxPool2d { .. } => (
                            i,
                            x.max_pool2d(
                                [rows.kernel, cols.kernel],
                                [rows.stride, cols.stride],
                                [0, 0],
                                [rows.dilation, cols.dilation],
                                false,
                            ),
                        ),
                        _ => (
                            i,
                            x.avg_pool2d(
                                [rows.kernel, cols.kernel],
                                [rows.stride, cols.stride],
                                [0, 0],
                                false,
                                true,
                                None::<i64>,
                            ),
                        ),
                    }
                }
                _ => (i, self.compute(i, &[&read(0, &window)])),
            };
            if let Some(relu) = self.params[at].relu_after.filter(|&r| r < dense) {
                done[at] = true;
                out = out.relu_();
                at = relu;
            }
            done[at] = true;
            changes[at] = Change::At(window, out);
        }
        changes
    }

    /// The twin's values of input `source` at `at`: the clean pass's with the
    /// twin's change pasted over them.
    fn twin_input(
        &self,
        values: &[Option<Tensor>],
        changes: &[Change],
        triggered: &Tensor,
        source: Source,
        at: &Window,
    ) -> Tensor {
        let Source::Node(j) = source else {
            return at.of(triggered, &full(triggered));
        };
        let clean = values[j].as_ref().expect("the clean pass keeps every value before the dense node");
        let part = at.of(clean, &full(clean));
        match &changes[j] {
            Change::Same => part,
            Change::At(window, t) => {
                let part = part.copy();
                if let Some(overlap) = window.intersection(at) {
                    overlap.of(&part, at).copy_(&overlap.of(t, window));
                }
                part
            }
        }
    }
}

/// The whole map of `[N, C, H, W]` `t` as a window.
fn full(t: &Tensor) -> Window {
    let size = t.size();
    Window { rows: 0..size[2], cols: 0..size[3] }
}

/// Node `i`'s first input's size along `dim` (of `[N, C, H, W]`).
fn input_size(exec: &Executor, i: usize, dim: usize) -> i64 {
    match exec.sources[i][0] {
        Source::Input => exec.spec.input[dim - 1],
        Source::Node(j) => exec.shapes[j][dim - 1],
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Executor, Intervention, Replacement};
    use super::Window;
    use crate::data::dataset::Dataset;
    use crate::graph::preset;
    use tch::{Device, Kind, Tensor};

    fn preact() -> Executor {
        let spec = preset::by_name("preactresnet18", Dataset::FashionMnist, Some(4)).unwrap();
        let weights = crate::graph::train::init(&spec, 9, Device::Cpu).unwrap();
        let _guard = tch::no_grad_guard();
        // Batch norms with statistics of their own, so that folding them matters.
        for (key, tensor) in weights.iter() {
            if key.ends_with("running_mean") {
                let _ = tensor.shallow_clone().uniform_(-0.5, 0.5);
            } else if key.ends_with("running_var") {
                let _ = tensor.shallow_clone().uniform_(0.5, 2.0);
            }
        }
        Executor::new(spec, weights, Device::Cpu).unwrap()
    }

    fn assert_close(a: &Tensor, b: &Tensor, what: &str) {
        let scale = b.abs().max().double_value(&[]);
        let diff = (a - b).abs().max().double_value(&[]);
        assert!(scale > 0.0 && diff < 1e-5 * scale, "{what}: {diff:e} apart at scale {scale}");
    }

    /// A 6×6 patch in the corner: the first two stages run on windows, and both
    /// halves' logits are the plain passes', with and without an ablation after them.
    #[test]
    fn twins_from_the_clean_pass_give_the_plain_logits() {
        tch::set_num_threads(1);
        let exec = preact();
        let _guard = tch::no_grad_guard();
        let clean = Tensor::rand([6, 1, 28, 28], (Kind::Float, Device::Cpu));
        let triggered = clean.copy();
        triggered.narrow(2, 22, 6).narrow(3, 21, 6).copy_(&Tensor::rand([6, 1, 6, 6], (Kind::Float, Device::Cpu)));
        let (_, dense) = exec.plan(Window::of_difference(&clean, &triggered).unwrap());
        assert_eq!(exec.spec.nodes[dense].name, "layer3.0.conv1", "windows through layer2");
        let late = exec.spec.index_of("layer3.1.conv1").unwrap();
        let ablation = [Intervention { node: late, units: vec![0, 3], replace: Replacement::Zero }];
        for interventions in [&[][..], &ablation] {
            let (a, b) = exec.twin_logits(&clean, &triggered, interventions);
            assert_close(&a, &exec.logits(&clean, interventions), "clean");
            assert_close(&b, &exec.logits(&triggered, interventions), "triggered");
        }
    }

    /// A change over the whole image (a blend) leaves no window: plain passes.
    #[test]
    fn a_change_everywhere_runs_plain_passes() {
        let exec = preact();
        let clean = Tensor::rand([2, 1, 28, 28], (Kind::Float, Device::Cpu));
        let blended = &clean * 0.8 + 0.2;
        assert_eq!(exec.plan(Window::of_difference(&clean, &blended).unwrap()).1, 0);
    }
}
