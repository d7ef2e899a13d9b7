//! `detect-inputs` and `scan-data`: the run's model (the study's CNN or any
//! graph) as a classifier and a feature reader, under the run's attack, scored
//! against what the run knows was poisoned (docs/detect.md).

use super::args::CommonArgs;
use super::detect_retrain::{self, Retrained};
use super::output::Format;
use super::trigger::examined;
use crate::data::loaded::LoadedData;
use crate::engine::checkpoint;
use crate::engine::classifier::{Classifier, FrozenStudy};
use crate::engine::detect::figures;
use crate::engine::detect::roc::{BINS, Histogram};
use crate::engine::detect::roc::{Separation, Side, threshold_at_frr};
use crate::engine::detect::scan::{ClassScan, ClassVerdict, removed, score};
use crate::engine::detect::{FeatureNet, Populations, StudyFeatures, ac, all_features, scaleup, spectral, strip};
use crate::engine::lab::ModelKind;
use crate::engine::layer::Layer;
use crate::engine::model::Net;
use crate::engine::poisoned_set::PoisonRecord;
use crate::engine::run::RunDir;
use crate::engine::testset::TestSet;
use crate::engine::train::{TrainConfig, TrainData};
use crate::figure::Marker;
use crate::graph::detect::{GraphFeatures, feature_node};
use crate::graph::eval::raw_test_set;
use crate::graph::exec::Executor;
use crate::graph::run::{self as graph_run, is_graph_run};
use crate::setup::{Splits, load_data, open_graph_lab, open_lab_reading_both};
use crate::table::Table;
use color_eyre::eyre::{Result, bail, eyre};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::Instant;
use tch::{Device, Kind, Tensor};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum InputMethod {
    Strip,
    ScaleUp,
}

impl InputMethod {
    fn name(self) -> &'static str {
        match self {
            InputMethod::Strip => "strip",
            InputMethod::ScaleUp => "scale-up",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DataMethod {
    Spectral,
    Ac,
}

impl DataMethod {
    pub fn name(self) -> &'static str {
        match self {
            DataMethod::Spectral => "spectral",
            DataMethod::Ac => "ac",
        }
    }
}

pub(super) enum Network {
    /// The net (read for features) and its frozen copy (the classifier).
    Study(Net, FrozenStudy),
    Graph(Executor),
}

/// A run's model with the data and recipe it was trained under.
pub(super) struct Subject {
    pub config: TrainConfig,
    pub data: LoadedData,
    pub device: Device,
    pub network: Network,
}

impl Subject {
    pub(super) fn open(common: &CommonArgs, model: ModelKind) -> Result<Subject> {
        let run = RunDir::new(&common.checkpoints, &common.run);
        if is_graph_run(&run) {
            let lab = open_graph_lab(common, &[model])?;
            let exec = graph_run::load(&lab.run, model, lab.device)?;
            let data = load_data(common, lab.dataset, Splits::TrainAndTest)?;
            return Ok(Subject { config: lab.config, data, device: lab.device, network: Network::Graph(exec) });
        }
        let lab = open_lab_reading_both(common, &[model])?;
        let (net, _, _) = examined(&lab, model, None)?;
        let frozen = FrozenStudy::of(&net, lab.data.test.normalisation);
        Ok(Subject { config: lab.config, data: lab.data, device: lab.device, network: Network::Study(net, frozen) })
    }

    pub(super) fn classifier(&self) -> &dyn Classifier {
        match &self.network {
            Network::Study(_, frozen) => frozen,
            Network::Graph(exec) => exec,
        }
    }

    /// The feature reader at `node` (default: the penultimate features) and the node's name.
    fn features(&self, node: Option<&str>) -> Result<(Box<dyn FeatureNet + '_>, String)> {
        match &self.network {
            Network::Study(net, _) => {
                let layer = node.map(super::parse_layer).transpose()?.unwrap_or(Layer::Fc1);
                let reader = StudyFeatures { net, normalisation: self.data.test.normalisation, layer };
                Ok((Box::new(reader), layer.name().to_string()))
            }
            Network::Graph(exec) => {
                let node = feature_node(exec, node).map_err(|e| eyre!(e))?;
                Ok((Box::new(GraphFeatures { exec, node }), exec.spec.nodes[node].name.clone()))
            }
        }
    }
}

pub struct InputArgs {
    pub method: InputMethod,
    pub model: ModelKind,
    pub frr: f64,
    pub n: usize,
    pub limit: Option<usize>,
    pub seed: u64,
    pub out: Option<PathBuf>,
}

#[derive(Serialize)]
struct InputReport {
    method: InputMethod,
    model: String,
    /// STRIP's entropy or SCALE-UP's consistency, per population.
    clean_scores: Vec<f64>,
    triggered_scores: Vec<f64>,
    #[serde(flatten)]
    separation: Separation,
    /// STRIP: superimposed images per input and the FRR the threshold was chosen at.
    n: Option<usize>,
    frr: Option<f64>,
    seconds: f64,
}

pub fn detect_inputs(common: &CommonArgs, format: Format, args: &InputArgs) -> Result<()> {
    if !(0.0..1.0).contains(&args.frr) {
        bail!("--frr {} is not a share in [0, 1)", args.frr);
    }
    if args.n == 0 {
        bail!("--n must be at least 1");
    }
    let subject = Subject::open(common, args.model)?;
    let test = TestSet::new(&subject.data.test, &subject.config, subject.device).map_err(|e| eyre!(e))?;
    let populations = Populations::of(&raw_test_set(&test, subject.data.test.normalisation), args.limit);
    let net = subject.classifier();
    let started = Instant::now();
    // Each method's scores, its separation and the settings it used (SCALE-UP has
    // no superimpositions and a fixed threshold).
    let (clean, triggered, separation, n, frr) = match args.method {
        InputMethod::Strip => {
            let cfg = strip::StripConfig { n: args.n, seed: args.seed, ..strip::StripConfig::default() };
            let pool = subject.data.train.raw_images(subject.device);
            let overlays = strip::overlays(&pool, subject.data.train.normalisation, cfg.alpha);
            let score = |inputs: &Tensor, stream| {
                let draws = strip::draws(subject.data.train.len(), inputs.size()[0] as usize, &cfg, stream);
                strip::entropies(net, inputs, &overlays, &draws)
            };
            let (clean, triggered) = (score(&populations.clean, 0), score(&populations.triggered, 1));
            let threshold = threshold_at_frr(&clean, args.frr, Side::Low);
            let separation = Separation::at(&clean, &triggered, Side::Low, threshold);
            (clean, triggered, separation, Some(args.n), Some(args.frr))
        }
        InputMethod::ScaleUp => {
            let clean = scaleup::consistency(net, &populations.clean);
            let triggered = scaleup::consistency(net, &populations.triggered);
            let separation = Separation::at(&clean, &triggered, Side::High, scaleup::THRESHOLD);
            (clean, triggered, separation, None, None)
        }
    };
    let report = InputReport {
        method: args.method,
        model: args.model.to_string(),
        clean_scores: clean,
        triggered_scores: triggered,
        separation,
        n,
        frr,
        seconds: started.elapsed().as_secs_f64(),
    };
    if let Some(dir) = &args.out {
        input_figures(dir, &report)?;
    }
    show_inputs(format, &report)
}

/// The score histograms of both populations and the ROC curve, as `METHOD-histogram`
/// and `METHOD-roc` (SVG and PNG) in `dir`.
fn input_figures(dir: &Path, r: &InputReport) -> Result<()> {
    let (title, score) = match r.method {
        InputMethod::Strip => ("STRIP", "entropy (mean over the superimposed images)"),
        InputMethod::ScaleUp => ("SCALE-UP", "consistency (share of scaled predictions kept)"),
    };
    let title = format!("{title} on the {} model", r.model);
    let name = r.method.name();
    figures::separation_histogram(&title, score, &r.separation)
        .save(dir, &format!("{name}-histogram"))
        .map_err(|e| eyre!(e))?;
    figures::roc_figure(&title, &r.separation).save(dir, &format!("{name}-roc")).map_err(|e| eyre!(e))?;
    Ok(())
}

fn show_inputs(format: Format, r: &InputReport) -> Result<()> {
    if format == Format::Csv {
        // The ROC curve, one point a row: what a chart of it reads.
        let mut table = Table::new(["threshold", "fpr", "tpr"]);
        for p in &r.separation.roc {
            table.push([p.threshold.to_string(), p.fpr.to_string(), p.tpr.to_string()]);
        }
        return format.emit(r, &table);
    }
    let s = &r.separation;
    let mut table = Table::new(["", "value"]);
    table.push([
        "clean / triggered images".to_string(),
        format!("{} / {}", r.clean_scores.len(), r.triggered_scores.len()),
    ]);
    table.push(["AUROC".to_string(), format!("{:.4}", s.auroc)]);
    table.push(["TPR at 1 % FRR".to_string(), format!("{:.2} %", 100.0 * s.tpr_at_1_frr)]);
    table.push(["TPR at 5 % FRR".to_string(), format!("{:.2} %", 100.0 * s.tpr_at_5_frr)]);
    let rule = if s.side == Side::Low { "below" } else { "above" };
    table.push([format!("threshold (flag {rule})"), format!("{:.4}", s.threshold)]);
    table.push(["TPR / FPR at it".to_string(), format!("{:.2} % / {:.2} %", 100.0 * s.tpr, 100.0 * s.fpr)]);
    for (i, (c, t)) in s.histogram.clean.iter().zip(&s.histogram.poisoned).enumerate() {
        let (lo, hi) = (s.histogram.edges[i], s.histogram.edges[i + 1]);
        table.push([format!("  [{lo:.3}, {hi:.3})"), format!("clean {c:>5}  triggered {t:>5}")]);
    }
    format.emit(r, &table)?;
    if format.is_human() {
        eprintln!("{:?} on the {} model in {:.1} s", r.method, r.model, r.seconds);
    }
    Ok(())
}

#[derive(Serialize)]
struct ScanReport {
    method: DataMethod,
    model: String,
    node: String,
    images: usize,
    poisoned: usize,
    /// Classes the method names as poisoned.
    flagged_classes: Vec<u8>,
    /// Training images removed, all classes together.
    removed: usize,
    tpr: f64,
    fpr: f64,
    classes: Vec<ClassScan>,
    /// AC: each class's random starts (FastICA's `w_init`, the initial centres).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    starts: Vec<ac::Start>,
    features_s: f64,
    method_s: f64,
    /// `--retrain`: the model retrained without the removed images.
    #[serde(skip_serializing_if = "Option::is_none")]
    retrained: Option<Retrained>,
}

/// The run's poisoned training set, rebuilt as training made it, and the record
/// it must agree with.
struct PoisonedTraining {
    /// What training read (retraining drops images from it).
    data: TrainData,
    /// The poisoned set's images in raw pixels, and its labels as trained.
    raw: Tensor,
    labels: Vec<u8>,
    record: PoisonRecord,
}

fn poisoned_set(common: &CommonArgs, subject: &Subject) -> Result<PoisonedTraining> {
    let run = RunDir::new(&common.checkpoints, &common.run);
    let path = run.poisoned_train_path();
    let record: PoisonRecord = checkpoint::load_json(&path)?;
    let data = TrainData::for_run(&subject.data.train, &subject.config, subject.device);
    let Some(set) = &data.poisoned else {
        bail!(
            "the run {} poisons batches as they are drawn, not a fixed training set: nothing to scan",
            run.root.display()
        );
    };
    if set.record != record {
        bail!(
            "{}: the poisoned set rebuilt from the run's recipe and data ({} images poisoned) is not the one recorded \
             ({} images); scan with the training images the run was trained on (--train-limit)",
            path.display(),
            set.record.indices.len(),
            record.indices.len()
        );
    }
    let raw = subject.data.train.normalisation.denormalise(&set.images);
    let labels: Vec<i64> = Vec::try_from(set.labels.to_device(Device::Cpu).to_kind(Kind::Int64))?;
    Ok(PoisonedTraining { data, raw, labels: labels.iter().map(|&l| l as u8).collect(), record })
}

pub struct ScanArgs {
    pub method: DataMethod,
    pub model: ModelKind,
    pub node: Option<String>,
    pub seed: u64,
    pub out: Option<PathBuf>,
    pub retrain: bool,
    pub force: bool,
}

pub fn scan_data(common: &CommonArgs, format: Format, args: &ScanArgs) -> Result<()> {
    let run = RunDir::new(&common.checkpoints, &common.run);
    if !run.poisoned_train_path().is_file() {
        bail!(
            "the run {} has no poison record ({} is missing): scan-data scores a run trained with --poison-ratio",
            run.root.display(),
            run.poisoned_train_path().display()
        );
    }
    if args.retrain {
        detect_retrain::check(&run, args.method, args.model, args.force)?;
    }
    let subject = Subject::open(common, args.model)?;
    let (reader, node_name) = subject.features(args.node.as_deref())?;
    let PoisonedTraining { data, raw, labels, record } = poisoned_set(common, &subject)?;
    let started = Instant::now();
    let features = all_features(reader.as_ref(), &raw);
    let features_s = started.elapsed().as_secs_f64();
    let classes = subject.config.image_format().classes;
    let started = Instant::now();
    let (starts, verdicts) = match args.method {
        DataMethod::Spectral => (Vec::new(), spectral::scan(&features, &labels, classes)),
        DataMethod::Ac => ac::scan(&features, &labels, classes, args.seed),
    };
    let method_s = started.elapsed().as_secs_f64();
    let gone = removed(&verdicts);
    let caught = gone.iter().filter(|i| record.indices.binary_search(i).is_ok()).count();
    let mut report = ScanReport {
        method: args.method,
        model: args.model.to_string(),
        node: node_name,
        images: labels.len(),
        poisoned: record.indices.len(),
        flagged_classes: verdicts.iter().enumerate().filter(|(_, v)| v.flagged).map(|(c, _)| c as u8).collect(),
        removed: gone.len(),
        tpr: caught as f64 / record.indices.len() as f64,
        fpr: (gone.len() - caught) as f64 / (labels.len() - record.indices.len()) as f64,
        classes: score(&verdicts, &record.indices),
        starts,
        features_s,
        method_s,
        retrained: None,
    };
    if let Some(dir) = &args.out {
        scan_figures(dir, &report, &verdicts, &record.indices)?;
    }
    if args.retrain {
        report.retrained = Some(detect_retrain::run(&run, &subject, (args.method, args.model), data, &gone)?);
    }
    show_scan(format, &report)
}

/// Each class's scores, clean members against poisoned, as `METHOD-class-C`, and
/// the per-class TPR, FPR and AUROC as `METHOD-classes` (SVG and PNG) in `dir`.
fn scan_figures(dir: &Path, r: &ScanReport, verdicts: &[ClassVerdict], poisoned: &[usize]) -> Result<()> {
    let (title, score) = match r.method {
        DataMethod::Spectral => ("spectral signatures", "|v·x|: the features' projection on the top singular vector"),
        DataMethod::Ac => ("activation clustering", "distance to the larger cluster's centre − to the smaller's"),
    };
    let name = r.method.name();
    for (class, v) in verdicts.iter().enumerate() {
        let split = |want: bool| -> Vec<f64> {
            let members = v.members.iter().zip(&v.scores);
            members.filter(|(i, _)| poisoned.binary_search(i).is_ok() == want).map(|(_, &s)| s).collect()
        };
        let histogram = Histogram::of(&split(false), &split(true), BINS);
        let marker = v
            .removed
            .contains(&true)
            .then(|| Marker { x: v.threshold, label: format!("removed above {:.3}", v.threshold) });
        let title = format!("{title}: class {class} ({} model, {})", r.model, r.node);
        figures::histogram_figure(&title, score, &histogram, ["clean", "poisoned"], marker)
            .save(dir, &format!("{name}-class-{class}"))
            .map_err(|e| eyre!(e))?;
    }
    let title = format!("{title} per class ({} model, {})", r.model, r.node);
    figures::classes_figure(&title, &r.classes).save(dir, &format!("{name}-classes")).map_err(|e| eyre!(e))?;
    Ok(())
}

fn show_scan(format: Format, r: &ScanReport) -> Result<()> {
    let statistic = match r.method {
        DataMethod::Spectral => "σ1/σ2",
        DataMethod::Ac => "silhouette",
    };
    let mut table = Table::new([
        "class",
        "images",
        "poisoned",
        "removed",
        "TPR %",
        "FPR %",
        "threshold",
        "AUROC",
        "flagged",
        statistic,
    ]);
    let pct = |v: f64| if v.is_nan() { "-".to_string() } else { format!("{:.2}", 100.0 * v) };
    for c in &r.classes {
        table.push([
            c.class.to_string(),
            c.images.to_string(),
            c.poisoned.to_string(),
            c.removed.to_string(),
            pct(c.tpr),
            pct(c.fpr),
            format!("{:.4}", c.threshold),
            if c.auroc.is_nan() { "-".to_string() } else { format!("{:.4}", c.auroc) },
            if c.flagged { "yes".to_string() } else { String::new() },
            format!("{:.3}", c.statistic),
        ]);
    }
    format.emit(r, &table)?;
    if format.is_human() {
        println!(
            "{:?} at {} of the {} model: flagged classes {:?}; {} of {} images removed, TPR {:.2} %, FPR {:.2} %",
            r.method,
            r.node,
            r.model,
            r.flagged_classes,
            r.removed,
            r.images,
            100.0 * r.tpr,
            100.0 * r.fpr
        );
        eprintln!("features {:.1} s, {:?} {:.1} s", r.features_s, r.method, r.method_s);
        if let Some(t) = &r.retrained {
            println!(
                "retrained without the {} removed images ({} images, {:.0} s): clean accuracy {:.2} % (scanned model \
                 {:.2} %), ASR {:.2} % ({:.2} %); saved as {} ({})",
                r.removed,
                t.images,
                t.seconds,
                t.clean_acc,
                t.scanned.clean_acc,
                t.asr,
                t.scanned.asr,
                t.model,
                t.path.display()
            );
        }
    }
    Ok(())
}
