//! Detection's figures: STRIP (N = 100) over 2,000 test inputs beside
//! benches/detect_pytorch.py on the same inputs and superimposed images, and
//! spectral signatures with activation clustering over the whole training set.

use super::{Figure, median_time, pytorch};
use crate::engine::classifier::FrozenStudy;
use crate::engine::detect::{Populations, StudyFeatures, ac, all_features, spectral, strip, values};
use crate::engine::lab::Lab;
use crate::engine::layer::Layer;
use crate::engine::model::Net;
use crate::graph::eval::raw_test_set;
use serde::Deserialize;
use std::path::Path;
use std::process::Command;
use tch::{Kind, Tensor};

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
    /// `inputs` clean test images and as many triggered (fewer on a small test set).
    pub fn of(lab: &Lab, inputs: usize) -> StripCase {
        let p = Populations::of(&raw_test_set(&lab.test, lab.data.test.normalisation), Some(inputs));
        let inputs = p.clean.size()[0].min(p.triggered.size()[0]) as usize;
        let (clean, triggered) = (p.clean.narrow(0, 0, inputs as i64), p.triggered.narrow(0, 0, inputs as i64));
        let pool = lab.data.train.raw_images(lab.device);
        let cfg = strip::StripConfig::default();
        let draws = [0, 1].map(|stream| strip::draws(lab.data.train.len(), inputs, &cfg, stream));
        StripCase { clean, triggered, pool, draws, inputs }
    }
}

/// Our STRIP over both populations.
pub fn measure_strip(lab: &Lab, poisoned: &Net, case: &StripCase, repeat: usize) -> Figure {
    let net = FrozenStudy::of(poisoned, lab.data.test.normalisation);
    let overlays = strip::overlays(&case.pool, lab.data.train.normalisation, 1.0);
    let (t, _) = median_time(repeat, || {
        strip::entropies(&net, &case.clean, &overlays, &case.draws[0]);
        strip::entropies(&net, &case.triggered, &overlays, &case.draws[1])
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

/// Features of every training image, spectral signatures and AC, timed whole.
pub fn measure_scan(lab: &Lab, poisoned: &Net) -> Figure {
    let reader = StudyFeatures { net: poisoned, normalisation: lab.data.train.normalisation, layer: Layer::Fc1 };
    let raw = lab.data.train.raw_images(lab.device);
    let labels: Vec<u8> =
        values(&lab.data.train.label_tensor(lab.device).to_kind(Kind::Double)).iter().map(|&l| l as u8).collect();
    let classes = lab.config.image_format().classes;
    let (t, _) = median_time(1, || {
        let features = all_features(&reader, &raw);
        (spectral::scan(&features, &labels, classes), ac::scan(&features, &labels, classes, 0))
    });
    Figure::ours(SCAN_FIGURE, t)
}
