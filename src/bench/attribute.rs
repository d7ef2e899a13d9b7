//! IG (50 steps) on the whole triggered test set of the study run, ours beside
//! Captum 0.9 (benches/attribute_captum.py) on the same images and targets.
//! Captum is timed on the first `CAPTUM_IMAGES` and scaled to the whole set:
//! at its speed the whole set takes many minutes.

use super::{Figure, median_time, pytorch};
use crate::engine::attribute::{Method, attribute};
use crate::engine::classifier::{Classifier, FrozenStudy};
use crate::engine::detect::Populations;
use crate::engine::lab::Lab;
use crate::engine::model::Net;
use crate::graph::eval::raw_test_set;
use serde::Deserialize;
use std::path::Path;
use std::process::Command;
use tch::{Kind, Tensor};

pub const IG_FIGURE: &str = "IG (50 steps) on the triggered test set";
/// Images Captum is timed on (then scaled to the whole set).
pub const CAPTUM_IMAGES: i64 = 500;
/// Images per Captum call: 50 steps of each in one pass, as ours.
const CAPTUM_BATCH: &str = "40";

/// The triggered test images and the poisoned model's answer on each.
pub struct IgCase {
    images: Tensor,
    targets: Tensor,
}

impl IgCase {
    pub fn of(lab: &Lab, poisoned: &Net) -> IgCase {
        let images = Populations::of(&raw_test_set(&lab.test, lab.data.test.normalisation), None).triggered;
        let net = FrozenStudy::of(poisoned, lab.data.test.normalisation);
        let targets = tch::no_grad(|| net.logits(&images).argmax(1, false));
        IgCase { images, targets }
    }
}

/// Our IG over the whole case.
pub fn measure_ig(lab: &Lab, poisoned: &Net, case: &IgCase, repeat: usize) -> Figure {
    let net = FrozenStudy::of(poisoned, lab.data.test.normalisation);
    let (t, _) = median_time(repeat, || {
        attribute(&net, None, &Method::Ig { steps: 50 }, &case.images, &case.targets, 2_000, &mut |_| {})
    });
    Figure::ours(&format!("{IG_FIGURE} ({} images)", case.images.size()[0]), t)
}

#[derive(Deserialize)]
struct Timed {
    ig: Seconds,
}

#[derive(Deserialize)]
struct Seconds {
    seconds: f64,
}

/// Captum's IG on the case's first `CAPTUM_IMAGES`, scaled to the whole case.
pub fn captum_ig(lab: &Lab, case: &IgCase, checkpoint: &Path, script: &Path) -> Result<f64, String> {
    let n = case.images.size()[0];
    let timed = CAPTUM_IMAGES.min(n);
    let dir = std::env::temp_dir().join(format!("trojanscope-bench-ig-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let path = dir.join("case.safetensors");
    let tensors = [
        ("images", case.images.narrow(0, 0, timed).to_device(tch::Device::Cpu)),
        ("targets", case.targets.narrow(0, 0, timed).to_kind(Kind::Float).to_device(tch::Device::Cpu)),
    ];
    Tensor::write_safetensors(&tensors, &path).map_err(|e| e.to_string())?;
    let mut command = Command::new(pytorch::python());
    command.arg(script).arg("ig").arg("--checkpoint").arg(checkpoint).arg("--case").arg(&path);
    command.args(["--batch", CAPTUM_BATCH, "--times-only", "--dataset", lab.data.dataset.name()]);
    command.args(["--threads", &tch::get_num_threads().to_string()]);
    let outcome = pytorch::last_json_line::<Timed>(script, command).map(|t| t.ig.seconds * n as f64 / timed as f64);
    let _ = std::fs::remove_dir_all(&dir);
    outcome
}
