//! `doctor`: libtorch, CUDA, the CPU path, threads, data and the run's models. Each
//! model's metrics are measured now on the test set and shown beside the numbers
//! its sidecar recorded, each line saying which it is, so a stale sidecar can
//! never pass for a check.

use super::output::Format;
use crate::data::loaded::LoadedData;
use crate::engine::checkpoint;
use crate::engine::lab::ModelKind;
use crate::engine::metrics::Metrics;
use crate::engine::run::RunDir;
use crate::engine::testset::TestSet;
use crate::setup::CommonArgs;
use crate::table::Table;
use color_eyre::eyre::Result;
use serde::Serialize;
use tch::Device;

/// Points by which a recorded metric may differ from the one measured now on the
/// same test images and still agree: another CPU path or device rounds a few
/// near-tied images the other way (0.01 points each of 10,000), while a sidecar
/// left from other weights or another trigger is off by whole points.
const AGREE_WITHIN: f64 = 0.1;

#[derive(Serialize)]
struct DoctorReport {
    trojanscope: String,
    libtorch: String,
    /// "loaded", or why libtorch_cuda was not opened.
    cuda_support: String,
    /// "ok", or libtorch's answer to a tensor on the first GPU.
    cuda_backend: String,
    cuda_available: bool,
    cudnn_available: bool,
    cuda_devices: i64,
    gpu_names: Vec<String>,
    device: String,
    /// Which of our own CPU loops run, and why.
    cpu_path: String,
    /// Whether a GPU may compute float32 in TF32.
    tf32: String,
    threads: i32,
    data_dir: String,
    data: String,
    run_dir: String,
    models: Vec<ModelCheck>,
}

/// One model of the run: its weights read now, its metrics measured now, and what
/// its sidecar recorded.
#[derive(Serialize)]
struct ModelCheck {
    model: ModelKind,
    /// "ok", "missing" or the problem reading them.
    weights: String,
    /// On the test set now (absent when the weights or the data cannot be read).
    measured: Option<Metrics>,
    /// The sidecar the recorded numbers come from.
    sidecar: String,
    /// As the sidecar recorded them after training (not re-measured).
    recorded: Option<Metrics>,
    /// Whether the two agree, or why they cannot be compared.
    verdict: String,
}

pub fn doctor(common: &CommonArgs, format: Format) -> Result<()> {
    let versions = crate::engine::lab::Versions::current();
    let run = RunDir::new(&common.checkpoints, &common.run);
    let dataset = crate::setup::dataset(common);
    let loaded = crate::setup::load_data(common, dataset, crate::setup::Splits::TrainAndTest);
    let data = match &loaded {
        Ok(d) => format!("ok: {} train, {} test images", d.train.len(), d.test.len()),
        Err(e) => format!("PROBLEM: {e}"),
    };
    let device = crate::engine::device::parse_device(&common.device);
    // Measured where the commands would run, or on the CPU when that device is unusable.
    let measure_on = device.clone().unwrap_or(Device::Cpu);
    let graph = crate::graph::run::is_graph_run(&run);
    let models = ModelKind::STUDY
        .iter()
        .map(|&k| match graph {
            true => check_graph_model(&run, k, loaded.as_ref().ok(), measure_on),
            false => check_model(&run, k, loaded.as_ref().ok(), measure_on),
        })
        .collect();
    let report = DoctorReport {
        trojanscope: versions.trojanscope,
        libtorch: versions.libtorch,
        cuda_support: match crate::engine::device::cuda_support() {
            Ok(()) => "loaded".into(),
            Err(why) => why,
        },
        cuda_backend: match crate::engine::device::probe_cuda_backend() {
            Ok(()) => "ok".into(),
            Err(answer) => answer,
        },
        cuda_available: tch::Cuda::is_available(),
        cudnn_available: tch::Cuda::cudnn_is_available(),
        cuda_devices: tch::Cuda::device_count(),
        gpu_names: gpu_names(),
        device: match device {
            Ok(d) => crate::engine::device::describe(d),
            Err(e) => format!("PROBLEM: {e}"),
        },
        cpu_path: crate::engine::cpu::choice().describe(),
        tf32: crate::engine::tf32::describe(),
        threads: tch::get_num_threads(),
        data_dir: crate::setup::data_dir(common, dataset).display().to_string(),
        data,
        run_dir: run.root.display().to_string(),
        models,
    };
    let mut table = Table::new(["check", "value"]);
    for (k, v) in [
        ("trojanscope", report.trojanscope.clone()),
        ("libtorch", report.libtorch.clone()),
        ("CUDA support (libtorch_cuda)", report.cuda_support.clone()),
        ("CUDA backend", report.cuda_backend.clone()),
        ("CUDA available", report.cuda_available.to_string()),
        ("cuDNN available", report.cudnn_available.to_string()),
        ("CUDA devices", report.cuda_devices.to_string()),
        (
            "GPUs (nvidia-smi)",
            if report.gpu_names.is_empty() { "none found".into() } else { report.gpu_names.join(", ") },
        ),
        ("device (--device)", report.device.clone()),
        ("cpu path", report.cpu_path.clone()),
        ("TF32 (GPU)", report.tf32.clone()),
        ("CPU threads", report.threads.to_string()),
        ("data dir", report.data_dir.clone()),
        ("data", report.data.clone()),
        ("run dir", report.run_dir.clone()),
    ] {
        table.push([k.to_string(), v]);
    }
    for m in &report.models {
        table.push([format!("{} model", m.model), m.weights.clone()]);
        if let Some(measured) = &m.measured {
            table.push([format!("{} metrics", m.model), format!("{}: measured now", summary(measured))]);
        }
        if let Some(recorded) = &m.recorded {
            let line = format!("{}: read from {} (not re-measured)", summary(recorded), m.sidecar);
            table.push([format!("{} sidecar", m.model), line]);
        }
        if !m.verdict.is_empty() {
            table.push([format!("{} agreement", m.model), m.verdict.clone()]);
        }
    }
    format.emit(&report, &table)
}

fn summary(m: &Metrics) -> String {
    format!(
        "clean {:.2} / poison {:.2} / rehab {:.2} on {} test images",
        m.clean_acc, m.poison_acc, m.rehab_acc, m.count
    )
}

/// Reads `kind`'s weights and sidecar and measures the weights on `data`'s test
/// set with the trigger the sidecar records (the run's default without one).
fn check_model(run: &RunDir, kind: ModelKind, data: Option<&LoadedData>, device: Device) -> ModelCheck {
    let sidecar_path = run.sidecar_path(kind);
    let sidecar_name = sidecar_path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let mut check = ModelCheck {
        model: kind,
        weights: "missing".into(),
        measured: None,
        sidecar: sidecar_name.clone(),
        recorded: None,
        verdict: String::new(),
    };
    if !run.has(kind) {
        return check;
    }
    let sidecar = if sidecar_path.is_file() { Some(run.sidecar(kind)) } else { None };
    let net = match checkpoint::load_net(&run.model_path(kind), device) {
        Ok(net) => net,
        Err(e) => {
            check.weights = format!("PROBLEM: {e}");
            return check;
        }
    };
    check.weights = "ok (weights read now)".into();
    let config = match &sidecar {
        Some(Ok(s)) => s.config.clone(),
        _ => crate::setup::run_config(run, data.map(|d| d.dataset).unwrap_or_default()).unwrap_or_default(),
    };
    if let Some(data) = data.filter(|d| !d.test.is_empty()) {
        match TestSet::new(&data.test, &config, device) {
            Ok(test) => check.measured = Some(test.evaluate(&net)),
            Err(e) => {
                check.verdict = format!("PROBLEM: {e}");
                return check;
            }
        }
    }
    check.verdict = match sidecar {
        None => format!("no {sidecar_name}: nothing recorded to compare"),
        Some(Err(e)) => format!("PROBLEM: {e}"),
        Some(Ok(s)) => {
            let verdict = compare(&s.metrics, check.measured.as_ref());
            check.recorded = Some(s.metrics);
            verdict
        }
    };
    check
}

/// `check_model` for a model of an imported or trained graph: the graph and its
/// weights read now and run by the executor; what training recorded, if it was
/// trained here (an import records where it came from, not metrics).
fn check_graph_model(run: &RunDir, kind: ModelKind, data: Option<&LoadedData>, device: Device) -> ModelCheck {
    use crate::graph::run as graph_run;
    let trained_path = graph_run::trained_path(run, kind);
    let record_name = |p: &std::path::Path| p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let mut check = ModelCheck {
        model: kind,
        weights: "missing".into(),
        measured: None,
        sidecar: record_name(&trained_path),
        recorded: None,
        verdict: String::new(),
    };
    if !run.has(kind) {
        return check;
    }
    let exec = match graph_run::load(run, kind, device) {
        Ok(exec) => exec,
        Err(e) => {
            check.weights = format!("PROBLEM: {e}");
            return check;
        }
    };
    check.weights = format!(
        "ok (graph.json, {} nodes, and {} parameters read now)",
        exec.spec.nodes.len(),
        exec.weights.parameter_count()
    );
    if let Some(data) = data.filter(|d| !d.test.is_empty()) {
        let test = TestSet::new(&data.test, &crate::engine::train::TrainConfig::for_dataset(data.dataset), device)
            .expect("a dataset's default attack makes its triggered images");
        let raw = crate::graph::eval::raw_test_set(&test, data.test.normalisation);
        check.measured = Some(crate::graph::eval::evaluate(&exec, &raw, &[]));
    }
    check.verdict = match checkpoint::load_json::<graph_run::TrainedRecord>(&trained_path) {
        Ok(record) => {
            let verdict = compare(&record.metrics, check.measured.as_ref());
            check.recorded = Some(record.metrics);
            verdict
        }
        Err(_) if graph_run::record_path(run, kind).is_file() => {
            check.sidecar = record_name(&graph_run::record_path(run, kind));
            "imported: its record holds the probe, not metrics (the import printed them)".into()
        }
        Err(e) => format!("PROBLEM: {e}"),
    };
    check
}

/// Whether the sidecar's numbers are the weights' numbers.
fn compare(recorded: &Metrics, measured: Option<&Metrics>) -> String {
    let Some(measured) = measured else {
        return "not compared: the test set could not be read".into();
    };
    if recorded.count != measured.count {
        return format!(
            "not compared: recorded on {} test images, measured on {} (--test-limit)",
            recorded.count, measured.count
        );
    }
    let apart: Vec<String> = [
        ("clean", recorded.clean_acc, measured.clean_acc),
        ("poison", recorded.poison_acc, measured.poison_acc),
        ("rehab", recorded.rehab_acc, measured.rehab_acc),
    ]
    .iter()
    .filter(|(_, r, m)| (r - m).abs() > AGREE_WITHIN)
    .map(|(name, r, m)| format!("{name} {r:.2} recorded, {m:.2} measured"))
    .collect();
    if apart.is_empty() {
        format!("ok: the recorded numbers agree with the measured ones (within {AGREE_WITHIN} points)")
    } else {
        format!(
            "MISMATCH: {} (the sidecar is stale: the weights or the trigger changed after it was written)",
            apart.join(", ")
        )
    }
}

/// GPU names as the driver reports them (libtorch does not expose them through tch).
fn gpu_names() -> Vec<String> {
    std::process::Command::new("nvidia-smi")
        .args(["--query-gpu=name", "--format=csv,noheader"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| {
            String::from_utf8_lossy(&o.stdout).lines().map(|l| l.trim().to_string()).filter(|l| !l.is_empty()).collect()
        })
        .unwrap_or_default()
}
