//! Neural Cleanse's mitigation: fine-tune the flagged model on clean images of
//! which a share carries the *recovered* trigger with its true label, so the model
//! unlearns the shortcut. The defender's version of the study's rehab (which used
//! the true trigger). The accuracy timeline still measures the run's own trigger:
//! we planted it, so we can say whether unlearning the recovered one removed it.

use super::cleanse::{LabelTrigger, RecoveryReport};
use super::lab::{Lab, ModelKind};
use super::metrics::Metrics;
use super::model::Net;
use super::run::RunDir;
use super::run::key::FileKey;
use super::run::log::MetricsLog;
use super::train::{Phase, PhaseEnd, TrainConfig, TrainData, TrainEvent, train_phase_stamped};
use crate::data::trigger::Stamp;
use color_eyre::eyre::{Result, bail};
use serde::{Deserialize, Serialize};
use std::ops::ControlFlow;
use std::time::Instant;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct UnlearnConfig {
    /// Clean training images fine-tuned on (the first N of the training split;
    /// the reference used 10 % of the training data).
    pub images: usize,
    pub epochs: usize,
    /// Share of each batch stamped with the recovered trigger (true labels kept).
    pub fraction: f64,
    /// λ of the proximity regulariser (0: none).
    pub lambda: f64,
    pub lr: f64,
    pub batch_size: usize,
    /// The label whose recovered trigger is unlearned (default: the most anomalous).
    pub label: Option<u8>,
}

impl Default for UnlearnConfig {
    fn default() -> Self {
        UnlearnConfig { images: 6000, epochs: 1, fraction: 0.2, lambda: 0.0, lr: 1e-3, batch_size: 32, label: None }
    }
}

impl UnlearnConfig {
    pub fn validate(&self) -> Result<()> {
        if self.images == 0 || self.epochs == 0 || self.batch_size == 0 {
            bail!("images, epochs and batch size must each be at least 1");
        }
        if !(0.0..=1.0).contains(&self.fraction) || self.lambda < 0.0 || self.lr.is_nan() || self.lr <= 0.0 {
            bail!("the stamped fraction must be within 0..=1, λ non-negative and the learning rate positive");
        }
        Ok(())
    }

    /// The settings checked, and the recovered trigger in `recovery` they unlearn.
    pub fn trigger_in<'r>(&self, recovery: &'r RecoveryReport) -> Result<&'r LabelTrigger> {
        self.validate()?;
        chosen_trigger(recovery, self.label)
    }

    /// The run's training settings with unlearning's own: its share of stamped
    /// examples, and rehab's λ (an unlearning phase takes rehab's).
    pub fn train_config(&self, run: &TrainConfig) -> TrainConfig {
        TrainConfig {
            epochs: self.epochs,
            batch_size: self.batch_size,
            lr: self.lr,
            lambda_rehab: self.lambda,
            poison_fraction: self.fraction,
            ..run.clone()
        }
    }
}

/// Kept in the unlearned model's sidecar: what it unlearned, from what.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UnlearnRecord {
    pub from_model: String,
    /// SHA-256 of the starting model's file as it was read (absent in runs saved
    /// before it was recorded).
    #[serde(default)]
    pub from_sha256: String,
    pub label: u8,
    pub mask_l1: f64,
    pub anomaly_index: f64,
    pub config: UnlearnConfig,
    /// The starting model's full-test-set metrics.
    pub before: Metrics,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UnlearnOutcome {
    pub record: UnlearnRecord,
    pub after: Metrics,
    pub seconds: f64,
}

impl UnlearnRecord {
    pub fn new(
        recovery: &RecoveryReport,
        from_key: &FileKey,
        trigger: &LabelTrigger,
        cfg: &UnlearnConfig,
        before: Metrics,
    ) -> UnlearnRecord {
        UnlearnRecord {
            from_model: recovery.model.clone(),
            from_sha256: from_key.sha256.clone(),
            label: trigger.label,
            mask_l1: trigger.l1,
            anomaly_index: trigger.anomaly_index,
            config: cfg.clone(),
            before,
        }
    }
}

/// The recovered trigger to unlearn: the asked-for label, else the most anomalous
/// flagged one.
pub fn chosen_trigger(recovery: &RecoveryReport, label: Option<u8>) -> Result<&LabelTrigger> {
    if let Some(label) = label {
        return match recovery.labels.iter().find(|t| t.label == label) {
            Some(t) => Ok(t),
            None => bail!("label {label} was not recovered on the {} model", recovery.model),
        };
    }
    match recovery.most_anomalous() {
        Some(t) => Ok(t),
        None => {
            let smallest = recovery.labels.iter().min_by(|a, b| a.l1.total_cmp(&b.l1));
            let hint = smallest
                .map(|t| {
                    format!(" (smallest mask: label {}, L1 {:.1}, anomaly index {:.2})", t.label, t.l1, t.anomaly_index)
                })
                .unwrap_or_default();
            bail!(
                "no label is flagged on the {} model: nothing to unlearn{hint}; pass --label to unlearn one anyway",
                recovery.model
            )
        }
    }
}

/// Fine-tunes a copy of `from` (the run's model the recovery examined, read from
/// the file `from_key` names) and saves it as the run's `unlearned` model, refused
/// if that file changed meanwhile. `on_event` gets the training progress and may
/// stop it (then nothing is saved and `None` is returned).
pub fn unlearn(
    lab: &Lab,
    from: &Net,
    from_key: &FileKey,
    recovery: &RecoveryReport,
    cfg: &UnlearnConfig,
    on_event: &mut dyn FnMut(TrainEvent) -> ControlFlow<()>,
) -> Result<Option<UnlearnOutcome>> {
    let trigger = cfg.trigger_in(recovery)?;
    let _lock = lab.writing()?;
    let clock = Instant::now();
    let before = lab.test.evaluate(from);
    let mut net = from.duplicate();
    let images = lab.data.train.head(cfg.images);
    let data = TrainData::new(&images, lab.device);
    let probe = lab.test.subset(lab.config.eval_subset);
    let config = cfg.train_config(&lab.config);
    let stamp = Stamp::blend(&trigger.mask, &trigger.pattern, lab.data.test.normalisation, lab.device);
    let Some(mut log) = logged_phase(&lab.run, cfg.lr, on_event, |events| {
        train_phase_stamped(&mut net, Phase::Unlearn, &config, &stamp, &data, &probe, events)
    })?
    else {
        return Ok(None);
    };
    let record = UnlearnRecord::new(recovery, from_key, trigger, cfg, before);
    let seconds = clock.elapsed().as_secs_f64();
    from_key.unchanged(&format!("{} model", recovery.model))?;
    let after = lab.save(ModelKind::Unlearned, &net, &config, seconds, Some(record.clone()))?;
    log.commit(Phase::Unlearn)?;
    Ok(Some(UnlearnOutcome { record, after, seconds }))
}

/// Runs `train` (an unlearning phase) with its events recorded for the run's
/// `unlearn.jsonl`: the log, to commit once the model is saved, or `None` when
/// the phase was stopped; an error when it diverged.
pub fn logged_phase(
    run: &RunDir,
    lr: f64,
    on_event: &mut dyn FnMut(TrainEvent) -> ControlFlow<()>,
    train: impl FnOnce(&mut dyn FnMut(TrainEvent) -> ControlFlow<()>) -> PhaseEnd,
) -> Result<Option<MetricsLog>> {
    let mut log = MetricsLog::open(&run.unlearn_log())?;
    let end = log.recording(on_event, train);
    if let Some(message) = end.divergence(Phase::Unlearn, lr) {
        bail!(message);
    }
    Ok((end == PhaseEnd::Completed).then_some(log))
}
