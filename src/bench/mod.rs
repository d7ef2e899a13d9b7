//! `trojanscope bench`: our engine's speed, side by side with the study's PyTorch
//! procedure and the same procedure coded for speed, run from the same virtual
//! environment in the same invocation; then this executable timed whole.

pub mod attacks;
pub mod attribute;
pub mod detect;
pub mod graph;
pub mod process;
pub mod pytorch;

use crate::engine::ablation::{AblationMode, AblationSet};
use crate::engine::cache::ActivationCache;
use crate::engine::circuit::{self, Evaluate, FastEvaluator, SearchConfig};
use crate::engine::classifier::FrozenStudy;
use crate::engine::cleanse::{self, CleanseConfig, RecoveryEnd};
use crate::engine::featvis::{self, VisConfig};
use crate::engine::lab::Lab;
use crate::engine::layer::Layer;
use crate::engine::model::Net;
use crate::engine::patch::{Direction, Patch, Patcher};
use crate::engine::sweep::sweep;
use crate::engine::train::{Phase, TrainConfig, TrainData, train_phase};
use serde::Serialize;
use std::ops::ControlFlow;
use std::time::Instant;

/// One measured figure: our median time and, where they have one, the study's
/// PyTorch loop's and the fast PyTorch procedure's (benches/fast_pytorch.py).
#[derive(Debug, Clone, Serialize)]
pub struct Figure {
    pub name: String,
    pub ours_s: f64,
    pub pytorch_s: Option<f64>,
    pub fast_pytorch_s: Option<f64>,
    /// How the PyTorch figures were obtained, where they are not plain medians.
    pub note: String,
}

impl Figure {
    fn ours(name: &str, ours_s: f64) -> Figure {
        Figure { name: name.into(), ours_s, pytorch_s: None, fast_pytorch_s: None, note: String::new() }
    }

    /// PyTorch time ÷ our time: how many times faster we are.
    pub fn speedup(&self) -> Option<f64> {
        self.pytorch_s.map(|p| p / self.ours_s)
    }

    /// Our time ÷ the fast PyTorch procedure's: the share of its time we take (the
    /// issue's targets read this way: ≤ 0.6 for an epoch, ≤ 0.3 for metrics).
    pub fn versus_fast(&self) -> Option<f64> {
        self.fast_pytorch_s.map(|p| self.ours_s / p)
    }

    /// Adds `note` after what the note already says.
    pub fn add_note(&mut self, note: &str) {
        if !self.note.is_empty() {
            self.note.push_str("; ");
        }
        self.note.push_str(note);
    }
}

pub const CLEAN_EPOCH_FIGURE: &str = "clean epoch";
pub const POISON_EPOCH_FIGURE: &str = "poison epoch";
pub const METRICS_FIGURE: &str = "metrics on the full test set";
/// The layers swept in the bench.
pub const SWEPT_LAYERS: [Layer; 3] = [Layer::Conv1, Layer::Conv2, Layer::Fc1];

/// A sweep figure: every unit of `layer` ablated alone, from the built cache.
pub fn sweep_figure_name(layer: Layer) -> String {
    format!("{layer} sweep ({} units)", layer.units())
}

#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub machine: String,
    pub device: String,
    pub repeat: usize,
    pub figures: Vec<Figure>,
    /// Bytes of cached activations for the three models together.
    pub cache_bytes_three_models: usize,
    /// Peak resident memory of this process (VmHWM).
    pub peak_rss_bytes: usize,
    pub pytorch_error: Option<String>,
    /// Why benches/fast_pytorch.py gave no figures, where it failed.
    pub fast_pytorch_error: Option<String>,
    /// Which labels each side's trigger recovery flagged (and its smallest mask).
    pub recovery_verdict: Option<RecoveryVerdict>,
    /// What a user waits for: this executable started on the saved run.
    pub whole_process: Vec<process::ProcessFigure>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RecoveryVerdict {
    pub ours_flagged: Vec<u8>,
    pub ours_smallest: u8,
    pub pytorch_flagged: Option<Vec<u8>>,
    pub pytorch_smallest: Option<u8>,
}

/// Median wall time of `repeat` runs of `f`, keeping the last run's output.
pub fn median_time<T>(repeat: usize, mut f: impl FnMut() -> T) -> (f64, T) {
    let mut times = Vec::with_capacity(repeat);
    let mut last = None;
    for _ in 0..repeat.max(1) {
        let clock = Instant::now();
        last = Some(f());
        times.push(clock.elapsed().as_secs_f64());
    }
    (median(times), last.expect("ran at least once"))
}

/// Sets ablated in the toggle-latency figures: two units of each layer.
pub fn toggle_sets() -> Vec<(String, AblationSet)> {
    [(Layer::Conv1, [9, 15]), (Layer::Conv2, [37, 4]), (Layer::Fc1, [1, 5])]
        .into_iter()
        .map(|(layer, units)| (format!("toggle a {layer} set"), AblationSet::of(layer, &units)))
        .collect()
}

/// Our training epochs and metrics: `repeat` rounds of one clean and one poison
/// epoch and the poisoned model's metrics (median of `repeat`), the median of each
/// reported; each round after `before_round(round)` (where the PyTorch baselines
/// run theirs, so both sides meet the machine in the same state), then one rehab
/// epoch. Returns the figures and the three models.
pub fn measure_training(
    lab: &Lab,
    repeat: usize,
    progress: &mut dyn FnMut(&str),
    before_round: &mut dyn FnMut(usize),
) -> (Vec<Figure>, [Net; 3]) {
    let data = TrainData::new(&lab.data.train, lab.device);
    let probe = lab.test.subset(lab.config.eval_subset);
    // The recipe alone, as the PyTorch loop runs it: no accuracy timeline during
    // training (at the defaults it adds 19 probe evaluations, ~3 s, per phase).
    let recipe = TrainConfig { eval_every: usize::MAX, ..lab.config.clone() };
    let epoch = |phase: Phase, from: Option<&Net>| {
        let mut net = Net::new(lab.device);
        if let Some(from) = from {
            net.copy_from(from);
        }
        let clock = Instant::now();
        train_phase(&mut net, phase, &recipe, &data, &probe, &mut |_| ControlFlow::Continue(()));
        (clock.elapsed().as_secs_f64(), net)
    };
    let (mut clean_times, mut poison_times, mut metrics_times) = (Vec::new(), Vec::new(), Vec::new());
    let mut models = None;
    for round in 0..repeat.max(1) {
        before_round(round);
        progress(&format!("clean and poison epochs and metrics, round {} of {}", round + 1, repeat.max(1)));
        let (t, clean) = epoch(Phase::Clean, None);
        clean_times.push(t);
        let (t, poisoned) = epoch(Phase::Poison, Some(&clean));
        poison_times.push(t);
        metrics_times.push(median_time(repeat, || lab.test.evaluate(&poisoned)).0);
        models = Some((clean, poisoned));
    }
    let (clean, poisoned) = models.expect("at least one round");
    progress("rehab epoch");
    let (rehab_s, rehab) = epoch(Phase::Rehab, Some(&poisoned));
    let figures = vec![
        Figure::ours(CLEAN_EPOCH_FIGURE, median(clean_times)),
        Figure::ours(POISON_EPOCH_FIGURE, median(poison_times)),
        Figure::ours(METRICS_FIGURE, median(metrics_times)),
        Figure::ours("rehab epoch (one run)", rehab_s),
    ];
    (figures, [clean, poisoned, rehab])
}

/// The middle value (the upper one of an even count).
pub fn median(mut times: Vec<f64>) -> f64 {
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

/// Measures our evaluation and ablation engine on the trained `models`; `progress`
/// names each step as it starts. Returns the figures and the bytes the three
/// models' activation caches hold.
pub fn measure_interventions(
    lab: &Lab,
    repeat: usize,
    models: &[Net; 3],
    progress: &mut dyn FnMut(&str),
) -> (Vec<Figure>, usize) {
    let [clean, poisoned, rehab] = models;
    let mut figures = Vec::new();
    let mut fig = |name: &str, ours_s: f64| figures.push(Figure::ours(name, ours_s));
    progress("activation caches");
    let (t, cache) = median_time(repeat, || ActivationCache::build(poisoned, &lab.test));
    fig("build one model's activation cache", t);
    let others = [ActivationCache::build(clean, &lab.test), ActivationCache::build(rehab, &lab.test)];
    let cache_bytes = cache.bytes() + others.iter().map(ActivationCache::bytes).sum::<usize>();
    for layer in SWEPT_LAYERS {
        progress(&format!("{layer} sweep"));
        let (t, _) = median_time(repeat, || {
            sweep(&cache, &lab.test, layer, AblationMode::Weight, |_, _| ControlFlow::Continue(()))
        });
        fig(&sweep_figure_name(layer), t);
    }
    for (name, set) in toggle_sets() {
        progress(&name);
        let (t, _) = median_time(repeat.max(10), || cache.evaluate(&lab.test, &set, AblationMode::Weight));
        fig(&name, t);
    }
    (figures, cache_bytes)
}

/// Patching every unit of conv1 and conv2 (both directions, the cache built), every
/// pair within each convolution, and the whole circuit search, on `poisoned`.
/// Returns the figures and the number of sets the search evaluated.
pub fn measure_circuit(
    lab: &Lab,
    repeat: usize,
    models: &[Net; 3],
    progress: &mut dyn FnMut(&str),
) -> (Vec<Figure>, usize) {
    let [clean, poisoned, _] = models;
    let cache = ActivationCache::build(poisoned, &lab.test);
    let mut figures = Vec::new();
    for layer in PATCHED_LAYERS {
        for direction in [Direction::Denoise, Direction::Noise] {
            progress(&format!("patching {layer} ({direction})"));
            let patch = Patch { layer, direction, to_unit: None };
            let patcher = Patcher::new(&cache, None, &lab.test, patch).expect("a valid patch");
            let (t, _) = median_time(repeat, || patcher.run(|_, _| ControlFlow::Continue(())));
            figures.push(Figure::ours(&patching_figure_name(layer, direction), t));
        }
    }
    let mut eval = FastEvaluator { cache: &cache, test: &lab.test, mode: AblationMode::Weight };
    for layer in PATCHED_LAYERS {
        progress(&format!("every pair of {layer}"));
        let pairs = circuit::pairs_within(&layer);
        let clock = Instant::now();
        eval.evaluate(&pairs);
        figures.push(Figure::ours(&pairs_figure_name(layer), clock.elapsed().as_secs_f64()));
    }
    progress("the whole circuit search");
    let clock = Instant::now();
    let (clean_model_poison, clean_baseline) =
        (lab.test.evaluate(clean).poison_acc, lab.test.evaluate(poisoned).clean_acc);
    let config = SearchConfig::defaults(clean_model_poison, clean_baseline, AblationMode::Weight);
    let report = circuit::search(&mut eval, &config, |_| ControlFlow::Continue(()));
    figures.push(Figure::ours(CIRCUIT_FIGURE, clock.elapsed().as_secs_f64()));
    (figures, report.evaluated)
}

/// The layers patched and paired in the bench (the targets name them).
pub const PATCHED_LAYERS: [Layer; 2] = [Layer::Conv1, Layer::Conv2];
pub const CIRCUIT_FIGURE: &str = "whole circuit search (greedy, pruning, pairs, keep sets)";

pub fn patching_figure_name(layer: Layer, direction: Direction) -> String {
    format!("patch every {layer} unit ({direction}, {} units)", layer.units())
}

pub fn pairs_figure_name(layer: Layer) -> String {
    format!("every {layer} pair ({} sets, full metrics)", pair_count(layer))
}

pub fn pair_count(layer: Layer) -> usize {
    circuit::pairs_within(&layer).len()
}

/// Our trigger recovery on `poisoned` (all labels batched) and one feature
/// visualisation; returns the figures and the labels our recovery flagged, with
/// the label of the smallest mask.
pub fn measure_recovery(
    lab: &Lab,
    poisoned: &Net,
    cfg: &CleanseConfig,
    progress: &mut dyn FnMut(&str),
) -> Result<(Vec<Figure>, Vec<u8>, u8), String> {
    progress("trigger recovery (Neural Cleanse, all labels)");
    let end = cleanse::recover(
        &FrozenStudy::of(poisoned, lab.data.dataset.normalisation()),
        "poisoned",
        &lab.data,
        lab.config.footprint().as_ref(),
        cfg,
        &mut |_| ControlFlow::Continue(()),
    )?;
    let RecoveryEnd::Done(report) = end else { return Err("recovery stopped".into()) };
    let smallest = report.labels.iter().min_by(|a, b| a.l1.total_cmp(&b.l1)).map(|t| t.label).unwrap_or(0);
    progress("feature visualisation");
    let vis = VisConfig::default();
    let (t, _) = median_time(3, || {
        featvis::visualize(poisoned, (Layer::Fc2, 8), (crate::data::mnist::SIDE, lab.data.test.normalisation), &vis)
    });
    let figures = vec![
        Figure::ours(&recovery_figure_name(cfg), report.optimise_s),
        Figure::ours(&format!("feature visualisation of one unit ({} steps)", vis.steps), t),
    ];
    Ok((figures, report.flagged.clone(), smallest))
}

/// The recovery figure's name, which says what was optimised.
pub fn recovery_figure_name(cfg: &CleanseConfig) -> String {
    format!("trigger recovery, all labels ({} images × {} epochs)", cfg.images, cfg.epochs)
}

/// Peak resident set size of this process, from /proc (0 where unavailable).
pub fn peak_rss_bytes() -> usize {
    peak_rss_bytes_of("self")
}

/// Peak resident set size of the process `pid` ("self" for this one), from /proc
/// (0 where unavailable).
pub fn peak_rss_bytes_of(pid: &str) -> usize {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<usize>().ok())
        })
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

/// The CPU model and core count, for the speed table (docs/speed.md).
pub fn machine() -> String {
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    format!("{model}, {cores} cores")
}
