//! A deep convolution block (3×3 convolution, 2×2 max pooling, ReLU: conv2's)
//! forward and backward for training, by F(2×2, 3×3).
//!
//! With Y = Aᵀ (U ⊙ V) A per output block (V = Bᵀ d B the transformed input
//! block, U = G g Gᵀ the transformed kernel), the gradients follow the same
//! transforms backwards: the gradient at the 16 products is A dY Aᵀ (dY: the
//! pooled gradient, at the pooling window's maximum, where the ReLU passed);
//! at the transformed input it is that times Uᵀ, which B · Bᵀ carries back to
//! the overlapping 4×4 input blocks; at the transformed kernel it is Vᵀ times it,
//! summed over blocks, which Gᵀ · G carries back to the 3×3 taps. All three
//! matrix products are the forward's size: 2.25× less arithmetic than libtorch's
//! forward, input-gradient and weight-gradient convolutions.
//!
//! The forward keeps what the backward reads: each block's transformed input,
//! the pooled output and which window position held each maximum.

use super::{Output, host, omp, transformed_kernel};
use super::{ROWS, Shape, VALUES};
use tch::{Device, Kind, Tensor};

/// What the backward reads from a forward.
pub struct Saved {
    shape: Shape,
    /// `[16, Cin, Cout]`, as `transformed_kernel`.
    kernel: Vec<f32>,
    /// `[N, 16, blocks, Cin]`: each image's transformed input blocks.
    transformed: Tensor,
    /// `[N, blocks, Cout]`: the block output (pooled, ReLU).
    output: Tensor,
    /// `[N, blocks, Cout]`: the pooling window's position (0–3) that held each
    /// maximum.
    argmax: Tensor,
}

/// The block's output, channels-last `[N, Cout, H', W']`, and what its backward
/// needs; `None` where the loops do not apply (see `conv3x3`). Records nothing
/// for autograd: `backward` gives the gradients.
pub fn forward(x: &Tensor, weight: &Tensor, bias: &Tensor) -> Option<(Tensor, Saved)> {
    let shape = Shape::of(x, weight, Output::PooledRelu).filter(|_| host::cpu_floats(&[x, weight, bias]))?;
    let n = x.size()[0];
    let (blocks, cin, cout) = (shape.blocks_per_image(), shape.cin, shape.cout);
    let input = x.detach().permute([0, 2, 3, 1]).contiguous();
    let kernel = transformed_kernel(weight);
    let bias = host::floats(&bias.detach());
    let options = (Kind::Float, Device::Cpu);
    let mut transformed = Tensor::empty([n, VALUES as i64, blocks as i64, cin as i64], options);
    let mut output = Tensor::empty([n, blocks as i64, cout as i64], options);
    let mut argmax = Tensor::empty([n, blocks as i64, cout as i64], options);
    let (input, image_len) = (host::slice(&input), shape.image_len());
    let parts = [host::slice_mut(&mut transformed), host::slice_mut(&mut output), host::slice_mut(&mut argmax)];
    let widths = [VALUES * blocks * cin, blocks * cout, blocks * cout];
    omp::for_each_parts(n as usize, widths, parts, |images, [transformed, output, argmax]| {
        let parts =
            transformed.chunks_mut(widths[0]).zip(output.chunks_mut(widths[1])).zip(argmax.chunks_mut(widths[2]));
        for (image, ((transformed, output), argmax)) in images.zip(parts) {
            let input = &input[image * image_len..(image + 1) * image_len];
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `Shape::of` said the CPU has AVX-512F.
            unsafe {
                forward_image(&shape, input, &kernel, &bias, transformed, output, argmax)
            };
        }
    });
    let (rows, cols) = (shape.blocks.0 as i64, shape.blocks.1 as i64);
    let block_output = output.view([n, rows, cols, cout as i64]).permute([0, 3, 1, 2]);
    Some((block_output, Saved { shape, kernel, transformed, output, argmax }))
}

/// One image's forward: its blocks transformed into `transformed`, its pooled
/// outputs and their window positions.
///
/// # Safety
/// The CPU has AVX-512F.
#[cfg(target_arch = "x86_64")]
unsafe fn forward_image(
    shape: &Shape,
    input: &[f32],
    kernel: &[f32],
    bias: &[f32],
    transformed: &mut [f32],
    output: &mut [f32],
    argmax: &mut [f32],
) {
    use super::avx512;
    let (blocks, cout) = (shape.blocks_per_image(), shape.cout);
    assert!(2 * shape.blocks.0 + 2 <= shape.height && 2 * shape.blocks.1 + 2 <= shape.width);
    for block in 0..blocks {
        let window = &input[shape.corner(shape.block(block))..];
        // SAFETY: AVX-512F; the window lies inside the image (asserted above).
        unsafe { avx512::transform_block(window, shape.width * shape.cin, shape.cin, transformed, blocks, block) };
    }
    let mut products = vec![0f32; VALUES * ROWS * cout];
    for first in (0..blocks).step_by(ROWS) {
        let count = ROWS.min(blocks - first);
        // SAFETY: AVX-512F.
        unsafe { shape.products(transformed, blocks, first, count, kernel, &mut products) };
        for slot in 0..count {
            let at = (first + slot) * cout;
            let to = avx512::Destination::Pooled { out: &mut *output, argmax: Some(&mut *argmax), at };
            // SAFETY: AVX-512F; `slot < count` of the products just computed.
            unsafe { avx512::outputs(&products, slot, bias, to) };
        }
    }
}

/// The gradients at the block's input (channels-last `[N, Cin, H, W]`), weight
/// and bias, from the gradient at its output (`upstream`, `[N, Cout, H', W']`).
pub fn backward(saved: &Saved, upstream: &Tensor) -> [Tensor; 3] {
    let shape = &saved.shape;
    let n = saved.output.size()[0];
    let (blocks, cin, cout) = (shape.blocks_per_image(), shape.cin, shape.cout);
    let upstream = upstream.permute([0, 2, 3, 1]).contiguous(); // [N, H', W', Cout] = [N, blocks, Cout]
    // Uᵀ: `[16, Cout, Cin]`.
    let mut kernel_t = vec![0f32; VALUES * cout * cin];
    for (value, matrix) in saved.kernel.chunks_exact(cin * cout).enumerate() {
        for (c, row) in matrix.chunks_exact(cout).enumerate() {
            for (o, &u) in row.iter().enumerate() {
                kernel_t[(value * cout + o) * cin + c] = u;
            }
        }
    }
    let options = (Kind::Float, Device::Cpu);
    let mut input_gradient = Tensor::zeros([n, shape.height as i64, shape.width as i64, cin as i64], options);
    let (upstream_values, output, argmax) =
        (host::slice(&upstream), host::slice(&saved.output), host::slice(&saved.argmax));
    let transformed = host::slice(&saved.transformed);
    let image_len = shape.image_len();
    let kernel_len = VALUES * cin * cout;
    // Each thread adds its images' gradients at the transformed kernel (`[16, Cin,
    // Cout]`) and at the bias (`[Cout]`) into a buffer of its own.
    let gradients = [host::slice_mut(&mut input_gradient)];
    let sums = omp::for_each_parts_summed(
        n as usize,
        [image_len],
        gradients,
        kernel_len + cout,
        |images, [gradients], sum| {
            let mut work = BackwardWork::new(shape);
            let (kernel_sum, bias_sum) = sum.split_at_mut(kernel_len);
            for (image, gradient) in images.zip(gradients.chunks_exact_mut(image_len)) {
                let per_image = image * blocks * cout..(image + 1) * blocks * cout;
                let blocks_of = [upstream_values, output, argmax].map(|values| &values[per_image.clone()]);
                let transformed = &transformed[image * VALUES * blocks * cin..(image + 1) * VALUES * blocks * cin];
                #[cfg(target_arch = "x86_64")]
                // SAFETY: a `Saved` exists only where `Shape::of` said the CPU has AVX-512F.
                unsafe {
                    work.image(shape, blocks_of, &kernel_t, gradient, bias_sum);
                    work.add_kernel_gradient(shape, transformed, kernel_sum);
                }
            }
        },
    );
    let weight_gradient = taps_gradient(&sums[..kernel_len], cin, cout);
    let bias_gradient = Tensor::from_slice(&sums[kernel_len..]);
    [input_gradient.permute([0, 3, 1, 2]), weight_gradient, bias_gradient]
}

/// One thread's scratch space for the backward.
struct BackwardWork {
    /// The gradient at one image's products, `[16, blocks, Cout]`.
    at_products: Vec<f32>,
    /// The gradient at `ROWS` blocks' transformed inputs, `[16, ROWS, Cin]`.
    at_transformed: Vec<f32>,
}

impl BackwardWork {
    fn new(shape: &Shape) -> BackwardWork {
        BackwardWork {
            at_products: vec![0.0; VALUES * shape.blocks_per_image() * shape.cout],
            at_transformed: vec![0.0; VALUES * ROWS * shape.cin],
        }
    }

    /// One image: the gradient at its products from `[upstream, output, argmax]`
    /// (`[blocks, Cout]` each), then at its input (added to `gradient`, `[H, W,
    /// Cin]`, zero before); the bias's added to `bias_sum`.
    ///
    /// # Safety
    /// The CPU has AVX-512F.
    #[cfg(target_arch = "x86_64")]
    unsafe fn image(
        &mut self,
        shape: &Shape,
        [upstream, output, argmax]: [&[f32]; 3],
        kernel_t: &[f32],
        gradient: &mut [f32],
        bias_sum: &mut [f32],
    ) {
        use super::avx512;
        let (blocks, cin, cout) = (shape.blocks_per_image(), shape.cin, shape.cout);
        for block in 0..blocks {
            let at = block * cout..(block + 1) * cout;
            // SAFETY: AVX-512F (the caller's promise); `pooled_gradient` checks the lengths.
            unsafe {
                avx512::pooled_gradient(
                    &upstream[at.clone()],
                    &output[at.clone()],
                    &argmax[at],
                    &mut self.at_products,
                    blocks,
                    block,
                    bias_sum,
                )
            };
        }
        for first in (0..blocks).step_by(ROWS) {
            let count = ROWS.min(blocks - first);
            let (products, transposed) = (&self.at_products, kernel_t);
            // SAFETY: AVX-512F.
            unsafe {
                avx512::value_products(products, blocks, first, count, cout, transposed, cin, &mut self.at_transformed)
            };
            for slot in 0..count {
                let window = &mut gradient[shape.corner(shape.block(first + slot))..];
                // SAFETY: AVX-512F; the window lies inside the image, as in the forward.
                unsafe { avx512::add_block_gradient(&self.at_transformed, slot, cin, window, shape.width * cin) };
            }
        }
    }

    /// Adds the image's gradient at the transformed kernel, `Σ_blocks Vᵀ · (the
    /// gradient at its products)` per value, to `sum` (`[16, Cin, Cout]`).
    ///
    /// # Safety
    /// The CPU has AVX-512F; `image` ran on this image last.
    #[cfg(target_arch = "x86_64")]
    unsafe fn add_kernel_gradient(&self, shape: &Shape, transformed: &[f32], sum: &mut [f32]) {
        use super::avx512;
        let (blocks, cin, cout) = (shape.blocks_per_image(), shape.cin, shape.cout);
        for value in 0..VALUES {
            // Row: an input channel; depth: the blocks.
            let a = avx512::Broadcast { data: &transformed[value * blocks * cin..], row_stride: 1, k_stride: cin };
            let b = avx512::Dense { data: &self.at_products[value * blocks * cout..], stride: cout };
            // SAFETY: AVX-512F; `product` checks the bounds.
            unsafe { avx512::product(cin, blocks, cout, &a, &b, &mut sum[value * cin * cout..], cout, true) };
        }
    }
}

/// The gradient at the 3×3 taps, `[Cout, Cin, 3, 3]`, from the gradient at the
/// transformed kernel (`[16, Cin, Cout]`): Gᵀ · G, in f64.
fn taps_gradient(at_kernel: &[f32], cin: usize, cout: usize) -> Tensor {
    // Gᵀ applied to four values: [1, ½, ½, 0], [0, ½, −½, 0], [0, ½, ½, 1].
    let gt = |[a, b, c, d]: [f64; 4]| [a + (b + c) / 2.0, (b - c) / 2.0, (b + c) / 2.0 + d];
    let mut taps = vec![0f32; cout * cin * 9];
    for o in 0..cout {
        for i in 0..cin {
            let u = |r: usize, c: usize| f64::from(at_kernel[((r * 4 + c) * cin + i) * cout + o]);
            let columns = [0, 1, 2, 3].map(|c| gt([u(0, c), u(1, c), u(2, c), u(3, c)])); // Gᵀ u, by column
            for row in 0..3 {
                for (col, value) in gt(columns.map(|column| column[row])).into_iter().enumerate() {
                    taps[((o * cin + i) * 3 + row) * 3 + col] = value as f32;
                }
            }
        }
    }
    Tensor::from_slice(&taps).view([cout as i64, cin as i64, 3, 3])
}

#[cfg(test)]
mod tests {
    use super::super::super::cpu::{CpuPath, testing::runs};
    use super::super::super::lanes::testing::tensor;
    use super::*;

    fn largest_gap(a: &Tensor, b: &Tensor) -> f64 {
        assert_eq!(a.size(), b.size());
        (a - b).abs().max().double_value(&[])
    }

    /// The block forward and back through libtorch's ops and autograd, the
    /// obvious way: `[output, input gradient, weight gradient, bias gradient]`.
    fn reference(x: &Tensor, weight: &Tensor, bias: &Tensor, upstream: &Tensor) -> [Tensor; 4] {
        let [x, weight, bias] = [x, weight, bias].map(|t| t.detach().set_requires_grad(true));
        let output = x
            .conv2d(&weight, Some(&bias), [1, 1], [0, 0], [1, 1], 1)
            .max_pool2d([2, 2], [2, 2], [0, 0], [1, 1], false)
            .relu();
        let pseudo_loss = (&output * upstream).sum(Kind::Float);
        let [input_gradient, weight_gradient, bias_gradient]: [Tensor; 3] =
            Tensor::run_backward(&[&pseudo_loss], &[&x, &weight, &bias], false, false).try_into().unwrap();
        [output.detach(), input_gradient, weight_gradient, bias_gradient]
    }

    #[test]
    fn the_block_and_its_gradients_are_libtorchs() {
        let runs = runs(CpuPath::Avx512, "winograd::training: the block and its gradients against autograd");
        // conv2's shape on a lean input; an odd side whose pooling drops a row and
        // column, 80 output channels (a 64-wide pass and a 16-wide one) and an odd
        // batch split over two threads.
        for (n, cin, side, cout) in [(7, 32, 12, 64), (3, 16, 13, 80)] {
            let x = tensor(&[n, cin, side, side], 1);
            let (weight, bias) = (tensor(&[cout, cin, 3, 3], 2) * 0.3, tensor(&[cout], 3) * 0.1);
            let pooled_side = (side - 2) / 2;
            let upstream = tensor(&[n, cout, pooled_side, pooled_side], 4);
            let [output, input_gradient, weight_gradient, bias_gradient] = reference(&x, &weight, &bias, &upstream);
            let Some((ours, saved)) = forward(&x, &weight, &bias) else {
                // Training then takes autograd, whose gradient tests/engine.rs holds
                // to the f64 gradient.
                assert!(!runs, "a deep 3×3 convolution on the CPU, {n}×{cin}×{side}²");
                continue;
            };
            let [our_input, our_weight, our_bias] = backward(&saved, &upstream);
            let scale = |t: &Tensor| t.abs().max().double_value(&[]);
            assert!(largest_gap(&ours, &output) < 1e-5 * scale(&output), "output, {n}×{cin}×{side}², {cout} out");
            for (name, mine, theirs) in [
                ("input", &our_input, &input_gradient),
                ("weight", &our_weight, &weight_gradient),
                ("bias", &our_bias, &bias_gradient),
            ] {
                assert!(scale(theirs) > 0.0, "{name}: a gradient to compare");
                let gap = largest_gap(mine, theirs);
                assert!(
                    gap < 1e-5 * scale(theirs),
                    "{name} gradient, {n}×{cin}×{side}²: {gap} (scale {})",
                    scale(theirs)
                );
            }
        }
    }

    #[test]
    fn each_images_values_do_not_depend_on_the_threads() {
        if !runs(CpuPath::Avx512, "winograd::training: one thread against two") {
            return;
        }
        let x = tensor(&[9, 32, 12, 12], 5);
        let (weight, bias) = (tensor(&[64, 32, 3, 3], 6), tensor(&[64], 7));
        let upstream = tensor(&[9, 64, 5, 5], 8);
        let run = |threads| {
            tch::set_num_threads(threads);
            let (output, saved) = forward(&x, &weight, &bias).unwrap();
            let [input, weight, bias] = backward(&saved, &upstream);
            [output, input, weight, bias]
        };
        let (one, two, again) = (run(1), run(2), run(2));
        for (name, i) in [("output", 0), ("input gradient", 1)] {
            assert!(one[i].equal(&two[i]), "{name}: each image on its own, every value the same");
        }
        // The weight gradient sums the threads' partial sums: the same run to run,
        // a rounding apart between team sizes.
        assert!(two.iter().zip(&again).all(|(a, b)| a.equal(b)), "two runs on two threads agree bit for bit");
        let scale = one[2].abs().max().double_value(&[]);
        assert!(largest_gap(&one[2], &two[2]) < 1e-6 * scale);
    }
}
