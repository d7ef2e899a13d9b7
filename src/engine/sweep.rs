//! Single-unit sweeps: every unit of a layer ablated alone.

use super::ablation::{AblationMode, AblationSet};
use super::cache::ActivationCache;
use super::layer::Layer;
use super::metrics::Metrics;
use super::testset::TestSet;
use serde::{Deserialize, Serialize};
use std::ops::ControlFlow;

/// Units evaluated per pass: enough to share the memory traffic, few enough that
/// progress (and cancellation) comes several times a second.
const SWEEP_BATCH: usize = 8;

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
        for (&unit, predictions) in batch.iter().zip(cache.predict_many(test, &sets, mode)) {
            rows.push(SweepRow { layer, unit, metrics: test.metrics(&predictions) });
        }
        if progress(rows.len(), layer.units()).is_break() {
            break;
        }
    }
    rows
}

/// The `n` units whose lone ablation leaves the lowest poison accuracy.
pub fn most_backdoor_relevant(rows: &[SweepRow], n: usize) -> Vec<usize> {
    let mut sorted: Vec<&SweepRow> = rows.iter().collect();
    sorted.sort_by(|a, b| a.metrics.poison_acc.total_cmp(&b.metrics.poison_acc).then(a.unit.cmp(&b.unit)));
    sorted.into_iter().take(n).map(|r| r.unit).collect()
}
