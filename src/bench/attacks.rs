//! Each attack's data preparation at BackdoorBench's defaults, beside
//! benches/attacks_pytorch.py (BackdoorBench's formulas in plain PyTorch):
//! poisoning 10 % of the training set, and the triggered test set.

use super::pytorch::AttackTimes;
use super::{Figure, median_time};
use crate::data::attack::images::{blend_noise, wanet};
use crate::data::attack::{Attack, Blend, Patch, Sig};
use crate::engine::lab::Lab;
use crate::engine::poisoned_set::PoisonedSet;
use crate::engine::testset::TestSet;
use crate::engine::train::{TrainConfig, TrainData};
use std::collections::BTreeMap;

/// The attacks timed, by the names the script's subcommands have.
pub const ATTACKS: [&str; 4] = ["badnets", "blended", "sig", "wanet"];
/// BackdoorBench's share of the training set and target.
const RATIO: f64 = 0.1;
const TARGET: u8 = 0;

pub fn poison_figure_name(attack: &str, images: usize) -> String {
    format!("{attack}: poison 10 % of the training set ({images} images)")
}

pub fn test_figure_name(attack: &str, images: usize) -> String {
    format!("{attack}: the triggered test set ({images} images)")
}

/// `name` at the defaults the script's subcommands have, for images of `shape`.
fn attack(name: &str, shape: [usize; 3]) -> Attack {
    match name {
        "badnets" => Attack::Badnets(Patch::default()),
        "blended" => Attack::Blended(Blend { alpha: 0.2, image: blend_noise(0, shape) }),
        "sig" => Attack::Sig(Sig::default()),
        _ => Attack::Wanet(wanet(4, 0.5, 0, 2.0, shape[1], shape[2])),
    }
}

/// The lab's recipe with `name` planted as BackdoorBench plants it.
fn recipe(lab: &Lab, name: &str) -> TrainConfig {
    let mut cfg = lab.config.clone();
    cfg.attack = attack(name, cfg.image_format().shape.map(|d| d as usize));
    cfg.trigger.target = TARGET;
    cfg.all_to_all = false;
    cfg.poison_ratio = Some(RATIO);
    cfg
}

/// Our medians of `repeat` runs: the poisoned training set (the indices drawn,
/// the images triggered and relabelled, WaNet's noise-mode images) and the test
/// set with its triggered twins, each from the split already in memory.
pub fn measure(lab: &Lab, repeat: usize) -> Vec<Figure> {
    let data = TrainData::new(&lab.data.train, lab.device);
    let (train, test) = (&lab.data.train, &lab.data.test);
    let mut figures = Vec::new();
    for name in ATTACKS {
        let cfg = recipe(lab, name);
        let (poison_s, _) =
            median_time(repeat, || PoisonedSet::new(&data, &train.labels, RATIO, &cfg, &cfg.stamp(lab.device)));
        figures.push(Figure::ours(&poison_figure_name(name, train.len()), poison_s));
        let (test_s, _) = median_time(repeat, || TestSet::new(test, &cfg, lab.device).expect("an image function"));
        figures.push(Figure::ours(&test_figure_name(name, test.len()), test_s));
    }
    figures
}

/// Sets the script's times beside ours (`images`: the training and test images).
pub fn attach(figures: &mut [Figure], times: &BTreeMap<String, AttackTimes>, (train, test): (usize, usize)) {
    for (name, t) in times {
        for (figure, seconds) in
            [(poison_figure_name(name, train), t.poison_s), (test_figure_name(name, test), t.test_s)]
        {
            if let Some(f) = figures.iter_mut().find(|f| f.name == figure) {
                f.pytorch_s = Some(seconds);
                f.add_note("PyTorch: benches/attacks_pytorch.py, BackdoorBench's formulas on raw pixels");
            }
        }
    }
}
