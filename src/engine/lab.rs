//! A run: its data, device, configuration and checkpoint folder, and the
//! pipeline that trains the three models into it.

use super::checkpoint;
use super::metrics::Metrics;
use super::model::Net;
use super::run::log::MetricsLog;
use super::run::settings::RunSettings;
use super::testset::TestSet;
use super::train::{self, Phase, PhaseEnd, TrainConfig, TrainData, TrainEvent};
use crate::data::loaded::LoadedData;
use color_eyre::eyre::{Result, WrapErr, bail, eyre};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::time::Instant;
use tch::Device;

use super::run::{RunDir, RunLock};

/// The three models of the study.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelKind {
    Clean,
    Poisoned,
    Rehab,
    /// The poisoned model after Neural Cleanse's unlearning (`trojanscope unlearn`).
    Unlearned,
}

/// One value per model, for the models a run holds, in `ModelKind::ALL` order.
#[derive(Debug, Clone, PartialEq)]
pub struct PerModel<T>(Vec<(ModelKind, T)>);

impl<T> Default for PerModel<T> {
    fn default() -> Self {
        PerModel(Vec::new())
    }
}

impl<T> PerModel<T> {
    pub fn get(&self, kind: ModelKind) -> Option<&T> {
        self.0.iter().find(|(k, _)| *k == kind).map(|(_, v)| v)
    }

    pub fn kinds(&self) -> impl Iterator<Item = ModelKind> + '_ {
        self.0.iter().map(|(k, _)| *k)
    }

    pub fn iter(&self) -> impl Iterator<Item = (ModelKind, &T)> {
        self.0.iter().map(|(k, v)| (*k, v))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<T> FromIterator<(ModelKind, T)> for PerModel<T> {
    fn from_iter<I: IntoIterator<Item = (ModelKind, T)>>(items: I) -> Self {
        let mut all: Vec<(ModelKind, T)> = items.into_iter().collect();
        all.sort_by_key(|(k, _)| *k);
        PerModel(all)
    }
}

impl ModelKind {
    /// Every model a run can hold.
    pub const ALL: [ModelKind; 4] = [ModelKind::Clean, ModelKind::Poisoned, ModelKind::Rehab, ModelKind::Unlearned];
    /// The three the study's pipeline trains (`run`, `train`).
    pub const STUDY: [ModelKind; 3] = [ModelKind::Clean, ModelKind::Poisoned, ModelKind::Rehab];

    pub fn name(self) -> &'static str {
        match self {
            ModelKind::Clean => "clean",
            ModelKind::Poisoned => "poisoned",
            ModelKind::Rehab => "rehab",
            ModelKind::Unlearned => "unlearned",
        }
    }

    /// The phase that produces this model.
    pub fn phase(self) -> Phase {
        match self {
            ModelKind::Clean => Phase::Clean,
            ModelKind::Poisoned => Phase::Poison,
            ModelKind::Rehab => Phase::Rehab,
            ModelKind::Unlearned => Phase::Unlearn,
        }
    }

    pub fn of_phase(phase: Phase) -> ModelKind {
        match phase {
            Phase::Clean => ModelKind::Clean,
            Phase::Poison => ModelKind::Poisoned,
            Phase::Rehab => ModelKind::Rehab,
            Phase::Unlearn => ModelKind::Unlearned,
        }
    }

    /// The model a phase starts from (none: fresh initialisation).
    pub fn starts_from(self) -> Option<ModelKind> {
        match self {
            ModelKind::Clean => None,
            ModelKind::Poisoned => Some(ModelKind::Clean),
            ModelKind::Rehab | ModelKind::Unlearned => Some(ModelKind::Poisoned),
        }
    }
}

crate::named_enum!(ModelKind, "model", "clean, poisoned, rehab or unlearned", |k, s| k == ModelKind::Poisoned
    && s == "poison");

/// Library versions recorded with each checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Versions {
    pub trojanscope: String,
    pub tch: String,
    pub libtorch: String,
}

impl Versions {
    pub fn current() -> Versions {
        Versions {
            trojanscope: env!("CARGO_PKG_VERSION").into(),
            tch: "0.24.0".into(),
            libtorch: option_env!("TROJANSCOPE_LIBTORCH_VERSION").unwrap_or("unknown").into(),
        }
    }
}

/// The JSON written beside each checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sidecar {
    pub model: ModelKind,
    pub config: TrainConfig,
    pub device: String,
    pub train_images: usize,
    pub train_seconds: f64,
    /// Full-test-set metrics right after training.
    pub metrics: Metrics,
    pub versions: Versions,
    pub data_dir: String,
    pub data_sha256: BTreeMap<String, String>,
    pub created_unix: u64,
    /// For an unlearned model: the recovered trigger it unlearned and the metrics
    /// before. Absent for the study's three models.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unlearning: Option<super::unlearn::UnlearnRecord>,
}

/// Everything an engine command needs: device, data, configuration, run folder.
pub struct Lab {
    pub device: Device,
    pub data: LoadedData,
    pub config: TrainConfig,
    pub test: TestSet,
    pub run: RunDir,
    /// The run's lock, when this lab was opened to write (`Lab::locked`).
    held: Option<RunLock>,
}

impl Lab {
    pub fn new(device: Device, data: LoadedData, config: TrainConfig, run: RunDir) -> Result<Lab> {
        if !data.dataset.is_study_shaped() {
            bail!(data.dataset.study_refusal());
        }
        config.validate().map_err(|e| eyre!("invalid configuration: {e}"))?;
        if data.test.is_empty() {
            bail!("{}: the test split is empty", data.dir.display());
        }
        let test = TestSet::new(&data.test, &config, device).map_err(|e| eyre!(e))?;
        Ok(Lab { device, data, config, test, run, held: None })
    }

    /// This lab holding its run's lock until it is dropped: a command that writes
    /// into the run takes it before its first read and keeps it past its last write.
    pub fn locked(mut self, lock: RunLock) -> Lab {
        self.held = Some(lock);
        self
    }

    /// The lock to hold while writing: none when the lab holds it already, else
    /// taken now (the explorer's lab, the engine's tests).
    pub fn writing(&self) -> Result<Option<RunLock>> {
        match self.held {
            Some(_) => Ok(None),
            None => RunLock::acquire(&self.run).map(Some),
        }
    }

    pub fn load(&self, kind: ModelKind) -> Result<Net> {
        self.run.load(kind, self.device)
    }

    /// Trains `phases` in order, each from the previous model (from disk when the
    /// previous phase is not part of this call), writing checkpoints, sidecars and
    /// `metrics.jsonl`. Returns the models trained; stops early when cancelled.
    pub fn train(
        &self,
        phases: &[Phase],
        on_event: &mut dyn FnMut(TrainEvent) -> ControlFlow<()>,
    ) -> Result<Vec<(ModelKind, Net)>> {
        if self.data.train.is_empty() {
            bail!("{}: the training split is empty or was not read", self.data.dir.display());
        }
        self.config.check_training_images(self.data.train.len()).map_err(|e| eyre!(e))?;
        let _lock = self.writing()?;
        self.check_settings(phases)?;
        let data = TrainData::for_run(&self.data.train, &self.config, self.device);
        let probe = self.test.subset(self.config.eval_subset);
        let mut log = MetricsLog::open(&self.run.metrics_log())?;
        let mut trained: Vec<(ModelKind, Net)> = Vec::new();
        for &phase in phases {
            let kind = ModelKind::of_phase(phase);
            let mut net = match kind.starts_from() {
                None => {
                    tch::manual_seed(self.config.seed);
                    Net::new(self.device)
                }
                Some(from) => match trained.iter().find(|(k, _)| *k == from) {
                    Some((_, net)) => net.duplicate(),
                    None => {
                        self.load(from).wrap_err_with(|| format!("the {phase} phase starts from the {from} model"))?
                    }
                },
            };
            let clock = Instant::now();
            let end = log
                .recording(on_event, |events| train::train_phase(&mut net, phase, &self.config, &data, &probe, events));
            if let Some(message) = end.divergence(phase, self.config.lr) {
                bail!(message);
            }
            if end == PhaseEnd::Cancelled {
                return Ok(trained);
            }
            self.save(kind, &net, &self.config, clock.elapsed().as_secs_f64(), None)?;
            RunSettings::of(&self.config, &self.data).save(&self.run)?;
            if phase == Phase::Poison {
                data.save_poison_record(&self.run)?;
            }
            log.commit(phase)?;
            trained.push((kind, net));
        }
        Ok(trained)
    }

    /// Refuses to train `phases` with settings or data other than the run's record,
    /// naming each difference, unless they retrain every model the run holds from
    /// the first phase (a new start: the record is replaced as they save).
    fn check_settings(&self, phases: &[Phase]) -> Result<()> {
        let held: Vec<ModelKind> = ModelKind::STUDY.into_iter().filter(|&k| self.run.has(k)).collect();
        let fresh = phases.contains(&Phase::Clean) && held.iter().all(|k| phases.contains(&k.phase()));
        let Some(record) = RunSettings::load(&self.run)?.filter(|_| !held.is_empty() && !fresh) else {
            return Ok(());
        };
        let differences = record.differences(&self.config);
        if !differences.is_empty() {
            bail!(
                "the models in {} were trained with other settings ({}); train every phase from clean to \
                 change them (--phases clean,poison,rehab), or use a new --run",
                self.run.root.display(),
                differences.join(", ")
            );
        }
        record.check_data(&self.data)
    }

    /// Writes a trained model and its sidecar (measuring it on the full test set).
    pub fn save(
        &self,
        kind: ModelKind,
        net: &Net,
        config: &TrainConfig,
        train_seconds: f64,
        unlearning: Option<super::unlearn::UnlearnRecord>,
    ) -> Result<Metrics> {
        let metrics = self.test.evaluate(net);
        checkpoint::save_net(net, &self.run.model_path(kind))?;
        let sidecar = Sidecar {
            model: kind,
            config: config.clone(),
            device: super::device::describe(self.device),
            train_images: self.data.train.len(),
            train_seconds,
            metrics: metrics.clone(),
            versions: Versions::current(),
            data_dir: self.data.dir.display().to_string(),
            data_sha256: self.data.checksums.clone(),
            created_unix: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            unlearning,
        };
        checkpoint::save_json(&sidecar, &self.run.sidecar_path(kind))?;
        Ok(metrics)
    }
}
