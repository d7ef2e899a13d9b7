//! `scan-data --retrain`: the scanned model retrained from scratch by the run's
//! recipe without the images the scan removed, saved beside the run's models as
//! `scan-spectral` or `scan-ac` (never one of the study's names), and measured
//! beside the model it would replace.

use super::detect::{DataMethod, Network, Subject};
use crate::engine::checkpoint;
use crate::engine::detect::retrain::{each_phase, phases, without};
use crate::engine::lab::ModelKind;
use crate::engine::metrics::Metrics;
use crate::engine::model::Net;
use crate::engine::run::{RunDir, RunLock};
use crate::engine::testset::TestSet;
use crate::engine::train::{self, TrainData};
use crate::graph::eval::{evaluate, raw_test_set};
use crate::graph::exec::Executor;
use crate::graph::train as graph_train;
use color_eyre::eyre::{Result, bail, eyre};
use serde::Serialize;
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::time::Instant;

/// A model's clean accuracy and BackdoorBench's ASR (triggered images whose
/// label is not the target, predicted as the target), in %.
#[derive(Debug, Serialize)]
pub struct Measured {
    pub clean_acc: f64,
    pub asr: f64,
}

impl Measured {
    fn of(m: &Metrics) -> Measured {
        Measured { clean_acc: m.clean_acc, asr: m.asr_non_target }
    }
}

#[derive(Debug, Serialize)]
pub struct Retrained {
    /// The retrained model's name in the run and its checkpoint.
    pub model: String,
    pub path: PathBuf,
    /// Training images it was trained on (the removed ones left out).
    pub images: usize,
    pub clean_acc: f64,
    pub asr: f64,
    /// The scanned model on the same test images.
    pub scanned: Measured,
    pub seconds: f64,
}

/// Where `method`'s retrained model goes: a name none of the study's models has.
pub fn model_path(run: &RunDir, method: DataMethod) -> PathBuf {
    run.root.join(format!("scan-{}.safetensors", method.name()))
}

/// Refuses before any work: a model no recipe phase makes, or a retrained
/// model already there without `--force`.
pub fn check(run: &RunDir, method: DataMethod, model: ModelKind, force: bool) -> Result<()> {
    if phases(model).is_none() {
        bail!("--retrain retrains the clean, poisoned or rehab model by the run's recipe, not the {model} model");
    }
    let path = model_path(run, method);
    if path.exists() && !force {
        bail!("{} exists (an earlier scan-data --retrain); --force replaces it", path.display());
    }
    Ok(())
}

/// Retrains the subject's `model` without the `removed` training images (from
/// `data`, the run's training data) and saves it as `method`'s model.
pub fn run(
    run: &RunDir,
    subject: &Subject,
    (method, model): (DataMethod, ModelKind),
    data: TrainData,
    removed: &[usize],
) -> Result<Retrained> {
    let _lock = RunLock::acquire(run)?;
    let phases = phases(model).ok_or_else(|| eyre!("no recipe makes the {model} model"))?;
    let (config, device) = (&subject.config, subject.device);
    let data = without(data, removed);
    let test = TestSet::new(&subject.data.test, config, device).map_err(|e| eyre!(e))?;
    let raw = raw_test_set(&test, subject.data.test.normalisation);
    let path = model_path(run, method);
    let clock = Instant::now();
    let (scanned, retrained) = match &subject.network {
        Network::Study(scanned, _) => {
            tch::manual_seed(config.seed);
            let mut net = Net::new(device);
            let probe = test.subset(config.eval_subset);
            each_phase(config, &phases, |phase| {
                train::train_phase(&mut net, phase, config, &data, &probe, &mut |_| ControlFlow::Continue(()))
            })
            .map_err(|e| eyre!(e))?;
            checkpoint::save_net(&net, &path)?;
            (test.evaluate(scanned), test.evaluate(&net))
        }
        Network::Graph(scanned) => {
            let weights = graph_train::init(&scanned.spec, config.seed, device).map_err(|e| eyre!(e))?;
            let exec = Executor::new(scanned.spec.clone(), weights, device).map_err(|e| eyre!(e))?;
            let probe = raw.subset(config.eval_subset);
            each_phase(config, &phases, |phase| {
                graph_train::train_phase(&exec, phase, config, &data, &probe, &mut |_| ControlFlow::Continue(()))
            })
            .map_err(|e| eyre!(e))?;
            checkpoint::write_atomically(&path, |tmp| exec.weights.save(tmp).map_err(|e| eyre!(e)))?;
            let _guard = tch::no_grad_guard();
            (evaluate(scanned, &raw, &[]), evaluate(&exec, &raw, &[]))
        }
    };
    Ok(Retrained {
        model: format!("scan-{}", method.name()),
        path,
        images: data.len(),
        clean_acc: retrained.clean_acc,
        asr: retrained.asr_non_target,
        scanned: Measured::of(&scanned),
        seconds: clock.elapsed().as_secs_f64(),
    })
}
