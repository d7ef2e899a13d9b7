//! `trojanscope bench`: runs both sides and prints the comparison.

use super::args::CommonArgs;
use super::output::Format;
use crate::bench::pytorch::{self, RoundMedians};
use crate::bench::{self, BenchReport, Figure, RecoveryVerdict};
use crate::engine::classifier::FrozenStudy;
use crate::engine::cleanse::CleanseConfig;
use crate::engine::detect::StudyFeatures;
use crate::engine::lab::Lab;
use crate::engine::layer::Layer;
use crate::engine::model::Net;
use crate::engine::patch::Direction;
use crate::engine::train::TrainConfig;
use crate::setup::open_lab;
use crate::table::Table;
use color_eyre::eyre::{Result, eyre};
use serde::de::DeserializeOwned;
use std::path::{Path, PathBuf};

/// What `bench` is asked to measure.
pub struct BenchArgs {
    pub repeat: usize,
    pub sweep_channels: usize,
    pub no_pytorch: bool,
    /// Trigger recovery's images and epochs (the reference settings by default).
    pub cleanse: CleanseConfig,
    /// Clean test inputs STRIP is timed on (as many triggered beside them).
    pub strip_inputs: usize,
}

pub fn run(common: &CommonArgs, format: Format, args: &BenchArgs) -> Result<()> {
    let BenchArgs { repeat, sweep_channels, no_pytorch, .. } = *args;
    let dataset = crate::setup::dataset(common);
    let lab = open_lab(common, Some(TrainConfig::for_dataset(dataset)))?;
    let mut say = |what: &str| {
        if format.is_human() {
            eprintln!("bench: {what}");
        }
    };
    let (study_script, fast_script) =
        (manifest_path("benches/study_pytorch.py"), manifest_path("benches/fast_pytorch.py"));
    let study_run = pytorch::Invocation {
        script: &study_script,
        data: script_data(&lab),
        threads: tch::get_num_threads(),
        repeat,
        sweep_channels,
        train_limit: common.train_limit,
        test_limit: common.test_limit,
    };
    let fast_run = pytorch::Invocation { script: &fast_script, ..study_run };
    let announce = format.is_human();
    let mut study = Baseline::<pytorch::EvaluationTimes>::new(study_run, "the study's PyTorch procedure", announce);
    let mut fast = Baseline::<pytorch::FastEvaluationTimes>::new(fast_run, "the fast PyTorch procedure", announce);
    // Both PyTorch procedures' rounds alternate with ours; the last also times their evaluation.
    let mut before_round = |round: usize| {
        if !no_pytorch {
            let last = round + 1 == repeat.max(1);
            study.round(round, last);
            fast.round(round, last);
        }
    };
    let (mut figures, models) = bench::measure_training(&lab, repeat, &mut say, &mut before_round);
    let (more, cache_bytes) = bench::measure_interventions(&lab, repeat, &models, &mut say);
    figures.extend(more);
    if let Some((rounds, evaluation)) = study.times() {
        attach(&mut figures, rounds, evaluation, sweep_channels);
    }
    if let Some((rounds, evaluation)) = fast.times() {
        attach_fast(&mut figures, rounds, evaluation);
    }
    let mut pytorch_error = study.error.clone();
    let (more, evaluated) = bench::measure_circuit(&lab, repeat, &models, &mut say);
    figures.extend(more);
    if !no_pytorch && pytorch_error.is_none() {
        say("the hook-based patching loop in PyTorch (benches/patching.py)");
        if let Err(e) = attach_patching(&lab, &models[1], sweep_channels, &mut figures) {
            pytorch_error = Some(e);
        }
        attach_circuit(&mut figures, study.times().and_then(|(_, evaluation)| evaluation), evaluated);
    }
    let (more, ours_flagged, ours_smallest) =
        bench::measure_recovery(&lab, &models[1], &args.cleanse, &mut say).map_err(|e| eyre!(e))?;
    figures.extend(more);
    let mut verdict = RecoveryVerdict { ours_flagged, ours_smallest, pytorch_flagged: None, pytorch_smallest: None };
    if !no_pytorch && pytorch_error.is_none() {
        say("the reference Neural Cleanse in PyTorch (benches/neural_cleanse.py), one label after another");
        match pytorch_cleanse(&lab, &models[1], &args.cleanse) {
            Ok(times) => {
                let name = bench::recovery_figure_name(&args.cleanse);
                if let Some(f) = figures.iter_mut().find(|f| f.name == name) {
                    f.pytorch_s = Some(times.optimise_s);
                    f.note = "PyTorch: the labels one after another".into();
                }
                verdict.pytorch_flagged = Some(times.flagged);
                verdict.pytorch_smallest = Some(times.smallest_l1_label);
            }
            Err(e) => pytorch_error = Some(e),
        }
    }
    say("STRIP, then spectral signatures and activation clustering over the training set");
    let case = bench::detect::StripCase::of(&lab, args.strip_inputs);
    let poisoned = FrozenStudy::of(&models[1], lab.data.test.normalisation);
    let mut strip = bench::detect::measure_strip(&poisoned, lab.data.train.normalisation, &case, repeat);
    if !no_pytorch && pytorch_error.is_none() {
        let timed = with_checkpoint(&models[1], "benches/detect_pytorch.py", |script, file| {
            bench::detect::pytorch_strip(&lab, &case, file, script)
        });
        match timed {
            Ok(t) => {
                strip.pytorch_s = Some(t);
                strip.note = "PyTorch: BackdoorBench's loop, a batch of 128 per superimposed image".into();
            }
            Err(e) => pytorch_error = Some(e),
        }
    }
    figures.push(strip);
    let reader = StudyFeatures { net: &models[1], normalisation: lab.data.train.normalisation, layer: Layer::Fc1 };
    let classes = lab.config.image_format().classes;
    figures.push(bench::detect::measure_scan(&reader, &lab.data.train, classes, lab.device));
    say("IG (50 steps) on the triggered test set, then Captum's on a part of it");
    let case = bench::attribute::IgCase::of(&lab, &models[1]);
    let mut ig = bench::attribute::measure_ig(&lab, &models[1], &case, repeat);
    if !no_pytorch && pytorch_error.is_none() {
        match with_checkpoint(&models[1], "benches/attribute_captum.py", |script, file| {
            bench::attribute::captum_ig(&lab, &case, file, script)
        }) {
            Ok(t) => {
                ig.pytorch_s = Some(t);
                ig.note = format!("Captum 0.9: timed on {} images, scaled to the set", bench::attribute::CAPTUM_IMAGES);
            }
            Err(e) => pytorch_error = Some(e),
        }
    }
    figures.push(ig);
    say("each attack's poisoned training set and triggered test set, then benches/attacks_pytorch.py's");
    let mut attack_figures = bench::attacks::measure(&lab, repeat);
    if !no_pytorch && pytorch_error.is_none() {
        let script = manifest_path("benches/attacks_pytorch.py");
        let limits = (common.train_limit, common.test_limit);
        match pytorch::run_attacks(&script, script_data(&lab), tch::get_num_threads(), repeat, limits) {
            Ok(times) => {
                let images = (lab.data.train.len(), lab.data.test.len());
                bench::attacks::attach(&mut attack_figures, &times, images);
            }
            Err(e) => pytorch_error = Some(e),
        }
    }
    figures.extend(attack_figures);
    say("whole-process figures: this executable started on the saved run");
    let exe = std::env::current_exe()?;
    let whole_process = bench::process::measure(&exe, &child_flags(common, &lab), &lab.run, repeat, &mut say);
    let report = BenchReport {
        machine: bench::machine(),
        device: crate::engine::device::describe(lab.device),
        repeat,
        figures,
        cache_bytes_three_models: cache_bytes,
        peak_rss_bytes: bench::peak_rss_bytes(),
        pytorch_error,
        fast_pytorch_error: fast.error,
        recovery_verdict: Some(verdict),
        whole_process,
    };
    format.emit(&report, &table(&report))?;
    if format.is_human() {
        eprintln!(
            "{} on {}; medians of {repeat} runs; cached activations for three models {:.0} MiB; peak RSS {:.0} MiB",
            report.machine,
            report.device,
            report.cache_bytes_three_models as f64 / 1048576.0,
            report.peak_rss_bytes as f64 / 1048576.0
        );
        if let Some(v) = &report.recovery_verdict {
            eprintln!(
                "trigger recovery flagged {:?} (smallest mask: label {}) here, {} in PyTorch",
                v.ours_flagged,
                v.ours_smallest,
                match (&v.pytorch_flagged, v.pytorch_smallest) {
                    (Some(f), Some(s)) => format!("{f:?} (smallest mask: label {s})"),
                    _ => "not run".into(),
                }
            );
        }
        if let Some(e) = &report.pytorch_error {
            eprintln!("PyTorch baseline failed: {e}");
        }
        if let Some(e) = &report.fast_pytorch_error {
            eprintln!("fast PyTorch baseline failed: {e}");
        }
    }
    Ok(())
}

/// A PyTorch procedure script (benches/study_pytorch.py or fast_pytorch.py) run
/// once per round beside our epochs, until it fails.
struct Baseline<'a, E> {
    how: pytorch::Invocation<'a>,
    what: &'static str,
    announce: bool,
    rounds: Vec<pytorch::ProcedureTimes<E>>,
    error: Option<String>,
}

impl<'a, E: DeserializeOwned> Baseline<'a, E> {
    fn new(how: pytorch::Invocation<'a>, what: &'static str, announce: bool) -> Self {
        Baseline { how, what, announce, rounds: Vec::new(), error: None }
    }

    /// One round: the script's epochs, and on the `last` round its evaluation too.
    fn round(&mut self, round: usize, last: bool) {
        if self.error.is_some() {
            return;
        }
        if self.announce {
            let script = self.how.script.file_name().unwrap_or_default().to_string_lossy();
            eprintln!("bench: {} (benches/{script}), round {}", self.what, round + 1);
        }
        match pytorch::run(&self.how, last) {
            Ok(times) => self.rounds.push(times),
            Err(e) => self.error = Some(e),
        }
    }

    /// The medians over the rounds and the last round's evaluation; none when the
    /// script failed or never ran.
    fn times(&self) -> Option<(RoundMedians, Option<&E>)> {
        let last = self.rounds.last().filter(|_| self.error.is_none())?;
        Some((RoundMedians::of(&self.rounds), last.evaluation.as_ref()))
    }
}

/// Sets the PyTorch time `column` of each figure a procedure has a counterpart for,
/// and adds its note: the epochs from its rounds' medians (with `epoch_note`), the
/// rest as `counterpart` finds them by our figure's name.
fn attach_column(
    figures: &mut [Figure],
    column: fn(&mut Figure) -> &mut Option<f64>,
    (rounds, epoch_note): (RoundMedians, &str),
    counterpart: impl Fn(&str) -> Option<(f64, String)>,
) {
    for f in figures.iter_mut() {
        let epoch = epoch_time(&f.name, rounds).map(|time| (time, epoch_note.to_string()));
        if let Some((time, note)) = epoch.or_else(|| counterpart(&f.name)) {
            *column(f) = Some(time);
            f.add_note(&note);
        }
    }
}

/// The clean or the poison epoch of a procedure's two, for an epoch figure `name`.
fn epoch_time(name: &str, rounds: RoundMedians) -> Option<f64> {
    match name {
        bench::CLEAN_EPOCH_FIGURE => Some(rounds.clean_epoch_s),
        bench::POISON_EPOCH_FIGURE => Some(rounds.poison_epoch_s),
        _ => None,
    }
}

/// Puts the study loop's figure beside each of ours it has a counterpart for:
/// epochs as the median over the rounds, metrics and evaluation from the last round.
fn attach(
    figures: &mut [Figure],
    rounds: RoundMedians,
    evaluation: Option<&pytorch::EvaluationTimes>,
    sweep_channels: usize,
) {
    let extrapolated = format!("PyTorch: {sweep_channels} channels timed, × units");
    let reload = || "PyTorch: reload, zero, evaluate".to_string();
    let counterpart = |name: &str| {
        if name == bench::METRICS_FIGURE {
            return rounds.metrics_s.map(|t| (t, "PyTorch: three passes over test loaders".into()));
        }
        let e = evaluation?;
        match name {
            n if n.starts_with("conv1 sweep") => Some((e.conv1_sweep_s, extrapolated.clone())),
            n if n.starts_with("conv2 sweep") => Some((e.conv2_sweep_s, extrapolated.clone())),
            n if n.starts_with("fc1 sweep") => Some((e.fc1_sweep_s, extrapolated.clone())),
            "toggle a conv1 set" => Some((e.conv1_per_channel_s, reload())),
            "toggle a conv2 set" => Some((e.conv2_per_channel_s, reload())),
            "toggle a fc1 set" => Some((e.fc1_per_channel_s, reload())),
            _ => None,
        }
    };
    attach_column(figures, |f| &mut f.pytorch_s, (rounds, "rounds alternate with PyTorch's"), counterpart);
}

/// Puts the fast procedure's figure beside our epochs, metrics and sweeps: its
/// rounds (epochs and metrics) alternate with ours as the study loop's epochs do.
fn attach_fast(figures: &mut [Figure], rounds: RoundMedians, evaluation: Option<&pytorch::FastEvaluationTimes>) {
    let counterpart = |name: &str| {
        if name == bench::METRICS_FIGURE {
            return rounds.metrics_s.map(|t| (t, "fast: two inference passes, rounds alternate".into()));
        }
        let e = evaluation?;
        let layer = bench::SWEPT_LAYERS.into_iter().find(|&l| name == bench::sweep_figure_name(l))?;
        fast_sweep(layer, e)
    };
    attach_column(figures, |f| &mut f.fast_pytorch_s, (rounds, "fast: tensor-sliced batches"), counterpart);
}

/// The fast procedure's sweep of every unit of `layer`, per unit × our unit count
/// (so like is compared with like even if it swept another number), and its note.
/// Its time includes caching the layer's output; ours starts from the cache built
/// in its own row.
fn fast_sweep(layer: Layer, e: &pytorch::FastEvaluationTimes) -> Option<(f64, String)> {
    let (seconds, units) = e.sweep(layer)?;
    let time = seconds / units.max(1) as f64 * layer.units() as f64;
    Some((time, format!("fast: all {units} units swept, its layer cache built in its time")))
}

/// The bench's own run and data, as flags for the commands it times whole.
fn child_flags(common: &CommonArgs, lab: &Lab) -> Vec<String> {
    let mut flags = vec![
        format!("--checkpoints={}", common.checkpoints.display()),
        format!("--run={}", common.run),
        format!("--dataset={}", lab.data.dataset),
        format!("--data-dir={}", lab.data.dir.display()),
        format!("--device={}", common.device),
    ];
    flags.extend(common.threads.map(|n| format!("--threads={n}")));
    flags.extend(common.train_limit.map(|n| format!("--train-limit={n}")));
    flags.extend(common.test_limit.map(|n| format!("--test-limit={n}")));
    flags
}

/// A file of this repository (the PyTorch baselines under benches/).
fn manifest_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

/// Runs `script` on the bench's poisoned model, passed through a temporary checkpoint.
fn with_checkpoint<T>(
    poisoned: &Net,
    script: &str,
    run: impl FnOnce(&Path, &Path) -> Result<T, String>,
) -> Result<T, String> {
    let file = std::env::temp_dir().join(format!("trojanscope-bench-{}.safetensors", std::process::id()));
    crate::engine::checkpoint::save_net(poisoned, &file).map_err(|e| e.to_string())?;
    let outcome = run(&manifest_path(script), &file);
    let _ = std::fs::remove_file(&file);
    outcome
}

/// The run's data, as every PyTorch script is pointed at it.
fn script_data(lab: &Lab) -> pytorch::Data<'_> {
    pytorch::Data { dir: &lab.data.dir, dataset: lab.data.dataset }
}

fn pytorch_cleanse(lab: &Lab, poisoned: &Net, cfg: &CleanseConfig) -> Result<pytorch::CleanseTimes, String> {
    with_checkpoint(poisoned, "benches/neural_cleanse.py", |script, file| {
        pytorch::run_cleanse(script, script_data(lab), file, tch::get_num_threads(), cfg)
    })
}

/// The hook loop's time for each patching figure (`units` units timed per layer).
fn attach_patching(lab: &Lab, poisoned: &Net, units: usize, figures: &mut [Figure]) -> Result<(), String> {
    let layers: Vec<String> = bench::PATCHED_LAYERS.iter().map(|l| l.to_string()).collect();
    for direction in [Direction::Denoise, Direction::Noise] {
        let times = with_checkpoint(poisoned, "benches/patching.py", |script, file| {
            let layers = layers.join(",");
            let how = pytorch::PatchingRun {
                direction: direction.name(),
                layers: &layers,
                units,
                test_limit: Some(lab.data.test.len()),
            };
            pytorch::run_patching(script, script_data(lab), file, tch::get_num_threads(), &how)
        })?;
        for layer in bench::PATCHED_LAYERS {
            let (Some(time), Some(f)) = (
                times.layers.get(layer.name()),
                figures.iter_mut().find(|f| f.name == bench::patching_figure_name(layer, direction)),
            ) else {
                continue;
            };
            f.pytorch_s = Some(time.seconds_layer);
            f.note = format!(
                "PyTorch: layer output cached, later layers per unit; {} units timed, × units",
                time.units_timed
            );
        }
    }
    Ok(())
}

/// Pairs and the circuit search have no PyTorch loop of their own: the study's way
/// is one reload-zero-evaluate per set, so its time per set × the sets evaluated.
fn attach_circuit(figures: &mut [Figure], evaluation: Option<&pytorch::EvaluationTimes>, evaluated: usize) {
    let Some(e) = evaluation else { return };
    for f in figures.iter_mut() {
        let (per_set, sets) = if f.name == bench::pairs_figure_name(Layer::Conv1) {
            (e.conv1_per_channel_s, bench::pair_count(Layer::Conv1))
        } else if f.name == bench::pairs_figure_name(Layer::Conv2) {
            (e.conv2_per_channel_s, bench::pair_count(Layer::Conv2))
        } else if f.name == bench::CIRCUIT_FIGURE {
            (e.conv1_per_channel_s, evaluated)
        } else {
            continue;
        };
        f.pytorch_s = Some(per_set * sets as f64);
        f.note = format!("PyTorch: reload, zero, evaluate × {sets} sets");
    }
}

fn seconds(s: f64) -> String {
    if s < 1.0 { format!("{:.1} ms", s * 1000.0) } else { format!("{s:.2} s") }
}

/// A ratio to two significant digits (at least two decimals): 1.05×, 0.0033×.
fn ratio(x: f64) -> String {
    let decimals = if x > 0.0 { (1 - x.log10().floor() as i32).max(2) as usize } else { 2 };
    format!("{x:.decimals$}×")
}

fn table(report: &BenchReport) -> Table {
    let headers =
        ["figure", "trojanscope", "PyTorch study loop", "speed-up", "fast PyTorch", "ours ÷ fast PyTorch", "note"];
    let mut table = Table::new(headers);
    let or_dash = |cell: Option<String>| cell.unwrap_or_else(|| "—".into());
    for f in &report.figures {
        table.push([
            f.name.clone(),
            seconds(f.ours_s),
            or_dash(f.pytorch_s.map(seconds)),
            or_dash(f.speedup().map(|x| format!("{x:.1}×"))),
            or_dash(f.fast_pytorch_s.map(seconds)),
            or_dash(f.versus_fast().map(ratio)),
            f.note.clone(),
        ]);
    }
    // What a user waits for: our wall time, with the process's peak memory as the note.
    for p in &report.whole_process {
        let (wall, note) = match (&p.measured, &p.not_measured) {
            (Some(run), _) => {
                (seconds(run.wall_s), format!("peak RSS {:.0} MiB", run.peak_rss_bytes as f64 / 1048576.0))
            }
            (None, why) => ("—".into(), format!("not measured: {}", why.as_deref().unwrap_or("no reason given"))),
        };
        let dash = || "—".to_string();
        table.push([p.name.clone(), wall, dash(), dash(), dash(), dash(), note]);
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figure(name: &str, ours_s: f64) -> Figure {
        Figure { name: name.into(), ours_s, pytorch_s: None, fast_pytorch_s: None, note: String::new() }
    }

    #[test]
    fn the_fast_procedure_sits_beside_epochs_metrics_and_whole_layer_sweeps_only() {
        let mut figures = vec![
            figure(bench::CLEAN_EPOCH_FIGURE, 3.0),
            figure(bench::POISON_EPOCH_FIGURE, 4.0),
            figure(bench::METRICS_FIGURE, 0.1),
            figure(&bench::sweep_figure_name(Layer::Conv2), 0.02),
            figure("toggle a conv2 set", 0.001),
        ];
        let fast = pytorch::FastEvaluationTimes {
            conv1_sweep_s: 1.0,
            conv2_sweep_s: 8.0,
            fc1_sweep_s: 0.2,
            conv1_units: 32,
            conv2_units: 64,
            fc1_units: 16,
        };
        let rounds = RoundMedians { clean_epoch_s: 5.0, poison_epoch_s: 6.0, metrics_s: Some(0.5) };
        attach_fast(&mut figures, rounds, Some(&fast));
        let times: Vec<Option<f64>> = figures.iter().map(|f| f.fast_pytorch_s).collect();
        assert_eq!(times, [Some(5.0), Some(6.0), Some(0.5), Some(8.0), None]);
        assert_eq!(figures[0].versus_fast(), Some(0.6));
        assert_eq!(figures[3].versus_fast(), Some(0.0025));
        assert!(figures[3].note.contains("all 64 units"), "{}", figures[3].note);
        assert!(figures[4].note.is_empty());
    }

    #[test]
    fn ratios_keep_two_significant_digits() {
        assert_eq!(ratio(1.0534), "1.05×");
        assert_eq!(ratio(0.6), "0.60×");
        assert_eq!(ratio(0.00326), "0.0033×");
        assert_eq!(ratio(12.0), "12.00×");
    }
}
