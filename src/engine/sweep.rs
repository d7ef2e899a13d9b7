//! Single-unit sweeps: every unit of a layer ablated alone.

use super::ablation::{self, AblationMode, AblationSet};
use super::cache::ActivationCache;
use super::layer::Layer;
use super::metrics::Metrics;
use super::model::Net;
use super::testset::TestSet;
use serde::{Deserialize, Serialize};
use std::ops::ControlFlow;
use tch::Tensor;

/// Units evaluated per pass: enough to share the memory traffic, few enough that
/// progress (and cancellation) comes several times a second.
const SWEEP_BATCH: usize = 8;

/// Test images per slice of `sweep_streamed`: a slice's cache (about 70 MB) takes
/// the heap memory the previous slice's freed, so only the first slice's pages are
/// fresh.
const SLICE: usize = 2_500;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SweepRow {
    pub layer: Layer,
    pub unit: usize,
    pub metrics: Metrics,
}

/// Ablates each unit of `layer` alone. `progress(done, total)` may stop the sweep
/// early by returning `Break`; the rows done so far are returned.
pub fn sweep(
    cache: &ActivationCache,
    test: &TestSet,
    layer: Layer,
    mode: AblationMode,
    mut progress: impl FnMut(usize, usize) -> ControlFlow<()>,
) -> Vec<SweepRow> {
    let mut rows = Vec::with_capacity(layer.units());
    // Batches of units share one pass over the cached activations.
    for batch in (0..layer.units()).collect::<Vec<_>>().chunks(SWEEP_BATCH) {
        let sets: Vec<AblationSet> = batch.iter().map(|&u| AblationSet::single(layer, u)).collect();
        // One device → host copy per pass, not per unit.
        let metrics = test.metrics_of_many(&cache.predict_many(test, &sets, mode));
        rows.extend(batch.iter().zip(metrics).map(|(&unit, metrics)| SweepRow { layer, unit, metrics }));
        if progress(rows.len(), layer.units()).is_break() {
            break;
        }
    }
    rows
}

/// `sweep` for a command that sweeps once: the test set passes in slices, each
/// slice's activation cache is built, swept and dropped, so the whole set's cache
/// is never held. That cache is hundreds of MB of fresh memory whose page faults
/// cost about a third of building it here (`sweep conv1`: 115,600 faults, 0.22 s of
/// system time). Every image is computed as in `sweep`, so the rows are the same.
/// `progress(done, total)` counts units in proportion to the slices done; a
/// `Break` stops the sweep and returns no rows (a unit's metrics need every slice).
pub fn sweep_streamed(
    net: &Net,
    test: &TestSet,
    layer: Layer,
    mode: AblationMode,
    mut progress: impl FnMut(usize, usize) -> ControlFlow<()>,
) -> Vec<SweepRow> {
    // The mean mode's constants average the whole test set, not a slice.
    let means = (mode == AblationMode::Mean).then(|| ablation::clean_means(net, &test.clean()));
    let sets: Vec<AblationSet> = (0..layer.units()).map(|u| AblationSet::single(layer, u)).collect();
    // Per unit, its predictions on each slice's clean images, then on their twins.
    let mut halves: Vec<[Vec<Tensor>; 2]> = sets.iter().map(|_| Default::default()).collect();
    let starts: Vec<usize> = (0..test.len()).step_by(SLICE).collect();
    for (done, &start) in starts.iter().enumerate() {
        let slice = test.slice(start, SLICE.min(test.len() - start));
        let cache = ActivationCache::build(net, &slice).with_means(means.as_deref());
        for (unit, predictions) in halves.iter_mut().zip(cache.predict_many(&slice, &sets, mode)) {
            for (half, part) in unit.iter_mut().zip(predictions.split(slice.len() as i64, 0)) {
                half.push(part);
            }
        }
        if progress((done + 1) * sets.len() / starts.len(), sets.len()).is_break() {
            return Vec::new();
        }
    }
    let predictions: Vec<Tensor> = halves
        .into_iter()
        .map(|[mut predictions, triggered]| {
            predictions.extend(triggered);
            Tensor::cat(&predictions, 0)
        })
        .collect();
    // One device → host copy for the whole layer.
    let metrics = test.metrics_of_many(&predictions);
    metrics.into_iter().enumerate().map(|(unit, metrics)| SweepRow { layer, unit, metrics }).collect()
}

/// The `n` units whose lone ablation leaves the lowest poison accuracy.
pub fn most_backdoor_relevant(rows: &[SweepRow], n: usize) -> Vec<usize> {
    let mut sorted: Vec<&SweepRow> = rows.iter().collect();
    sorted.sort_by(|a, b| a.metrics.poison_acc.total_cmp(&b.metrics.poison_acc).then(a.unit.cmp(&b.unit)));
    sorted.into_iter().take(n).map(|r| r.unit).collect()
}
