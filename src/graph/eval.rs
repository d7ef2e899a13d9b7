//! Evaluating a graph on the test set: the study's metrics, from raw pixels.

use super::exec::{Executor, Intervention};
use crate::data::dataset::Normalisation;
use crate::engine::metrics::Metrics;
use crate::engine::testset::TestSet;

/// The test set in raw pixels, which a graph takes (its first node normalises):
/// the study's test set holds normalised images with the trigger added there.
pub fn raw_test_set(test: &TestSet, norm: Normalisation) -> TestSet {
    let inputs = &test.inputs * norm.std + norm.mean;
    TestSet { inputs, labels: test.labels.clone(), target: test.target }
}

/// The metrics of the graph on `raw` with `interventions`.
pub fn evaluate(exec: &Executor, raw: &TestSet, interventions: &[Intervention]) -> Metrics {
    raw.metrics(&exec.predictions(&raw.inputs, interventions))
}
