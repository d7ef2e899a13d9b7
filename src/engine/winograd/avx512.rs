//! The AVX-512 loops of F(2×2, 3×3): the transforms, forward and backward, and
//! the matrix products between them.
//!
//! Every function here needs a CPU with AVX-512F (the callers check with
//! `available()`). Plain loops over arrays only: closures and `array::map` inside
//! these functions were not inlined into the AVX-512 code (a third of the
//! products' time in `perf`).

use super::{LANES, ROWS, VALUES};
use std::arch::x86_64::*;

/// Bᵀ applied to four vectors (B: the input transform).
#[inline]
#[target_feature(enable = "avx512f")]
fn input_transform([d0, d1, d2, d3]: [__m512; 4]) -> [__m512; 4] {
    [_mm512_sub_ps(d0, d2), _mm512_add_ps(d1, d2), _mm512_sub_ps(d2, d1), _mm512_sub_ps(d1, d3)]
}

/// B applied to four vectors: the input transform's transpose, for the gradient.
#[inline]
#[target_feature(enable = "avx512f")]
fn input_transform_transposed([v0, v1, v2, v3]: [__m512; 4]) -> [__m512; 4] {
    let zero = _mm512_setzero_ps();
    [v0, _mm512_add_ps(_mm512_sub_ps(v1, v2), v3), _mm512_add_ps(_mm512_sub_ps(v1, v0), v2), _mm512_sub_ps(zero, v3)]
}

/// Aᵀ applied to four vectors (A: the output transform).
#[inline]
#[target_feature(enable = "avx512f")]
fn output_transform([m0, m1, m2, m3]: [__m512; 4]) -> [__m512; 2] {
    [_mm512_add_ps(_mm512_add_ps(m0, m1), m2), _mm512_sub_ps(_mm512_sub_ps(m1, m2), m3)]
}

/// A applied to two vectors: the output transform's transpose, for the gradient.
#[inline]
#[target_feature(enable = "avx512f")]
fn output_transform_transposed([y0, y1]: [__m512; 2]) -> [__m512; 4] {
    [y0, _mm512_add_ps(y0, y1), _mm512_sub_ps(y0, y1), _mm512_sub_ps(_mm512_setzero_ps(), y1)]
}

/// The 4×4 input block whose top-left value is `window[0]` (rows `row_len`
/// apart, `cin` channels per position) transformed to
/// `transformed[value, block, ..]` (`[16, blocks, Cin]`).
///
/// # Safety
/// AVX-512F; `cin` is a multiple of 16.
#[target_feature(enable = "avx512f")]
pub unsafe fn transform_block(
    window: &[f32],
    row_len: usize,
    cin: usize,
    transformed: &mut [f32],
    blocks: usize,
    block: usize,
) {
    assert!(window.len() >= 3 * row_len + 4 * cin && transformed.len() >= VALUES * blocks * cin && block < blocks);
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

/// The gradient at a 4×4 input block from the gradient at its transformed values
/// (`slot` of `values`, `[16, ROWS, Cin]`), added to the block whose top-left
/// value is `window[0]` (rows `row_len` apart): neighbouring blocks overlap.
///
/// # Safety
/// AVX-512F; `cin` is a multiple of 16.
#[target_feature(enable = "avx512f")]
pub unsafe fn add_block_gradient(values: &[f32], slot: usize, cin: usize, window: &mut [f32], row_len: usize) {
    assert!(slot < ROWS && values.len() >= VALUES * ROWS * cin && window.len() >= 3 * row_len + 4 * cin);
    for lane in (0..cin).step_by(LANES) {
        let mut v = [[_mm512_setzero_ps(); 4]; 4];
        for (r, row) in v.iter_mut().enumerate() {
            for (c, x) in row.iter_mut().enumerate() {
                *x = unsafe { _mm512_loadu_ps(values.as_ptr().add(((r * 4 + c) * ROWS + slot) * cin + lane)) };
            }
        }
        let mut rows = [[_mm512_setzero_ps(); 4]; 4]; // B v
        for c in 0..4 {
            let column = input_transform_transposed([v[0][c], v[1][c], v[2][c], v[3][c]]);
            for (row, x) in rows.iter_mut().zip(column) {
                row[c] = x;
            }
        }
        for (r, values) in rows.into_iter().enumerate() {
            for (c, x) in input_transform_transposed(values).into_iter().enumerate() {
                let at = unsafe { window.as_mut_ptr().add(r * row_len + c * cin + lane) };
                unsafe { _mm512_storeu_ps(at, _mm512_add_ps(_mm512_loadu_ps(at), x)) };
            }
        }
    }
}

/// A matrix read one value at a time and broadcast: value (row, k) at
/// `data[row · row_stride + k · k_stride]`.
pub struct Broadcast<'a> {
    pub data: &'a [f32],
    pub row_stride: usize,
    pub k_stride: usize,
}

/// A matrix read 16 values at a time along its rows: value (k, column) at
/// `data[k · stride + column]`.
pub struct Dense<'a> {
    pub data: &'a [f32],
    pub stride: usize,
}

/// `out[row · out_stride + column] (+)= Σₖ a(row, k) · b(k, column)` for `rows`
/// rows, `depth` values of k and `columns` columns; adds to `out` when
/// `accumulate`, else overwrites it.
///
/// # Safety
/// AVX-512F.
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)] // one matrix product's sizes, spelled out
pub unsafe fn product(
    rows: usize,
    depth: usize,
    columns: usize,
    a: &Broadcast,
    b: &Dense,
    out: &mut [f32],
    out_stride: usize,
    accumulate: bool,
) {
    if rows == 0 || depth == 0 {
        return;
    }
    let last_a = (rows - 1) * a.row_stride + (depth - 1) * a.k_stride;
    assert!(columns.is_multiple_of(LANES) && a.data.len() > last_a);
    assert!(b.data.len() >= (depth - 1) * b.stride + columns && out.len() >= (rows - 1) * out_stride + columns);
    for first in (0..rows).step_by(ROWS) {
        let count = ROWS.min(rows - first);
        let a_rows = unsafe { a.data.as_ptr().add(first * a.row_stride) };
        let out_rows = unsafe { out.as_mut_ptr().add(first * out_stride) };
        let mut col = 0;
        while col < columns {
            let wide = columns - col >= 4 * LANES;
            let (b_cols, out_cols) = unsafe { (b.data.as_ptr().add(col), out_rows.add(col)) };
            let t = Tile {
                a: a_rows,
                row_stride: a.row_stride,
                k_stride: a.k_stride,
                depth,
                b: b_cols,
                b_stride: b.stride,
            };
            // SAFETY: every row, k and column the tile touches lies inside the
            // slices (the asserts above bound the last of each).
            unsafe {
                match wide {
                    true => t.rows::<4>(count, out_cols, out_stride, accumulate),
                    false => t.rows::<1>(count, out_cols, out_stride, accumulate),
                }
            }
            col += if wide { 4 * LANES } else { LANES };
        }
    }
}

/// For each of the 16 transformed values, rows `first..first + count` of `a`
/// (`[16, rows, depth]`) times `b` (`[16, depth, columns]`) into `out` (`[16,
/// ROWS, columns]`): the forward's products (blocks × input channels times the
/// kernel) and the input gradient's (blocks × output channels times the
/// transposed kernel).
///
/// # Safety
/// AVX-512F.
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)] // the products' sizes, spelled out
pub unsafe fn value_products(
    a: &[f32],
    rows: usize,
    first: usize,
    count: usize,
    depth: usize,
    b: &[f32],
    columns: usize,
    out: &mut [f32],
) {
    for value in 0..VALUES {
        let a = Broadcast { data: &a[(value * rows + first) * depth..], row_stride: depth, k_stride: 1 };
        let b = Dense { data: &b[value * depth * columns..], stride: columns };
        // SAFETY: AVX-512F, the caller's promise; `product` checks the bounds.
        unsafe { product(count, depth, columns, &a, &b, &mut out[value * ROWS * columns..], columns, false) };
    }
}

/// One register tile of `product`: its operands' first row and column.
struct Tile {
    a: *const f32,
    row_stride: usize,
    k_stride: usize,
    depth: usize,
    b: *const f32,
    b_stride: usize,
}

impl Tile {
    /// `count` (≤ `ROWS`) rows × `C`·16 columns.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn rows<const C: usize>(&self, count: usize, out: *mut f32, out_stride: usize, accumulate: bool) {
        // SAFETY: as the caller's.
        unsafe {
            match count {
                6 => self.run::<6, C>(out, out_stride, accumulate),
                5 => self.run::<5, C>(out, out_stride, accumulate),
                4 => self.run::<4, C>(out, out_stride, accumulate),
                3 => self.run::<3, C>(out, out_stride, accumulate),
                2 => self.run::<2, C>(out, out_stride, accumulate),
                _ => self.run::<1, C>(out, out_stride, accumulate),
            }
        }
    }

    /// `R` rows × `C`·16 columns, held in R × C registers over the whole depth.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn run<const R: usize, const C: usize>(&self, out: *mut f32, out_stride: usize, accumulate: bool) {
        let mut acc = [[_mm512_setzero_ps(); C]; R];
        if accumulate {
            for (r, sums) in acc.iter_mut().enumerate() {
                for (j, s) in sums.iter_mut().enumerate() {
                    *s = unsafe { _mm512_loadu_ps(out.add(r * out_stride + j * LANES)) };
                }
            }
        }
        for k in 0..self.depth {
            let mut w = [_mm512_setzero_ps(); C];
            for (j, w) in w.iter_mut().enumerate() {
                *w = unsafe { _mm512_loadu_ps(self.b.add(k * self.b_stride + j * LANES)) };
            }
            for (r, sums) in acc.iter_mut().enumerate() {
                let v = _mm512_set1_ps(unsafe { *self.a.add(r * self.row_stride + k * self.k_stride) });
                for (s, &w) in sums.iter_mut().zip(&w) {
                    *s = _mm512_fmadd_ps(v, w, *s);
                }
            }
        }
        for (r, sums) in acc.iter().enumerate() {
            for (j, &s) in sums.iter().enumerate() {
                unsafe { _mm512_storeu_ps(out.add(r * out_stride + j * LANES), s) };
            }
        }
    }
}

/// A block's 2×2 outputs (channel lanes `lane..lane + 16`) from its products in
/// `slot` of `products` (`[16, ROWS, Cout]`): `y[column][row]`, before the bias.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn block_outputs(products: &[f32], slot: usize, cout: usize, lane: usize) -> [[__m512; 2]; 2] {
    let mut m = [_mm512_setzero_ps(); VALUES];
    for (value, v) in m.iter_mut().enumerate() {
        *v = unsafe { _mm512_loadu_ps(products.as_ptr().add((value * ROWS + slot) * cout + lane)) };
    }
    let mut rows = [[_mm512_setzero_ps(); 2]; 4]; // m A by rows
    for (r, row) in rows.iter_mut().enumerate() {
        *row = output_transform([m[4 * r], m[4 * r + 1], m[4 * r + 2], m[4 * r + 3]]);
    }
    let mut y = [[_mm512_setzero_ps(); 2]; 2];
    for (c, column) in y.iter_mut().enumerate() {
        *column = output_transform([rows[0][c], rows[1][c], rows[2][c], rows[3][c]]);
    }
    y
}

/// Where a block's outputs go.
pub enum Destination<'a> {
    /// Its 2×2 pre-activations, biased, at `at[0..4]` (offsets into `out`, one per
    /// position of the pooling window, row-major).
    PreActivation { out: &'a mut [f32], at: [usize; 4] },
    /// Its pooled and ReLU'd value at `out[at]`; with `argmax`, also the pooling
    /// window's position (0–3, row-major; the first on ties, as libtorch's
    /// pooling) that held the maximum, at `argmax[at]`.
    Pooled { out: &'a mut [f32], argmax: Option<&'a mut [f32]>, at: usize },
}

/// The block in `slot` of `products` (`[16, ROWS, Cout]`) transformed back to its
/// outputs, biased, and written to `to`.
///
/// # Safety
/// AVX-512F; Cout is a multiple of 16.
#[target_feature(enable = "avx512f")]
pub unsafe fn outputs(products: &[f32], slot: usize, bias: &[f32], to: Destination) {
    let cout = bias.len();
    assert!(slot < ROWS && products.len() >= VALUES * ROWS * cout && cout.is_multiple_of(LANES));
    match to {
        Destination::PreActivation { out, at } => {
            assert!(at.iter().all(|&at| at + cout <= out.len()));
            for lane in (0..cout).step_by(LANES) {
                let y = unsafe { block_outputs(products, slot, cout, lane) };
                let b = unsafe { _mm512_loadu_ps(bias.as_ptr().add(lane)) };
                for (&at, (r, c)) in at.iter().zip(super::super::lanes::POOL_WINDOW) {
                    unsafe { _mm512_storeu_ps(out.as_mut_ptr().add(at + lane), _mm512_add_ps(y[c][r], b)) };
                }
            }
        }
        Destination::Pooled { out, mut argmax, at } => {
            assert!(at + cout <= out.len() && argmax.as_ref().is_none_or(|a| at + cout <= a.len()));
            for lane in (0..cout).step_by(LANES) {
                let y = unsafe { block_outputs(products, slot, cout, lane) };
                let b = unsafe { _mm512_loadu_ps(bias.as_ptr().add(lane)) };
                // max(y) + b rounds as max(y + b) does: rounding is monotone.
                let window = [y[0][0], y[1][0], y[0][1], y[1][1]]; // row-major
                let best = _mm512_max_ps(_mm512_max_ps(window[0], window[1]), _mm512_max_ps(window[2], window[3]));
                let pooled = _mm512_max_ps(_mm512_add_ps(best, b), _mm512_setzero_ps());
                unsafe { _mm512_storeu_ps(out.as_mut_ptr().add(at + lane), pooled) };
                if let Some(argmax) = argmax.as_deref_mut() {
                    let mut index = _mm512_set1_ps(3.0);
                    for position in (0..3).rev() {
                        let here = _mm512_cmp_ps_mask::<_CMP_EQ_OQ>(window[position], best);
                        index = _mm512_mask_mov_ps(index, here, _mm512_set1_ps(position as f32));
                    }
                    unsafe { _mm512_storeu_ps(argmax.as_mut_ptr().add(at + lane), index) };
                }
            }
        }
    }
}

/// The gradient at a pooled block's 16 products (`[16, blocks, Cout]`, block
/// `block`) from the gradient at its pooled, ReLU'd output (`upstream`), which
/// flows through the ReLU where `output` > 0 and to the window position in
/// `argmax`; that gradient is also the bias's, added to `bias_sum`.
///
/// # Safety
/// AVX-512F; Cout is a multiple of 16.
#[target_feature(enable = "avx512f")]
pub unsafe fn pooled_gradient(
    upstream: &[f32],
    output: &[f32],
    argmax: &[f32],
    gradient: &mut [f32],
    blocks: usize,
    block: usize,
    bias_sum: &mut [f32],
) {
    let cout = upstream.len();
    assert!(output.len() == cout && argmax.len() == cout && bias_sum.len() == cout && cout.is_multiple_of(LANES));
    assert!(block < blocks && gradient.len() >= VALUES * blocks * cout);
    let zero = _mm512_setzero_ps();
    for lane in (0..cout).step_by(LANES) {
        let (up, out, index) = unsafe {
            let at = |s: &[f32]| s.as_ptr().add(lane);
            (_mm512_loadu_ps(at(upstream)), _mm512_loadu_ps(at(output)), _mm512_loadu_ps(at(argmax)))
        };
        let passed = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(out, zero);
        let g = _mm512_maskz_mov_ps(passed, up);
        let bias = unsafe { bias_sum.as_mut_ptr().add(lane) };
        unsafe { _mm512_storeu_ps(bias, _mm512_add_ps(_mm512_loadu_ps(bias), g)) };
        let mut window = [zero; 4]; // row-major: y[row][column]
        for (position, y) in window.iter_mut().enumerate() {
            let here = _mm512_cmp_ps_mask::<_CMP_EQ_OQ>(index, _mm512_set1_ps(position as f32));
            *y = _mm512_maskz_mov_ps(here, g);
        }
        // A dY Aᵀ: A applied to each column, then to each row.
        let left = output_transform_transposed([window[0], window[2]]);
        let right = output_transform_transposed([window[1], window[3]]);
        for (r, (&l, &rr)) in left.iter().zip(&right).enumerate() {
            for (c, v) in output_transform_transposed([l, rr]).into_iter().enumerate() {
                let to = ((r * 4 + c) * blocks + block) * cout + lane;
                unsafe { _mm512_storeu_ps(gradient.as_mut_ptr().add(to), v) };
            }
        }
    }
}
