//! A run holding imported models: `graph.json` (one architecture for the run),
//! `<model>.safetensors` (PyTorch's names) and `<model>.import.json` (where each
//! came from and how well the probe agreed).

use super::exec::Executor;
use super::spec::GraphSpec;
use super::weights::Weights;
use crate::data::dataset::{Dataset, ImageFormat};
use crate::engine::checkpoint;
use crate::engine::lab::ModelKind;
use crate::engine::metrics::Metrics;
use crate::engine::run::RunDir;
use crate::engine::run::settings::RunSettings;
use crate::engine::train::TrainConfig;
use color_eyre::eyre::{Result, eyre};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use tch::Device;

/// What `import` recorded about one model.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImportRecord {
    /// `FILE.py:NAME` as given.
    pub source: String,
    pub weights: String,
    pub weights_sha256: String,
    /// The key of the checkpoint's dict that held the state dict, if any.
    pub state_key: Option<String>,
    pub stripped_prefix: Option<String>,
    pub trust_pickle: bool,
    pub dataset: Dataset,
    /// `dataset`, `none` or `MEAN/STD`, as asked.
    pub input_norm: String,
    pub probe_images: i64,
    /// Largest |logit difference| between PyTorch and trojanscope on the probe.
    pub probe_max_diff: f64,
    pub nodes: usize,
    pub parameters: i64,
    pub imported_unix: u64,
}

pub fn graph_path(run: &RunDir) -> PathBuf {
    run.root.join("graph.json")
}

pub fn record_path(run: &RunDir, kind: ModelKind) -> PathBuf {
    run.root.join(format!("{kind}.import.json"))
}

/// Whether the run holds imported models (a graph) rather than the study's CNN.
pub fn is_graph_run(run: &RunDir) -> bool {
    graph_path(run).is_file()
}

/// What training a graph recorded about one model (`<model>.trained.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainedRecord {
    /// `preset NAME (width W)` or the graph file trained.
    pub source: String,
    pub config: TrainConfig,
    pub dataset: Dataset,
    /// On the test set (clean and triggered), evaluation mode.
    pub metrics: Metrics,
    pub seconds: f64,
    pub parameters: i64,
    pub trained_unix: u64,
}

pub fn trained_path(run: &RunDir, kind: ModelKind) -> PathBuf {
    run.root.join(format!("{kind}.trained.json"))
}

/// What unlearning recorded about the unlearned model, beside its `.trained.json`.
pub fn unlearn_record_path(run: &RunDir) -> PathBuf {
    run.root.join(format!("{}.unlearn.json", ModelKind::Unlearned))
}

/// The dataset the run's models were imported for or trained on.
pub fn dataset_of(run: &RunDir) -> Option<Dataset> {
    let imported = ModelKind::ALL
        .iter()
        .filter(|&&k| record_path(run, k).is_file())
        .find_map(|&k| checkpoint::load_json::<ImportRecord>(&record_path(run, k)).ok())
        .map(|r| r.dataset);
    imported.or_else(|| {
        ModelKind::ALL
            .iter()
            .filter(|&&k| trained_path(run, k).is_file())
            .find_map(|&k| checkpoint::load_json::<TrainedRecord>(&trained_path(run, k)).ok())
            .map(|r| r.dataset)
    })
}

/// The run's recipe with its attack: `run.json` (written by training and by
/// `import`), else what training a model recorded, else the study's on `dataset`
/// (runs imported before attacks were recorded).
pub fn recipe(run: &RunDir, dataset: Dataset) -> Result<TrainConfig> {
    if let Some(settings) = RunSettings::load(run)? {
        return Ok(settings.config);
    }
    let trained = ModelKind::ALL
        .iter()
        .filter(|&&k| trained_path(run, k).is_file())
        .find_map(|&k| checkpoint::load_json::<TrainedRecord>(&trained_path(run, k)).ok());
    Ok(trained.map_or_else(|| TrainConfig::for_dataset(dataset), |t| t.config))
}

/// Fails when the run's models are for another dataset than `dataset`: a run's
/// metrics, sweeps and swaps compare its models on one test set.
pub fn check_same_dataset(run: &RunDir, dataset: Dataset) -> Result<()> {
    match dataset_of(run) {
        Some(theirs) if theirs != dataset => Err(eyre!(
            "{} holds models for {theirs}; a run's models share one dataset: import {dataset} models into another \
             run (--run NAME)",
            run.root.display()
        )),
        _ => Ok(()),
    }
}

/// The run's graph with one model's weights, ready to run on `device`.
pub fn load(run: &RunDir, kind: ModelKind, device: Device) -> Result<Executor> {
    run.require(&[kind])?;
    load_weights(run, &run.model_path(kind), device)
}

/// The run's graph with the weights in `path` (a model of the run, or another
/// checkpoint of the same graph).
pub fn load_weights(run: &RunDir, path: &Path, device: Device) -> Result<Executor> {
    let spec = GraphSpec::load(&graph_path(run)).map_err(|e| eyre!(e))?;
    // An edited graph file must still take the run's images.
    if let Some(dataset) = dataset_of(run) {
        let format = recipe(run, dataset)?.image_format();
        check_input(&spec, dataset, &format).map_err(|e| eyre!("{}: {e}", graph_path(run).display()))?;
    }
    let weights = Weights::load(path, &spec, device).map_err(|e| eyre!(e))?;
    Executor::new(spec, weights, device).map_err(|e| eyre!("{}: {e}", graph_path(run).display()))
}

/// Fails unless `dataset`'s images (`format`) have the graph's input shape.
pub fn check_input(spec: &GraphSpec, dataset: Dataset, format: &ImageFormat) -> Result<(), String> {
    let have = format.shape;
    if spec.input != have {
        return Err(format!(
            "the graph takes {} inputs; {dataset} images are {}: import it with a dataset of that shape",
            super::shape::show(&spec.input),
            super::shape::show(&have)
        ));
    }
    Ok(())
}
