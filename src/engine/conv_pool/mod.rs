//! A shallow convolution fused with the 2×2 max pooling and ReLU after it, on the
//! CPU, for evaluation (no gradient).
//!
//! A convolution with a short reduction (conv1: one input channel × 3×3 taps) is
//! little arithmetic, but libtorch writes its whole pre-activation (conv1: 24×24×32
//! floats an image) and the pooling reads it back: two passes over memory that
//! cost ten times the arithmetic. Here the four positions of each pooled cell are
//! summed in registers and only the pooled, ReLU'd map (a quarter of the values) is
//! written. Deep reductions (conv2: 32 × 3×3) are `winograd`'s.

pub mod training;

use super::host;
use super::lanes::POOL_WINDOW;
use super::omp;
use tch::{Device, Kind, Tensor};

/// The longest reduction (input channels × kernel taps) the fused loop takes;
/// deeper 3×3 ones go to `winograd`.
pub const SHALLOW: i64 = 27;

/// `pool_relu(conv2d(x, weight, bias))` (stride 1, no padding, 2×2 floor-mode
/// pooling), channels-last, computed by the fused loop; `None` where it does not
/// apply (another device or kind, a gradient to carry, a deep reduction), and the
/// caller runs libtorch's ops.
pub fn conv_pool_relu(x: &Tensor, weight: &Tensor, bias: &Tensor) -> Option<Tensor> {
    let [n, cin, h, w] = x.size()[..] else { return None };
    let [cout, wcin, k, k2] = weight.size()[..] else { return None };
    if !host::for_our_loops(&[x, weight, bias])
        || wcin != cin
        || k != k2
        || cin * k * k > SHALLOW
        || h < k + 1
        || w < k + 1
    {
        return None;
    }
    let shape = Shape { height: h as usize, width: w as usize, cin: cin as usize, cout: cout as usize, k: k as usize };
    let (pooled_h, pooled_w) = shape.pooled();
    let input = x.permute([0, 2, 3, 1]).contiguous(); // [N, H, W, Cin]: a view when x is channels-last
    let taps = weight.detach().permute([2, 3, 1, 0]).contiguous(); // [k, k, Cin, Cout]
    let bias = bias.detach().contiguous();
    let mut out = Tensor::empty([n, pooled_h as i64, pooled_w as i64, cout], (Kind::Float, Device::Cpu));
    let (input, taps, bias) = (host::slice(&input), host::slice(&taps), host::slice(&bias));
    // On libtorch's own OpenMP threads (`omp`): they spin between its ops, so
    // threads of our own would only take turns with them.
    let (image_len, pooled_len) = (shape.image_len(), shape.pooled_len());
    omp::for_each_part(n as usize, pooled_len, [host::slice_mut(&mut out)], |images, [pooled]| {
        let images = input[images.start * image_len..images.end * image_len].chunks_exact(image_len);
        for (image, pooled) in images.zip(pooled.chunks_exact_mut(pooled_len)) {
            shape.image(image, taps, bias, pooled);
        }
    });
    Some(out.permute([0, 3, 1, 2]))
}

/// One convolution's sizes: its input map, channels and square kernel.
#[derive(Clone, Copy, Debug)]
struct Shape {
    height: usize,
    width: usize,
    cin: usize,
    cout: usize,
    k: usize,
}

impl Shape {
    /// Sides of the pooled output (floor mode).
    fn pooled(&self) -> (usize, usize) {
        let conv_side = |side: usize| side + 1 - self.k;
        (conv_side(self.height) / 2, conv_side(self.width) / 2)
    }

    fn image_len(&self) -> usize {
        self.height * self.width * self.cin
    }

    fn pooled_len(&self) -> usize {
        let (h, w) = self.pooled();
        h * w * self.cout
    }

    /// One image: `input` `[H, W, Cin]`, `taps` `[k, k, Cin, Cout]`, `bias`
    /// `[Cout]` → `out` `[H', W', Cout]`, pooled and ReLU'd.
    fn image(&self, input: &[f32], taps: &[f32], bias: &[f32], out: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if self.cout.is_multiple_of(avx2::BLOCK) && super::lanes::Avx2Fma::available() {
            assert!(input.len() >= self.image_len() && out.len() >= self.pooled_len(), "one image in, one out");
            assert!(taps.len() >= self.k * self.k * self.cin * self.cout && bias.len() >= self.cout);
            // SAFETY: the CPU has AVX2 and FMA (checked above), and every index the
            // loop forms stays inside the slices, whose lengths are checked above.
            return unsafe { avx2::image(self, input, taps, bias, out) };
        }
        self.image_portable(input, taps, bias, out)
    }

    /// The same sums in plain Rust, for any CPU and any channel count.
    fn image_portable(&self, input: &[f32], taps: &[f32], bias: &[f32], out: &mut [f32]) {
        let (pooled_h, pooled_w) = self.pooled();
        let mut acc = vec![0f32; self.cout];
        for (cell, best) in out.chunks_exact_mut(self.cout).take(pooled_h * pooled_w).enumerate() {
            let (pr, pc) = (cell / pooled_w, cell % pooled_w);
            best.fill(f32::NEG_INFINITY);
            for (a, b) in POOL_WINDOW {
                acc.copy_from_slice(bias);
                let (r, c) = (2 * pr + a, 2 * pc + b);
                for (tap, weights) in taps.chunks_exact(self.cout).enumerate() {
                    let (dr, dc, ci) = (tap / (self.k * self.cin), tap / self.cin % self.k, tap % self.cin);
                    let v = input[((r + dr) * self.width + c + dc) * self.cin + ci];
                    for (s, w) in acc.iter_mut().zip(weights) {
                        *s = v.mul_add(*w, *s);
                    }
                }
                for (m, s) in best.iter_mut().zip(&acc) {
                    *m = m.max(*s);
                }
            }
            for m in best.iter_mut() {
                *m = m.max(0.0);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::Shape;
    use std::arch::x86_64::*;

    /// Output channels per pass: two 8-lane registers for each of a cell's four
    /// positions, eight accumulators, enough independent FMAs to hide their latency.
    pub const BLOCK: usize = 16;
    const W: usize = 8;

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn image(shape: &Shape, input: &[f32], taps: &[f32], bias: &[f32], out: &mut [f32]) {
        let Shape { width, cin, cout, k, .. } = *shape;
        let (pooled_h, pooled_w) = shape.pooled();
        for pr in 0..pooled_h {
            for pc in 0..pooled_w {
                // The input offset of each position's top-left tap.
                let corner = super::POOL_WINDOW.map(|(a, b)| ((2 * pr + a) * width + 2 * pc + b) * cin);
                for block in (0..cout).step_by(BLOCK) {
                    let start = unsafe { [_mm256_loadu_ps(&bias[block]), _mm256_loadu_ps(&bias[block + W])] };
                    let mut acc = [start; 4];
                    for dr in 0..k {
                        for dc in 0..k {
                            for ci in 0..cin {
                                let tap = ((dr * k + dc) * cin + ci) * cout + block;
                                let w = unsafe {
                                    [
                                        _mm256_loadu_ps(taps.as_ptr().add(tap)),
                                        _mm256_loadu_ps(taps.as_ptr().add(tap + W)),
                                    ]
                                };
                                let offset = (dr * width + dc) * cin + ci;
                                for (p, a) in acc.iter_mut().enumerate() {
                                    let v = unsafe { _mm256_broadcast_ss(&*input.as_ptr().add(corner[p] + offset)) };
                                    a[0] = _mm256_fmadd_ps(v, w[0], a[0]);
                                    a[1] = _mm256_fmadd_ps(v, w[1], a[1]);
                                }
                            }
                        }
                    }
                    let cell = unsafe { out.as_mut_ptr().add((pr * pooled_w + pc) * cout + block) };
                    for (half, [top_left, top_right, bottom_left, bottom_right]) in
                        [acc.map(|a| a[0]), acc.map(|a| a[1])].into_iter().enumerate()
                    {
                        let top = _mm256_max_ps(top_left, top_right);
                        let bottom = _mm256_max_ps(bottom_left, bottom_right);
                        let pooled = _mm256_max_ps(_mm256_max_ps(top, bottom), _mm256_setzero_ps());
                        unsafe { _mm256_storeu_ps(cell.add(half * W), pooled) };
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::cpu::{CpuPath, testing::runs};
    use super::super::lanes::testing::{assert_same_on_one_and_two_threads, tensor};
    use super::*;

    /// libtorch's convolution, ReLU and pooling, the obvious way.
    fn reference(x: &Tensor, weight: &Tensor, bias: &Tensor) -> Tensor {
        x.conv2d(weight, Some(bias), [1, 1], [0, 0], [1, 1], 1).relu().max_pool2d([2, 2], [2, 2], [0, 0], [1, 1], false)
    }

    #[test]
    fn the_fused_loop_computes_libtorchs_convolution_relu_and_pooling() {
        if !runs(CpuPath::Portable, "conv_pool: the fused loop against libtorch's three ops") {
            return;
        }
        let _guard = tch::no_grad_guard();
        // conv1's shape on a lean input (even side), an odd side that floor-mode
        // pooling trims, three input channels, and 24 output channels (not a
        // multiple of the SIMD block: the portable loop).
        for (n, cin, side, cout, k) in [(5, 1, 26, 32, 3), (3, 1, 27, 16, 3), (4, 3, 15, 32, 3), (2, 1, 12, 24, 3)] {
            let x = tensor(&[n, cin, side, side], 1);
            let (weight, bias) = (tensor(&[cout, cin, k, k], 2), tensor(&[cout], 3));
            let fused = conv_pool_relu(&x, &weight, &bias).expect("a shallow convolution on the CPU");
            let expected = reference(&x, &weight, &bias);
            assert_eq!(fused.size(), expected.size());
            let gap = (&fused - &expected).abs().max().double_value(&[]);
            assert!(gap < 1e-5, "{n}×{cin}×{side}², {cout} out: {gap}");
            let zeros = fused.eq(0.0).sum(Kind::Int64).int64_value(&[]);
            assert!(zeros > 0 && zeros < fused.numel() as i64 / 2, "ReLU clips some outputs and passes most");
        }
    }

    #[test]
    fn libtorchs_threads_compute_what_one_thread_computes() {
        if !runs(CpuPath::Portable, "conv_pool: one thread against two") {
            return;
        }
        let _guard = tch::no_grad_guard();
        let x = tensor(&[37, 1, 26, 26], 7); // an odd batch
        let (weight, bias) = (tensor(&[32, 1, 3, 3], 8), tensor(&[32], 9));
        assert_same_on_one_and_two_threads(|| conv_pool_relu(&x, &weight, &bias).unwrap());
    }

    #[test]
    fn a_gradient_or_a_deep_reduction_is_left_to_libtorch() {
        let x = tensor(&[2, 1, 12, 12], 1);
        let (weight, bias) = (tensor(&[16, 1, 3, 3], 2).set_requires_grad(true), tensor(&[16], 3));
        assert!(conv_pool_relu(&x, &weight, &bias).is_none(), "the weight's gradient is wanted");
        let _guard = tch::no_grad_guard();
        let taken = conv_pool_relu(&x, &weight, &bias).is_some();
        assert_eq!(taken, host::our_loops_run(), "under no_grad, taken exactly where our loops run");
        let deep = (tensor(&[2, 32, 12, 12], 4), tensor(&[64, 32, 3, 3], 5), tensor(&[64], 6));
        assert!(conv_pool_relu(&deep.0, &deep.1, &deep.2).is_none());
    }
}
