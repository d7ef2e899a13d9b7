//! A hand-written CPU loop for the step of a conv1 ablation that libtorch runs
//! poorly at this shape: a few 1-channel 3×3 convolutions with ReLU and pooling,
//! straight into conv2's input patches (libtorch's convolution, pooling and im2col
//! took 3× as long). It runs on the calling thread: splitting it across threads
//! measured slower, as libtorch's own threads still spin after each GEMM. The GPU
//! path keeps libtorch's ops (see `cache.rs`).

use tch::{Device, Kind, Tensor};

/// Side of conv1's pooled output that conv2's kept 10×10 corner reads.
const H1: usize = 12;
/// Side of the conv2 pre-activation corner kept.
const P2: usize = 10;

/// A contiguous CPU f32 tensor's data.
fn slice(t: &Tensor) -> &[f32] {
    assert!(t.device() == Device::Cpu && t.kind() == Kind::Float && t.is_contiguous(), "a contiguous CPU f32 tensor");
    // SAFETY: the tensor is contiguous f32 on the CPU, and the slice borrows it.
    unsafe { std::slice::from_raw_parts(t.data_ptr() as *const f32, t.numel()) }
}

/// A fresh CPU f32 tensor of `shape` and its data to fill.
fn output(shape: &[i64]) -> Tensor {
    Tensor::empty(shape, (Kind::Float, Device::Cpu))
}

fn slice_mut(t: &mut Tensor) -> &mut [f32] {
    assert!(t.device() == Device::Cpu && t.kind() == Kind::Float && t.is_contiguous(), "a contiguous CPU f32 tensor");
    // SAFETY: as `slice`, and the mutable borrow of the tensor makes it exclusive.
    unsafe { std::slice::from_raw_parts_mut(t.data_ptr() as *mut f32, t.numel()) }
}

/// For images `x` (`[B, 1, 28, 28]`) and the ablated conv1 `units` (kernels
/// `weights [units, 1, 3, 3]`, `biases [units]`, replacement maps `constants
/// [units, 12, 12]`): the change (constant − actual) of each unit's pooled ReLU
/// output, laid out as conv2's 3×3 input patches: `[B·100, units·9]`, row
/// `b·100 + r·10 + c`, column `unit·9 + dr·3 + dc`.
pub fn conv1_change_patches(x: &Tensor, weights: &Tensor, biases: &Tensor, constants: &Tensor) -> Tensor {
    let (x, w, b, k) = (x.contiguous(), weights.contiguous(), biases.contiguous(), constants.contiguous());
    let (xs, ws, bs, ks) = (slice(&x), slice(&w), slice(&b), slice(&k));
    let images = x.size()[0] as usize;
    let units = bs.len();
    let row = units * 9;
    let mut patches = output(&[(images * P2 * P2) as i64, row as i64]);
    let mut change = vec![0f32; units * H1 * H1];
    for (i, image_out) in slice_mut(&mut patches).chunks_mut(P2 * P2 * row).enumerate() {
        let image = &xs[i * 784..(i + 1) * 784];
        for u in 0..units {
            pooled_change(
                image,
                &ws[u * 9..u * 9 + 9],
                bs[u],
                &ks[u * 144..u * 144 + 144],
                &mut change[u * 144..u * 144 + 144],
            );
        }
        for r in 0..P2 {
            for c in 0..P2 {
                let dst = &mut image_out[(r * P2 + c) * row..(r * P2 + c + 1) * row];
                for u in 0..units {
                    for dr in 0..3 {
                        let src = &change[u * 144 + (r + dr) * H1 + c..][..3];
                        dst[u * 9 + dr * 3..u * 9 + dr * 3 + 3].copy_from_slice(src);
                    }
                }
            }
        }
    }
    patches
}

/// constant − max-pool(ReLU(conv)) of one 3×3 kernel over one 28×28 image, on the
/// 12×12 pooled corner (conv rows and columns 0..24).
fn pooled_change(image: &[f32], w: &[f32], bias: f32, constant: &[f32], out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2, checked just above.
        return unsafe { pooled_change_avx2(image, w, bias, constant, out) };
    }
    pooled_change_portable(image, w, bias, constant, out)
}

/// The same loop compiled for 8-wide vectors (same operations, so the same results).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn pooled_change_avx2(image: &[f32], w: &[f32], bias: f32, constant: &[f32], out: &mut [f32]) {
    pooled_change_portable(image, w, bias, constant, out)
}

#[inline(always)]
fn pooled_change_portable(image: &[f32], w: &[f32], bias: f32, constant: &[f32], out: &mut [f32]) {
    let mut rows = [[0f32; 2 * H1]; 2];
    for pr in 0..H1 {
        for (k, conv_row) in rows.iter_mut().enumerate() {
            let r = 2 * pr + k;
            conv_row.fill(bias);
            for dr in 0..3 {
                let src = &image[(r + dr) * 28..(r + dr) * 28 + 28];
                for dc in 0..3 {
                    let wt = w[dr * 3 + dc];
                    for (acc, v) in conv_row.iter_mut().zip(&src[dc..dc + 2 * H1]) {
                        *acc += wt * v;
                    }
                }
            }
        }
        for pc in 0..H1 {
            let m = rows[0][2 * pc].max(rows[0][2 * pc + 1]).max(rows[1][2 * pc]).max(rows[1][2 * pc + 1]);
            out[pr * H1 + pc] = constant[pr * H1 + pc] - m.max(0.0);
        }
    }
}
