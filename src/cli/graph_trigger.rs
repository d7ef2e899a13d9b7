//! `recover` and `unlearn` on a graph run: Neural Cleanse through the generic
//! executor (the study's loop, `engine::cleanse`, on a `Classifier`), and
//! unlearning its recovered trigger through the executor's training mode
//! (`graph::unlearn`). Results are saved where the study saves them.

use super::args::CommonArgs;
use super::output::Format;
use super::progress::TrainingBars;
use super::trigger::{announce_unlearning, current_recovery, model_file, run_recovery, show_recovery, show_unlearned};
use crate::data::attack::Footprint;
use crate::data::loaded::LoadedData;
use crate::engine::checkpoint;
use crate::engine::classifier::Classifier;
use crate::engine::cleanse::CleanseConfig;
use crate::engine::lab::ModelKind;
use crate::engine::recovery_store;
use crate::engine::run::key::FileKey;
use crate::engine::run::{RunDir, RunLock};
use crate::engine::unlearn::UnlearnConfig;
use crate::graph::exec::Executor;
use crate::graph::run::{self as graph_run, TrainedRecord};
use crate::graph::unlearn::{Unlearning, training_settings, unlearn as unlearn_graph};
use crate::setup::{GraphLab, open_graph_lab};
use crate::setup::{Splits, load_data};
use color_eyre::eyre::{Result, bail, eyre};
use std::path::Path;

/// A graph run opened for writing a result: its lock, both splits and the
/// examined model with the checksum of the file it was read from.
pub(super) struct Examined {
    lab: GraphLab,
    _lock: RunLock,
    data: LoadedData,
    exec: Executor,
    name: String,
    key: FileKey,
}

pub(super) fn examine(common: &CommonArgs, model: ModelKind, file: Option<&Path>) -> Result<Examined> {
    let models = if file.is_some() { &[][..] } else { std::slice::from_ref(&model) };
    // The models, then the lock, before any data is read (as the study's commands).
    let run = RunDir::new(&common.checkpoints, &common.run);
    run.require(models)?;
    let lock = RunLock::acquire(&run)?;
    let lab = open_graph_lab(common, models)?;
    let (name, path) = model_file(&lab.run, model, file);
    let key = FileKey::of(&path)?;
    let exec = graph_run::load_weights(&lab.run, &path, lab.device)?;
    key.unchanged(&path.display().to_string())?;
    let data = load_data(common, lab.dataset, Splits::TrainAndTest)?;
    Ok(Examined { lab, _lock: lock, data, exec, name, key })
}

/// The run's planted patch, if its attack is one: the recovered masks' overlap
/// is measured against it.
fn planted(e: &Examined) -> Option<Footprint> {
    e.lab.config.footprint()
}

pub(super) fn recover(format: Format, e: &Examined, cfg: &CleanseConfig) -> Result<()> {
    cfg.validate(e.exec.classes()).map_err(|err| eyre!("invalid recovery settings: {err}"))?;
    let report = run_recovery(&e.exec, &e.name, (&e.data, planted(e).as_ref()), cfg, format.is_human())?;
    let pictures = recovery_store::save(&e.lab.run, &e.name, &e.key, &report)?;
    show_recovery(format, &report, &e.lab.run, &pictures)
}

pub(super) fn unlearn(format: Format, e: &Examined, model: ModelKind, cfg: &UnlearnConfig) -> Result<()> {
    let trigger = planted(e);
    let recovery =
        current_recovery(&e.lab.run, (&e.name, &e.key), &e.exec, (&e.data, trigger.as_ref()), format.is_human())?;
    announce_unlearning(format, &recovery, cfg)?;
    let settings = training_settings(&e.lab.run, e.lab.dataset, model);
    let at =
        Unlearning { run: &e.lab.run, from_key: &e.key, train: &e.data.train, raw: &e.lab.raw, settings: &settings };
    let mut bars = TrainingBars::new(format.is_human());
    let Some(outcome) = unlearn_graph(&e.exec, &at, &recovery, cfg, &mut |event| bars.on_event(event))? else {
        bail!("unlearning stopped; nothing saved");
    };
    let rehab = checkpoint::load_json::<TrainedRecord>(&graph_run::trained_path(&e.lab.run, ModelKind::Rehab))
        .ok()
        .map(|r| r.metrics);
    show_unlearned(format, model, &outcome, rehab, &e.lab.run.model_path(ModelKind::Unlearned))
}
