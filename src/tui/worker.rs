//! The worker: a named thread that owns every tch object (the lab, the three
//! models, the ablation cache) and serves the UI's commands one at a time. Long
//! jobs report at most ~10 times a second and can be cancelled; a failing or
//! panicking command becomes a `Reply::Failed`, never a dead UI.

use super::protocol::{
    Checkpoints, Command, DigitData, Job, JobProgress, LayerWeights, ModelsData, PatchMap, PatchMaps, Progress,
    RankedImage, Reply, RunInfo, Swaps, TopImages, TrainUpdate, UnitPatch, VisImage, Visualizations,
};
use crate::engine::ablation::{AblationMode, AblationSet};
use crate::engine::analysis::Analysis;
use crate::engine::circuit::{self, FastEvaluator, SearchConfig, SearchProgress};
use crate::engine::classifier::FrozenStudy;
use crate::engine::cleanse::{self, CleanseConfig, RecoveryEnd, RecoveryProgress, RecoveryReport};
use crate::engine::diff;
use crate::engine::featvis::{self, VisConfig};
use crate::engine::host::floats;
use crate::engine::lab::{Lab, ModelKind, PerModel};
use crate::engine::layer::{Layer, PerLayer};
use crate::engine::metrics::Metrics;
use crate::engine::model::Net;
use crate::engine::patch::{Direction, Patch, Patcher};
use crate::engine::probe::{self, FeatureHit};
use crate::engine::prune::{self, Ranking, RankingInputs};
use crate::engine::recovery_store;
use crate::engine::run::key::FileKey;
use crate::engine::swap;
use crate::engine::sweep;
use crate::engine::train::{LogLine, Phase, TrainEvent};
use crate::engine::unlearn::{self, UnlearnConfig};
use crate::setup::CommonArgs;
use crate::setup::{open_lab, set_threads};
use crate::tui::graph::session::GraphSession;
use color_eyre::eyre::{Result, bail, eyre};
use std::collections::VecDeque;
use std::ops::ControlFlow;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc::{Receiver, Sender, TryRecvError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The worker thread's name; the panic hook recognises it and leaves the terminal alone.
pub const THREAD_NAME: &str = "trojanscope-worker";

/// At most this often a long job reports progress.
pub const REPORT_PERIOD: Duration = Duration::from_millis(100);

/// Test images (clean and triggered) the per-unit activation change is measured on.
pub const ACTIVATION_CHANGE_IMAGES: usize = 1000;

/// Test images shown at each end of a unit's ranking.
pub const TOP_IMAGES: usize = 8;

/// Where replies go: the event loop's channel, or a test's.
pub type ReplySink = Box<dyn FnMut(Reply) + Send>;

/// The UI's end of the worker.
pub struct WorkerHandle {
    commands: Sender<Command>,
    thread: Option<JoinHandle<()>>,
}

impl WorkerHandle {
    /// Starts the worker; it opens nothing until it is sent `Command::Open`.
    pub fn spawn(common: CommonArgs, replies: ReplySink) -> std::io::Result<WorkerHandle> {
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name(THREAD_NAME.into())
            .spawn(move || Worker::new(common, rx, replies).serve())?;
        Ok(WorkerHandle { commands: tx, thread: Some(thread) })
    }

    /// Queues a command; false when the worker has ended.
    pub fn send(&self, command: Command) -> bool {
        self.commands.send(command).is_ok()
    }

    /// Asks the worker to stop and waits for it up to `patience`.
    pub fn shutdown(mut self, patience: Duration) {
        let _ = self.commands.send(Command::Cancel);
        let _ = self.commands.send(Command::Shutdown);
        if let Some(thread) = self.thread.take() {
            let clock = Instant::now();
            while !thread.is_finished() && clock.elapsed() < patience {
                std::thread::sleep(Duration::from_millis(10));
            }
            if thread.is_finished() {
                let _ = thread.join();
            }
        }
    }
}

/// The incoming command stream with the commands set aside while a long job runs.
struct Inbox {
    rx: Receiver<Command>,
    queue: VecDeque<Command>,
    shutdown: bool,
}

impl Inbox {
    fn next(&mut self) -> Option<Command> {
        if self.shutdown {
            return None;
        }
        if let Some(command) = self.queue.pop_front() {
            return Some(command);
        }
        self.rx.recv().ok()
    }

    /// Moves everything waiting into the queue.
    fn drain(&mut self) {
        loop {
            match self.rx.try_recv() {
                Ok(command) => self.queue.push_back(command),
                Err(TryRecvError::Empty) => return,
                Err(TryRecvError::Disconnected) => {
                    self.shutdown = true;
                    return;
                }
            }
        }
    }

    /// Called between the steps of a long job: stop on Cancel or Shutdown (or a
    /// vanished UI), keep everything else for later.
    fn interrupted(&mut self) -> ControlFlow<()> {
        // A Cancel may already have been set aside while looking for newer commands.
        if let Some(i) = self.queue.iter().position(|c| matches!(c, Command::Cancel | Command::Shutdown)) {
            self.shutdown |= self.queue.remove(i) == Some(Command::Shutdown);
            return ControlFlow::Break(());
        }
        loop {
            match self.rx.try_recv() {
                Ok(Command::Cancel) => return ControlFlow::Break(()),
                Ok(Command::Shutdown) | Err(TryRecvError::Disconnected) => {
                    self.shutdown = true;
                    return ControlFlow::Break(());
                }
                Ok(command) => self.queue.push_back(command),
                Err(TryRecvError::Empty) => return ControlFlow::Continue(()),
            }
        }
    }

    /// Whether a newer command of the same kind is waiting, so this one can be
    /// skipped (rapid ablation toggles or digit steps only compute the last).
    fn superseded(&mut self, command: &Command) -> bool {
        let skippable = matches!(
            command,
            Command::Evaluate { .. }
                | Command::Digit { .. }
                | Command::GraphAblate { .. }
                | Command::GraphActivations { .. }
                | Command::GraphWeights { .. }
        );
        skippable && self.newer(command.job())
    }

    /// Whether a command of `job` (or the end) waits: the answer being computed
    /// for an older one is stale.
    fn newer(&mut self, job: Job) -> bool {
        self.drain();
        self.shutdown || self.queue.iter().any(|c| c.job() == job || *c == Command::Shutdown)
    }
}

struct Worker {
    common: CommonArgs,
    inbox: Inbox,
    reply: ReplySink,
    lab: Option<Lab>,
    analysis: Option<Analysis>,
    /// The latest trigger recovery on the poisoned model (unlearning uses it).
    recovery: Option<RecoveryReport>,
    /// A graph run's models and test set (instead of the lab and its analysis).
    graph: Option<GraphSession>,
}

impl Worker {
    fn new(common: CommonArgs, rx: Receiver<Command>, reply: ReplySink) -> Worker {
        Worker {
            common,
            inbox: Inbox { rx, queue: VecDeque::new(), shutdown: false },
            reply,
            lab: None,
            analysis: None,
            recovery: None,
            graph: None,
        }
    }

    fn serve(mut self) {
        while let Some(command) = self.inbox.next() {
            if self.inbox.superseded(&command) {
                continue;
            }
            let job = command.job();
            // libtorch's thread count is per thread, so it is set here: long jobs
            // leave the UI a core; loading and the short jobs a key waits for use
            // every core (loading took 6.7 s of caching on one thread, 2.x on two).
            set_threads(&self.common, job.is_long());
            let outcome = catch_unwind(AssertUnwindSafe(|| self.handle(command)));
            let failure = match outcome {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(e.chain().map(|c| c.to_string()).collect::<Vec<_>>().join(": ")),
                Err(payload) => Some(format!("the worker panicked: {}", panic_text(payload.as_ref()))),
            };
            if let Some(message) = failure {
                (self.reply)(Reply::Failed { job, message });
            }
        }
    }

    fn handle(&mut self, command: Command) -> Result<()> {
        if self.graph.is_some() {
            return self.handle_graph(command);
        }
        match command {
            Command::Open => self.open(),
            Command::Load { digit, subject } => self.load(digit, subject),
            Command::Train { config, phases } => self.train(*config, &phases),
            Command::Evaluate { set, mode } => {
                set.validate().map_err(|e| eyre!(e))?;
                let (lab, analysis) = self.analysis()?;
                let clock = Instant::now();
                let metrics = analysis.cache.evaluate(&lab.test, &set, mode);
                let seconds = clock.elapsed().as_secs_f64();
                (self.reply)(Reply::Evaluated { set, mode, metrics, seconds });
                Ok(())
            }
            Command::Sweep { layer, mode } => self.sweep(layer, mode),
            Command::Digit { index } => {
                let data = self.digit(index)?;
                (self.reply)(Reply::Digit(Box::new(data)));
                Ok(())
            }
            Command::Recover { config } => self.recover(&config),
            Command::Unlearn => self.unlearn(),
            Command::Visualize { layer, unit } => self.visualize(layer, unit),
            Command::Patch => self.patch(),
            Command::Circuit { mode } => self.circuit(mode),
            Command::Prune { layer, mode } => self.prune(layer, mode),
            Command::Study { model } => self.study(model),
            Command::Swap { donor, recipient } => self.swap(donor, recipient),
            Command::TopImages { layer, unit } => self.top_images(layer, unit),
            Command::GraphAblate { .. }
            | Command::GraphSweep { .. }
            | Command::GraphActivations { .. }
            | Command::GraphWeights { .. }
            | Command::GraphPatch
            | Command::GraphCircuit { .. }
            | Command::GraphVisualize { .. }
            | Command::GraphPrune { .. } => bail!("the run holds the study's CNN, not a graph"),
            Command::Panic => panic!("deliberate panic requested by a test"),
            Command::Cancel => Ok(()),
            Command::Shutdown => {
                self.inbox.shutdown = true;
                Ok(())
            }
        }
    }

    fn lab(&self) -> Result<&Lab> {
        self.lab.as_ref().ok_or_else(|| eyre!("the run is not open (see the error above)"))
    }

    /// The training split, read on first use: opening the explorer reads only
    /// the test split.
    fn read_train_split(&mut self) -> Result<()> {
        let Some(lab) = self.lab.as_mut() else { bail!("the run is not open (see the error above)") };
        crate::setup::ensure_train_split(lab, &self.common)
    }

    fn analysis(&self) -> Result<(&Lab, &Analysis)> {
        let analysis = self.analysis.as_ref().ok_or_else(|| eyre!("the models are not loaded yet"))?;
        Ok((self.lab()?, analysis))
    }

    /// The running job's new stage, for the status line.
    fn stage(&mut self, job: Job, label: &str) {
        (self.reply)(Reply::Progress(JobProgress { job, label: Some(label.into()), done: 0, total: 0 }));
    }

    fn open(&mut self) -> Result<()> {
        let run = crate::engine::run::RunDir::new(&self.common.checkpoints, &self.common.run);
        if crate::graph::run::is_graph_run(&run) {
            return self.open_graph();
        }
        self.stage(Job::Open, "reading the test split");
        let lab = open_lab(&self.common, None)?;
        (self.reply)(Reply::Opened(Box::new(run_info(&lab)?)));
        self.lab = Some(lab);
        Ok(())
    }

    fn load(&mut self, digit: usize, subject: ModelKind) -> Result<()> {
        let Some(lab) = self.lab.as_ref() else { bail!("the run is not open (see the error above)") };
        let reply = &mut self.reply;
        // Hashed before reading: results are keyed by the files as they were read.
        let keys = checkpoints(lab)?;
        let stage = |reply: &mut ReplySink, label: &str| {
            reply(Reply::Progress(JobProgress { job: Job::Load, label: Some(label.into()), done: 0, total: 0 }))
        };
        stage(reply, "loading the models");
        let nets = Analysis::load_models(lab, &Analysis::saved(lab))?;
        // Only now is the previous analysis let go: a checkpoint deleted or broken
        // since it was read fails the reload and leaves what was loaded working.
        self.analysis = None;
        reply(Reply::Checkpoints(keys));
        reply(Reply::Models(Box::new(models_data(&nets))));
        reply(Reply::History(read_history(lab)));
        let digit = digit_data(lab, &nets, digit.min(lab.test.len().saturating_sub(1)))?;
        reply(Reply::Digit(Box::new(digit)));
        // Saved metrics are shown at once when they were measured on this very test set.
        let saved: Option<PerModel<Metrics>> = nets.kinds().map(|k| Some((k, saved_metrics(lab, k)?))).collect();
        let known = saved.is_some();
        if let Some(metrics) = saved {
            reply(Reply::BaseMetrics(metrics));
        }
        stage(reply, "measuring each unit's activation change under the trigger");
        // A session's model under study, if the run still has it.
        let subject = if nets.get(subject).is_some() { subject } else { ModelKind::Poisoned };
        let subject_net = nets.get(subject).ok_or_else(|| eyre!("the run has no {subject} model"))?;
        reply(Reply::ActivationChange(activation_change(lab, subject_net)));
        stage(reply, &format!("caching the {subject} model's activations for ablation"));
        let analysis = Analysis::new(lab, nets, subject)?;
        if !known {
            stage(reply, "evaluating the other models");
            // The subject's metrics come free from its cache.
            let metrics = analysis
                .nets
                .iter()
                .map(|(k, net)| {
                    let m = if k == subject {
                        analysis.cache.evaluate(&lab.test, &AblationSet::default(), AblationMode::Weight)
                    } else {
                        lab.test.evaluate(net)
                    };
                    (k, m)
                })
                .collect();
            reply(Reply::BaseMetrics(metrics));
        }
        self.recovery = saved_recovery(lab, reply)?;
        (self.reply)(Reply::Ready { model: subject, job: Job::Load });
        // After "ready": the first screen does not wait for what only conv2 toggles read.
        analysis.cache.pool_block_outputs();
        self.analysis = Some(analysis);
        Ok(())
    }

    /// A new model under study: its activation change and its ablation cache.
    fn study(&mut self, model: ModelKind) -> Result<()> {
        let (Some(lab), Some(analysis)) = (self.lab.as_ref(), self.analysis.as_mut()) else {
            bail!("the models are not loaded yet");
        };
        let reply = &mut self.reply;
        reply(Reply::ActivationChange(activation_change(lab, analysis.net(model)?)));
        analysis.study(lab, model)?;
        reply(Reply::Ready { model, job: Job::Study });
        analysis.cache.pool_block_outputs();
        Ok(())
    }

    /// Every subset of layers from `donor` in `recipient`, stoppable between chunks.
    fn swap(&mut self, donor: ModelKind, recipient: ModelKind) -> Result<()> {
        let (Some(lab), Some(analysis)) = (self.lab.as_ref(), self.analysis.as_ref()) else {
            bail!("the models are not loaded yet");
        };
        let (inbox, reply) = (&mut self.inbox, &mut self.reply);
        let mut last: Option<Instant> = None;
        let rows = swap::swap_many_until(
            analysis.net(recipient)?,
            analysis.net(donor)?,
            &swap::all_subsets(),
            &lab.test,
            |done, total| {
                if last.is_none_or(|t| t.elapsed() >= REPORT_PERIOD) {
                    last = Some(Instant::now());
                    reply(Reply::Progress(JobProgress { job: Job::Swap, label: None, done, total }));
                }
                inbox.interrupted()
            },
        );
        // Stopped: an empty table says so.
        (self.reply)(Reply::Swapped(Box::new(Swaps { donor, recipient, rows: rows.unwrap_or_default() })));
        Ok(())
    }

    /// The test images the unit of the model under study responds to most and least.
    fn top_images(&mut self, layer: Layer, unit: usize) -> Result<()> {
        AblationSet::single(layer, unit).validate().map_err(|e| eyre!(e))?;
        let (lab, analysis) = self.analysis()?;
        let report = probe::features(analysis.subject_net(), &lab.test, layer, unit, TOP_IMAGES);
        let n = lab.test.len() as i64;
        let ranked = |hits: Vec<FeatureHit>| -> Result<Vec<RankedImage>> {
            hits.into_iter()
                .map(|hit| {
                    let row = hit.image as i64 + if hit.triggered { n } else { 0 };
                    Ok(RankedImage { pixels: floats(&lab.test.inputs.f_get(row)?), hit })
                })
                .collect()
        };
        let top = TopImages {
            model: analysis.subject,
            layer,
            unit,
            side: crate::data::mnist::SIDE,
            top: ranked(report.top)?,
            bottom: ranked(report.bottom)?,
        };
        (self.reply)(Reply::TopImages(Box::new(top)));
        Ok(())
    }

    /// Neural Cleanse on the poisoned model, snapshots throttled to the UI; the
    /// result is saved only when it finishes.
    fn recover(&mut self, config: &CleanseConfig) -> Result<()> {
        self.read_train_split()?;
        let (Some(lab), Some(analysis)) = (self.lab.as_ref(), self.analysis.as_ref()) else {
            bail!("the models are not loaded yet: recovery can start once the header says ready");
        };
        // Held from the start, so that a run that cannot be written says so before
        // the recovery computes; the file's checksum then keys the result.
        let _lock = lab.writing()?;
        let examined = FileKey::of(&lab.run.model_path(ModelKind::Poisoned))?;
        let study = FrozenStudy::of(analysis.net(ModelKind::Poisoned)?, lab.data.dataset.normalisation());
        let planted = lab.config.footprint();
        let end = cleanse::recover(
            &study,
            POISONED,
            &lab.data,
            planted.as_ref(),
            config,
            &mut recovery_progress(&mut self.inbox, &mut self.reply),
        )
        .map_err(|e| eyre!(e))?;
        let RecoveryEnd::Done(report) = end else {
            (self.reply)(Reply::RecoveryStopped);
            return Ok(());
        };
        recovery_store::save(&lab.run, POISONED, &examined, &report)?;
        self.recovery = Some((*report).clone());
        (self.reply)(Reply::Recovered(report));
        Ok(())
    }

    fn unlearn(&mut self) -> Result<()> {
        self.read_train_split()?;
        let (Some(lab), Some(analysis)) = (self.lab.as_ref(), self.analysis.as_ref()) else {
            bail!("the models are not loaded yet");
        };
        let Some(recovery) = self.recovery.as_ref() else {
            bail!("recover the trigger first (R): unlearning uses the recovered trigger");
        };
        let from_key = FileKey::of(&lab.run.model_path(ModelKind::Poisoned))?;
        let net = analysis.net(ModelKind::Poisoned)?;
        let config = UnlearnConfig::default();
        let outcome = unlearn::unlearn(
            lab,
            net,
            &from_key,
            recovery,
            &config,
            &mut unlearn_progress(&mut self.inbox, &mut self.reply),
        )?;
        (self.reply)(unlearned(outcome.map(|o| (o.record.label, o.after))));
        Ok(())
    }

    fn visualize(&mut self, layer: Layer, unit: usize) -> Result<()> {
        let Some(analysis) = self.analysis.as_ref() else { bail!("the models are not loaded yet") };
        let mut models = Vec::new();
        for (kind, net) in analysis.nets.iter() {
            let input = (crate::data::mnist::SIDE, self.lab()?.data.test.normalisation);
            let vis = featvis::visualize(net, (layer, unit), input, &VisConfig::default()).map_err(|e| eyre!(e))?;
            models.push((
                kind,
                VisImage {
                    image: vis.image,
                    shape: [1, vis.side, vis.side],
                    start_activation: vis.start_activation,
                    activation: vis.activation,
                },
            ));
            // Stopped: what is done so far is still shown.
            if self.inbox.interrupted().is_break() {
                break;
            }
        }
        (self.reply)(Reply::Visualized(Box::new(Visualizations { site: layer.to_string(), unit, models })));
        Ok(())
    }

    /// Every unit of every layer patched alone, denoise then noise; stopped early,
    /// what is done is still sent.
    fn patch(&mut self) -> Result<()> {
        let (Some(lab), Some(analysis)) = (self.lab.as_ref(), self.analysis.as_ref()) else {
            bail!("the models are not loaded yet");
        };
        let mut maps = Vec::new();
        let mut stopped = false;
        for direction in [Direction::Denoise, Direction::Noise] {
            let mut rows = Vec::new();
            let mut baseline = None;
            for layer in Layer::ALL {
                let patch = Patch { layer, direction, to_unit: None };
                let patcher = Patcher::new(&analysis.cache, None, &lab.test, patch).map_err(|e| eyre!(e))?;
                baseline.get_or_insert_with(|| patcher.baseline());
                rows.extend(
                    patcher
                        .run(|_, _| {
                            let flow = self.inbox.interrupted();
                            stopped |= flow.is_break();
                            flow
                        })
                        .into_iter()
                        .map(UnitPatch::from),
                );
                if stopped {
                    break;
                }
            }
            maps.extend(baseline.map(|baseline| PatchMap { direction, baseline, rows }));
            if stopped {
                break;
            }
        }
        let (sites, images) = (Layer::ALL.to_vec(), lab.test.len());
        (self.reply)(Reply::Patched(Box::new(PatchMaps { sites, maps, images })));
        Ok(())
    }

    /// The circuit search with the CLI's default criteria, progress throttled.
    fn circuit(&mut self, mode: AblationMode) -> Result<()> {
        let (Some(lab), Some(analysis)) = (self.lab.as_ref(), self.analysis.as_ref()) else {
            bail!("the models are not loaded yet");
        };
        let stage = |label: &str| {
            Reply::Progress(JobProgress { job: Job::Circuit, label: Some(label.into()), done: 0, total: 0 })
        };
        (self.reply)(stage("measuring the clean model's poison accuracy"));
        let clean_model_poison = lab.test.evaluate(analysis.net(ModelKind::Clean)?).poison_acc;
        let clean_baseline = analysis.cache.evaluate(&lab.test, &AblationSet::default(), mode).clean_acc;
        (self.reply)(stage("searching for the circuit"));
        let config = SearchConfig::defaults(clean_model_poison, clean_baseline, mode);
        let mut eval = FastEvaluator { cache: &analysis.cache, test: &lab.test, mode };
        let progress = search_progress(&mut self.inbox, &mut self.reply, Reply::CircuitProgress);
        let report = circuit::search(&mut eval, &config, progress);
        (self.reply)(Reply::CircuitFound(Box::new(report)));
        Ok(())
    }

    /// The pruning-defence curves of `layer`, one ranking after another.
    fn prune(&mut self, layer: Layer, mode: AblationMode) -> Result<()> {
        let (Some(lab), Some(analysis)) = (self.lab.as_ref(), self.analysis.as_ref()) else {
            bail!("the models are not loaded yet");
        };
        let clean = analysis.net(ModelKind::Clean)?;
        let inputs = RankingInputs { net: analysis.subject_net(), clean, test: &lab.test, seed: 0 };
        let mut curves = Vec::new();
        for (done, ranking) in Ranking::ALL.into_iter().enumerate() {
            let total = Ranking::ALL.len();
            (self.reply)(Reply::Progress(JobProgress { job: Job::Prune, label: None, done, total }));
            let order = prune::ranking_order(ranking, layer, &inputs);
            curves.push(prune::curve(&analysis.cache, &lab.test, layer, ranking, order, mode));
            if self.inbox.interrupted().is_break() {
                break;
            }
        }
        (self.reply)(Reply::PruneCurves { layer: layer.to_string(), curves });
        Ok(())
    }

    fn train(&mut self, config: crate::engine::train::TrainConfig, phases: &[Phase]) -> Result<()> {
        config.validate().map_err(|e| eyre!("invalid training settings: {e}"))?;
        self.read_train_split()?;
        let Some(lab) = self.lab.as_mut() else { bail!("the run is not open (see the error above)") };
        if lab.config != config {
            lab.config = config;
        }
        let clock = Instant::now();
        let epochs = lab.config.epochs;
        let mut throttle = Throttle::new(epochs);
        let (inbox, reply) = (&mut self.inbox, &mut self.reply);
        let mut cancelled = false;
        let outcome = lab.train(phases, &mut |event| {
            if let Some(update) = throttle.push(event) {
                if let Some(p) = &update.progress {
                    let label = Some(format!("training {}", p.phase));
                    reply(Reply::Progress(JobProgress { job: Job::Train, label, done: p.step, total: p.total_steps }));
                }
                reply(Reply::Training(update));
            }
            let flow = inbox.interrupted();
            cancelled |= flow.is_break();
            flow
        });
        if let Some(update) = throttle.flush() {
            (self.reply)(Reply::Training(update));
        }
        outcome?;
        let lab = self.lab()?;
        let missing = missing_phases(lab);
        (self.reply)(Reply::TrainFinished { cancelled, missing, seconds: clock.elapsed().as_secs_f64() });
        Ok(())
    }

    fn sweep(&mut self, layer: Layer, mode: AblationMode) -> Result<()> {
        let (Some(lab), Some(analysis)) = (self.lab.as_ref(), self.analysis.as_ref()) else {
            bail!("the models are not loaded yet: a sweep can start once the header says ready");
        };
        let (inbox, reply) = (&mut self.inbox, &mut self.reply);
        let mut last = Instant::now();
        let mut complete = true;
        let rows = sweep::sweep(&analysis.cache, &lab.test, layer, mode, |done, total| {
            if last.elapsed() >= REPORT_PERIOD || done == total {
                last = Instant::now();
                reply(Reply::Progress(JobProgress { job: Job::Sweep, label: None, done, total }));
            }
            let flow = inbox.interrupted();
            complete &= flow.is_continue() || done == total;
            flow
        });
        (self.reply)(Reply::Swept { layer, mode, rows, complete });
        Ok(())
    }

    fn digit(&self, index: usize) -> Result<DigitData> {
        let test_len = self.lab()?.test.len();
        if index >= test_len {
            bail!("there is no test digit {index}: the test set has {test_len} images");
        }
        let (lab, analysis) = self.analysis()?;
        digit_data(lab, &analysis.nets, index)
    }
}

/// A graph run: the same worker, serving the panes through the generic executor.
impl Worker {
    fn open_graph(&mut self) -> Result<()> {
        self.stage(Job::Open, "reading the graph, its models and the test split");
        let (mut session, info) = GraphSession::open(&self.common)?;
        let lab = &session.lab;
        let run = RunInfo {
            root: lab.run.root.display().to_string(),
            device: crate::engine::device::describe(lab.device),
            config: lab.config.clone(),
            train_images: 0,
            test_images: lab.raw.len(),
            missing: Vec::new(),
            read_only: crate::engine::run::files::ensure_writable(&lab.run.root).is_err(),
            checkpoints: session.checkpoints()?,
        };
        let restored = session.restore(&run.checkpoints);
        (self.reply)(Reply::GraphOpened(Box::new(run), Box::new(info)));
        (self.reply)(Reply::GraphRestored(Box::new(restored)));
        (self.reply)(Reply::BaseMetrics(session.base_metrics()));
        (self.reply)(Reply::Ready { model: session.subject, job: Job::Load });
        if let Some(report) = session.saved_recovery()? {
            (self.reply)(Reply::Recovered(Box::new(report)));
        }
        self.graph = Some(session);
        Ok(())
    }

    fn handle_graph(&mut self, command: Command) -> Result<()> {
        let (Some(session), inbox, reply) = (self.graph.as_mut(), &mut self.inbox, &mut self.reply) else {
            unreachable!("called on a graph run")
        };
        match command {
            Command::GraphAblate { set, mode } => session.ablate(
                &set,
                mode,
                |evaluation| reply(Reply::GraphEvaluated(Box::new(evaluation))),
                || inbox.newer(Job::Evaluate),
            ),
            Command::GraphSweep { site, mode } => {
                let rows = session.sweep(&site, mode, counted_progress(inbox, reply, Job::Sweep))?;
                reply(Reply::GraphSwept { site, mode, rows });
                Ok(())
            }
            Command::GraphPatch => {
                let maps = session.patch_map(&mut counted_progress(inbox, reply, Job::Patch))?;
                reply(Reply::GraphPatched(Box::new(maps)));
                Ok(())
            }
            Command::GraphCircuit { site, mode } => {
                let report =
                    session.circuit(&site, mode, &mut search_progress(inbox, reply, Reply::GraphCircuitProgress))?;
                reply(Reply::GraphCircuitFound(Box::new(report)));
                Ok(())
            }
            Command::GraphVisualize { site, unit } => {
                let models = session.visualize(&site, unit, || inbox.interrupted())?;
                reply(Reply::Visualized(Box::new(Visualizations { site, unit, models })));
                Ok(())
            }
            Command::GraphPrune { site, mode } => {
                let (site, curves) = session.prune(site, mode, counted_progress(inbox, reply, Job::Prune))?;
                reply(Reply::PruneCurves { layer: site, curves });
                Ok(())
            }
            Command::GraphActivations { index, site } => {
                reply(Reply::GraphActivations(Box::new(session.activations(index, &site)?)));
                Ok(())
            }
            Command::GraphWeights { site } => {
                let weights = session.weights(&site)?;
                reply(Reply::GraphWeights(site, weights.map(Box::new)));
                Ok(())
            }
            Command::Study { model } => {
                session.exec(model)?;
                session.subject = model;
                reply(Reply::Ready { model, job: Job::Study });
                Ok(())
            }
            Command::Recover { config } => {
                let report = session.recover(&config, &mut recovery_progress(inbox, reply))?;
                reply(report.map_or(Reply::RecoveryStopped, Reply::Recovered));
                Ok(())
            }
            Command::Unlearn => {
                let outcome = session.unlearn(&mut unlearn_progress(inbox, reply))?;
                if outcome.is_some() {
                    // The unlearned model joins those `M` studies (its saved metrics).
                    reply(Reply::BaseMetrics(session.base_metrics()));
                }
                reply(unlearned(outcome));
                Ok(())
            }
            Command::Cancel => Ok(()),
            Command::Shutdown => {
                inbox.shutdown = true;
                Ok(())
            }
            Command::Panic => panic!("deliberate panic requested by a test"),
            other => bail!("{} {}", other.job().describe(), crate::tui::graph::STUDY_ONLY),
        }
    }
}

/// A job's count of things done, throttled to the UI; `x` stops it.
fn counted_progress<'a>(
    inbox: &'a mut Inbox,
    reply: &'a mut ReplySink,
    job: Job,
) -> impl FnMut(usize, usize) -> ControlFlow<()> + 'a {
    let mut last = Instant::now();
    move |done, total| {
        if last.elapsed() >= REPORT_PERIOD || done == total {
            last = Instant::now();
            reply(Reply::Progress(JobProgress { job, label: None, done, total }));
        }
        inbox.interrupted()
    }
}

/// The circuit search's stages and best set so far, throttled to the UI (as
/// `wrap` sends them); `x` stops it.
fn search_progress<'a, S: Clone + 'a>(
    inbox: &'a mut Inbox,
    reply: &'a mut ReplySink,
    wrap: fn(Box<SearchProgress<S>>) -> Reply,
) -> impl FnMut(&SearchProgress<S>) -> ControlFlow<()> + 'a {
    let mut last: Option<Instant> = None;
    move |p| {
        if last.is_none_or(|t| t.elapsed() >= REPORT_PERIOD) {
            last = Some(Instant::now());
            let (job, label) = (Job::Circuit, Some(format!("searching for the circuit: {}", p.stage)));
            reply(Reply::Progress(JobProgress { job, label, done: p.evaluated, total: 0 }));
            reply(wrap(Box::new(p.clone())));
        }
        inbox.interrupted()
    }
}

/// Neural Cleanse's snapshots, throttled to the UI; `x` stops it.
fn recovery_progress<'a>(
    inbox: &'a mut Inbox,
    reply: &'a mut ReplySink,
) -> impl FnMut(&RecoveryProgress) -> ControlFlow<()> + 'a {
    let mut last: Option<Instant> = None;
    move |p| {
        if last.is_none_or(|t| t.elapsed() >= REPORT_PERIOD) {
            last = Some(Instant::now());
            let (job, label) = (Job::Recover, None);
            reply(Reply::Progress(JobProgress { job, label, done: p.step, total: p.total_steps }));
            reply(Reply::RecoveryProgress(Box::new(p.clone())));
        }
        inbox.interrupted()
    }
}

/// Unlearning's steps, throttled to the UI; `x` stops it.
fn unlearn_progress<'a>(
    inbox: &'a mut Inbox,
    reply: &'a mut ReplySink,
) -> impl FnMut(TrainEvent) -> ControlFlow<()> + 'a {
    let mut last: Option<Instant> = None;
    move |event| {
        if let TrainEvent::Step(r) = &event
            && (last.is_none_or(|t| t.elapsed() >= REPORT_PERIOD) || r.step == r.total_steps)
        {
            last = Some(Instant::now());
            let (job, label) = (Job::Unlearn, None);
            reply(Reply::Progress(JobProgress { job, label, done: r.step, total: r.total_steps }));
        }
        inbox.interrupted()
    }
}

/// Unlearning's answer: the label unlearned and the metrics after, or stopped.
fn unlearned(outcome: Option<(u8, Metrics)>) -> Reply {
    match outcome {
        Some((label, metrics)) => Reply::Unlearned { label, metrics },
        None => Reply::UnlearnStopped,
    }
}

/// The run name the poisoned model's recovery is saved under.
const POISONED: &str = "poisoned";

/// A saved recovery of the poisoned model as it is now, and the unlearned model's
/// metrics when it was made from this poisoned model, both sent to the UI.
fn saved_recovery(lab: &Lab, reply: &mut ReplySink) -> Result<Option<RecoveryReport>> {
    let poisoned = FileKey::of(&lab.run.model_path(ModelKind::Poisoned))?;
    let recovery = recovery_store::load_current(&lab.run, POISONED, &poisoned)?;
    if let Some(report) = &recovery {
        reply(Reply::Recovered(Box::new(report.clone())));
    }
    let (unlearned, poisoned) = (lab.run.sidecar(ModelKind::Unlearned), lab.run.sidecar(ModelKind::Poisoned));
    if let (Ok(unlearned), Ok(poisoned)) = (unlearned, poisoned)
        && let Some(record) = unlearned.unlearning
        && unlearned.created_unix >= poisoned.created_unix
    {
        reply(Reply::Unlearned { label: record.label, metrics: unlearned.metrics });
    }
    Ok(recovery)
}

/// The SHA-256 of each saved model's checkpoint.
fn checkpoints(lab: &Lab) -> Result<Checkpoints> {
    let saved = ModelKind::ALL.into_iter().filter(|&k| lab.run.has(k));
    saved.map(|k| Ok((k, FileKey::of(&lab.run.model_path(k))?.sha256))).collect()
}

fn run_info(lab: &Lab) -> Result<RunInfo> {
    Ok(RunInfo {
        root: lab.run.root.display().to_string(),
        device: crate::engine::device::describe(lab.device),
        config: lab.config.clone(),
        train_images: lab.data.train.len(),
        test_images: lab.data.test.len(),
        missing: missing_phases(lab),
        read_only: crate::engine::run::files::ensure_writable(&lab.run.root).is_err(),
        checkpoints: checkpoints(lab)?,
    })
}

/// Every phase from the first whose model is missing on (each starts from the previous).
fn missing_phases(lab: &Lab) -> Vec<Phase> {
    match ModelKind::STUDY.iter().position(|&k| !lab.run.has(k)) {
        Some(i) => Phase::ALL[i..].to_vec(),
        None => Vec::new(),
    }
}

/// The metrics saved with a model, if they were measured on the same test images
/// with the same trigger as this lab's.
fn saved_metrics(lab: &Lab, kind: ModelKind) -> Option<Metrics> {
    let sidecar = lab.run.sidecar(kind).ok()?;
    let same = sidecar.metrics.count == lab.test.len()
        // The files read (the test split's, at least) are the ones measured on.
        && lab.data.checksums.iter().all(|(file, sha)| sidecar.data_sha256.get(file) == Some(sha))
        && sidecar.config.trigger == lab.config.trigger;
    same.then_some(sidecar.metrics)
}

fn layer_weights(net: &Net) -> PerLayer<LayerWeights> {
    PerLayer::from_fn(|l| LayerWeights { weight: floats(net.weight(l)), bias: floats(net.bias(l)) })
}

/// Every model's parameters and the weight differences of every ordered pair.
fn models_data(nets: &PerModel<Net>) -> ModelsData {
    let weights = nets.iter().map(|(k, net)| (k, layer_weights(net))).collect();
    let mut diffs = Vec::new();
    for (a, net_a) in nets.iter() {
        for (b, net_b) in nets.iter().filter(|(b, _)| *b != a) {
            diffs.push(((a, b), diff::diff(net_a, net_b)));
        }
    }
    ModelsData { weights, diffs }
}

/// The model's per-unit activation change under the trigger, every layer.
fn activation_change(lab: &Lab, net: &Net) -> PerLayer<Vec<f64>> {
    let probe_set = lab.test.subset(ACTIVATION_CHANGE_IMAGES);
    probe::activation_changes(net, &probe_set)
}

fn digit_data(lab: &Lab, nets: &PerModel<Net>, index: usize) -> Result<DigitData> {
    let n = lab.test.len() as i64;
    let clean = lab.test.inputs.f_get(index as i64)?;
    let triggered = lab.test.inputs.f_get(n + index as i64)?;
    Ok(DigitData {
        index,
        label: lab.test.labels[index],
        clean_pixels: floats(&clean),
        triggered_pixels: floats(&triggered),
        on_clean: nets.iter().map(|(k, net)| (k, probe::activations(net, &clean))).collect(),
        on_triggered: nets.iter().map(|(k, net)| (k, probe::activations(net, &triggered))).collect(),
    })
}

/// The run's `metrics.jsonl` as one history update (empty when unreadable).
fn read_history(lab: &Lab) -> TrainUpdate {
    let mut update = TrainUpdate::default();
    let Ok(text) = std::fs::read_to_string(lab.run.metrics_log()) else { return update };
    for line in LogLine::parse_all(&text) {
        match line {
            LogLine::Step { phase, loss, .. } => update.losses.push((phase, loss)),
            LogLine::Eval(point) => update.evals.push(point),
        }
    }
    update
}

/// Collects training events and releases them at most every `REPORT_PERIOD` (and
/// always at the end of a phase), so a fast GPU cannot flood the UI.
struct Throttle {
    pending: TrainUpdate,
    last_sent: Option<Instant>,
    epochs: usize,
}

impl Throttle {
    fn new(epochs: usize) -> Throttle {
        Throttle { pending: TrainUpdate::default(), last_sent: None, epochs }
    }

    fn push(&mut self, event: TrainEvent) -> Option<TrainUpdate> {
        let phase_done = match event {
            TrainEvent::Step(r) => {
                self.pending.losses.extend(r.losses.iter().map(|&l| (r.phase, l)));
                self.pending.progress = Some(Progress {
                    phase: r.phase,
                    epoch: r.epoch,
                    epochs: self.epochs,
                    step: r.step,
                    total_steps: r.total_steps,
                    batch_acc: r.batch_acc,
                    images_per_sec: r.images_per_sec,
                    eta_s: r.eta_s(),
                    elapsed_s: r.elapsed_s,
                });
                r.step == r.total_steps
            }
            TrainEvent::Eval(point) => {
                let first = point.step == 0;
                self.pending.evals.push(point);
                first
            }
        };
        let due = self.last_sent.is_none_or(|t| t.elapsed() >= REPORT_PERIOD);
        if due || phase_done { self.flush() } else { None }
    }

    fn flush(&mut self) -> Option<TrainUpdate> {
        if self.pending == TrainUpdate::default() {
            return None;
        }
        self.last_sent = Some(Instant::now());
        Some(std::mem::take(&mut self.pending))
    }
}

/// The message a panic carried.
pub fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "an unknown panic".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::train::{EvalPoint, StepReport};

    fn step(step: usize, total: usize) -> TrainEvent {
        TrainEvent::Step(StepReport {
            phase: Phase::Poison,
            epoch: 0,
            step,
            total_steps: total,
            losses: vec![0.5; 25],
            last_regulariser: 0.0,
            batch_acc: 90.0,
            images_per_sec: 1000.0,
            elapsed_s: 1.0,
        })
    }

    #[test]
    fn throttle_sends_at_most_ten_a_second_and_always_the_end() {
        let mut throttle = Throttle::new(1);
        // The first event goes out at once; the next ones within 100 ms are held.
        assert!(throttle.push(step(25, 1000)).is_some());
        let held: Vec<_> = (2..20).filter_map(|i| throttle.push(step(25 * i, 1000))).collect();
        assert!(held.is_empty());
        // The phase's last step flushes everything held, losses in order.
        let last = throttle.push(step(1000, 1000)).expect("the end of a phase is never held");
        assert_eq!(last.losses.len(), 19 * 25);
        assert_eq!(last.progress.unwrap().step, 1000);
        assert!(throttle.flush().is_none());
        let eval = EvalPoint { phase: Phase::Rehab, step: 0, clean_acc: 1.0, poison_acc: 2.0, rehab_acc: 3.0 };
        assert_eq!(throttle.push(TrainEvent::Eval(eval.clone())).unwrap().evals, vec![eval]);
    }

    #[test]
    fn panic_text_reads_both_payload_kinds() {
        assert_eq!(panic_text(&"boom"), "boom");
        assert_eq!(panic_text(&String::from("bang")), "bang");
        assert_eq!(panic_text(&3u8), "an unknown panic");
    }
}
