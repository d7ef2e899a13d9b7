//! Neural Cleanse's mitigation on a graph: the study's recipe (`engine::unlearn`:
//! clean images, a share of each batch stamped with the recovered trigger at its
//! true labels) trained through the executor with batch norms in training mode
//! (`train::train_phase_stamped`), saved as the run's `unlearned` model.

use super::eval::evaluate;
use super::exec::Executor;
use super::run::{TrainedRecord, trained_path, unlearn_record_path};
use super::train::train_phase_stamped;
use crate::data::dataset::Dataset;
use crate::data::loaded::Split;
use crate::data::trigger::Stamp;
use crate::engine::checkpoint;
use crate::engine::cleanse::RecoveryReport;
use crate::engine::lab::ModelKind;
use crate::engine::run::RunDir;
use crate::engine::run::key::FileKey;
use crate::engine::testset::TestSet;
use crate::engine::train::{Phase, TrainConfig, TrainData, TrainEvent};
use crate::engine::unlearn::{UnlearnConfig, UnlearnOutcome, UnlearnRecord, logged_phase};
use color_eyre::eyre::{Result, eyre};
use std::ops::ControlFlow;
use std::time::Instant;

/// Where unlearning reads from and writes to.
pub struct Unlearning<'a> {
    /// The run, its lock held by the caller.
    pub run: &'a RunDir,
    /// The file the model was read from, with its checksum then.
    pub from_key: &'a FileKey,
    /// The training split (its first images are fine-tuned on).
    pub train: &'a Split,
    /// The test set in raw pixels with the run's trigger.
    pub raw: &'a TestSet,
    /// The run's training settings, which unlearning's own override.
    pub settings: &'a TrainConfig,
}

/// The run's training settings for `model` (what training recorded), else the
/// study's recipe on the run's dataset (an imported model).
pub fn training_settings(run: &RunDir, dataset: Dataset, model: ModelKind) -> TrainConfig {
    checkpoint::load_json::<TrainedRecord>(&trained_path(run, model))
        .map(|r| r.config)
        .or_else(|_| super::run::recipe(run, dataset))
        .unwrap_or_else(|_| TrainConfig::for_dataset(dataset))
}

/// Fine-tunes `exec` (the model `recovery` examined) in place and saves it as the
/// run's `unlearned` model with its records, refused if the model's file changed
/// meanwhile. `on_event` gets the training progress and may stop it (then
/// nothing is saved and `None` is returned).
pub fn unlearn(
    exec: &Executor,
    at: &Unlearning,
    recovery: &RecoveryReport,
    cfg: &UnlearnConfig,
    on_event: &mut dyn FnMut(TrainEvent) -> ControlFlow<()>,
) -> Result<Option<UnlearnOutcome>> {
    let trigger = cfg.trigger_in(recovery)?;
    let clock = Instant::now();
    let measure = || {
        let _guard = tch::no_grad_guard();
        evaluate(exec, at.raw, &[])
    };
    let before = measure();
    let data = TrainData::new(&at.train.head(cfg.images), exec.device);
    let probe = at.raw.subset(at.settings.eval_subset);
    let config = cfg.train_config(at.settings);
    let stamp = Stamp::blend(&trigger.mask, &trigger.pattern, at.train.normalisation, exec.device);
    let Some(mut log) = logged_phase(at.run, cfg.lr, on_event, |events| {
        train_phase_stamped(exec, Phase::Unlearn, &config, &stamp, &data, &probe, events)
    })?
    else {
        return Ok(None);
    };
    let record = UnlearnRecord::new(recovery, at.from_key, trigger, cfg, before);
    let seconds = clock.elapsed().as_secs_f64();
    let after = measure();
    at.from_key.unchanged(&format!("{} model", recovery.model))?;
    let kind = ModelKind::Unlearned;
    checkpoint::write_atomically(&at.run.model_path(kind), |tmp| exec.weights.save(tmp).map_err(|e| eyre!(e)))?;
    let trained = TrainedRecord {
        source: format!("unlearned from the {} model (label {}'s recovered trigger)", recovery.model, trigger.label),
        config,
        dataset: at.settings.dataset,
        metrics: after.clone(),
        seconds,
        parameters: exec.weights.parameter_count(),
        trained_unix: std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()),
    };
    checkpoint::save_json(&trained, &trained_path(at.run, kind))?;
    let outcome = UnlearnOutcome { record, after, seconds };
    checkpoint::save_json(&outcome, &unlearn_record_path(at.run))?;
    log.commit(Phase::Unlearn)?;
    Ok(Some(outcome))
}
