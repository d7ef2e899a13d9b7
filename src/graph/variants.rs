//! Many variants of one model over the test set, sharing work per chunk of
//! images: what a sweep (one unit ablated at a time) and a pruning curve (the
//! first k units of an order) have in common.

use crate::engine::metrics::Metrics;
use crate::engine::testset::{self, TestSet};
use std::ops::ControlFlow;
use tch::{Device, Kind, Tensor};

/// The metrics of `count` variants over `raw`. Per chunk of images, `prepare`
/// computes what the variants share (a checkpoint, the unablated pass), then
/// `logits(shared, chunk, v)` gives variant `v`'s logits. `progress(done, total)`
/// is told after every variant of every chunk and may stop early: then only the
/// variants that saw every chunk (the first ones) have metrics.
pub fn metrics_of_variants<S>(
    raw: &TestSet,
    device: Device,
    count: usize,
    mut prepare: impl FnMut(&Tensor) -> S,
    mut logits: impl FnMut(&S, &Tensor, usize) -> Tensor,
    mut progress: impl FnMut(usize, usize) -> ControlFlow<()>,
) -> Vec<Metrics> {
    let _guard = tch::no_grad_guard();
    let chunks = raw.inputs.split(testset::chunk(device), 0);
    // Every prediction written into one tensor made up front: small tensors kept
    // across the loop would sit between its large transient ones and fragment the
    // heap, which is never trimmed (alloc.rs): gigabytes on the full test set.
    let predictions = Tensor::zeros([count as i64, raw.inputs.size()[0]], (Kind::Int64, device));
    let total = chunks.len() * count;
    let (mut start, mut complete) = (0, count);
    'chunks: for (c, x) in chunks.iter().enumerate() {
        let shared = prepare(x);
        let len = x.size()[0];
        for v in 0..count {
            predictions.get(v as i64).narrow(0, start, len).copy_(&logits(&shared, x, v).argmax(1, false));
            if progress(c * count + v + 1, total).is_break() {
                // Only the variants before this one saw this chunk.
                complete = if c + 1 == chunks.len() { v + 1 } else { 0 };
                break 'chunks;
            }
        }
        start += len;
    }
    let complete: Vec<Tensor> = (0..complete as i64).map(|v| predictions.get(v)).collect();
    raw.metrics_of_many(&complete)
}
