//! The forward pass every evaluation runs: the network's own function, computed
//! with less arithmetic.
//!
//! - Only the input rows and columns the logits depend on are read (floor-mode
//!   pooling drops each map's odd last row and column, so on 28×28 inputs rows and
//!   columns 26 and 27 reach nothing).
//! - Pooling comes before ReLU (the same value: ReLU is monotone) on a quarter of
//!   the values, channels-last throughout.
//! - A test set's triggered image differs from its clean twin only where the
//!   trigger is, so the last convolution's output is recomputed only where the
//!   trigger reaches and copied from the clean twin elsewhere (on the study's
//!   trigger, 4 of conv2's 100 kept positions; an evaluation copies only the
//!   pooled cells, 1 of 25).
//! - Without a gradient to carry, pooling skips the argmax indices libtorch's
//!   pooling always writes.
//!
//! Together about 3.5× `Net::forward` on the test set here; tests check that the
//! predictions are the same.

use super::conv_pool;
use super::layer::Layer;
use super::model::{Net, block, channels_last};
use super::testset::{TestSet, chunk};
use super::winograd::{self, Output};
use std::ops::Range;
use tch::Tensor;

/// Logits for `[N, 1, H, W]` inputs through `weights` and `biases` (one per layer,
/// in `Layer::ALL` order), the lean way but without twins (any inputs).
pub fn lean_forward(x: &Tensor, weights: &[Tensor], biases: &[Tensor]) -> Tensor {
    let first = Layer::ALL[0].position();
    logits_from(Layer::ALL[0], &conv2d(&lean_input(x), &weights[first], &biases[first]), weights, biases)
}

/// Logits from a convolution's pre-activation (before its pooling and ReLU),
/// channels-last: its pooling and ReLU, then the layers after it.
pub fn logits_from(conv: Layer, preactivation: &Tensor, weights: &[Tensor], biases: &[Tensor]) -> Tensor {
    logits_after(conv, &pool_relu(preactivation), weights, biases)
}

/// Logits from `layer`'s block output: the layers after it.
fn logits_after(layer: Layer, output: &Tensor, weights: &[Tensor], biases: &[Tensor]) -> Tensor {
    let after = Layer::ALL[layer.position() + 1..].iter();
    after.fold(output.shallow_clone(), |h, &l| lean_block(l, &h, weights, biases))
}

/// One layer's block of `net`, the lean way, on a lean input or a lean block's
/// output (pooling before ReLU, channels-last).
pub fn net_block(net: &Net, layer: Layer, h: &Tensor) -> Tensor {
    let (weights, biases) = net.weights_and_biases();
    lean_block(layer, h, weights, biases)
}

fn lean_block(layer: Layer, h: &Tensor, weights: &[Tensor], biases: &[Tensor]) -> Tensor {
    let (weight, bias) = (&weights[layer.position()], &biases[layer.position()]);
    if !layer.is_conv() {
        return block(layer, h, weight, bias);
    }
    conv_pool::conv_pool_relu(h, weight, bias)
        .or_else(|| winograd::conv3x3(h, weight, bias, Output::PooledRelu))
        .unwrap_or_else(|| pool_relu(&conv2d(h, weight, bias)))
}

/// A convolution's pre-activation (before its pooling and ReLU), channels-last.
pub fn net_preactivation(net: &Net, conv: Layer, h: &Tensor) -> Tensor {
    conv2d(h, net.weight(conv), net.bias(conv))
}

/// `x` cropped to the rows and columns the logits depend on, channels-last: a
/// one-channel image laid out so makes conv1 answer channels-last, saving the copy
/// of its output into that layout.
pub fn lean_input(x: &Tensor) -> Tensor {
    let used = used_input_side(x.size()[2]).min(used_input_side(x.size()[3]));
    channels_last(&x.narrow(2, 0, used).narrow(3, 0, used))
}

/// The last convolution's pre-activation (before its ReLU and pooling),
/// channels-last, for a lean input.
fn conv_preactivation(x: &Tensor, weights: &[Tensor], biases: &[Tensor]) -> Tensor {
    let last = last_conv();
    let mut h = x.shallow_clone();
    for conv in convs().filter(|&l| l != last) {
        h = lean_block(conv, &h, weights, biases);
    }
    conv2d(&h, &weights[last.position()], &biases[last.position()])
}

/// The last convolution's block output (pooled, ReLU), channels-last, for a lean
/// input.
fn conv_output(x: &Tensor, weights: &[Tensor], biases: &[Tensor]) -> Tensor {
    convs().fold(x.shallow_clone(), |h, conv| lean_block(conv, &h, weights, biases))
}

/// `[2N]` predicted classes of `net` on `test` (clean images, then triggered).
/// A triggered twin's last-convolution block output is the clean one's with the
/// pooled cells the trigger reaches recomputed.
pub fn predict(net: &Net, test: &TestSet) -> Tensor {
    let _guard = tch::no_grad_guard();
    let (weights, biases) = net.weights_and_biases();
    let (mut clean, mut triggered) = (Vec::new(), Vec::new());
    let window = TriggerWindow::of(test);
    let last = last_conv();
    for (start, len) in chunks(test) {
        let clean_output = conv_output(&lean_input(&test.clean_images(start, len)), weights, biases);
        let triggered_output = match &window {
            None => clean_output.shallow_clone(),
            Some(w) => w.recompute_cells(&clean_output, &test.triggered_images(start, len), weights, biases),
        };
        clean.push(logits_after(last, &clean_output, weights, biases).argmax(1, false));
        triggered.push(logits_after(last, &triggered_output, weights, biases).argmax(1, false));
    }
    clean.append(&mut triggered);
    Tensor::cat(&clean, 0)
}

/// Calls `each` with the last convolution's pre-activation of each chunk of clean
/// test images and, for their triggered twins, of the pooled cells the trigger
/// reaches only (`TriggerWindow::cell_preactivation`; `None` without a window).
/// Elsewhere a twin's pre-activation is its clean image's. `window` is
/// `TriggerWindow::of(test)`.
pub fn for_each_twin_chunk(
    test: &TestSet,
    window: Option<&TriggerWindow>,
    weights: &[Tensor],
    biases: &[Tensor],
    mut each: impl FnMut(Tensor, Option<Tensor>),
) {
    for (start, len) in chunks(test) {
        let clean = conv_preactivation(&lean_input(&test.clean_images(start, len)), weights, biases);
        let triggered = window.map(|w| w.cell_preactivation(&test.triggered_images(start, len), weights, biases));
        each(clean, triggered);
    }
}

/// `(start, len)` of each chunk of a test set's images.
fn chunks(test: &TestSet) -> impl Iterator<Item = (i64, i64)> {
    let (n, step) = (test.len() as i64, chunk(test.device()));
    (0..n).step_by(step as usize).map(move |start| (start, step.min(n - start)))
}

/// Where a test set's triggered images can differ from their clean twins: a
/// rectangle of the last convolution's output, and the input rectangle that
/// computes exactly it.
pub struct TriggerWindow {
    output: [Range<i64>; 2],
    input: [Range<i64>; 2],
}

impl TriggerWindow {
    /// `None` when no pixel that reaches the logits differs.
    pub fn of(test: &TestSet) -> Option<TriggerWindow> {
        let n = test.len() as i64;
        let used = used_input_side(test.inputs.size()[2]).min(used_input_side(test.inputs.size()[3]));
        let differs = (test.inputs.narrow(0, n, n) - test.inputs.narrow(0, 0, n))
            .narrow(2, 0, used)
            .narrow(3, 0, used)
            .abs()
            .amax([0, 1], false)
            .gt(0.0); // [used, used]
        let rows = affected_outputs(&differs.any_dim(1, false), used)?;
        let cols = affected_outputs(&differs.any_dim(0, false), used)?;
        let input = [input_span(&rows), input_span(&cols)];
        Some(TriggerWindow { output: [rows, cols], input })
    }

    /// The last convolution's pooled 2×2 cells (row range, column range) that hold
    /// an output the trigger reaches: where the conv1 ablation kernel recomputes
    /// a triggered image.
    pub fn pooled_cells(&self) -> [Range<usize>; 2] {
        self.output.clone().map(|lines| lines.start as usize / 2..(lines.end as usize).div_ceil(2))
    }

    /// `clean`'s last-convolution pre-activation with the window recomputed from
    /// the `triggered` images (raw, uncropped) through `weights` and `biases`.
    pub fn recompute(&self, clean: &Tensor, triggered: &Tensor, weights: &[Tensor], biases: &[Tensor]) -> Tensor {
        patched(clean, &self.output, &cut(triggered, &self.input), |x| conv_preactivation(x, weights, biases))
    }

    /// The last convolution's pre-activation lines (rows, columns) that the pooled
    /// cells the trigger reaches read.
    pub fn cell_lines(&self) -> [Range<i64>; 2] {
        self.pooled_cells().map(|c| 2 * c.start as i64..2 * c.end as i64)
    }

    /// The last convolution's pre-activation on `cell_lines` (channels-last
    /// `[B, C, rows, columns]`) from the `triggered` images (raw, uncropped).
    pub fn cell_preactivation(&self, triggered: &Tensor, weights: &[Tensor], biases: &[Tensor]) -> Tensor {
        let input = self.cell_lines().map(|lines| input_span(&lines));
        conv_preactivation(&cut(triggered, &input), weights, biases)
    }

    /// `clean`'s last-convolution block output (pooled, ReLU) with the pooled
    /// cells the trigger reaches recomputed from the `triggered` images (raw,
    /// uncropped): a quarter of the values `recompute` copies, and no pooling of
    /// the rest.
    pub fn recompute_cells(&self, clean: &Tensor, triggered: &Tensor, weights: &[Tensor], biases: &[Tensor]) -> Tensor {
        let cells = self.pooled_cells().map(|c| c.start as i64..c.end as i64);
        patched(clean, &cells, &self.cell_preactivation(triggered, weights, biases), pool_relu)
    }
}

/// Rows `at[0]` and columns `at[1]` of `x` (`[N, C, H, W]`), a view.
fn region(x: &Tensor, [rows, cols]: &[Range<i64>; 2]) -> Tensor {
    x.narrow(2, rows.start, rows.end - rows.start).narrow(3, cols.start, cols.end - cols.start)
}

/// `region(x, at)`, channels-last.
fn cut(x: &Tensor, at: &[Range<i64>; 2]) -> Tensor {
    channels_last(&region(x, at))
}

/// A copy of `clean` whose `region(at)` holds `compute(window)`.
fn patched(clean: &Tensor, at: &[Range<i64>; 2], window: &Tensor, compute: impl FnOnce(&Tensor) -> Tensor) -> Tensor {
    let result = clean.copy();
    region(&result, at).copy_(&compute(window));
    result
}

/// The last convolution's output lines (rows or columns) whose receptive field
/// holds a line flagged in `lit` (`[used]` booleans); `None` if there are none.
fn affected_outputs(lit: &Tensor, used: i64) -> Option<Range<i64>> {
    let lit: Vec<bool> = Vec::try_from(lit).expect("a bool vector");
    let hit = |i: i64| {
        let span = input_span(&(i..i + 1));
        lit[span.start as usize..span.end as usize].iter().any(|&b| b)
    };
    let affected: Vec<i64> = (0..last_conv_side(used)).filter(|&i| hit(i)).collect();
    Some(*affected.first()?..*affected.last()? + 1)
}

/// The input lines that compute the last convolution's output lines `out`:
/// back through each convolution (kernel k: k − 1 more lines) and each 2×2 pooling
/// before it (twice the lines). Its start is even at every pooling, so a window
/// cut there pools on the same grid as the whole image.
fn input_span(out: &Range<i64>) -> Range<i64> {
    let mut span = out.clone();
    for (i, conv) in convs().collect::<Vec<_>>().into_iter().rev().enumerate() {
        if i > 0 {
            span = 2 * span.start..2 * span.end;
        }
        span = span.start..span.end + kernel(conv) - 1;
    }
    span
}

/// The last convolution's output side on a lean input `used` lines wide.
fn last_conv_side(used: i64) -> i64 {
    let mut side = used;
    for (i, conv) in convs().enumerate() {
        if i > 0 {
            side /= 2;
        }
        side -= kernel(conv) - 1;
    }
    side
}

/// How many leading rows (or columns) of an input `side` wide the logits depend
/// on: each convolution (kernel k, stride 1) needs k − 1 more than it outputs, and
/// each 2×2 floor-mode pooling reads twice the rows it outputs.
pub fn used_input_side(side: i64) -> i64 {
    // Forward: the size after each conv + pool.
    let mut n = side;
    for conv in convs() {
        n = (n - kernel(conv) + 1) / 2;
    }
    // Back: the last pooled size needs 2n conv rows, which need 2n + k − 1 inputs.
    let used = input_span(&(0..2 * n)).end;
    used.min(side)
}

fn convs() -> impl Iterator<Item = Layer> {
    Layer::ALL.into_iter().filter(|l| l.is_conv())
}

pub fn last_conv() -> Layer {
    convs().last().expect("the network has a convolution")
}

fn kernel(conv: Layer) -> i64 {
    conv.weight_shape()[2]
}

fn conv2d(x: &Tensor, weight: &Tensor, bias: &Tensor) -> Tensor {
    winograd::conv3x3(x, weight, bias, Output::PreActivation)
        .unwrap_or_else(|| channels_last(&x.conv2d(weight, Some(bias), [1, 1], [0, 0], [1, 1], 1)))
}

/// 2×2 floor-mode max pooling of `[N, C, H, W]`, then ReLU.
pub fn pool_relu(x: &Tensor) -> Tensor {
    let [_, c, h, w] = x.size()[..] else { unreachable!("pooling a 4-D map") };
    let laid_out = x.stride() == [c * h * w, 1, w * c, c];
    if x.requires_grad() || !laid_out || h % 2 == 1 || w % 2 == 1 {
        return x.max_pool2d([2, 2], [2, 2], [0, 0], [1, 1], false).relu();
    }
    pool_relu_nhwc(&x.permute([0, 2, 3, 1])).permute([0, 3, 1, 2])
}

/// 2×2 max pooling then ReLU of a contiguous `[N, H, W, C]` map (H, W even) as two
/// elementwise maxima, of row pairs and then of column pairs. libtorch's pooling
/// writes argmax indices even when no gradient will read them; this is 20–35 %
/// faster here, where no gradient is needed.
pub fn pool_relu_nhwc(t: &Tensor) -> Tensor {
    let [n, h, w, c] = t.size()[..] else { unreachable!("pooling a 4-D map") };
    let row_pairs = t.view([n, h / 2, 2, w * c]);
    let rows = row_pairs.select(2, 0).maximum(&row_pairs.select(2, 1)).view([n, h / 2, w / 2, 2 * c]);
    rows.narrow(3, 0, c).maximum(&rows.narrow(3, c, c)).relu()
}
