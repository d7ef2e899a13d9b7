//! `train` and `run` on a graph (`--preset NAME [--width W]`, `--arch FILE.json`,
//! or a run that already holds one): the study's three phases, each model saved
//! into the run as safetensors with a `<model>.trained.json` record.

use super::args::{CommonArgs, TrainArgs};
use super::output::Format;
use super::progress::TrainingBars;
use crate::data::dataset::Dataset;
use crate::engine::checkpoint;
use crate::engine::device::parse_device;
use crate::engine::lab::ModelKind;
use crate::engine::run::settings::RunSettings;
use crate::engine::run::{RunDir, RunLock};
use crate::engine::testset::TestSet;
use crate::engine::train::{Phase, PhaseEnd, TrainConfig, TrainData};
use crate::graph::eval::{evaluate, raw_test_set};
use crate::graph::exec::Executor;
use crate::graph::run::{self as graph_run, TrainedRecord};
use crate::graph::spec::GraphSpec;
use crate::graph::{preset, train as graph_train};
use crate::setup::{Splits, load_data};
use color_eyre::eyre::{Result, bail, eyre};
use std::time::Instant;
use tch::Device;

/// A graph run ready to train: its graph, data and settings, nothing written yet.
pub struct GraphSession {
    pub run: RunDir,
    pub spec: GraphSpec,
    pub source: String,
    pub dataset: Dataset,
    pub config: TrainConfig,
    pub device: Device,
    pub data: TrainData,
    /// The test set in raw pixels with the run's attack.
    pub raw: TestSet,
    /// What `run.json` records once a phase is saved.
    pub settings: RunSettings,
}

/// Whether `train`/`run` should train a graph: asked for, or the run holds one.
pub fn wanted(common: &CommonArgs, args: &TrainArgs) -> bool {
    args.graph_asked() || graph_run::is_graph_run(&RunDir::new(&common.checkpoints, &common.run))
}

/// Checks everything (graph, run, dataset, settings, data) before anything is written.
pub fn open(common: &CommonArgs, args: &TrainArgs) -> Result<GraphSession> {
    let run = RunDir::new(&common.checkpoints, &common.run);
    let theirs = graph_run::dataset_of(&run);
    let dataset = match (common.dataset, theirs) {
        (Some(asked), Some(have)) if asked != have => {
            bail!("the run {} holds models of {have}; --dataset {asked} needs another run", run.root.display())
        }
        (asked, have) => asked.or(have).unwrap_or_default(),
    };
    if let Some(study) = ModelKind::ALL.iter().find(|&&k| run.sidecar_path(k).is_file()) {
        bail!("{} holds the study's {study} model; train a graph into another run (--run NAME)", run.root.display());
    }
    let recorded = RunSettings::load(&run)?.map(|s| s.config);
    // GTSRB's and a folder's format (shape, classes, normalisation) comes from their
    // files, and the attack (a blend image, a warp grid) is made at that size.
    let data = load_data(common, dataset, Splits::TrainAndTest)?;
    let mut config = args.config(dataset, data.test.shape, recorded.as_ref()).map_err(|e| eyre!(e))?;
    config.adopt_format(&data);
    let graph_file = graph_run::graph_path(&run);
    let (spec, source) = if let Some(name) = &args.preset {
        let spec = preset::by_name(name, data.format(), args.width).map_err(|e| eyre!(e))?;
        let width = args.width.map(|w| format!(" width {w}")).unwrap_or_default();
        (spec, format!("preset {name}{width}"))
    } else if let Some(path) = &args.arch {
        let spec = GraphSpec::load(path).map_err(|e| eyre!(e))?;
        (spec, path.display().to_string())
    } else if graph_file.is_file() {
        (GraphSpec::load(&graph_file).map_err(|e| eyre!(e))?, graph_file.display().to_string())
    } else {
        bail!("nothing to train: name a graph with --preset NAME or --arch FILE.json")
    };
    graph_run::check_input(&spec, dataset, &data.format()).map_err(|e| eyre!(e))?;
    crate::graph::shape::infer(&spec).map_err(|e| eyre!(e))?;
    if graph_file.is_file() {
        let have = GraphSpec::load(&graph_file).map_err(|e| eyre!(e))?;
        if have != spec {
            bail!(
                "{} holds models of another graph ({} nodes); a run's models share one graph: use another --run",
                run.root.display(),
                have.nodes.len()
            );
        }
    }
    config.validate().map_err(|e| eyre!(e))?;
    let device = parse_device(&common.device).map_err(|e| eyre!(e))?;
    config.check_training_images(data.train.len()).map_err(|e| eyre!(e))?;
    let test = TestSet::new(&data.test, &config, device).map_err(|e| eyre!(e))?;
    let raw = raw_test_set(&test, data.test.normalisation);
    let train = TrainData::for_run(&data.train, &config, device);
    let settings = RunSettings::of(&config, &data);
    Ok(GraphSession { run, spec, source, dataset, config, device, data: train, raw, settings })
}

/// Trains `phases` (each from the model before it), saving each model.
pub fn train(session: &GraphSession, format: Format, phases: &[Phase]) -> Result<()> {
    let mut phases = phases.to_vec();
    phases.sort();
    phases.dedup();
    if let Some(unlearn) = phases.iter().find(|p| !Phase::ALL.contains(p)) {
        bail!("{unlearn} is not a training phase (clean, poison or rehab)");
    }
    let run = &session.run;
    // Every starting model present before anything is trained.
    let first = phases.first().copied();
    if let Some(from) = first.and_then(|p| ModelKind::of_phase(p).starts_from()) {
        run.require(&[from])?;
    }
    let _lock = RunLock::acquire(run)?;
    let graph_file = graph_run::graph_path(run);
    if !graph_file.is_file() {
        let text = session.spec.to_json();
        checkpoint::write_atomically(&graph_file, |tmp| Ok(std::fs::write(tmp, &text)?))?;
    }
    let human = format.is_human();
    if human {
        eprintln!(
            "training {} of {} ({} nodes) on {} ({} train / {} test images) into {}",
            phases.iter().map(|p| p.name()).collect::<Vec<_>>().join(" → "),
            session.source,
            session.spec.nodes.len(),
            crate::engine::device::describe(session.device),
            session.data.len(),
            session.raw.len(),
            run.root.display()
        );
    }
    let probe = session.raw.subset(session.config.eval_subset);
    let mut bars = TrainingBars::new(human);
    let mut current: Option<Executor> = None;
    for phase in phases {
        let kind = ModelKind::of_phase(phase);
        let exec = match (current.take(), kind.starts_from()) {
            (Some(exec), _) => exec,
            (None, Some(from)) => graph_run::load(run, from, session.device)?,
            (None, None) => {
                let weights =
                    graph_train::init(&session.spec, session.config.seed, session.device).map_err(|e| eyre!(e))?;
                Executor::new(session.spec.clone(), weights, session.device).map_err(|e| eyre!(e))?
            }
        };
        let clock = Instant::now();
        let end =
            graph_train::train_phase(&exec, phase, &session.config, &session.data, &probe, &mut |e| bars.on_event(e));
        if let Some(message) = end.divergence(phase, session.config.lr) {
            bail!(message);
        }
        if end == PhaseEnd::Cancelled {
            bail!("the {phase} phase was cancelled; nothing of it was saved");
        }
        let seconds = clock.elapsed().as_secs_f64();
        let metrics = {
            let _guard = tch::no_grad_guard();
            evaluate(&exec, &session.raw, &[])
        };
        let record = TrainedRecord {
            source: session.source.clone(),
            config: session.config.clone(),
            dataset: session.dataset,
            metrics: metrics.clone(),
            seconds,
            parameters: exec.weights.parameter_count(),
            trained_unix: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
        };
        checkpoint::write_atomically(&run.model_path(kind), |tmp| exec.weights.save(tmp).map_err(|e| eyre!(e)))?;
        checkpoint::save_json(&record, &graph_run::trained_path(run, kind))?;
        session.settings.save(run)?;
        if phase == Phase::Poison {
            session.data.save_poison_record(run)?;
        }
        if human {
            eprintln!(
                "{kind:>8}: clean {:.2}  poison {:.2}  ASR excl. target {:.2}  rehab {:.2}  ({seconds:.1} s) → {}",
                metrics.clean_acc,
                metrics.poison_acc,
                metrics.asr_non_target,
                metrics.rehab_acc,
                run.model_path(kind).display()
            );
        }
        current = Some(exec);
    }
    Ok(())
}

/// `run` on a graph: trains what is missing (everything after the first missing
/// model), then writes the report.
pub fn run(common: &CommonArgs, format: Format, args: &TrainArgs, retrain: bool) -> Result<()> {
    let session = open(common, args)?;
    let first_missing = ModelKind::STUDY.iter().position(|&k| retrain || !session.run.has(k));
    match first_missing {
        Some(i) => train(&session, format, &Phase::ALL[i..])?,
        None if format.is_human() => {
            eprintln!("all three models found in {} (pass --retrain to train again)", session.run.root.display())
        }
        None => {}
    }
    super::graph_report::write(&session, format)
}
