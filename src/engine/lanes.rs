//! The three innermost loops of the conv1 ablation kernel (`kernels.rs`), written
//! once portably and once with AVX2+FMA intrinsics, and the busiest one
//! (`pooled_cell`) once more with AVX-512. The compiler left the portable forms
//! scalar or their accumulators on the stack; the intrinsics keep them in
//! registers. All compute the same sums; FMA rounds once where the portable form
//! rounds twice, so results agree to float precision.

use std::ops::Range;

/// Side of the input image.
pub const SIDE: usize = 28;
/// Side of conv1's pooled output that conv2's kept 10×10 corner reads.
pub const H1: usize = 12;
/// Values in one conv1 unit's change map.
pub const MAP: usize = H1 * H1;
/// Side of the conv2 pre-activation corner kept (the part pooling reads).
pub const P2: usize = 10;
/// Side of the pooled conv2 output.
pub const H2: usize = P2 / 2;
/// Output channels of conv2 (one value per channel in a pooled cell).
pub const CHANNELS: usize = 64;
/// Outputs of fc1.
pub const FC1: usize = 16;

/// The offsets of a 2×2 pooling window's four positions, row-major.
pub const POOL_WINDOW: [(usize, usize); 4] = [(0, 0), (0, 1), (1, 0), (1, 1)];

/// The four conv2 positions (row, column) that pooled cell (`row`, `col`) reads.
#[inline(always)]
pub fn cell_positions(row: usize, col: usize) -> [(usize, usize); 4] {
    POOL_WINDOW.map(|(a, b)| (2 * row + a, 2 * col + b))
}

pub trait Lanes {
    /// One conv1 unit (3×3 `kernel`, `bias`) on a 28×28 `image`, ReLU'd and
    /// pooled: `out[r·12 + c] = constant[r·12 + c] − that output`, for pooled rows
    /// `rows` and columns 0..12 (the change if the unit output `constant` instead).
    fn pooled_change(image: &[f32], kernel: &[f32], bias: f32, constant: &[f32], rows: Range<usize>, out: &mut [f32]);

    /// One pooled conv2 cell (`row`, `col` of 5×5) after conv1 units changed by
    /// `change` (`[units, 12·12]`): `out = ReLU(max over its 4 positions of
    /// pre2 + Σ change·taps)`. `pre2` is one image's `[10·10, 64]`, `taps` the
    /// units' conv2 weights `[units, 9, 64]`.
    fn pooled_cell(pre2: &[f32], change: &[f32], taps: &[f32], cell: (usize, usize), out: &mut [f32; CHANNELS]);

    /// `pre3 += Σ_ch (new[ch] − old[ch])·rows[ch]`: fc1's pre-activation after one
    /// pooled cell changed; `rows` holds fc1's weights from that cell, `[64, 16]`.
    fn add_fc1_change(pre3: &mut [f32; FC1], rows: &[f32], new: &[f32; CHANNELS], old: &[f32]);
}

/// Plain Rust, for any CPU.
pub struct Portable;

impl Lanes for Portable {
    #[inline(always)]
    fn pooled_change(image: &[f32], kernel: &[f32], bias: f32, constant: &[f32], rows: Range<usize>, out: &mut [f32]) {
        let mut conv = [[0f32; 2 * H1]; 2];
        for pr in rows {
            for (k, conv_row) in conv.iter_mut().enumerate() {
                let r = 2 * pr + k;
                conv_row.fill(bias);
                for dr in 0..3 {
                    let src = &image[(r + dr) * SIDE..(r + dr + 1) * SIDE];
                    for dc in 0..3 {
                        let w = kernel[dr * 3 + dc];
                        for (acc, v) in conv_row.iter_mut().zip(&src[dc..dc + 2 * H1]) {
                            *acc += w * v;
                        }
                    }
                }
            }
            for pc in 0..H1 {
                let m = conv[0][2 * pc].max(conv[0][2 * pc + 1]).max(conv[1][2 * pc]).max(conv[1][2 * pc + 1]);
                out[pr * H1 + pc] = constant[pr * H1 + pc] - m.max(0.0);
            }
        }
    }

    #[inline(always)]
    fn pooled_cell(pre2: &[f32], change: &[f32], taps: &[f32], (row, col): (usize, usize), out: &mut [f32; CHANNELS]) {
        let units = taps.len() / (9 * CHANNELS);
        let mut best = [f32::NEG_INFINITY; CHANNELS];
        for (r, c) in cell_positions(row, col) {
            let mut acc: [f32; CHANNELS] = pre2[(r * P2 + c) * CHANNELS..][..CHANNELS].try_into().expect("64 channels");
            for (tap, k) in taps.chunks_exact(CHANNELS).zip(0..units * 9) {
                let (u, dr, dc) = (k / 9, k % 9 / 3, k % 3);
                let v = change[u * MAP + (r + dr) * H1 + c + dc];
                for (a, t) in acc.iter_mut().zip(tap) {
                    *a += v * t;
                }
            }
            for (m, a) in best.iter_mut().zip(&acc) {
                *m = m.max(*a);
            }
        }
        for (o, m) in out.iter_mut().zip(&best) {
            *o = m.max(0.0);
        }
    }

    #[inline(always)]
    fn add_fc1_change(pre3: &mut [f32; FC1], rows: &[f32], new: &[f32; CHANNELS], old: &[f32]) {
        for ((a, b), row) in new.iter().zip(old).zip(rows.chunks_exact(FC1)) {
            let delta = a - b;
            for (p, w) in pre3.iter_mut().zip(row) {
                *p += delta * w;
            }
        }
    }
}

/// The bounds the intrinsic forms of `pooled_cell` read within: one image's conv2
/// pre-activation, a change map per unit, a cell of the 5×5 grid.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn check_cell_inputs(pre2: &[f32], change: &[f32], taps: &[f32], (row, col): (usize, usize)) {
    let units = taps.len() / (9 * CHANNELS);
    assert!(
        pre2.len() >= P2 * P2 * CHANNELS && change.len() >= units * MAP && row < H2 && col < H2,
        "one image's conv2 pre-activation and a change map per unit"
    );
}

/// AVX2 and FMA intrinsics. Only used after `available()` said yes.
#[cfg(target_arch = "x86_64")]
pub struct Avx2Fma;

#[cfg(target_arch = "x86_64")]
impl Avx2Fma {
    pub fn available() -> bool {
        super::cpu::has(super::cpu::CpuPath::Avx2)
    }
}

#[cfg(target_arch = "x86_64")]
impl Lanes for Avx2Fma {
    #[inline(always)]
    fn pooled_change(image: &[f32], kernel: &[f32], bias: f32, constant: &[f32], rows: Range<usize>, out: &mut [f32]) {
        assert!(
            image.len() >= SIDE * SIDE
                && kernel.len() >= 9
                && rows.end <= H1
                && constant.len() >= MAP
                && out.len() >= MAP,
            "a 28×28 image, a 3×3 kernel and 12×12 maps"
        );
        // SAFETY: this type is only used where the CPU has AVX2 and FMA; every
        // pointer read stays inside the slices, whose lengths are checked above.
        unsafe { avx2::pooled_change(image, kernel, bias, constant, rows, out) }
    }

    #[inline(always)]
    fn pooled_cell(pre2: &[f32], change: &[f32], taps: &[f32], cell: (usize, usize), out: &mut [f32; CHANNELS]) {
        check_cell_inputs(pre2, change, taps, cell);
        // SAFETY: as above.
        unsafe { avx2::pooled_cell(pre2, change, taps, cell, out) }
    }

    #[inline(always)]
    fn add_fc1_change(pre3: &mut [f32; FC1], rows: &[f32], new: &[f32; CHANNELS], old: &[f32]) {
        assert!(rows.len() >= CHANNELS * FC1 && old.len() >= CHANNELS, "a cell's 64 rows of fc1");
        // SAFETY: as above.
        unsafe { avx2::add_fc1_change(pre3, rows, new, old) }
    }
}

/// AVX-512F for `pooled_cell`, AVX2 for the rest. With 32 registers of 16 lanes a
/// cell's four positions keep all 64 channels in sixteen accumulators, so each
/// tap's weights are loaded once for the four of them (with AVX2's sixteen
/// registers every position reloads them: a load per FMA). The kernel's conv1
/// sweep went 0.68–0.74 → 0.62–0.66 s (alternating runs). Only used after
/// `available()` said yes. (fc1's correction in AVX-512, eight independent sums
/// in one 16-lane register each, was no faster.)
#[cfg(target_arch = "x86_64")]
pub struct Avx512;

#[cfg(target_arch = "x86_64")]
impl Avx512 {
    pub fn available() -> bool {
        super::cpu::has(super::cpu::CpuPath::Avx512)
    }
}

#[cfg(target_arch = "x86_64")]
impl Lanes for Avx512 {
    #[inline(always)]
    fn pooled_change(image: &[f32], kernel: &[f32], bias: f32, constant: &[f32], rows: Range<usize>, out: &mut [f32]) {
        Avx2Fma::pooled_change(image, kernel, bias, constant, rows, out)
    }

    #[inline(always)]
    fn pooled_cell(pre2: &[f32], change: &[f32], taps: &[f32], cell: (usize, usize), out: &mut [f32; CHANNELS]) {
        check_cell_inputs(pre2, change, taps, cell);
        // SAFETY: this type is only used where the CPU has AVX-512F; every pointer
        // read stays inside the slices, whose lengths `check_cell_inputs` checked.
        unsafe { avx512::pooled_cell(pre2, change, taps, cell, out) }
    }

    #[inline(always)]
    fn add_fc1_change(pre3: &mut [f32; FC1], rows: &[f32], new: &[f32; CHANNELS], old: &[f32]) {
        Avx2Fma::add_fc1_change(pre3, rows, new, old)
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{CHANNELS, H1, MAP, P2};
    use std::arch::x86_64::*;

    /// 16 lanes of a 512-bit register.
    const Z: usize = 16;
    const VECTORS: usize = CHANNELS / Z;

    #[target_feature(enable = "avx512f")]
    pub unsafe fn pooled_cell(
        pre2: &[f32],
        change: &[f32],
        taps: &[f32],
        (row, col): (usize, usize),
        out: &mut [f32; CHANNELS],
    ) {
        let units = taps.len() / (9 * CHANNELS);
        let positions = super::cell_positions(row, col);
        let mut acc: [[__m512; VECTORS]; 4] = positions.map(|(r, c)| {
            let position = unsafe { pre2.as_ptr().add((r * P2 + c) * CHANNELS) };
            std::array::from_fn(|j| unsafe { _mm512_loadu_ps(position.add(j * Z)) })
        });
        for u in 0..units {
            for dr in 0..3 {
                for dc in 0..3 {
                    let tap = unsafe { taps.as_ptr().add((u * 9 + dr * 3 + dc) * CHANNELS) };
                    let weights: [__m512; VECTORS] =
                        std::array::from_fn(|j| unsafe { _mm512_loadu_ps(tap.add(j * Z)) });
                    for (sums, &(r, c)) in acc.iter_mut().zip(&positions) {
                        let v = _mm512_set1_ps(unsafe { *change.as_ptr().add(u * MAP + (r + dr) * H1 + c + dc) });
                        for (a, &w) in sums.iter_mut().zip(&weights) {
                            *a = _mm512_fmadd_ps(v, w, *a);
                        }
                    }
                }
            }
        }
        for j in 0..VECTORS {
            let [p0, p1, p2, p3] = acc.map(|sums| sums[j]);
            let best = _mm512_max_ps(_mm512_max_ps(p0, p1), _mm512_max_ps(p2, p3));
            unsafe { _mm512_storeu_ps(out.as_mut_ptr().add(j * Z), _mm512_max_ps(best, _mm512_setzero_ps())) };
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{CHANNELS, FC1, H1, MAP, P2, SIDE};
    use std::arch::x86_64::*;
    use std::ops::Range;

    /// 8 lanes of a 256-bit register.
    const W: usize = 8;
    const VECTORS: usize = CHANNELS / W;

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn pooled_change(
        image: &[f32],
        kernel: &[f32],
        bias: f32,
        constant: &[f32],
        rows: Range<usize>,
        out: &mut [f32],
    ) {
        let weights: [__m256; 9] = std::array::from_fn(|k| _mm256_set1_ps(kernel[k]));
        let zero = _mm256_setzero_ps();
        for pr in rows {
            // The two conv rows this pooled row reads, 24 columns each (3 vectors).
            let mut conv = [[_mm256_set1_ps(bias); 3]; 2];
            for (k, acc) in conv.iter_mut().enumerate() {
                for dr in 0..3 {
                    let src = unsafe { image.as_ptr().add((2 * pr + k + dr) * SIDE) };
                    for dc in 0..3 {
                        for (j, a) in acc.iter_mut().enumerate() {
                            *a = _mm256_fmadd_ps(
                                weights[dr * 3 + dc],
                                unsafe { _mm256_loadu_ps(src.add(dc + j * W)) },
                                *a,
                            );
                        }
                    }
                }
            }
            let rows_max: [__m256; 3] = std::array::from_fn(|j| _mm256_max_ps(conv[0][j], conv[1][j]));
            // Neighbouring columns: even and odd lanes of two vectors, then the
            // 64-bit lanes back in order.
            let pairs = |a: __m256, b: __m256| {
                let m =
                    _mm256_max_ps(_mm256_shuffle_ps::<0b10_00_10_00>(a, b), _mm256_shuffle_ps::<0b11_01_11_01>(a, b));
                _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(_mm256_castps_pd(m)))
            };
            let first = _mm256_max_ps(pairs(rows_max[0], rows_max[1]), zero); // pooled columns 0..8
            let last = _mm256_castps256_ps128(_mm256_max_ps(pairs(rows_max[2], rows_max[2]), zero)); // 8..12
            unsafe {
                let (c, o) = (constant.as_ptr().add(pr * H1), out.as_mut_ptr().add(pr * H1));
                _mm256_storeu_ps(o, _mm256_sub_ps(_mm256_loadu_ps(c), first));
                _mm_storeu_ps(o.add(W), _mm_sub_ps(_mm_loadu_ps(c.add(W)), last));
            }
        }
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn pooled_cell(
        pre2: &[f32],
        change: &[f32],
        taps: &[f32],
        (row, col): (usize, usize),
        out: &mut [f32; CHANNELS],
    ) {
        let units = taps.len() / (9 * CHANNELS);
        let mut best = [_mm256_set1_ps(f32::NEG_INFINITY); VECTORS];
        for (r, c) in super::cell_positions(row, col) {
            let position = unsafe { pre2.as_ptr().add((r * P2 + c) * CHANNELS) };
            let mut acc: [__m256; VECTORS] = std::array::from_fn(|j| unsafe { _mm256_loadu_ps(position.add(j * W)) });
            for u in 0..units {
                for dr in 0..3 {
                    let patch = unsafe { change.as_ptr().add(u * MAP + (r + dr) * H1 + c) };
                    for dc in 0..3 {
                        let v = unsafe { _mm256_broadcast_ss(&*patch.add(dc)) };
                        let tap = unsafe { taps.as_ptr().add((u * 9 + dr * 3 + dc) * CHANNELS) };
                        for (j, a) in acc.iter_mut().enumerate() {
                            *a = _mm256_fmadd_ps(v, unsafe { _mm256_loadu_ps(tap.add(j * W)) }, *a);
                        }
                    }
                }
            }
            for (m, a) in best.iter_mut().zip(acc) {
                *m = _mm256_max_ps(*m, a);
            }
        }
        for (j, m) in best.iter().enumerate() {
            unsafe { _mm256_storeu_ps(out.as_mut_ptr().add(j * W), _mm256_max_ps(*m, _mm256_setzero_ps())) };
        }
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn add_fc1_change(pre3: &mut [f32; FC1], rows: &[f32], new: &[f32; CHANNELS], old: &[f32]) {
        let mut delta = [0f32; CHANNELS];
        for j in 0..VECTORS {
            unsafe {
                let d =
                    _mm256_sub_ps(_mm256_loadu_ps(new.as_ptr().add(j * W)), _mm256_loadu_ps(old.as_ptr().add(j * W)));
                _mm256_storeu_ps(delta.as_mut_ptr().add(j * W), d);
            }
        }
        // Four independent sums (even and odd channels, two halves of 16) so the
        // FMAs do not wait on each other.
        let mut acc = [_mm256_setzero_ps(); 4];
        for ch in (0..CHANNELS).step_by(2) {
            for (pair, channel) in [ch, ch + 1].into_iter().enumerate() {
                let d = _mm256_set1_ps(delta[channel]);
                let row = unsafe { rows.as_ptr().add(channel * FC1) };
                for half in 0..2 {
                    let a = &mut acc[pair * 2 + half];
                    *a = _mm256_fmadd_ps(d, unsafe { _mm256_loadu_ps(row.add(half * W)) }, *a);
                }
            }
        }
        for half in 0..2 {
            unsafe {
                let p = pre3.as_mut_ptr().add(half * W);
                _mm256_storeu_ps(p, _mm256_add_ps(_mm256_loadu_ps(p), _mm256_add_ps(acc[half], acc[2 + half])));
            }
        }
    }
}

/// Inputs and comparisons for the tests of the portable and SIMD forms.
#[cfg(test)]
pub(super) mod testing {
    use tch::Tensor;

    /// A tensor of `shape` holding `values(…, seed)`.
    pub fn tensor(shape: &[i64], seed: u32) -> Tensor {
        let n = shape.iter().product::<i64>() as usize;
        Tensor::from_slice(&values(n, seed)).view(shape)
    }

    /// Asserts that `compute` gives every value the same on libtorch's two
    /// threads (our loops run on its OpenMP team) as on one.
    pub fn assert_same_on_one_and_two_threads(compute: impl Fn() -> Tensor) {
        let on = |threads| {
            tch::set_num_threads(threads);
            compute()
        };
        let (one, two) = (on(1), on(2));
        assert!(one.equal(&two), "split over two threads, every value the same");
    }

    /// Deterministic values in [-1, 1).
    pub fn values(n: usize, seed: u32) -> Vec<f32> {
        let mut state = seed.wrapping_mul(2_654_435_761).max(1);
        (0..n)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                (state as f32 / u32::MAX as f32) * 2.0 - 1.0
            })
            .collect()
    }

    pub fn assert_close(portable: &[f32], simd: &[f32], tolerance: f32) {
        assert_eq!(portable.len(), simd.len());
        for (a, b) in portable.iter().zip(simd) {
            assert!((a - b).abs() <= tolerance * (1.0 + a.abs()), "{a} vs {b}");
        }
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::testing::{assert_close, values};
    use super::*;

    #[test]
    fn intrinsics_agree_with_the_portable_loops() {
        if !crate::engine::cpu::testing::runs(
            crate::engine::cpu::CpuPath::Avx2,
            "lanes: the AVX2 loops against the portable ones",
        ) {
            return;
        }
        let (image, kernel, constant) = (values(SIDE * SIDE, 1), values(9, 2), values(MAP, 3));
        let (mut portable, mut simd) = (vec![7f32; MAP], vec![7f32; MAP]);
        Portable::pooled_change(&image, &kernel, 0.1, &constant, 2..H1, &mut portable);
        Avx2Fma::pooled_change(&image, &kernel, 0.1, &constant, 2..H1, &mut simd);
        assert!(portable[..2 * H1].iter().all(|&v| v == 7.0), "rows outside the range are left alone");
        assert!(portable.iter().zip(&constant).any(|(p, c)| p == c), "ReLU clips some outputs");
        assert!(portable.iter().zip(&constant).skip(2 * H1).filter(|(p, c)| p != c).count() > 20);
        assert_close(&portable, &simd, 1e-5);

        let (pre2, change, taps) = (values(P2 * P2 * CHANNELS, 4), values(2 * MAP, 5), values(2 * 9 * CHANNELS, 6));
        let (mut portable, mut simd) = ([0f32; CHANNELS], [0f32; CHANNELS]);
        let wide_runs = crate::engine::cpu::testing::runs(
            crate::engine::cpu::CpuPath::Avx512,
            "lanes: the AVX-512 pooled cell against the portable one",
        );
        for cell in [(0, 0), (2, 3), (4, 4)] {
            Portable::pooled_cell(&pre2, &change, &taps, cell, &mut portable);
            Avx2Fma::pooled_cell(&pre2, &change, &taps, cell, &mut simd);
            assert!(portable.iter().any(|&v| v > 0.5) && portable.contains(&0.0), "ReLU both clips and passes");
            assert_close(&portable, &simd, 1e-5);
            if wide_runs {
                let mut wide = [0f32; CHANNELS];
                Avx512::pooled_cell(&pre2, &change, &taps, cell, &mut wide);
                assert_close(&portable, &wide, 1e-5);
            }
        }

        let fc1 = values(CHANNELS * FC1, 7);
        let start: [f32; FC1] = values(FC1, 8).try_into().unwrap();
        let (mut portable_pre3, mut simd_pre3) = (start, start);
        Portable::add_fc1_change(&mut portable_pre3, &fc1, &portable, &pre2[..CHANNELS]);
        Avx2Fma::add_fc1_change(&mut simd_pre3, &fc1, &portable, &pre2[..CHANNELS]);
        assert!(portable_pre3.iter().zip(&start).all(|(a, s)| (a - s).abs() > 1e-3), "the change moved every output");
        assert_close(&portable_pre3, &simd_pre3, 1e-4);
    }
}
