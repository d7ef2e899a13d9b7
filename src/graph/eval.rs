//! Evaluating a graph on the test set: the study's metrics, from raw pixels.

use super::exec::{Executor, Intervention};
use crate::data::dataset::Normalisation;
use crate::engine::metrics::Metrics;
use crate::engine::testset::TestSet;
use std::ops::ControlFlow;

/// The test set in raw pixels, which a graph takes (its first node normalises):
/// the study's test set holds normalised images with the trigger added there.
pub fn raw_test_set(test: &TestSet, norm: Normalisation) -> TestSet {
    let inputs = norm.denormalise(&test.inputs);
    TestSet { inputs, labels: test.labels.clone(), relabel: test.relabel, classes: test.classes }
}

/// The metrics of the graph on `raw` with `interventions`.
pub fn evaluate(exec: &Executor, raw: &TestSet, interventions: &[Intervention]) -> Metrics {
    evaluate_until(exec, raw, interventions, || ControlFlow::Continue(())).expect("never stopped")
}

/// `evaluate`, asking `go_on` before and between chunks of images (the explorer
/// drops an answer nobody waits for any more); `None` when it said stop.
pub fn evaluate_until(
    exec: &Executor,
    raw: &TestSet,
    interventions: &[Intervention],
    go_on: impl FnMut() -> ControlFlow<()>,
) -> Option<Metrics> {
    // The triggered half are the clean half's twins: computed from their pass.
    exec.twin_predictions_until(&raw.inputs, interventions, go_on).map(|p| raw.metrics(&p))
}
