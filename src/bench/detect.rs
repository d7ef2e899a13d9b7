//! Detection's figures: STRIP (N = 100) over 2,000 test inputs beside
//! benches/detect_pytorch.py on the same inputs and superimposed images, and
//! spectral signatures with activation clustering over the whole training set.

use super::graph::GraphFigure;
use super::{Figure, median_time, pytorch};
use crate::data::dataset::Normalisation;
use crate::data::loaded::Split;
use crate::engine::classifier::Classifier;
use crate::engine::detect::{FeatureNet, Populations, ac, all_features, spectral, strip, values};
use crate::engine::lab::Lab;
use crate::engine::testset::TestSet;
use crate::graph::detect::{GraphFeatures, feature_node};
use crate::graph::eval::raw_test_set;
use crate::graph::exec::Executor;
use serde::Deserialize;
use std::path::Path;
use std::process::Command;
use tch::{Device, Kind, Tensor};

pub const SCAN_FIGURE: &str = "spectral signatures + activation clustering over the training set";
/// The STRIP figure's name: N = 100 over `inputs` clean and as many triggered inputs.
pub fn strip_figure_name(inputs: usize) -> String {
    format!("STRIP (N = 100) over {} inputs", 2 * inputs)
}

/// STRIP's inputs, pool and draws, as both sides run them.
pub struct StripCase {
    clean: Tensor,
    triggered: Tensor,
    pool: Tensor,
    draws: [Vec<Vec<usize>>; 2],
    inputs: usize,
}

impl StripCase {
    /// `inputs` clean test images of `raw` and as many triggered (fewer on a small
    /// test set), superimposed with images of `train`.
    pub fn new(raw: &TestSet, train: &Split, device: Device, inputs: usize) -> StripCase {
        let p = Populations::of(raw, Some(inputs));
        let inputs = p.clean.size()[0].min(p.triggered.size()[0]) as usize;
        let (clean, triggered) = (p.clean.narrow(0, 0, inputs as i64), p.triggered.narrow(0, 0, inputs as i64));
        let pool = train.raw_images(device);
        let cfg = strip::StripConfig::default();
        let draws = [0, 1].map(|stream| strip::draws(train.len(), inputs, &cfg, stream));
        StripCase { clean, triggered, pool, draws, inputs }
    }

    /// The study's case: its test set and training images.
    pub fn of(lab: &Lab, inputs: usize) -> StripCase {
        let raw = raw_test_set(&lab.test, lab.data.test.normalisation);
        StripCase::new(&raw, &lab.data.train, lab.device, inputs)
    }
}

/// Our STRIP over both populations, `net` any classifier (the study's CNN, a graph).
pub fn measure_strip(net: &dyn Classifier, train: Normalisation, case: &StripCase, repeat: usize) -> Figure {
    let overlays = strip::overlays(&case.pool, train, 1.0);
    let (t, _) = median_time(repeat, || {
        strip::entropies(net, &case.clean, &overlays, &case.draws[0]);
        strip::entropies(net, &case.triggered, &overlays, &case.draws[1])
    });
    Figure::ours(&strip_figure_name(case.inputs), t)
}

#[derive(Deserialize)]
struct ScriptTime {
    seconds: f64,
}

/// benches/detect_pytorch.py's STRIP on the same case, `checkpoint` holding the model.
pub fn pytorch_strip(lab: &Lab, case: &StripCase, checkpoint: &Path, script: &Path) -> Result<f64, String> {
    let dir = std::env::temp_dir().join(format!("trojanscope-bench-strip-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let (case_path, draws_path) = (dir.join("case.safetensors"), dir.join("draws.json"));
    let tensors = [("clean", &case.clean), ("triggered", &case.triggered), ("pool", &case.pool)];
    Tensor::write_safetensors(&tensors, &case_path).map_err(|e| e.to_string())?;
    let draws = serde_json::json!({"clean": case.draws[0], "triggered": case.draws[1], "alpha": 1.0, "frr": 0.01});
    std::fs::write(&draws_path, draws.to_string()).map_err(|e| e.to_string())?;
    let mut command = Command::new(pytorch::python());
    command.arg(script).arg("strip").arg("--checkpoint").arg(checkpoint);
    command.arg("--case").arg(&case_path).arg("--draws").arg(&draws_path);
    command.args(["--dataset", lab.data.dataset.name(), "--threads", &tch::get_num_threads().to_string()]);
    let outcome = pytorch::last_json_line::<ScriptTime>(script, command).map(|t| t.seconds);
    let _ = std::fs::remove_dir_all(&dir);
    outcome
}

/// Features of every training image (read by `reader`: the study's CNN, a
/// graph), spectral signatures and AC, timed whole.
pub fn measure_scan(reader: &dyn FeatureNet, train: &Split, classes: usize, device: Device) -> Figure {
    let raw = train.raw_images(device);
    let labels: Vec<u8> = values(&train.label_tensor(device).to_kind(Kind::Double)).iter().map(|&l| l as u8).collect();
    let (t, _) = median_time(1, || {
        let features = all_features(reader, &raw);
        (spectral::scan(&features, &labels, classes), ac::scan(&features, &labels, classes, 0))
    });
    Figure::ours(SCAN_FIGURE, t)
}

/// A graph run's rows: STRIP over `inputs` clean and as many triggered test
/// inputs, and the scans over its training set at the penultimate features
/// (ours only: the PyTorch scripts build the study's CNN).
pub fn graph_rows(
    exec: &Executor,
    raw: &TestSet,
    train: &Split,
    inputs: usize,
    repeat: usize,
) -> Result<Vec<GraphFigure>, String> {
    let case = StripCase::new(raw, train, exec.device, inputs);
    let strip = measure_strip(exec, train.normalisation, &case, repeat);
    let reader = GraphFeatures { exec, node: feature_node(exec, None)? };
    let scan = measure_scan(&reader, train, raw.classes, exec.device);
    let row = |f: Figure| GraphFigure {
        name: f.name,
        ours_s: f.ours_s,
        pytorch_nchw_s: None,
        pytorch_channels_last_s: None,
        equal: None,
    };
    Ok(vec![row(strip), row(scan)])
}
