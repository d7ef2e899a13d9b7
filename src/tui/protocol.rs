//! What crosses between the UI and the worker thread: plain data only (numbers,
//! f32 buffers, engine result structs). Tensors never leave the worker.

use crate::engine::ablation::{AblationMode, AblationSet};
use crate::engine::circuit::{CircuitReport, SearchProgress};
use crate::engine::cleanse::{CleanseConfig, RecoveryProgress, RecoveryReport};
use crate::engine::diff::LayerDiff;
use crate::engine::lab::{ModelKind, PerModel};
use crate::engine::layer::{Layer, PerLayer};
use crate::engine::metrics::Metrics;
use crate::engine::patch::{Direction, PatchEffect, PatchRow};
use crate::engine::probe::{FeatureHit, LayerActivation};
use crate::engine::prune::PruneCurve;
use crate::engine::swap::SwapRow;
use crate::engine::sweep::SweepRow;
use crate::engine::train::{EvalPoint, Phase, TrainConfig};
use crate::graph::circuit::GraphSite;
use crate::graph::units::UnitSet;
use crate::tui::graph::data::{GraphEvaluation, GraphInfo, GraphSweep, SiteActivations, SiteWeights};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// A request from the UI. The worker serves them in order, one at a time.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Read the data and the run's configuration, and say which models are saved.
    Open,
    /// Load the three models and compute what the panes show; `digit` is the test
    /// image whose activations are sent first, `subject` the model under study.
    Load { digit: usize, subject: ModelKind },
    /// Train `phases` in order with `config`, reporting progress.
    Train { config: Box<TrainConfig>, phases: Vec<Phase> },
    /// Stop the training or sweep in progress.
    Cancel,
    /// The poisoned model's metrics with `set` ablated.
    Evaluate { set: AblationSet, mode: AblationMode },
    /// Every unit of `layer` ablated alone, on the poisoned model.
    Sweep { layer: Layer, mode: AblationMode },
    /// One test digit and every model's activations on it, clean and triggered.
    Digit { index: usize },
    /// Neural Cleanse on the poisoned model (all labels), with live snapshots.
    Recover { config: CleanseConfig },
    /// Neural Cleanse's unlearning with the latest recovery's flagged trigger.
    Unlearn,
    /// Feature visualisations of one unit for the clean, poisoned and rehab models.
    Visualize { layer: Layer, unit: usize },
    /// Every unit of every layer patched on the poisoned model, both directions.
    Patch,
    /// The circuit search on the poisoned model, streaming progress.
    Circuit { mode: AblationMode },
    /// The pruning-defence curves of one layer, every ranking.
    Prune { layer: Layer, mode: AblationMode },
    /// Make `model` the model under study: ablations, sweeps, patching, the
    /// circuit search and pruning act on it (its ablation cache is built).
    Study { model: ModelKind },
    /// Every subset of layers copied from `donor` into `recipient`, evaluated.
    Swap { donor: ModelKind, recipient: ModelKind },
    /// The test images (clean and triggered pooled) on which one unit of the model
    /// under study is most and least active.
    TopImages { layer: Layer, unit: usize },
    /// A graph run: `set` ablated in the model under study, on a sample of the
    /// test set first, then on all of it.
    GraphAblate { set: UnitSet, mode: AblationMode },
    /// A graph run: every unit of the node `site` ablated alone.
    GraphSweep { site: String, mode: AblationMode },
    /// A graph run: one test image and the node `site`'s output on it.
    GraphActivations { index: usize, site: String },
    /// A graph run: the incoming weights of the node `site`'s units.
    GraphWeights { site: String },
    /// A graph run: every unit of every convolution and linear layer patched on
    /// the model under study, both directions, on the sample.
    GraphPatch,
    /// A graph run: the circuit search within the node `site`, streaming progress.
    GraphCircuit { site: String, mode: AblationMode },
    /// A graph run: feature visualisations of one unit of the node `site`, per model.
    GraphVisualize { site: String, unit: usize },
    /// A graph run: the pruning-defence curves of the node `site` (by default the
    /// CLI's, the last convolution), every ranking that applies, on the sample.
    GraphPrune { site: Option<String>, mode: AblationMode },
    /// Panics inside the worker (tests check that it becomes a UI error).
    #[doc(hidden)]
    Panic,
    /// Finish the current job early and end the thread.
    Shutdown,
}

/// What a failed command was doing, for its error message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Job {
    Open,
    Load,
    Train,
    Evaluate,
    Sweep,
    Digit,
    Recover,
    Unlearn,
    Visualize,
    Patch,
    Circuit,
    Prune,
    Study,
    Swap,
    TopImages,
    Weights,
    Panic,
    Control,
}

impl Job {
    /// Jobs that run for many seconds while the user keeps working: the worker
    /// leaves the UI a core for them.
    pub fn is_long(self) -> bool {
        matches!(self, Job::Train | Job::Recover | Job::Unlearn | Job::Circuit | Job::Prune)
    }

    /// Jobs that `x` stops; the worker runs one of them at a time, so a second is
    /// refused while one runs.
    pub fn is_stoppable(self) -> bool {
        matches!(
            self,
            Job::Train
                | Job::Sweep
                | Job::Recover
                | Job::Unlearn
                | Job::Visualize
                | Job::Patch
                | Job::Circuit
                | Job::Prune
                | Job::Swap
        )
    }

    pub fn describe(self) -> &'static str {
        match self {
            Job::Open => "opening the run",
            Job::Load => "loading the models",
            Job::Train => "training",
            Job::Evaluate => "evaluating the ablation",
            Job::Sweep => "sweeping the layer",
            Job::Digit => "computing the digit's activations",
            Job::Recover => "recovering the trigger",
            Job::Unlearn => "unlearning the recovered trigger",
            Job::Visualize => "visualising the unit",
            Job::Patch => "patching every unit",
            Job::Circuit => "searching for the circuit",
            Job::Prune => "computing the pruning curves",
            Job::Study => "switching the model under study",
            Job::Swap => "swapping layers",
            Job::TopImages => "ranking the test images",
            Job::Weights => "reading the node's weights",
            Job::Panic => "the test panic",
            Job::Control => "a control command",
        }
    }
}

impl Command {
    pub fn job(&self) -> Job {
        match self {
            Command::Open => Job::Open,
            Command::Load { .. } => Job::Load,
            Command::Train { .. } => Job::Train,
            Command::Evaluate { .. } => Job::Evaluate,
            Command::Sweep { .. } => Job::Sweep,
            Command::Digit { .. } => Job::Digit,
            Command::Recover { .. } => Job::Recover,
            Command::Unlearn => Job::Unlearn,
            Command::Visualize { .. } => Job::Visualize,
            Command::Patch => Job::Patch,
            Command::Circuit { .. } => Job::Circuit,
            Command::Prune { .. } => Job::Prune,
            Command::Study { .. } => Job::Study,
            Command::Swap { .. } => Job::Swap,
            Command::TopImages { .. } => Job::TopImages,
            Command::GraphAblate { .. } => Job::Evaluate,
            Command::GraphSweep { .. } => Job::Sweep,
            Command::GraphActivations { .. } => Job::Digit,
            Command::GraphWeights { .. } => Job::Weights,
            Command::GraphPatch => Job::Patch,
            Command::GraphCircuit { .. } => Job::Circuit,
            Command::GraphVisualize { .. } => Job::Visualize,
            Command::GraphPrune { .. } => Job::Prune,
            Command::Panic => Job::Panic,
            Command::Cancel | Command::Shutdown => Job::Control,
        }
    }

    /// What the status line says while it runs (until progress says more).
    pub fn label(&self) -> String {
        match self {
            Command::Evaluate { set, .. } => format!("evaluating {set}"),
            Command::Sweep { layer, .. } => format!("sweeping {layer}"),
            Command::Digit { index } => format!("computing digit #{index}"),
            Command::Visualize { layer, unit } => format!("visualising {layer}:{unit}"),
            Command::Prune { layer, .. } => format!("pruning {layer}"),
            Command::Study { model } => format!("caching the {model} model for ablation"),
            Command::Swap { donor, recipient } => format!("swapping {donor} layers into {recipient}"),
            Command::TopImages { layer, unit } => format!("ranking test images by {layer}:{unit}"),
            Command::GraphAblate { set, .. } => format!("evaluating {set}"),
            Command::GraphSweep { site, .. } => format!("sweeping {site}"),
            Command::GraphActivations { index, site } => format!("computing {site} on image #{index}"),
            Command::GraphCircuit { site, .. } => format!("searching {site} for the circuit"),
            Command::GraphVisualize { site, unit } => format!("visualising {site}:{unit}"),
            Command::GraphPrune { site: Some(site), .. } => format!("pruning {site}"),
            other => other.job().describe().to_string(),
        }
    }
}

/// How far a running job is: the one progress reply every job sends.
#[derive(Debug, Clone, PartialEq)]
pub struct JobProgress {
    pub job: Job,
    /// A new label for the status line (a loading stage, a training phase).
    pub label: Option<String>,
    pub done: usize,
    pub total: usize,
}

/// The SHA-256 of each saved model's checkpoint file: what results are keyed by.
pub type Checkpoints = std::collections::BTreeMap<ModelKind, String>;

/// The run as the worker found it.
#[derive(Debug, Clone, PartialEq)]
pub struct RunInfo {
    pub root: String,
    pub device: String,
    pub config: TrainConfig,
    pub train_images: usize,
    pub test_images: usize,
    /// Phases whose model is not saved (everything after the first missing one).
    pub missing: Vec<Phase>,
    /// The run folder cannot be written: the explorer only reads it.
    pub read_only: bool,
    /// The saved models' checkpoints (none on a graph run: its session is not kept).
    pub checkpoints: Checkpoints,
}

/// One layer's parameters, row-major in `Layer::weight_shape` order.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerWeights {
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
}

impl LayerWeights {
    /// The incoming weights of one output unit (a conv kernel or a linear row).
    pub fn unit(&self, layer: Layer, unit: usize) -> &[f32] {
        let per = layer.fan_in() as usize;
        &self.weight[unit * per..(unit + 1) * per]
    }
}

/// Every saved model's parameters, per layer.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelsData {
    pub weights: PerModel<PerLayer<LayerWeights>>,
    /// `b − a` per layer and unit, for every ordered pair `(a, b)` of saved models.
    pub diffs: Vec<((ModelKind, ModelKind), Vec<LayerDiff>)>,
}

impl ModelsData {
    /// `b − a`, per layer.
    pub fn diff(&self, a: ModelKind, b: ModelKind) -> Option<&[LayerDiff]> {
        self.diffs.iter().find(|(pair, _)| *pair == (a, b)).map(|(_, d)| d.as_slice())
    }
}

/// One test digit and the activation maps the Activations pane compares.
#[derive(Debug, Clone, PartialEq)]
pub struct DigitData {
    pub index: usize,
    pub label: u8,
    /// Normalised 28×28 pixels, clean and with the trigger.
    pub clean_pixels: Vec<f32>,
    pub triggered_pixels: Vec<f32>,
    /// Every saved model on the clean digit and on the triggered digit.
    pub on_clean: PerModel<Vec<LayerActivation>>,
    pub on_triggered: PerModel<Vec<LayerActivation>>,
}

impl DigitData {
    /// The class a model's logits (the last layer's activation) pick.
    pub fn prediction(activations: &[LayerActivation]) -> usize {
        let logits = &activations.last().map(|a| a.values.as_slice()).unwrap_or(&[]);
        (0..logits.len()).fold(0, |best, i| if logits[i] > logits[best] { i } else { best })
    }
}

/// Training progress since the last update (the worker sends at most ~10 a second).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TrainUpdate {
    /// Per-step losses, in order, each with its phase.
    pub losses: Vec<(Phase, f32)>,
    pub evals: Vec<EvalPoint>,
    /// The latest step report's counters; `None` for history read from disk.
    pub progress: Option<Progress>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Progress {
    pub phase: Phase,
    pub epoch: usize,
    pub epochs: usize,
    pub step: usize,
    pub total_steps: usize,
    pub batch_acc: f64,
    pub images_per_sec: f64,
    pub eta_s: f64,
    pub elapsed_s: f64,
}

/// A worker's answer or report.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    Opened(Box<RunInfo>),
    /// The SHA-256 of each saved model's checkpoint, as loading read them.
    Checkpoints(Checkpoints),
    /// How far the running job is (and, for loading, which stage it is in).
    Progress(JobProgress),
    Models(Box<ModelsData>),
    /// Full-test-set metrics of every saved model.
    BaseMetrics(PerModel<Metrics>),
    /// Per layer, per unit: the model under study's mean |triggered − clean| activation.
    ActivationChange(PerLayer<Vec<f64>>),
    /// The model under study's ablation cache is built: ablations and sweeps can run.
    Ready {
        model: ModelKind,
        /// The job that built it (loading, or switching the model under study).
        job: Job,
    },
    Training(TrainUpdate),
    /// The run's logged training (its `metrics.jsonl`), replacing what is shown.
    History(TrainUpdate),
    TrainFinished {
        cancelled: bool,
        missing: Vec<Phase>,
        seconds: f64,
    },
    Evaluated {
        set: AblationSet,
        mode: AblationMode,
        metrics: Metrics,
        /// How long the worker took, from the request to the metrics.
        seconds: f64,
    },
    Swept {
        layer: Layer,
        mode: AblationMode,
        rows: Vec<SweepRow>,
        complete: bool,
    },
    Digit(Box<DigitData>),
    /// A snapshot of the trigger recovery in progress.
    RecoveryProgress(Box<RecoveryProgress>),
    /// A finished recovery (also sent on load when a current one is saved).
    Recovered(Box<RecoveryReport>),
    /// The recovery was stopped; nothing was saved.
    RecoveryStopped,
    /// The unlearned model's full-test-set metrics and the label it unlearned
    /// (also sent on load when the run has an unlearned model).
    Unlearned {
        label: u8,
        metrics: Metrics,
    },
    UnlearnStopped,
    Visualized(Box<Visualizations>),
    /// Patching's effects, per direction (denoise, then noise), every layer's units.
    Patched(Box<PatchMaps>),
    CircuitProgress(Box<SearchProgress>),
    /// The search's report (`stopped` says whether it was cut short).
    CircuitFound(Box<CircuitReport>),
    /// A layer's or node's curves (fewer rankings when stopped).
    PruneCurves {
        layer: String,
        curves: Vec<PruneCurve>,
    },
    Swapped(Box<Swaps>),
    TopImages(Box<TopImages>),
    /// The run holds a graph: its nodes, opened (replaces `Opened`).
    GraphOpened(Box<RunInfo>, Box<GraphInfo>),
    /// The graph run's saved session, read against its nodes (sent after `GraphOpened`).
    GraphRestored(Box<GraphRestored>),
    /// An ablation on a graph run: first on the sample, then on the full test set.
    GraphEvaluated(Box<GraphEvaluation>),
    GraphSwept {
        site: String,
        mode: AblationMode,
        /// Each unit's metrics, in unit order (fewer when stopped).
        rows: Vec<Metrics>,
    },
    GraphActivations(Box<SiteActivations>),
    /// `None`: the node has no weights per unit.
    GraphWeights(String, Option<Box<SiteWeights>>),
    GraphPatched(Box<PatchMaps<GraphSite>>),
    GraphCircuitProgress(Box<SearchProgress<GraphSite>>),
    GraphCircuitFound(Box<CircuitReport<GraphSite>>),
    Failed {
        job: Job,
        message: String,
    },
}

impl Reply {
    /// The job this reply ends, if it is a result (or a failure): the ledger
    /// clears it. Results also sent unasked (a saved recovery on load) clear nothing
    /// that runs.
    pub fn finishes(&self) -> Option<Job> {
        Some(match self {
            Reply::Opened(_) => Job::Open,
            Reply::Ready { job, .. } => *job,
            Reply::TrainFinished { .. } => Job::Train,
            Reply::Evaluated { .. } => Job::Evaluate,
            Reply::Swept { .. } => Job::Sweep,
            Reply::Digit(_) => Job::Digit,
            Reply::Recovered(_) | Reply::RecoveryStopped => Job::Recover,
            Reply::Unlearned { .. } | Reply::UnlearnStopped => Job::Unlearn,
            Reply::Visualized(_) => Job::Visualize,
            Reply::Patched(_) => Job::Patch,
            Reply::CircuitFound(_) => Job::Circuit,
            Reply::PruneCurves { .. } => Job::Prune,
            Reply::Swapped(_) => Job::Swap,
            Reply::TopImages(_) => Job::TopImages,
            Reply::GraphOpened(..) => Job::Open,
            // The sample's answer leaves the full test set's running.
            Reply::GraphEvaluated(e) if e.sample => return None,
            Reply::GraphEvaluated(_) => Job::Evaluate,
            Reply::GraphSwept { .. } => Job::Sweep,
            Reply::GraphActivations(_) => Job::Digit,
            Reply::GraphWeights(..) => Job::Weights,
            Reply::GraphPatched(_) => Job::Patch,
            Reply::GraphCircuitFound(_) => Job::Circuit,
            Reply::Failed { job, .. } => *job,
            Reply::Progress(_)
            | Reply::Checkpoints(_)
            | Reply::Models(_)
            | Reply::BaseMetrics(_)
            | Reply::GraphRestored(_)
            | Reply::ActivationChange(_)
            | Reply::Training(_)
            | Reply::History(_)
            | Reply::RecoveryProgress(_)
            | Reply::CircuitProgress(_)
            | Reply::GraphCircuitProgress(_) => return None,
        })
    }
}

/// Layer swaps between two models: every subset of layers taken from the donor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Swaps {
    pub donor: ModelKind,
    pub recipient: ModelKind,
    pub rows: Vec<SwapRow>,
}

/// One test image a unit responds to, with its pixels for the picture.
#[derive(Debug, Clone, PartialEq)]
pub struct RankedImage {
    pub hit: FeatureHit,
    /// Normalised pixels, row-major.
    pub pixels: Vec<f32>,
}

/// The images on which one unit of `model` is most and least active.
#[derive(Debug, Clone, PartialEq)]
pub struct TopImages {
    pub model: ModelKind,
    pub layer: Layer,
    pub unit: usize,
    pub side: usize,
    pub top: Vec<RankedImage>,
    pub bottom: Vec<RankedImage>,
}

/// One unit's feature visualisations, one per model.
#[derive(Debug, Clone, PartialEq)]
pub struct Visualizations {
    /// A study layer's or a graph node's name.
    pub site: String,
    pub unit: usize,
    pub models: Vec<(ModelKind, VisImage)>,
}

/// The input that most excites the unit in one model, and the unit's value on it.
#[derive(Debug, Clone, PartialEq)]
pub struct VisImage {
    /// Raw pixels [0, 1], `shape` = `[channels, height, width]`, row-major.
    pub image: Vec<f32>,
    pub shape: [usize; 3],
    /// The unit's value on the starting image, then on the optimised one.
    pub start_activation: f64,
    pub activation: f64,
}

/// One unit patched alone: where it lives (a study layer, a graph node) and its effect.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UnitPatch<S = Layer> {
    pub site: S,
    pub unit: usize,
    pub effect: PatchEffect,
}

impl From<PatchRow> for UnitPatch {
    fn from(row: PatchRow) -> UnitPatch {
        UnitPatch { site: row.layer, unit: row.unit, effect: row.effect }
    }
}

/// Patching every unit of every layer (or node) in one direction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PatchMap<S = Layer> {
    pub direction: Direction,
    pub baseline: PatchEffect,
    /// Every site's rows, in the sites' order then unit order.
    pub rows: Vec<UnitPatch<S>>,
}

impl<S: PartialEq> PatchMap<S> {
    /// How far a unit's patch moves the patched images' target rate from
    /// unpatched, in points, signed so that larger means "this unit carries the
    /// backdoor": the drop for denoise, the rise for noise.
    pub fn effect(&self, row: &UnitPatch<S>) -> f64 {
        let moved = row.effect.target_rate - self.baseline.target_rate;
        if self.direction == Direction::Noise { moved } else { -moved }
    }

    pub fn row(&self, site: &S, unit: usize) -> Option<&UnitPatch<S>> {
        self.rows.iter().find(|r| r.site == *site && r.unit == unit)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PatchMaps<S = Layer> {
    /// The sites patched, in order (the heatmap's rows).
    pub sites: Vec<S>,
    pub maps: Vec<PatchMap<S>>,
    /// Test images per condition the maps were measured on.
    pub images: usize,
}

/// A graph run's saved session (`graph::saved`): what was selected.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GraphView {
    /// The focused pane's number.
    pub focus: usize,
    /// The model under study (the sweeps are its).
    pub subject: ModelKind,
    /// The selected node, by name.
    pub site: String,
    /// The Channels cursor of each node, by name.
    pub unit_rows: BTreeMap<String, usize>,
    pub folded: BTreeSet<String>,
    pub by_effect: bool,
    pub set: UnitSet,
    pub mode: AblationMode,
    pub history_row: usize,
    pub digit: usize,
    pub direction: Direction,
    /// The Circuit map's cursor: its row and unit.
    pub map: (usize, usize),
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct GraphResults {
    pub history: Vec<GraphEvaluation>,
    pub sweeps: BTreeMap<String, GraphSweep>,
    pub patch: Option<Box<PatchMaps<GraphSite>>>,
    pub report: Option<Box<CircuitReport<GraphSite>>>,
    /// The last pruning curves and their node.
    pub curves: Option<(String, Vec<PruneCurve>)>,
}

impl GraphResults {
    pub fn count(&self) -> usize {
        let one = |present: bool| present as usize;
        self.history.len()
            + self.sweeps.len()
            + one(self.patch.is_some())
            + one(self.report.is_some())
            + one(self.curves.is_some())
    }
}

/// What opening the graph run found.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct GraphRestored {
    pub view: Option<GraphView>,
    pub results: GraphResults,
    /// Results computed on other checkpoints or test images, dropped.
    pub dropped: usize,
    /// The file could not be read (it was kept as `session.json.bad`).
    pub unreadable: Option<String>,
}
