//! Evaluating a graph on the test set: the study's metrics, from raw pixels.

use super::exec::{Executor, Intervention};
use crate::data::dataset::Normalisation;
use crate::engine::metrics::Metrics;
use crate::engine::testset::{self, TestSet};
use std::ops::ControlFlow;
use tch::Tensor;

/// The test set in raw pixels, which a graph takes (its first node normalises):
/// the study's test set holds normalised images with the trigger added there.
pub fn raw_test_set(test: &TestSet, norm: Normalisation) -> TestSet {
    let inputs = &test.inputs * norm.std + norm.mean;
    TestSet { inputs, labels: test.labels.clone(), target: test.target }
}

/// The metrics of the graph on `raw` with `interventions`.
pub fn evaluate(exec: &Executor, raw: &TestSet, interventions: &[Intervention]) -> Metrics {
    evaluate_until(exec, raw, interventions, || ControlFlow::Continue(())).expect("never stopped")
}

/// `evaluate`, asking `go_on` before each chunk of images (the explorer drops an
/// answer nobody waits for any more); `None` when it said stop.
pub fn evaluate_until(
    exec: &Executor,
    raw: &TestSet,
    interventions: &[Intervention],
    mut go_on: impl FnMut() -> ControlFlow<()>,
) -> Option<Metrics> {
    let _guard = tch::no_grad_guard();
    let mut predictions = Vec::new();
    for x in raw.inputs.split(testset::chunk(exec.device), 0) {
        if go_on().is_break() {
            return None;
        }
        predictions.push(exec.logits(&x, interventions).argmax(1, false));
    }
    Some(raw.metrics(&Tensor::cat(&predictions, 0)))
}
