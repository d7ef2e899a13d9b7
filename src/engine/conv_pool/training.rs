//! A shallow convolution block (conv1: convolution, 2×2 max pooling, ReLU)
//! forward and backward for training, on the CPU.
//!
//! Through libtorch this block is a convolution writing its whole
//! pre-activation, a pooling that reads it back and writes argmax indices, a ReLU,
//! and backwards a pooling gradient scattered into a map of zeros as large as the
//! pre-activation, then a weight-gradient convolution over it: about a tenth of
//! a training step, for little arithmetic. Here the forward is `conv_pool`'s
//! fused loop (the same sums in the same order, so the same values), keeping for
//! each pooled value which window position held the maximum; the backward reads
//! only the pooled cells, whose gradient reaches one position each, and adds that
//! position's input window times it to the taps' gradient. No input gradient:
//! this is the network's first block.

use super::super::{host, omp};
use super::{SHALLOW, Shape};
use tch::{Device, Kind, Tensor};

/// Output channels per register.
const LANES: usize = 16;

/// What the backward reads from a forward.
pub struct Saved {
    shape: Shape,
    /// `[N, H, W, Cin]`.
    input: Tensor,
    /// `[N, cells, Cout]`: the block output (pooled, ReLU).
    output: Tensor,
    /// `[N, cells, Cout]`: the pooling window's position (0–3, row-major; the
    /// first on ties, as libtorch's pooling) that held each maximum.
    argmax: Tensor,
}

/// The block's output, channels-last `[N, Cout, H', W']`, and what its backward
/// needs; `None` where the loop does not apply (another device or kind, a deep
/// reduction, output channels not a multiple of 16, no AVX-512). Records
/// nothing for autograd: `backward` gives the gradients.
pub fn forward(x: &Tensor, weight: &Tensor, bias: &Tensor) -> Option<(Tensor, Saved)> {
    let [n, cin, h, w] = x.size()[..] else { return None };
    let [cout, weight_cin, k, k2] = weight.size()[..] else { return None };
    if !host::cpu_floats(&[x, weight, bias])
        || !available()
        || (weight_cin, k2) != (cin, k)
        || cin * k * k > SHALLOW
        || cout % LANES as i64 != 0
        || h < k + 1
        || w < k + 1
    {
        return None;
    }
    let shape = Shape { height: h as usize, width: w as usize, cin: cin as usize, cout: cout as usize, k: k as usize };
    let (pooled_h, pooled_w) = shape.pooled();
    let input = x.detach().permute([0, 2, 3, 1]).contiguous();
    let taps = weight.detach().permute([2, 3, 1, 0]).contiguous(); // [k, k, Cin, Cout]
    let bias = bias.detach().contiguous();
    let options = (Kind::Float, Device::Cpu);
    let cells = (pooled_h * pooled_w) as i64;
    let (mut output, mut argmax) = (Tensor::empty([n, cells, cout], options), Tensor::empty([n, cells, cout], options));
    let (image_len, pooled_len) = (shape.image_len(), shape.pooled_len());
    let (values, taps, bias) = (host::slice(&input), host::slice(&taps), host::slice(&bias));
    let parts = [host::slice_mut(&mut output), host::slice_mut(&mut argmax)];
    omp::for_each_part(n as usize, pooled_len, parts, |images, [output, argmax]| {
        let images = values[images.start * image_len..images.end * image_len].chunks_exact(image_len);
        let outs = output.chunks_exact_mut(pooled_len).zip(argmax.chunks_exact_mut(pooled_len));
        for (image, (output, argmax)) in images.zip(outs) {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `available()` said the CPU has AVX-512F; the kernel checks lengths.
            unsafe {
                avx512::forward_image(&shape, image, taps, bias, output, argmax)
            };
        }
    });
    let block_output = output.view([n, pooled_h as i64, pooled_w as i64, cout]).permute([0, 3, 1, 2]);
    Some((block_output, Saved { shape, input, output, argmax }))
}

/// The gradients at the block's weight and bias from the gradient at its output
/// (`upstream`, `[N, Cout, H', W']`).
pub fn backward(saved: &Saved, upstream: &Tensor) -> [Tensor; 2] {
    let shape = &saved.shape;
    let (k, cin, cout) = (shape.k, shape.cin, shape.cout);
    let n = saved.output.size()[0] as usize;
    let upstream = upstream.permute([0, 2, 3, 1]).contiguous(); // [N, H', W', Cout]
    let (image_len, pooled_len) = (shape.image_len(), shape.pooled_len());
    let (input, upstream, output, argmax) =
        (host::slice(&saved.input), host::slice(&upstream), host::slice(&saved.output), host::slice(&saved.argmax));
    let taps_len = k * k * cin * cout;
    // Each thread adds its images' tap gradients (`[k, k, Cin, Cout]`) and bias
    // gradient (`[Cout]`) into a buffer of its own.
    let sums = omp::for_each_parts_summed(n, [], [], taps_len + cout, |images, [], sum| {
        for image in images {
            let cells = image * pooled_len..(image + 1) * pooled_len;
            let [up, out, max_at] = [upstream, output, argmax].map(|values| &values[cells.clone()]);
            #[cfg(target_arch = "x86_64")]
            // SAFETY: a `Saved` exists only where `available()` said the CPU has
            // AVX-512F; the kernel checks lengths.
            unsafe {
                avx512::backward_image(
                    shape,
                    &input[image * image_len..(image + 1) * image_len],
                    [up, out, max_at],
                    sum,
                )
            };
        }
    });
    let weight_gradient = Tensor::from_slice(&sums[..taps_len])
        .view([k as i64, k as i64, cin as i64, cout as i64])
        .permute([3, 2, 0, 1])
        .contiguous();
    [weight_gradient, Tensor::from_slice(&sums[taps_len..])]
}

/// Whether these loops run here (AVX-512F, not lowered by `cpu::VARIABLE`).
fn available() -> bool {
    crate::engine::cpu::has(crate::engine::cpu::CpuPath::Avx512)
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::super::super::lanes::POOL_WINDOW;
    use super::{LANES, Shape};
    use std::arch::x86_64::*;

    /// The input offsets of the top-left taps of pooled cell `cell`'s four
    /// window positions, row-major.
    fn corners(shape: &Shape, cell: usize) -> [usize; 4] {
        let (_, pooled_w) = shape.pooled();
        let (pr, pc) = (cell / pooled_w, cell % pooled_w);
        POOL_WINDOW.map(|(a, b)| ((2 * pr + a) * shape.width + 2 * pc + b) * shape.cin)
    }

    /// The input offset of tap `tap` (`[k, k, Cin]` order) from a corner.
    fn tap_offset(shape: &Shape, tap: usize) -> usize {
        let (dr, dc, ci) = (tap / (shape.k * shape.cin), tap / shape.cin % shape.k, tap % shape.cin);
        (dr * shape.width + dc) * shape.cin + ci
    }

    /// One image's pooled, ReLU'd outputs and their window positions, `[cells,
    /// Cout]` each; the sums run as `conv_pool`'s (bias first, then the taps in
    /// order, one FMA each), so the values are its.
    ///
    /// # Safety
    /// The CPU has AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn forward_image(
        shape: &Shape,
        input: &[f32],
        taps: &[f32],
        bias: &[f32],
        output: &mut [f32],
        argmax: &mut [f32],
    ) {
        let (cout, tap_count) = (shape.cout, shape.k * shape.k * shape.cin);
        let cells = shape.pooled_len() / cout;
        assert!(input.len() >= shape.image_len() && taps.len() >= tap_count * cout && bias.len() >= cout);
        assert!(output.len() >= cells * cout && argmax.len() >= cells * cout && cout.is_multiple_of(LANES));
        for cell in 0..cells {
            let corners = corners(shape, cell);
            for lane in (0..cout).step_by(LANES) {
                let mut acc = [unsafe { _mm512_loadu_ps(bias.as_ptr().add(lane)) }; 4];
                for tap in 0..tap_count {
                    let (offset, w) =
                        (tap_offset(shape, tap), unsafe { _mm512_loadu_ps(taps.as_ptr().add(tap * cout + lane)) });
                    for (a, &corner) in acc.iter_mut().zip(&corners) {
                        // In bounds: the last window position's last tap is the
                        // image's last used value.
                        let v = _mm512_set1_ps(unsafe { *input.get_unchecked(corner + offset) });
                        *a = _mm512_fmadd_ps(v, w, *a);
                    }
                }
                let best = _mm512_max_ps(_mm512_max_ps(acc[0], acc[1]), _mm512_max_ps(acc[2], acc[3]));
                let mut index = _mm512_set1_ps(3.0);
                for position in (0..3).rev() {
                    let here = _mm512_cmp_ps_mask::<_CMP_EQ_OQ>(acc[position], best);
                    index = _mm512_mask_mov_ps(index, here, _mm512_set1_ps(position as f32));
                }
                let at = cell * cout + lane;
                unsafe {
                    _mm512_storeu_ps(output.as_mut_ptr().add(at), _mm512_max_ps(best, _mm512_setzero_ps()));
                    _mm512_storeu_ps(argmax.as_mut_ptr().add(at), index);
                }
            }
        }
    }

    /// Adds one image's tap gradients (`sum[..taps]`, `[k, k, Cin, Cout]`) and
    /// bias gradient (`sum[taps..]`) from `[upstream, output, argmax]` (`[cells,
    /// Cout]` each): each pooled gradient, where the ReLU passed, reaches the
    /// window position that held the maximum.
    ///
    /// # Safety
    /// The CPU has AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn backward_image(
        shape: &Shape,
        input: &[f32],
        [upstream, output, argmax]: [&[f32]; 3],
        sum: &mut [f32],
    ) {
        let (cout, tap_count) = (shape.cout, shape.k * shape.k * shape.cin);
        let cells = shape.pooled_len() / cout;
        assert!(input.len() >= shape.image_len() && sum.len() == (tap_count + 1) * cout && cout.is_multiple_of(LANES));
        assert!([upstream, output, argmax].iter().all(|v| v.len() >= cells * cout));
        let zero = _mm512_setzero_ps();
        for cell in 0..cells {
            let corners = corners(shape, cell);
            for lane in (0..cout).step_by(LANES) {
                let at = cell * cout + lane;
                let (up, out, index) = unsafe {
                    (
                        _mm512_loadu_ps(upstream.as_ptr().add(at)),
                        _mm512_loadu_ps(output.as_ptr().add(at)),
                        _mm512_loadu_ps(argmax.as_ptr().add(at)),
                    )
                };
                let g = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask::<_CMP_GT_OQ>(out, zero), up);
                let mut at_position = [zero; 4];
                for (position, gp) in at_position.iter_mut().enumerate() {
                    let here = _mm512_cmp_ps_mask::<_CMP_EQ_OQ>(index, _mm512_set1_ps(position as f32));
                    *gp = _mm512_maskz_mov_ps(here, g);
                }
                let bias_sum = unsafe { sum.as_mut_ptr().add(tap_count * cout + lane) };
                unsafe { _mm512_storeu_ps(bias_sum, _mm512_add_ps(_mm512_loadu_ps(bias_sum), g)) };
                for tap in 0..tap_count {
                    let offset = tap_offset(shape, tap);
                    let tap_sum = unsafe { sum.as_mut_ptr().add(tap * cout + lane) };
                    let mut s = unsafe { _mm512_loadu_ps(tap_sum) };
                    for (&gp, &corner) in at_position.iter().zip(&corners) {
                        let v = _mm512_set1_ps(unsafe { *input.get_unchecked(corner + offset) });
                        s = _mm512_fmadd_ps(v, gp, s);
                    }
                    unsafe { _mm512_storeu_ps(tap_sum, s) };
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::super::lanes::testing::tensor;
    use super::*;

    #[test]
    fn the_block_and_its_gradients_are_libtorchs_and_its_output_is_conv_pools() {
        let runs = crate::engine::cpu::testing::runs(
            crate::engine::cpu::CpuPath::Avx512,
            "conv_pool::training: the fused block and its gradients against autograd",
        );
        // conv1's shape on a lean input; an odd side whose pooling drops a row and
        // column, with three input channels.
        for (n, cin, side, cout) in [(7, 1, 26, 32), (3, 3, 15, 16)] {
            let x = tensor(&[n, cin, side, side], 1);
            let (weight, bias) = (tensor(&[cout, cin, 3, 3], 2), tensor(&[cout], 3) * 0.2);
            let pooled = (side - 2) / 2;
            let upstream = tensor(&[n, cout, pooled, pooled], 4);
            let [xr, wr, br] = [&x, &weight, &bias].map(|t| t.detach().set_requires_grad(true));
            let reference = xr
                .conv2d(&wr, Some(&br), [1, 1], [0, 0], [1, 1], 1)
                .max_pool2d([2, 2], [2, 2], [0, 0], [1, 1], false)
                .relu();
            let weighted = (&reference * &upstream).sum(Kind::Float);
            let grads = Tensor::run_backward(&[&weighted], &[&wr, &br], false, false);
            let Some((ours, saved)) = forward(&x, &weight, &bias) else {
                // Training then takes autograd, whose gradient tests/engine.rs holds
                // to the f64 gradient.
                assert!(!runs, "a shallow convolution on the CPU, {n}×{cin}×{side}²");
                continue;
            };
            let scale = |t: &Tensor| t.abs().max().double_value(&[]);
            let gap = |a: &Tensor, b: &Tensor| (a - b).abs().max().double_value(&[]);
            assert!(gap(&ours, &reference) < 1e-5 * scale(&reference), "output, {n}×{cin}×{side}²");
            let _guard = tch::no_grad_guard();
            assert!(
                ours.equal(&super::super::conv_pool_relu(&x, &weight, &bias).unwrap()),
                "conv_pool's values exactly"
            );
            for (name, mine, theirs) in [
                ("weight", &backward(&saved, &upstream)[0], &grads[0]),
                ("bias", &backward(&saved, &upstream)[1], &grads[1]),
            ] {
                assert!(
                    scale(theirs) > 0.0 && gap(mine, theirs) < 1e-5 * scale(theirs),
                    "{name}, {n}×{cin}×{side}²: {}",
                    gap(mine, theirs)
                );
            }
        }
    }
}
