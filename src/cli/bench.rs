//! `trojanscope bench`: runs both sides and prints the comparison.

use super::args::CommonArgs;
use super::output::Format;
use crate::bench::{self, BenchReport, Figure, RecoveryVerdict, pytorch};
use crate::data::dataset::Dataset;
use crate::engine::cleanse::CleanseConfig;
use crate::engine::lab::Lab;
use crate::engine::layer::Layer;
use crate::engine::model::Net;
use crate::engine::patch::Direction;
use crate::engine::train::TrainConfig;
use crate::setup::open_lab;
use crate::table::Table;
use color_eyre::eyre::{Result, bail, eyre};
use std::path::Path;

/// What `bench` is asked to measure.
pub struct BenchArgs {
    pub repeat: usize,
    pub sweep_channels: usize,
    pub no_pytorch: bool,
    /// Trigger recovery's images and epochs (the reference settings by default).
    pub cleanse: CleanseConfig,
}

pub fn run(common: &CommonArgs, format: Format, args: &BenchArgs) -> Result<()> {
    let BenchArgs { repeat, sweep_channels, no_pytorch, .. } = *args;
    let dataset = crate::setup::dataset(common);
    if dataset != Dataset::Mnist && !no_pytorch {
        bail!("the PyTorch baselines under benches/ normalise as MNIST does; bench {dataset} with --no-pytorch");
    }
    let lab = open_lab(common, Some(TrainConfig::for_dataset(dataset)))?;
    let data_dir = lab.data.dir.clone();
    let mut say = |what: &str| {
        if format.is_human() {
            eprintln!("bench: {what}");
        }
    };
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/study_pytorch.py");
    let baseline = pytorch::Invocation {
        script: &script,
        data_dir: &data_dir,
        threads: tch::get_num_threads(),
        repeat,
        sweep_channels,
        train_limit: common.train_limit,
        test_limit: common.test_limit,
    };
    // PyTorch's rounds alternate with ours; the last also times its evaluation.
    let mut rounds: Vec<pytorch::PytorchTimes> = Vec::new();
    let mut pytorch_error = None;
    let mut before_round = |round: usize| {
        if no_pytorch || pytorch_error.is_some() {
            return;
        }
        if format.is_human() {
            eprintln!("bench: the study's PyTorch procedure (benches/study_pytorch.py), round {}", round + 1);
        }
        match pytorch::run(&baseline, round + 1 == repeat.max(1)) {
            Ok(times) => rounds.push(times),
            Err(e) => pytorch_error = Some(e),
        }
    };
    let (mut figures, models) = bench::measure_training(&lab, repeat, &mut say, &mut before_round);
    let (more, cache_bytes) = bench::measure_interventions(&lab, repeat, &models, &mut say);
    figures.extend(more);
    if pytorch_error.is_none() && !rounds.is_empty() {
        attach(&mut figures, &rounds, sweep_channels);
    }
    let (more, evaluated) = bench::measure_circuit(&lab, repeat, &models, &mut say);
    figures.extend(more);
    if !no_pytorch && pytorch_error.is_none() {
        say("the hook-based patching loop in PyTorch (benches/patching.py)");
        if let Err(e) = attach_patching(&lab, &models[1], sweep_channels, &mut figures) {
            pytorch_error = Some(e);
        }
        attach_circuit(&mut figures, &rounds, evaluated);
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
    let report = BenchReport {
        machine: bench::machine(),
        device: crate::engine::device::describe(lab.device),
        repeat,
        figures,
        cache_bytes_three_models: cache_bytes,
        peak_rss_bytes: bench::peak_rss_bytes(),
        pytorch_error,
        recovery_verdict: Some(verdict),
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
    }
    Ok(())
}

/// Puts PyTorch's figure beside each of ours that the study has a counterpart for:
/// epochs as the median over the rounds, evaluation from the last round.
fn attach(figures: &mut [Figure], rounds: &[pytorch::PytorchTimes], sweep_channels: usize) {
    let clean = bench::median(rounds.iter().map(|r| r.clean_epoch_s).collect());
    let poison = bench::median(rounds.iter().map(|r| r.poison_epoch_s).collect());
    let evaluation = rounds.last().and_then(|r| r.evaluation.as_ref());
    let extrapolated = format!("PyTorch: {sweep_channels} channels timed, × units");
    let reload = || "PyTorch: reload, zero, evaluate".to_string();
    for f in figures.iter_mut() {
        let (time, note) = match (f.name.as_str(), evaluation) {
            ("clean epoch", _) => (Some(clean), "rounds alternate with PyTorch's".into()),
            ("poison epoch", _) => (Some(poison), "rounds alternate with PyTorch's".into()),
            ("metrics on the full test set", Some(e)) => {
                (Some(e.metrics_s), "PyTorch: three passes over test loaders".into())
            }
            (n, Some(e)) if n.starts_with("conv1 sweep") => (Some(e.conv1_sweep_s), extrapolated.clone()),
            (n, Some(e)) if n.starts_with("conv2 sweep") => (Some(e.conv2_sweep_s), extrapolated.clone()),
            (n, Some(e)) if n.starts_with("fc1 sweep") => (Some(e.fc1_sweep_s), extrapolated.clone()),
            ("toggle a conv1 set", Some(e)) => (Some(e.conv1_per_channel_s), reload()),
            ("toggle a conv2 set", Some(e)) => (Some(e.conv2_per_channel_s), reload()),
            ("toggle a fc1 set", Some(e)) => (Some(e.fc1_per_channel_s), reload()),
            _ => (None, String::new()),
        };
        f.pytorch_s = time;
        f.note = note;
    }
}

/// Runs `script` on the bench's poisoned model, passed through a temporary checkpoint.
fn with_checkpoint<T>(
    poisoned: &Net,
    script: &str,
    run: impl FnOnce(&Path, &Path) -> Result<T, String>,
) -> Result<T, String> {
    let file = std::env::temp_dir().join(format!("trojanscope-bench-{}.safetensors", std::process::id()));
    crate::engine::checkpoint::save_net(poisoned, &file).map_err(|e| e.to_string())?;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join(script);
    let outcome = run(&script, &file);
    let _ = std::fs::remove_file(&file);
    outcome
}

fn pytorch_cleanse(lab: &Lab, poisoned: &Net, cfg: &CleanseConfig) -> Result<pytorch::CleanseTimes, String> {
    with_checkpoint(poisoned, "benches/neural_cleanse.py", |script, file| {
        pytorch::run_cleanse(script, &lab.data.dir, file, tch::get_num_threads(), cfg)
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
            pytorch::run_patching(script, &lab.data.dir, file, tch::get_num_threads(), &how)
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
fn attach_circuit(figures: &mut [Figure], rounds: &[pytorch::PytorchTimes], evaluated: usize) {
    let Some(e) = rounds.last().and_then(|r| r.evaluation.as_ref()) else { return };
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

fn table(report: &BenchReport) -> Table {
    let mut table = Table::new(["figure", "trojanscope", "PyTorch study loop", "speed-up", "note"]);
    for f in &report.figures {
        table.push([
            f.name.clone(),
            seconds(f.ours_s),
            f.pytorch_s.map(seconds).unwrap_or_else(|| "—".into()),
            f.speedup().map(|x| format!("{x:.1}×")).unwrap_or_else(|| "—".into()),
            f.note.clone(),
        ]);
    }
    table
}
