//! The Trigger pane's jobs on a graph run, on the worker: Neural Cleanse on the
//! poisoned model through the executor (`engine::cleanse` on a `Classifier`, as
//! `recover` runs it), saved where the CLI saves it, and unlearning its flagged
//! trigger (`graph::unlearn`, as `unlearn` runs it), which writes the run's
//! unlearned model. Both hold the run's lock; a stopped job writes nothing.
//! Feature visualisation of a unit in each model (`graph::visualize`, as
//! `visualize` runs it) writes nothing.

use super::session::GraphSession;
use crate::data::loaded::LoadedData;
use crate::engine::classifier::Classifier;
use crate::engine::cleanse::{self, CleanseConfig, RecoveryEnd, RecoveryProgress, RecoveryReport};
use crate::engine::featvis::VisConfig;
use crate::engine::lab::ModelKind;
use crate::engine::metrics::Metrics;
use crate::engine::recovery_store;
use crate::engine::run::RunLock;
use crate::engine::run::key::FileKey;
use crate::engine::train::TrainEvent;
use crate::engine::unlearn::UnlearnConfig;
use crate::graph::run as graph_run;
use crate::graph::unlearn::{Unlearning, training_settings, unlearn};
use crate::setup::{Splits, load_data};
use crate::tui::protocol::VisImage;
use color_eyre::eyre::{Result, bail, eyre};
use std::ops::ControlFlow;

/// The model Neural Cleanse examines, and the name its recovery is saved under.
const EXAMINED: ModelKind = ModelKind::Poisoned;

impl GraphSession {
    /// Both splits, read on first use: opening the explorer reads the test split only.
    fn data(&mut self) -> Result<&LoadedData> {
        if self.data.is_none() {
            self.data = Some(load_data(&self.common, self.lab.dataset, Splits::TrainAndTest)?);
        }
        Ok(self.data.as_ref().expect("just read"))
    }

    /// The poisoned model's file as it is now: results are keyed by its checksum.
    fn examined_key(&self) -> Result<FileKey> {
        FileKey::of(&self.lab.run.model_path(EXAMINED))
    }

    /// The saved recovery of the poisoned model as it is now, if there is one
    /// (sent to the pane when the run opens).
    pub fn saved_recovery(&mut self) -> Result<Option<RecoveryReport>> {
        if !self.lab.run.has(EXAMINED) {
            return Ok(None);
        }
        let key = self.examined_key()?;
        self.recovery = recovery_store::load_current(&self.lab.run, EXAMINED.name(), &key)?;
        Ok(self.recovery.clone())
    }

    /// Neural Cleanse on the poisoned model with `config`, saved into the run when
    /// it finishes; `None` when `progress` stopped it.
    pub fn recover(
        &mut self,
        config: &CleanseConfig,
        progress: &mut dyn FnMut(&RecoveryProgress) -> ControlFlow<()>,
    ) -> Result<Option<Box<RecoveryReport>>> {
        self.exec(EXAMINED)?;
        // The lock first: a run that cannot be written says so before anything computes.
        let _lock = RunLock::acquire(&self.lab.run)?;
        let key = self.examined_key()?;
        let planted = self.lab.config.footprint();
        self.data()?;
        let (exec, data) = (self.exec(EXAMINED)?, self.data.as_ref().expect("read above"));
        config.validate(exec.classes()).map_err(|e| eyre!("invalid recovery settings: {e}"))?;
        let end =
            cleanse::recover(exec, EXAMINED.name(), data, planted.as_ref(), config, progress).map_err(|e| eyre!(e))?;
        let RecoveryEnd::Done(report) = end else { return Ok(None) };
        recovery_store::save(&self.lab.run, EXAMINED.name(), &key, &report)?;
        self.recovery = Some((*report).clone());
        Ok(Some(report))
    }

    /// Unlearning the current recovery's flagged trigger from a fresh copy of the
    /// poisoned model, saved as the run's unlearned model (which then joins the
    /// models shown); the label unlearned and the metrics after, or `None` when
    /// `on_event` stopped it.
    pub fn unlearn(
        &mut self,
        on_event: &mut dyn FnMut(TrainEvent) -> ControlFlow<()>,
    ) -> Result<Option<(u8, Metrics)>> {
        let Some(recovery) = self.recovery.clone() else {
            bail!("recover the trigger first (R): unlearning uses the recovered trigger");
        };
        self.exec(EXAMINED)?;
        let _lock = RunLock::acquire(&self.lab.run)?;
        let key = self.examined_key()?;
        // Unlearning trains the model it is given: not the one the panes show.
        let exec = graph_run::load(&self.lab.run, EXAMINED, self.lab.device)?;
        key.unchanged(&format!("{EXAMINED} model"))?;
        let settings = training_settings(&self.lab.run, self.lab.dataset, EXAMINED);
        self.data()?;
        let train = &self.data.as_ref().expect("read above").train;
        let at = Unlearning { run: &self.lab.run, from_key: &key, train, raw: &self.lab.raw, settings: &settings };
        let Some(outcome) = unlearn(&exec, &at, &recovery, &UnlearnConfig::default(), on_event)? else {
            return Ok(None);
        };
        self.models.retain(|(k, _)| *k != ModelKind::Unlearned);
        self.models.push((ModelKind::Unlearned, exec));
        Ok(Some((outcome.record.label, outcome.after)))
    }

    /// The input that most excites `unit` of `site` in each model, until
    /// `interrupted` says stop (what is done is kept).
    pub fn visualize(
        &self,
        site: &str,
        unit: usize,
        mut interrupted: impl FnMut() -> ControlFlow<()>,
    ) -> Result<Vec<(ModelKind, VisImage)>> {
        let mut models = Vec::new();
        for (kind, exec) in &self.models {
            let v = crate::graph::visualize::visualize(exec, site, unit as i64, &VisConfig::default())
                .map_err(|e| eyre!(e))?;
            let shape = [v.channels, v.height, v.width];
            models.push((
                *kind,
                VisImage { image: v.image, shape, start_activation: v.start_activation, activation: v.activation },
            ));
            if interrupted().is_break() {
                break;
            }
        }
        Ok(models)
    }
}
