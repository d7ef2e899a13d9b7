//! `trojanscope bench`: runs both sides and prints the comparison.

use super::args::CommonArgs;
use super::lab_setup::open_lab;
use super::output::Format;
use crate::bench::{self, BenchReport, Figure, pytorch};
use crate::engine::train::TrainConfig;
use crate::table::Table;
use color_eyre::eyre::Result;
use std::path::Path;

pub fn run(common: &CommonArgs, format: Format, repeat: usize, sweep_channels: usize, no_pytorch: bool) -> Result<()> {
    let lab = open_lab(common, Some(TrainConfig::default()))?;
    let say = |what: &str| {
        if format.is_human() {
            eprintln!("bench: {what}");
        }
    };
    let baseline = if no_pytorch {
        None
    } else {
        say("the study's PyTorch procedure (benches/study_pytorch.py)");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/study_pytorch.py");
        Some(pytorch::run(&script, &common.data_dir, tch::get_num_threads(), repeat, sweep_channels))
    };
    let (mut figures, cache_bytes) = bench::measure_ours(&lab, repeat, &mut |step| say(step));
    let mut pytorch_error = None;
    match baseline {
        Some(Ok(p)) => attach(&mut figures, &p, sweep_channels),
        Some(Err(e)) => pytorch_error = Some(e),
        None => {}
    }
    let report = BenchReport {
        machine: bench::machine(),
        device: crate::engine::device::describe(lab.device),
        repeat,
        figures,
        cache_bytes_three_models: cache_bytes,
        peak_rss_bytes: bench::peak_rss_bytes(),
        pytorch_error,
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
        if let Some(e) = &report.pytorch_error {
            eprintln!("PyTorch baseline failed: {e}");
        }
    }
    Ok(())
}

/// Puts PyTorch's figure beside each of ours that the study has a counterpart for.
fn attach(figures: &mut [Figure], p: &pytorch::PytorchTimes, sweep_channels: usize) {
    let extrapolated = format!("PyTorch: {sweep_channels} channels timed, × units");
    for f in figures.iter_mut() {
        let (time, note) = match f.name.as_str() {
            "clean epoch" => (Some(p.clean_epoch_s), String::new()),
            "poison epoch" => (Some(p.poison_epoch_s), String::new()),
            "metrics on the full test set" => (Some(p.metrics_s), "PyTorch: three passes over test loaders".into()),
            n if n.starts_with("conv1 sweep") => (Some(p.conv1_sweep_s), extrapolated.clone()),
            n if n.starts_with("conv2 sweep") => (Some(p.conv2_sweep_s), extrapolated.clone()),
            n if n.starts_with("fc1 sweep") => (Some(p.fc1_sweep_s), extrapolated.clone()),
            "toggle a conv1 set" => (Some(p.conv1_per_channel_s), "PyTorch: reload, zero, evaluate".into()),
            "toggle a conv2 set" => (Some(p.conv2_per_channel_s), "PyTorch: reload, zero, evaluate".into()),
            "toggle a fc1 set" => (Some(p.fc1_per_channel_s), "PyTorch: reload, zero, evaluate".into()),
            _ => (None, String::new()),
        };
        f.pytorch_s = time;
        f.note = note;
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
