//! BackdoorBench's poisoning: a fixed share of the training set triggered (and
//! relabelled for the poison phase) once before training, WaNet's noise-mode
//! images beside them. The indices are recorded in the run
//! (`poisoned-train.json`), so what was poisoned is known exactly.

use super::checkpoint;
use super::run::RunDir;
use super::train::{TrainConfig, TrainData};
use crate::data::attack::poison::{self, Eligible};
use crate::data::trigger::Stamp;
use color_eyre::eyre::Result;
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

pub struct PoisonedSet {
    /// The training images with the chosen ones triggered and the cross ones warped.
    pub images: Tensor,
    /// The labels the poison phase teaches (the true ones for clean-label attacks).
    pub labels: Tensor,
    pub record: PoisonRecord,
}

/// Which training images were poisoned: the file a later scan is scored against.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PoisonRecord {
    /// Triggered (and, unless clean-label, relabelled) images, ascending.
    pub indices: Vec<usize>,
    /// WaNet's noise-mode images (warped, labels kept), ascending.
    pub cross: Vec<usize>,
    pub clean_label: bool,
}

impl PoisonedSet {
    pub fn new(data: &TrainData, labels: &[u8], ratio: f64, cfg: &TrainConfig, stamp: &Stamp) -> PoisonedSet {
        let relabel = cfg.relabel();
        let eligible = match relabel.single() {
            Some(target) if cfg.clean_label() => Eligible::TargetClass(target),
            _ => Eligible::Relabelled(relabel),
        };
        let indices = poison::choose(labels, ratio, eligible, cfg.seed);
        let rest: Vec<usize> = (0..labels.len()).filter(|i| indices.binary_search(i).is_err()).collect();
        let cross_count = (stamp.cross_ratio() * indices.len() as f64).round() as usize;
        let cross =
            if cross_count > 0 { poison::draw(rest, cross_count, cfg.seed.wrapping_add(1)) } else { Vec::new() };
        let mut images = data.images.copy();
        let mut labels_now = data.labels.copy();
        let device = images.device();
        let at = |list: &[usize]| {
            let list: Vec<i64> = list.iter().map(|&i| i as i64).collect();
            Tensor::from_slice(&list).to_device(device)
        };
        if !indices.is_empty() {
            let idx = at(&indices);
            let _ = images.index_copy_(0, &idx, &stamp.apply(&images.index_select(0, &idx)));
            if !cfg.clean_label() {
                let relabelled = relabel.tensor(&labels_now.index_select(0, &idx)).to_kind(labels_now.kind());
                let _ = labels_now.index_copy_(0, &idx, &relabelled);
            }
        }
        if !cross.is_empty() {
            let idx = at(&cross);
            if let Some(warped) = stamp.cross(&images.index_select(0, &idx)) {
                let _ = images.index_copy_(0, &idx, &warped.to_kind(Kind::Float));
            }
        }
        PoisonedSet {
            images,
            labels: labels_now,
            record: PoisonRecord { indices, cross, clean_label: cfg.clean_label() },
        }
    }
}

impl TrainData {
    /// Records which images the poisoned set triggered, once the poison phase
    /// that trained on it is saved; nothing for batches poisoned as drawn.
    pub fn save_poison_record(&self, run: &RunDir) -> Result<()> {
        match &self.poisoned {
            Some(set) => checkpoint::save_json(&set.record, &run.poisoned_train_path()),
            None => Ok(()),
        }
    }
}
