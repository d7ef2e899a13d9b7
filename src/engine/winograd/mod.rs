//! Deep 3×3 convolutions (conv2: 32 input channels × 3×3 taps) on the CPU, by
//! Winograd's minimal filtering F(2×2, 3×3): evaluation here, training's
//! forward and backward in `training`.
//!
//! Each 2×2 block of outputs comes from a 4×4 block of inputs. The input block is
//! transformed (additions only), each of its 16 transformed values times the
//! transformed kernel (`[Cin, Cout]` per value, computed once per call) gives 16
//! row-by-matrix products, and those transform back (additions only) into the 2×2
//! outputs: 16 multiplications where the direct convolution does 36, 2.25× less
//! arithmetic. libtorch's direct convolution already runs near the machine's peak
//! (conv2 on the 10,000 clean test images: 174 ms, 212 GFLOP/s), so arithmetic is
//! what there is left to save. A 2×2 output block is exactly a 2×2 pooling window:
//! pooling and ReLU fuse in, and only the pooled map is written when that is what
//! the caller wants.
//!
//! Values differ from the direct convolution's in rounding only (the tests bound
//! it). The loops use AVX-512 (`avx512.rs`); without it the caller runs
//! libtorch's ops.

// Elsewhere than x86-64 nothing here runs (no AVX-512): every call is `None`.
#![cfg_attr(not(target_arch = "x86_64"), allow(dead_code, unused_variables))]

#[cfg(target_arch = "x86_64")]
mod avx512;
pub mod training;

use super::{conv_pool, host, omp};
use tch::{Device, Kind, Tensor};

/// What a call writes for each 2×2 output block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    /// The convolution itself, `conv2d(x, weight, bias)`.
    PreActivation,
    /// `relu(max_pool2d(conv2d(x, weight, bias), 2))` in floor mode: one value per
    /// block.
    PooledRelu,
}

/// Transformed values of a 4×4 input block.
const VALUES: usize = 16;
/// Rows of a product pass (output blocks, or input channels for the weight
/// gradient): with 64 output channels, 6 rows hold 24 of the 32 vector registers
/// as accumulators.
const ROWS: usize = 6;
/// Images whose blocks are transformed together in evaluation (6 × conv2's 25
/// blocks divide into passes of `ROWS` with none left over).
const IMAGES: usize = 6;
/// Lanes of an AVX-512 register; channel counts must be multiples of it.
const LANES: usize = 16;

/// `conv2d(x, weight, bias)` (stride 1, no padding), or its pooled ReLU, laid out
/// channels-last, for `x` `[N, Cin, H, W]` and a 3×3 `weight` with a deep
/// reduction; `None` where this does not apply (another device or kind, a
/// gradient to carry, a shallow reduction, channels not multiples of 16, no
/// AVX-512, an odd pre-activation side), and the caller runs libtorch's ops.
pub fn conv3x3(x: &Tensor, weight: &Tensor, bias: &Tensor, output: Output) -> Option<Tensor> {
    if !host::for_our_loops(&[x, weight, bias]) {
        return None;
    }
    let shape = Shape::of(x, weight, output)?;
    let n = x.size()[0];
    let input = x.permute([0, 2, 3, 1]).contiguous(); // [N, H, W, Cin]: a view when x is channels-last
    let kernel = transformed_kernel(weight);
    let bias = host::floats(&bias.detach());
    let mut out = Tensor::empty(shape.out_dims(n), (Kind::Float, Device::Cpu));
    let (input, image_len, out_len) = (host::slice(&input), shape.image_len(), shape.out_len());
    // On libtorch's own OpenMP threads, as `conv_pool` (see `omp`).
    omp::for_each_part(n as usize, out_len, [host::slice_mut(&mut out)], |images, [part]| {
        let mut work = Work::new(&shape);
        let inputs = &input[images.start * image_len..images.end * image_len];
        for (group, outs) in inputs.chunks(IMAGES * image_len).zip(part.chunks_mut(IMAGES * out_len)) {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `Shape::of` said the CPU has AVX-512F.
            unsafe {
                work.images(&shape, group, &kernel, &bias, outs)
            };
        }
    });
    Some(out.permute([0, 3, 1, 2]))
}

/// Whether these loops run here (AVX-512F, not lowered by `cpu::VARIABLE`).
fn available() -> bool {
    crate::engine::cpu::has(crate::engine::cpu::CpuPath::Avx512)
}

/// The kernel in the transformed domain, `G g Gᵀ` for each output and input
/// channel's 3×3 `g`, laid out `[16, Cin, Cout]`: the 16 matrices of the
/// products. Computed in f64 and rounded once.
fn transformed_kernel(weight: &Tensor) -> Vec<f32> {
    let [cout, cin, _, _] = weight.size()[..] else { unreachable!("a 4-D kernel") };
    let (cout, cin) = (cout as usize, cin as usize);
    let taps = host::floats(&weight.detach()); // [Cout, Cin, 3, 3]
    // G = [[1, 0, 0], [½, ½, ½], [½, −½, ½], [0, 0, 1]] applied to three values.
    let g = |[a, b, c]: [f64; 3]| [a, (a + b + c) / 2.0, (a - b + c) / 2.0, c];
    let mut kernel = vec![0f32; VALUES * cin * cout];
    for (pair, tap) in taps.chunks_exact(9).enumerate() {
        let (o, i) = (pair / cin, pair % cin);
        let t = |r: usize, c: usize| f64::from(tap[r * 3 + c]);
        let columns = [0, 1, 2].map(|c| g([t(0, c), t(1, c), t(2, c)])); // G g, by column
        for row in 0..4 {
            for (col, value) in g(columns.map(|column| column[row])).into_iter().enumerate() {
                kernel[((row * 4 + col) * cin + i) * cout + o] = value as f32;
            }
        }
    }
    kernel
}

/// One call's sizes.
struct Shape {
    /// The input's height and width.
    height: usize,
    width: usize,
    cin: usize,
    cout: usize,
    /// 2×2 output blocks per column and per row.
    blocks: (usize, usize),
    output: Output,
}

impl Shape {
    /// The sizes of convolving `x` (`[N, Cin, H, W]`) with `weight`, or `None`
    /// where these loops do not apply.
    fn of(x: &Tensor, weight: &Tensor, output: Output) -> Option<Shape> {
        let [_, cin, h, w] = x.size()[..] else { return None };
        let [cout, weight_cin, k, k2] = weight.size()[..] else { return None };
        let (out_h, out_w) = (h - 2, w - 2);
        let odd_preactivation = output == Output::PreActivation && (out_h % 2 == 1 || out_w % 2 == 1);
        let lanes = LANES as i64;
        let applies = available()
            && (weight_cin, k, k2) == (cin, 3, 3)
            && cin * 9 > conv_pool::SHALLOW
            && cin % lanes == 0
            && cout % lanes == 0
            && out_h >= 2
            && out_w >= 2
            && !odd_preactivation;
        let blocks = ((out_h / 2) as usize, (out_w / 2) as usize);
        applies.then_some(Shape {
            height: h as usize,
            width: w as usize,
            cin: cin as usize,
            cout: cout as usize,
            blocks,
            output,
        })
    }

    fn blocks_per_image(&self) -> usize {
        self.blocks.0 * self.blocks.1
    }

    /// Input values per image.
    fn image_len(&self) -> usize {
        self.height * self.width * self.cin
    }

    /// Values written per image.
    fn out_len(&self) -> usize {
        let per_block = if self.output == Output::PreActivation { 4 } else { 1 };
        self.blocks_per_image() * per_block * self.cout
    }

    /// The output's dimensions, channels-last, for `n` images.
    fn out_dims(&self, n: i64) -> [i64; 4] {
        let (rows, cols) = match self.output {
            Output::PreActivation => (2 * self.blocks.0, 2 * self.blocks.1),
            Output::PooledRelu => self.blocks,
        };
        [n, rows as i64, cols as i64, self.cout as i64]
    }

    /// The (row, column) of an image's `index`-th output block.
    fn block(&self, index: usize) -> (usize, usize) {
        (index / self.blocks.1, index % self.blocks.1)
    }

    /// The offset of block (`row`, `col`)'s top-left input in an image.
    fn corner(&self, (row, col): (usize, usize)) -> usize {
        (2 * row * self.width + 2 * col) * self.cin
    }

    /// The products of `count` blocks from `first` (`transformed`: `[16, blocks,
    /// Cin]`) with `kernel` (`[16, Cin, Cout]`) into `products` (`[16, ROWS, Cout]`).
    ///
    /// # Safety
    /// The CPU has AVX-512F.
    #[cfg(target_arch = "x86_64")]
    unsafe fn products(
        &self,
        transformed: &[f32],
        blocks: usize,
        first: usize,
        count: usize,
        kernel: &[f32],
        products: &mut [f32],
    ) {
        // SAFETY: AVX-512F, the caller's promise.
        unsafe { avx512::value_products(transformed, blocks, first, count, self.cin, kernel, self.cout, products) };
    }
}

/// One thread's scratch space.
struct Work {
    /// Transformed input blocks of up to `IMAGES` images, `[16, blocks, Cin]`.
    transformed: Vec<f32>,
    /// The products of up to `ROWS` blocks, `[16, ROWS, Cout]`.
    products: Vec<f32>,
}

impl Work {
    fn new(shape: &Shape) -> Work {
        Work {
            transformed: vec![0.0; VALUES * IMAGES * shape.blocks_per_image() * shape.cin],
            products: vec![0.0; VALUES * ROWS * shape.cout],
        }
    }

    /// Up to `IMAGES` images (`[H, W, Cin]` each) into `out` (`shape.out_len()`
    /// values each).
    ///
    /// # Safety
    /// The CPU has AVX-512F.
    #[cfg(target_arch = "x86_64")]
    unsafe fn images(&mut self, shape: &Shape, inputs: &[f32], kernel: &[f32], bias: &[f32], out: &mut [f32]) {
        let (image_len, out_len) = (shape.image_len(), shape.out_len());
        let images = inputs.len() / image_len;
        let (per_image, blocks) = (shape.blocks_per_image(), images * shape.blocks_per_image());
        assert!(images <= IMAGES && inputs.len() == images * image_len && out.len() == images * out_len);
        assert!(2 * shape.blocks.0 + 2 <= shape.height && 2 * shape.blocks.1 + 2 <= shape.width);
        for block in 0..blocks {
            let (image, at) = (block / per_image, shape.block(block % per_image));
            let window = &inputs[image * image_len + shape.corner(at)..];
            // SAFETY: AVX-512F (the caller's promise); the 4×4 window lies inside the
            // image (rows 2·row..2·row + 4 ≤ H, likewise columns: asserted above).
            unsafe {
                avx512::transform_block(
                    window,
                    shape.width * shape.cin,
                    shape.cin,
                    &mut self.transformed,
                    blocks,
                    block,
                )
            };
        }
        for first in (0..blocks).step_by(ROWS) {
            let count = ROWS.min(blocks - first);
            // SAFETY: AVX-512F.
            unsafe { shape.products(&self.transformed, blocks, first, count, kernel, &mut self.products) };
            for slot in 0..count {
                let block = first + slot;
                let (image, (row, col)) = (block / per_image, shape.block(block % per_image));
                let out = &mut out[image * out_len..(image + 1) * out_len];
                let cout = shape.cout;
                let to = match shape.output {
                    Output::PreActivation => {
                        let width = 2 * shape.blocks.1;
                        let at = super::lanes::POOL_WINDOW.map(|(r, c)| ((2 * row + r) * width + 2 * col + c) * cout);
                        avx512::Destination::PreActivation { out, at }
                    }
                    Output::PooledRelu => {
                        avx512::Destination::Pooled { out, argmax: None, at: (row * shape.blocks.1 + col) * cout }
                    }
                };
                // SAFETY: AVX-512F; `slot < count` of the products just computed.
                unsafe { avx512::outputs(&self.products, slot, bias, to) };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::cpu::{CpuPath, testing::runs};
    use super::super::lanes::testing::{assert_same_on_one_and_two_threads, tensor};
    use super::*;

    fn largest_gap(a: &Tensor, b: &Tensor) -> f64 {
        assert_eq!(a.size(), b.size());
        (a - b).abs().max().double_value(&[])
    }

    #[test]
    fn winograd_computes_libtorchs_convolution_and_its_pooled_relu() {
        let _guard = tch::no_grad_guard();
        let runs = runs(CpuPath::Avx512, "winograd: conv2 by Winograd against libtorch's convolution");
        // conv2's shape on a lean input, an odd batch and sides whose pooling
        // drops a row and column, and 80 output channels (a 64-wide pass and a
        // 16-wide one).
        for (n, cin, side, cout) in [(13, 32, 12, 64), (7, 16, 13, 32), (5, 32, 10, 80)] {
            let x = tensor(&[n, cin, side, side], 1);
            let (weight, bias) = (tensor(&[cout, cin, 3, 3], 2), tensor(&[cout], 3));
            let direct = x.conv2d(&weight, Some(&bias), [1, 1], [0, 0], [1, 1], 1);
            let reference = direct.max_pool2d([2, 2], [2, 2], [0, 0], [1, 1], false).relu();
            let Some(pooled) = conv3x3(&x, &weight, &bias, Output::PooledRelu) else {
                // Evaluation then takes libtorch's convolution, the reference itself.
                assert!(!runs, "a deep 3×3 convolution, {n}×{cin}×{side}²");
                continue;
            };
            // Sums of 288 products of values in [−1, 1]: magnitudes up to ~15.
            assert!(largest_gap(&pooled, &reference) < 2e-5, "pooled, {n}×{cin}×{side}², {cout} out");
            let zeros = pooled.eq(0.0).sum(Kind::Int64).int64_value(&[]);
            assert!(zeros > 0 && zeros < pooled.numel() as i64 / 2, "ReLU clips some outputs and passes most");
            match conv3x3(&x, &weight, &bias, Output::PreActivation) {
                Some(pre) => {
                    assert!(largest_gap(&pre, &direct) < 2e-5, "pre-activation, {n}×{cin}×{side}²");
                    let pooled_here = super::super::lean::pool_relu(&pre);
                    assert!(pooled_here.equal(&pooled), "pooling the pre-activation gives the fused values exactly");
                }
                None => assert_eq!(side % 2, 1, "only an odd pre-activation side is refused"),
            }
        }
    }

    #[test]
    fn libtorchs_threads_compute_what_one_thread_computes() {
        if !runs(CpuPath::Avx512, "winograd: one thread against two") {
            return;
        }
        let _guard = tch::no_grad_guard();
        let x = tensor(&[37, 32, 12, 12], 7); // an odd batch, groups of 6 images
        let (weight, bias) = (tensor(&[64, 32, 3, 3], 8), tensor(&[64], 9));
        assert_same_on_one_and_two_threads(|| conv3x3(&x, &weight, &bias, Output::PreActivation).unwrap());
    }

    #[test]
    fn a_gradient_or_a_shallow_reduction_is_left_to_libtorch() {
        let x = tensor(&[2, 32, 12, 12], 1);
        let (weight, bias) = (tensor(&[64, 32, 3, 3], 2).set_requires_grad(true), tensor(&[64], 3));
        assert!(conv3x3(&x, &weight, &bias, Output::PooledRelu).is_none(), "the weight's gradient is wanted");
        let _guard = tch::no_grad_guard();
        let taken = conv3x3(&x, &weight, &bias, Output::PooledRelu).is_some();
        assert_eq!(taken, available(), "under no_grad, taken exactly where the loops run here");
        let shallow = (tensor(&[2, 1, 12, 12], 4), tensor(&[32, 1, 3, 3], 5), tensor(&[32], 6));
        assert!(conv3x3(&shallow.0, &shallow.1, &shallow.2, Output::PooledRelu).is_none(), "conv_pool's");
        let five = tensor(&[64, 32, 5, 5], 7);
        assert!(conv3x3(&x, &five, &bias, Output::PooledRelu).is_none(), "a 5×5 kernel");
    }
}
