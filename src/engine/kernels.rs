//! The CPU kernel behind conv1 ablations: one fused loop from an image to fc1's
//! pre-activation. libtorch spends most of a conv1 toggle on moving data between
//! small ops (conv, pool, im2col, GEMM, pool again), each a full pass over memory;
//! here each image's cached conv2 pre-activation (25 KiB) is read once, corrected,
//! pooled and folded into fc1 while it sits in L1. Two shortcuts, both exact:
//! - a pooled conv2 cell none of whose inputs changed (ReLU keeps many pixels at
//!   the replacement value) keeps its cached value, and fc1 is corrected only by
//!   cells that changed (`pre3 += Wᵀ·(h2' − h2)`);
//! - a triggered image equals its clean twin outside the trigger's reach, so only
//!   the cells the trigger reaches are recomputed for it.
//!
//! The innermost loops live in `lanes.rs`. The GPU path keeps libtorch's ops (see
//! `cache.rs`); both are checked against the study's reference path.

#[cfg(target_arch = "x86_64")]
use super::lanes::{Avx2Fma, Avx512};
use super::lanes::{CHANNELS, FC1, H1, H2, Lanes, MAP, P2, Portable, SIDE, cell_positions};
use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Threads the kernel may use; 0 means one per core.
static THREADS: AtomicUsize = AtomicUsize::new(0);

/// Caps the kernel's threads (the user's `--threads`); `None` allows every core. The
/// explorer leaves libtorch a core short so that long training keeps the UI
/// responsive, but a toggle's burst of tens of milliseconds is worth both cores.
pub fn set_threads(threads: Option<usize>) {
    THREADS.store(threads.unwrap_or(0), Ordering::Relaxed);
}

fn threads() -> usize {
    match THREADS.load(Ordering::Relaxed) {
        0 => std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        n => n,
    }
}

const PIXELS: usize = SIDE * SIDE;
/// Floats per image in each cached activation.
const PRE2_LEN: usize = P2 * P2 * CHANNELS;

/// The cached activations of the whole test set (`2N` images: N clean, then the
/// same N triggered) that every conv1 ablation reads, channels-last.
pub struct Conv1Inputs<'a> {
    /// `[2N, 28, 28]` input images.
    pub images: &'a [f32],
    /// `[N, 10, 10, 64]` conv2 pre-activation of the clean images.
    pub pre2: &'a [f32],
    /// `[N, rows, columns, 64]`: the triggered twins' conv2 pre-activation on the
    /// lines `trigger_cells` read (twice its rows and columns).
    pub trigger_pre2: &'a [f32],
    /// `[2N, 16]` fc1 pre-activation.
    pub pre3: &'a [f32],
    /// fc1's weight as `[5·5·64, 16]`: one row of 16 per conv2 output value.
    pub fc1_rows: &'a [f32],
    /// Pooled conv2 cells (rows, columns) whose inputs see the trigger: outside
    /// them a triggered image's activations equal its clean twin's.
    pub trigger_cells: [Range<usize>; 2],
}

/// One ablation set that starts at conv1, as plain numbers.
pub struct Conv1Ablation {
    /// The ablated conv1 units' kernels `[u, 9]` and biases `[u]`.
    pub kernels: Vec<f32>,
    pub biases: Vec<f32>,
    /// What each ablated unit outputs instead, on the 12×12 corner conv2 reads: `[u, 144]`.
    pub constants: Vec<f32>,
    /// conv2's weights from those units, `[u, 9, 64]` (tap-major, output channel inner).
    pub taps: Vec<f32>,
    /// conv2 channels the same set ablates, and what each outputs per cell `[k, 25]`.
    pub conv2_channels: Vec<usize>,
    pub conv2_values: Vec<f32>,
}

impl Conv1Ablation {
    fn units(&self) -> usize {
        self.biases.len()
    }

    /// constant − actual pooled ReLU output of each ablated unit on one image,
    /// `[u, 144]`, on pooled rows `rows`.
    #[inline(always)]
    fn change_maps<L: Lanes>(&self, image: &[f32], rows: Range<usize>, change: &mut [f32]) {
        for (u, map) in change.chunks_exact_mut(MAP).take(self.units()).enumerate() {
            let constant = &self.constants[u * MAP..(u + 1) * MAP];
            L::pooled_change(image, &self.kernels[u * 9..u * 9 + 9], self.biases[u], constant, rows.clone(), map);
        }
    }

    /// Whether any input of pooled cell (`row`, `col`) changes: the 4×4 window of
    /// conv1 outputs its four conv2 positions read.
    #[inline(always)]
    fn cell_changes(&self, change: &[f32], row: usize, col: usize) -> bool {
        (0..self.units()).any(|u| {
            (0..4).any(|dr| {
                let start = u * MAP + (2 * row + dr) * H1 + 2 * col;
                change[start..start + 4].iter().any(|&v| v != 0.0)
            })
        })
    }

    /// The pooled, ReLU'd conv2 output of one cell after the change, then the
    /// set's conv2 replacements; `false` (and `old` copied) when nothing in it
    /// changes.
    #[inline(always)]
    fn cell<L: Lanes>(
        &self,
        pre2: &[f32],
        old: &[f32],
        change: &[f32],
        (row, col): (usize, usize),
        out: &mut [f32; CHANNELS],
    ) -> bool {
        let moved = self.cell_changes(change, row, col);
        if moved {
            L::pooled_cell(pre2, change, &self.taps, (row, col), out);
        } else {
            out.copy_from_slice(old);
        }
        for (k, &channel) in self.conv2_channels.iter().enumerate() {
            out[channel] = self.conv2_values[k * H2 * H2 + row * H2 + col];
        }
        moved || !self.conv2_channels.is_empty()
    }
}

/// fc1's pre-activation `[2N, 16]` for each of `ablations` (N clean rows, then N
/// triggered), on up to `set_threads`' threads.
pub fn conv1_ablated_pre3(inputs: &Conv1Inputs, ablations: &[Conv1Ablation]) -> Vec<Vec<f32>> {
    let n = inputs.pre3.len() / FC1 / 2;
    let per_thread = n.div_ceil(threads()).max(1);
    let ranges: Vec<Range<usize>> = (0..n).step_by(per_thread).map(|s| s..(s + per_thread).min(n)).collect();
    let parts: Vec<Vec<Vec<f32>>> = std::thread::scope(|scope| {
        let handles: Vec<_> =
            ranges.iter().map(|r| scope.spawn(|| image_pairs(inputs, ablations, r.clone()))).collect();
        handles.into_iter().map(|h| h.join().expect("the conv1 kernel does not panic")).collect()
    });
    (0..ablations.len())
        .map(|a| {
            let mut out = vec![0f32; 2 * n * FC1];
            for (range, part) in ranges.iter().zip(&parts) {
                let (clean, triggered) = part[a].split_at(range.len() * FC1);
                out[range.start * FC1..range.end * FC1].copy_from_slice(clean);
                out[(n + range.start) * FC1..(n + range.end) * FC1].copy_from_slice(triggered);
            }
            out
        })
        .collect()
}

/// fc1 pre-activations for clean images `pairs` and their triggered twins: per
/// ablation, `pairs.len()` clean rows then as many triggered rows.
fn image_pairs(inputs: &Conv1Inputs, ablations: &[Conv1Ablation], pairs: Range<usize>) -> Vec<Vec<f32>> {
    #[cfg(target_arch = "x86_64")]
    if Avx512::available() {
        // SAFETY: the CPU has AVX-512F, AVX2 and FMA, checked just above.
        return unsafe { image_pairs_avx512(inputs, ablations, pairs) };
    }
    #[cfg(target_arch = "x86_64")]
    if Avx2Fma::available() {
        // SAFETY: the CPU has AVX2 and FMA, checked just above.
        return unsafe { image_pairs_avx2(inputs, ablations, pairs) };
    }
    image_pairs_with::<Portable>(inputs, ablations, pairs)
}

/// The loop compiled for AVX2 (the 3×3 convolutions vectorise too).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn image_pairs_avx2(inputs: &Conv1Inputs, ablations: &[Conv1Ablation], pairs: Range<usize>) -> Vec<Vec<f32>> {
    image_pairs_with::<Avx2Fma>(inputs, ablations, pairs)
}

/// The loop with AVX-512's `pooled_cell`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn image_pairs_avx512(inputs: &Conv1Inputs, ablations: &[Conv1Ablation], pairs: Range<usize>) -> Vec<Vec<f32>> {
    image_pairs_with::<Avx512>(inputs, ablations, pairs)
}

#[inline(always)]
fn image_pairs_with<L: Lanes>(inputs: &Conv1Inputs, ablations: &[Conv1Ablation], pairs: Range<usize>) -> Vec<Vec<f32>> {
    let n = inputs.pre3.len() / FC1 / 2;
    let len = pairs.len();
    let most_units = ablations.iter().map(Conv1Ablation::units).max().unwrap_or(0);
    let mut change = vec![0f32; most_units * MAP];
    let mut clean_cells = [[0f32; CHANNELS]; H2 * H2];
    // The cached (unablated) block output of an image's cells, and of its twin's.
    let mut cached_cells = [[0f32; CHANNELS]; H2 * H2];
    let mut twin_cells = [[0f32; CHANNELS]; H2 * H2];
    let mut fresh = [0f32; CHANNELS];
    // A triggered twin's pre-activation laid out as a whole image's, written only
    // on the lines its trigger cells read (the only ones read back).
    let mut twin_pre2 = vec![0f32; PRE2_LEN];
    let [trigger_rows, trigger_cols] = &inputs.trigger_cells;
    let twin_lines = [2 * trigger_rows.start..2 * trigger_rows.end, 2 * trigger_cols.start..2 * trigger_cols.end];
    let twin_len = twin_lines[0].len() * twin_lines[1].len() * CHANNELS;
    // A cell reads pooled conv1 rows 2q ..= 2q+3.
    let trigger_map_rows = 2 * trigger_rows.start..(2 * trigger_rows.end + 2).min(H1);
    let fc1_rows = |cell: usize| &inputs.fc1_rows[cell * CHANNELS * FC1..(cell + 1) * CHANNELS * FC1];
    let mut outputs: Vec<Vec<f32>> = ablations.iter().map(|_| vec![0f32; 2 * len * FC1]).collect();
    for (k, i) in pairs.clone().enumerate() {
        if i + 1 < pairs.end {
            prefetch(&inputs.pre2[(i + 1) * PRE2_LEN..(i + 2) * PRE2_LEN]);
            prefetch(&inputs.images[(i + 1) * PIXELS..(i + 2) * PIXELS]);
        }
        let pre2 = &inputs.pre2[i * PRE2_LEN..][..PRE2_LEN];
        for (cell, cached) in cached_cells.iter_mut().enumerate() {
            pooled_relu_cell(pre2, (cell / H2, cell % H2), cached);
        }
        let lines = inputs.trigger_pre2[i * twin_len..(i + 1) * twin_len].chunks_exact(CHANNELS);
        let positions = twin_lines[0].clone().flat_map(|r| twin_lines[1].clone().map(move |c| r * P2 + c));
        for (position, line) in positions.zip(lines) {
            twin_pre2[position * CHANNELS..(position + 1) * CHANNELS].copy_from_slice(line);
        }
        for row in trigger_rows.clone() {
            for col in trigger_cols.clone() {
                pooled_relu_cell(&twin_pre2, (row, col), &mut twin_cells[row * H2 + col]);
            }
        }
        for (ablation, out) in ablations.iter().zip(outputs.iter_mut()) {
            let (clean_out, triggered_out) = out.split_at_mut(len * FC1);
            let mut pre3: [f32; FC1] = inputs.pre3[i * FC1..(i + 1) * FC1].try_into().expect("16 values");
            ablation.change_maps::<L>(&inputs.images[i * PIXELS..(i + 1) * PIXELS], 0..H1, &mut change);
            for (cell, new) in clean_cells.iter_mut().enumerate() {
                let old = &cached_cells[cell];
                if ablation.cell::<L>(pre2, old, &change, (cell / H2, cell % H2), new) {
                    L::add_fc1_change(&mut pre3, fc1_rows(cell), new, old);
                }
            }
            clean_out[k * FC1..(k + 1) * FC1].copy_from_slice(&pre3);
            // The triggered twin: the clean result, corrected where the trigger reaches.
            let t = n + i;
            if !trigger_rows.is_empty() && !trigger_cols.is_empty() {
                ablation.change_maps::<L>(
                    &inputs.images[t * PIXELS..(t + 1) * PIXELS],
                    trigger_map_rows.clone(),
                    &mut change,
                );
                for row in trigger_rows.clone() {
                    for col in trigger_cols.clone() {
                        let cell = row * H2 + col;
                        let old = &twin_cells[cell];
                        ablation.cell::<L>(&twin_pre2, old, &change, (row, col), &mut fresh);
                        L::add_fc1_change(&mut pre3, fc1_rows(cell), &fresh, &clean_cells[cell]);
                    }
                }
            }
            triggered_out[k * FC1..(k + 1) * FC1].copy_from_slice(&pre3);
        }
    }
    outputs
}

/// `out = ReLU(max over the 4 positions of pooled cell (row, col))` of one image's
/// `[10·10, 64]` conv2 pre-activation: its cached block output, as libtorch pools
/// it (maxima are exact, so the order does not matter).
#[inline(always)]
fn pooled_relu_cell(pre2: &[f32], (row, col): (usize, usize), out: &mut [f32; CHANNELS]) {
    out.fill(0.0);
    for (r, c) in cell_positions(row, col) {
        for (o, &v) in out.iter_mut().zip(&pre2[(r * P2 + c) * CHANNELS..][..CHANNELS]) {
            *o = o.max(v);
        }
    }
}

/// Asks for `data` to be brought into L2 ahead of use: an image's activations are
/// read in a 2-D pattern the hardware prefetcher follows too late.
#[inline(always)]
fn prefetch(data: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    for line in data.chunks(16) {
        // SAFETY: a prefetch is a hint; it never faults and the address is in bounds.
        unsafe { std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T1 }>(line.as_ptr().cast()) };
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::super::lanes::testing::{assert_close, values};
    use super::*;

    /// The whole loop, generic over its inner loops, gives the same fc1
    /// pre-activations with the portable ones as with the intrinsics (the machine
    /// that runs the tests only ever takes its widest path otherwise).
    #[test]
    fn the_portable_loop_agrees_with_the_avx2_loop() {
        if !crate::engine::cpu::testing::runs(
            crate::engine::cpu::CpuPath::Avx2,
            "kernels: the AVX2 ablation loop against the portable one",
        ) {
            return;
        }
        let n = 3;
        let (images, pre2) = (values(2 * n * PIXELS, 1), values(n * PRE2_LEN, 2));
        let trigger_pre2 = values(n * 4 * 2 * CHANNELS, 10);
        let (pre3, fc1_rows) = (values(2 * n * FC1, 4), values(H2 * H2 * CHANNELS * FC1, 5));
        let inputs = Conv1Inputs {
            images: &images,
            pre2: &pre2,
            trigger_pre2: &trigger_pre2,
            pre3: &pre3,
            fc1_rows: &fc1_rows,
            trigger_cells: [3..5, 4..5],
        };
        let ablation = Conv1Ablation {
            kernels: values(2 * 9, 6),
            biases: vec![0.1, -0.2],
            constants: values(2 * MAP, 7),
            taps: values(2 * 9 * CHANNELS, 8),
            conv2_channels: vec![3, 40],
            conv2_values: values(2 * H2 * H2, 9),
        };
        let ablations = [ablation];
        let portable = image_pairs_with::<Portable>(&inputs, &ablations, 0..n);
        // SAFETY: the CPU has AVX2 and FMA, checked above.
        let simd = unsafe { image_pairs_avx2(&inputs, &ablations, 0..n) };
        assert_close(&portable[0], &simd[0], 1e-4);
        if crate::engine::cpu::testing::runs(
            crate::engine::cpu::CpuPath::Avx512,
            "kernels: the AVX-512 ablation loop against the portable one",
        ) {
            // SAFETY: the CPU has AVX-512F, checked just above.
            let wide = unsafe { image_pairs_avx512(&inputs, &ablations, 0..n) };
            assert_close(&portable[0], &wide[0], 1e-4);
        }
        // Clean rows first, then triggered rows, each moved off the cached values.
        assert_eq!(portable[0].len(), 2 * n * FC1);
        let moved = portable[0][..n * FC1].iter().zip(&pre3[..n * FC1]).filter(|(a, b)| (*a - *b).abs() > 1e-3);
        assert!(moved.count() > n * FC1 / 2);
        assert_ne!(portable[0][..FC1], portable[0][n * FC1..(n + 1) * FC1], "the triggered twin differs");
    }
}
