//! Retraining without the images a scan removed (`scan-data --retrain`): the
//! run's recipe (its `TrainConfig`, seeds included) from a fresh
//! initialisation, every phase up to the scanned model, on the training set
//! less those images. Its clean accuracy and ASR say whether the removal
//! defended.

use crate::engine::lab::ModelKind;
use crate::engine::train::{Phase, PhaseEnd, TrainConfig, TrainData};
use tch::Tensor;

/// The phases that make `model` from a fresh initialisation (clean, then
/// poison, then rehab); `None` for a model no phase of the recipe makes.
pub fn phases(model: ModelKind) -> Option<Vec<Phase>> {
    let recipe = [Phase::Clean, Phase::Poison, Phase::Rehab];
    let upto = recipe.iter().position(|&p| ModelKind::of_phase(p) == model)?;
    Some(recipe[..=upto].to_vec())
}

/// `data` without the images at `removed` (sorted training-set indices), in
/// every view: clean, poisoned and their labels.
pub fn without(mut data: TrainData, removed: &[usize]) -> TrainData {
    let kept: Vec<i64> = (0..data.len()).filter(|i| removed.binary_search(i).is_err()).map(|i| i as i64).collect();
    let kept = Tensor::from_slice(&kept).to_device(data.images.device());
    let keep = |t: &Tensor| t.index_select(0, &kept);
    data.images = keep(&data.images);
    data.labels = keep(&data.labels);
    if let Some(set) = data.poisoned.as_mut() {
        set.images = keep(&set.images);
        set.labels = keep(&set.labels);
    }
    data
}

/// Runs `train_phase` for each of `phases` in order; an error names a phase
/// that diverged (nothing cancels a retraining).
pub fn each_phase(
    cfg: &TrainConfig,
    phases: &[Phase],
    mut train_phase: impl FnMut(Phase) -> PhaseEnd,
) -> Result<(), String> {
    for &phase in phases {
        if let Some(message) = train_phase(phase).divergence(phase, cfg.lr) {
            return Err(message);
        }
    }
    Ok(())
}
