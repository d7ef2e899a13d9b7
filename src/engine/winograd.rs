//! Deep 3×3 convolutions (conv2: 32 input channels × 3×3 taps) for evaluation on
//! the CPU, by Winograd's minimal filtering F(2×2, 3×3).
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
//! it). The products use AVX-512; without it the caller runs libtorch's ops.

// Elsewhere than x86-64 nothing here runs (no AVX-512): every call is `None`.
#![cfg_attr(not(target_arch = "x86_64"), allow(dead_code, unused_variables))]

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
/// Output blocks per product pass: with 64 output channels, 6 blocks hold 24 of
/// the 32 vector registers as accumulators.
const BLOCKS: usize = 6;
/// Images whose blocks are transformed together (6 × conv2's 25 blocks divide
/// into passes of `BLOCKS` with none left over).
const IMAGES: usize = 6;
/// Lanes of an AVX-512 register; channel counts must be multiples of it.
const LANES: usize = 16;

/// `conv2d(x, weight, bias)` (stride 1, no padding), or its pooled ReLU, laid out
/// channels-last, for `x` `[N, Cin, H, W]` and a 3×3 `weight` with a deep
/// reduction; `None` where this does not apply (another device or kind, a
/// gradient to carry, a shallow reduction, channels not multiples of 16, no
/// AVX-512, an odd pre-activation side), and the caller runs libtorch's ops.
pub fn conv3x3(x: &Tensor, weight: &Tensor, bias: &Tensor, output: Output) -> Option<Tensor> {
    let [n, cin, h, w] = x.size()[..] else { return None };
    let [cout, weight_cin, k, k2] = weight.size()[..] else { return None };
    let (out_h, out_w) = (h - 2, w - 2);
    let odd_preactivation = output == Output::PreActivation && (out_h % 2 == 1 || out_w % 2 == 1);
    let lanes = LANES as i64;
    if !host::for_our_loops(&[x, weight, bias])
        || !available()
        || (weight_cin, k, k2) != (cin, 3, 3)
        || cin * 9 <= conv_pool::SHALLOW
        || cin % lanes != 0
        || cout % lanes != 0
        || out_h < 2
        || out_w < 2
        || odd_preactivation
    {
        return None;
    }
    let shape = Shape {
        height: h as usize,
        width: w as usize,
        cin: cin as usize,
        cout: cout as usize,
        blocks: ((out_h / 2) as usize, (out_w / 2) as usize),
        output,
    };
    let input = x.permute([0, 2, 3, 1]).contiguous(); // [N, H, W, Cin]: a view when x is channels-last
    let kernel = transformed_kernel(weight);
    let bias = host::floats(&bias.detach());
    let out_side = |side: i64| if output == Output::PreActivation { side } else { side / 2 };
    let mut out = Tensor::empty([n, out_side(out_h), out_side(out_w), cout], (Kind::Float, Device::Cpu));
    let (input, image_len, out_len) = (host::slice(&input), shape.image_len(), shape.out_len());
    // On libtorch's own OpenMP threads, as `conv_pool` (see `omp`).
    omp::for_each_part(n as usize, out_len, [host::slice_mut(&mut out)], |images, [part]| {
        let mut work = Work::new(&shape);
        let inputs = &input[images.start * image_len..images.end * image_len];
        for (group, outs) in inputs.chunks(IMAGES * image_len).zip(part.chunks_mut(IMAGES * out_len)) {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `available()` said the CPU has AVX-512F.
            unsafe {
                work.images(&shape, group, &kernel, &bias, outs)
            };
        }
    });
    Some(out.permute([0, 3, 1, 2]))
}

/// Whether the CPU runs the products (AVX-512F).
fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    return std::arch::is_x86_feature_detected!("avx512f");
    #[cfg(not(target_arch = "x86_64"))]
    false
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
}

/// One thread's scratch space.
struct Work {
    /// Transformed input blocks of up to `IMAGES` images, `[16, blocks, Cin]`.
    transformed: Vec<f32>,
    /// The products of up to `BLOCKS` blocks, `[16, BLOCKS, Cout]`.
    products: Vec<f32>,
}

impl Work {
    fn new(shape: &Shape) -> Work {
        Work {
            transformed: vec![0.0; VALUES * IMAGES * shape.blocks_per_image() * shape.cin],
            products: vec![0.0; VALUES * BLOCKS * shape.cout],
        }
    }

    /// Up to `IMAGES` images (`[H, W, Cin]` each) into `out` (`shape.out_len()`
    /// values each).
    ///
    /// # Safety
    /// The CPU has AVX-512F.
    #[cfg(target_arch = "x86_64")]
    unsafe fn images(&mut self, shape: &Shape, inputs: &[f32], kernel: &[f32], bias: &[f32], out: &mut [f32]) {
        let (image_len, input_width) = (shape.image_len(), shape.width * shape.cin);
        let images = inputs.len() / image_len;
        let (per_image, blocks) = (shape.blocks_per_image(), images * shape.blocks_per_image());
        assert!(images <= IMAGES && inputs.len() == images * image_len && out.len() == images * shape.out_len());
        assert!(2 * shape.blocks.0 + 2 <= shape.height && 2 * shape.blocks.1 + 2 <= shape.width);
        assert!(kernel.len() == VALUES * shape.cin * shape.cout && bias.len() == shape.cout);
        assert!(shape.cin.is_multiple_of(LANES) && shape.cout.is_multiple_of(LANES));
        for block in 0..blocks {
            let (image, (row, col)) = (block / per_image, shape_block(shape, block % per_image));
            let corner = image * image_len + (2 * row * shape.width + 2 * col) * shape.cin;
            // SAFETY: AVX-512F (the caller's promise); the 4×4 window at `corner`
            // lies inside the image (rows 2·row..2·row + 4 ≤ H, likewise columns),
            // and `block < blocks` fits `transformed` (sized for `IMAGES` images).
            unsafe {
                avx512::transform_block(&inputs[corner..], input_width, shape.cin, &mut self.transformed, blocks, block)
            };
        }
        for first in (0..blocks).step_by(BLOCKS) {
            let count = BLOCKS.min(blocks - first);
            let pass = avx512::Pass { transformed: &self.transformed, blocks, first, kernel, shape };
            // SAFETY: AVX-512F; `first + count ≤ blocks`, and the buffers were sized
            // and the channel counts checked above.
            unsafe { avx512::products(count, &pass, &mut self.products) };
            for slot in 0..count {
                let block = first + slot;
                let (image, (row, col)) = (block / per_image, shape_block(shape, block % per_image));
                let image_out = &mut out[image * shape.out_len()..(image + 1) * shape.out_len()];
                // SAFETY: AVX-512F; `slot < count` of the products just computed.
                unsafe { avx512::outputs(&self.products, slot, bias, shape, (row, col), image_out) };
            }
        }
    }
}

/// The (row, column) of an image's `index`-th output block.
fn shape_block(shape: &Shape, index: usize) -> (usize, usize) {
    (index / shape.blocks.1, index % shape.blocks.1)
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{BLOCKS, LANES, Output, Shape, VALUES};
    use std::arch::x86_64::*;

    /// Bᵀ applied to four vectors (B = the input transform of F(2×2, 3×3)).
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn input_transform([d0, d1, d2, d3]: [__m512; 4]) -> [__m512; 4] {
        [_mm512_sub_ps(d0, d2), _mm512_add_ps(d1, d2), _mm512_sub_ps(d2, d1), _mm512_sub_ps(d1, d3)]
    }

    /// Aᵀ applied to four vectors (A = the output transform).
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn output_transform([m0, m1, m2, m3]: [__m512; 4]) -> [__m512; 2] {
        [_mm512_add_ps(_mm512_add_ps(m0, m1), m2), _mm512_sub_ps(_mm512_sub_ps(m1, m2), m3)]
    }

    /// The 4×4 input block whose top-left value is `window[0]` (rows
    /// `row_len` apart, `cin` channels per position) transformed to
    /// `transformed[value, block, ..]` (`[16, blocks, Cin]`).
    ///
    /// # Safety
    /// The CPU has AVX-512F; `window` holds three rows and four positions more;
    /// `block < blocks` and `transformed` holds `16 · blocks · cin` values.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn transform_block(
        window: &[f32],
        row_len: usize,
        cin: usize,
        transformed: &mut [f32],
        blocks: usize,
        block: usize,
    ) {
        debug_assert!(window.len() >= 3 * row_len + 4 * cin && transformed.len() >= VALUES * blocks * cin);
        // Plain loops over arrays: closures and `array::map` here were not inlined
        // into this AVX-512 code (a third of the products' time in `perf`).
        for lane in (0..cin).step_by(LANES) {
            let mut d = [[_mm512_setzero_ps(); 4]; 4];
            for (r, row) in d.iter_mut().enumerate() {
                for (c, v) in row.iter_mut().enumerate() {
                    *v = unsafe { _mm512_loadu_ps(window.as_ptr().add(r * row_len + c * cin + lane)) };
                }
            }
            let mut rows = [[_mm512_setzero_ps(); 4]; 4]; // Bᵀ d
            for c in 0..4 {
                let column = input_transform([d[0][c], d[1][c], d[2][c], d[3][c]]);
                for (row, v) in rows.iter_mut().zip(column) {
                    row[c] = v;
                }
            }
            for (row, values) in rows.into_iter().enumerate() {
                let values = input_transform(values); // (Bᵀ d) B, one row
                for (col, v) in values.into_iter().enumerate() {
                    let to = ((row * 4 + col) * blocks + block) * cin + lane;
                    unsafe { _mm512_storeu_ps(transformed.as_mut_ptr().add(to), v) };
                }
            }
        }
    }

    /// One pass of the products: the blocks `first..first + count` of
    /// `transformed` (`[16, blocks, Cin]`) times `kernel` (`[16, Cin, Cout]`).
    pub struct Pass<'a> {
        pub transformed: &'a [f32],
        pub blocks: usize,
        pub first: usize,
        pub kernel: &'a [f32],
        pub shape: &'a Shape,
    }

    /// `products[value, slot, ..] = transformed[value, first + slot, ..] ·
    /// kernel[value]` for the `count` blocks of `pass`.
    ///
    /// # Safety
    /// The CPU has AVX-512F; `count ≤ BLOCKS`, `first + count ≤ blocks`, the
    /// buffers hold `[16, blocks, Cin]`, `[16, Cin, Cout]` and `[16, BLOCKS, Cout]`,
    /// and Cout is a multiple of 16.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn products(count: usize, pass: &Pass, products: &mut [f32]) {
        match count {
            6 => unsafe { products_of::<6>(pass, products) },
            5 => unsafe { products_of::<5>(pass, products) },
            4 => unsafe { products_of::<4>(pass, products) },
            3 => unsafe { products_of::<3>(pass, products) },
            2 => unsafe { products_of::<2>(pass, products) },
            _ => unsafe { products_of::<1>(pass, products) },
        }
    }

    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn products_of<const R: usize>(pass: &Pass, products: &mut [f32]) {
        let Pass { transformed, blocks, first, kernel, shape } = *pass;
        let (cin, cout) = (shape.cin, shape.cout);
        debug_assert!(R <= BLOCKS && first + R <= blocks && transformed.len() >= VALUES * blocks * cin);
        debug_assert!(kernel.len() >= VALUES * cin * cout && products.len() >= VALUES * BLOCKS * cout);
        for value in 0..VALUES {
            let rows = unsafe { transformed.as_ptr().add((value * blocks + first) * cin) };
            let matrix = unsafe { kernel.as_ptr().add(value * cin * cout) };
            let out = unsafe { products.as_mut_ptr().add(value * BLOCKS * cout) };
            let mut col = 0;
            while col + 4 * LANES <= cout {
                unsafe { tile::<R, 4>(rows, cin, matrix.add(col), cout, out.add(col)) };
                col += 4 * LANES;
            }
            while col < cout {
                unsafe { tile::<R, 1>(rows, cin, matrix.add(col), cout, out.add(col)) };
                col += LANES;
            }
        }
    }

    /// `R` rows of `cin` values times a `[cin, C·16]` block of a matrix whose rows
    /// are `cout` apart, held in R × C registers.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn tile<const R: usize, const C: usize>(
        rows: *const f32,
        cin: usize,
        matrix: *const f32,
        cout: usize,
        out: *mut f32,
    ) {
        let mut acc = [[_mm512_setzero_ps(); C]; R];
        for k in 0..cin {
            let w: [__m512; C] = std::array::from_fn(|j| unsafe { _mm512_loadu_ps(matrix.add(k * cout + j * LANES)) });
            for (r, sums) in acc.iter_mut().enumerate() {
                let v = _mm512_set1_ps(unsafe { *rows.add(r * cin + k) });
                for (s, &w) in sums.iter_mut().zip(&w) {
                    *s = _mm512_fmadd_ps(v, w, *s);
                }
            }
        }
        for (r, sums) in acc.iter().enumerate() {
            for (j, &s) in sums.iter().enumerate() {
                unsafe { _mm512_storeu_ps(out.add(r * cout + j * LANES), s) };
            }
        }
    }

    /// The block in `slot` of `products` transformed back to its 2×2 outputs at
    /// block (`row`, `col`) of one image's `out`, biased (and pooled with ReLU
    /// for `Output::PooledRelu`).
    ///
    /// # Safety
    /// The CPU has AVX-512F; `products` holds `[16, BLOCKS, Cout]` and `slot <
    /// BLOCKS`; `bias` holds Cout values; `out` is one image's output.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn outputs(
        products: &[f32],
        slot: usize,
        bias: &[f32],
        shape: &Shape,
        (row, col): (usize, usize),
        out: &mut [f32],
    ) {
        let cout = shape.cout;
        debug_assert!(slot < BLOCKS && products.len() >= VALUES * BLOCKS * cout && bias.len() >= cout);
        debug_assert!(out.len() >= shape.out_len());
        for lane in (0..cout).step_by(LANES) {
            let mut m = [_mm512_setzero_ps(); VALUES];
            for (value, v) in m.iter_mut().enumerate() {
                *v = unsafe { _mm512_loadu_ps(products.as_ptr().add((value * BLOCKS + slot) * cout + lane)) };
            }
            let mut rows = [[_mm512_setzero_ps(); 2]; 4]; // m Aᵀ by rows
            for (r, row) in rows.iter_mut().enumerate() {
                *row = output_transform([m[4 * r], m[4 * r + 1], m[4 * r + 2], m[4 * r + 3]]);
            }
            let mut y = [[_mm512_setzero_ps(); 2]; 2]; // y[column][row]
            for (c, column) in y.iter_mut().enumerate() {
                *column = output_transform([rows[0][c], rows[1][c], rows[2][c], rows[3][c]]);
            }
            let b = unsafe { _mm512_loadu_ps(bias.as_ptr().add(lane)) };
            match shape.output {
                Output::PreActivation => {
                    let out_width = 2 * shape.blocks.1;
                    for (r, c) in super::super::lanes::POOL_WINDOW {
                        let at = ((2 * row + r) * out_width + 2 * col + c) * cout + lane;
                        unsafe { _mm512_storeu_ps(out.as_mut_ptr().add(at), _mm512_add_ps(y[c][r], b)) };
                    }
                }
                Output::PooledRelu => {
                    // max(y) + b rounds as max(y + b) does: rounding is monotone.
                    let top = _mm512_max_ps(y[0][0], y[1][0]);
                    let best = _mm512_max_ps(top, _mm512_max_ps(y[0][1], y[1][1]));
                    let pooled = _mm512_max_ps(_mm512_add_ps(best, b), _mm512_setzero_ps());
                    let at = (row * shape.blocks.1 + col) * cout + lane;
                    unsafe { _mm512_storeu_ps(out.as_mut_ptr().add(at), pooled) };
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::lanes::testing::{assert_same_on_one_and_two_threads, tensor};
    use super::*;

    fn largest_gap(a: &Tensor, b: &Tensor) -> f64 {
        assert_eq!(a.size(), b.size());
        (a - b).abs().max().double_value(&[])
    }

    #[test]
    fn winograd_computes_libtorchs_convolution_and_its_pooled_relu() {
        let _guard = tch::no_grad_guard();
        assert!(available(), "this machine has AVX-512; without it every call is None and this test is void");
        // conv2's shape on a lean input, an odd batch and sides whose pooling
        // drops a row and column, and 80 output channels (a 64-wide pass and a
        // 16-wide one).
        for (n, cin, side, cout) in [(13, 32, 12, 64), (7, 16, 13, 32), (5, 32, 10, 80)] {
            let x = tensor(&[n, cin, side, side], 1);
            let (weight, bias) = (tensor(&[cout, cin, 3, 3], 2), tensor(&[cout], 3));
            let direct = x.conv2d(&weight, Some(&bias), [1, 1], [0, 0], [1, 1], 1);
            let reference = direct.max_pool2d([2, 2], [2, 2], [0, 0], [1, 1], false).relu();
            let pooled = conv3x3(&x, &weight, &bias, Output::PooledRelu).expect("a deep 3×3 convolution");
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
        assert!(conv3x3(&x, &weight, &bias, Output::PooledRelu).is_some(), "no gradient under no_grad");
        let shallow = (tensor(&[2, 1, 12, 12], 4), tensor(&[32, 1, 3, 3], 5), tensor(&[32], 6));
        assert!(conv3x3(&shallow.0, &shallow.1, &shallow.2, Output::PooledRelu).is_none(), "conv_pool's");
        let five = tensor(&[64, 32, 5, 5], 7);
        assert!(conv3x3(&x, &five, &bias, Output::PooledRelu).is_none(), "a 5×5 kernel");
    }
}
