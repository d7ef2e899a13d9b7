//! `import`: a PyTorch module and its checkpoint into a run. The project's own
//! Python traces the module (scripts/import_graph.py) into a temporary folder;
//! the graph and weights are then checked here, run on the probe PyTorch ran,
//! and only written into the run when everything agreed.

use super::exec::Executor;
use super::run::{self, ImportRecord};
use super::spec::GraphSpec;
use super::weights::Weights;
use crate::data::dataset::{Dataset, ImageFormat};
use crate::engine::checkpoint;
use crate::engine::lab::ModelKind;
use crate::engine::run::{RunDir, RunLock};
use color_eyre::eyre::{Result, WrapErr, bail, eyre};
use std::path::{Path, PathBuf};
use std::process::Command;
use tch::{Device, Tensor};

/// The importer and the loading code it shares with benches/graph_reference.py,
/// carried in the binary so that they match the executor they feed.
const IMPORTER: [(&str, &str); 2] = [
    ("import_graph.py", include_str!("../../scripts/import_graph.py")),
    ("graph_python.py", include_str!("../../scripts/graph_python.py")),
];

/// How far PyTorch's and trojanscope's probe logits may be apart.
pub const PROBE_TOLERANCE: f64 = 1e-4;

/// What to import, as the command line gave it.
#[derive(Clone)]
pub struct ImportRequest {
    /// `FILE.py:NAME`.
    pub source: String,
    pub weights: PathBuf,
    pub model: ModelKind,
    pub state_key: Option<String>,
    /// `dataset`, `none` or `MEAN/STD`.
    pub input_norm: String,
    pub trust_pickle: bool,
    pub dataset: Dataset,
    /// Its images' shape, classes and normalisation (read from the files for GTSRB
    /// and folders).
    pub format: ImageFormat,
    /// A preset's name and width: the graph is built here, and only the weights
    /// are read (`source` is then unused).
    pub preset: Option<(String, Option<i64>)>,
}

/// A checked import, not yet written.
pub struct Imported {
    pub exec: Executor,
    pub record: ImportRecord,
    /// Lines the importer printed as warnings.
    pub warnings: Vec<String>,
}

/// Traces, reads and probes the model; nothing is written into any run.
pub fn prepare(request: &ImportRequest, device: Device) -> Result<Imported> {
    if request.model == ModelKind::Unlearned {
        bail!("--model takes clean, poisoned or rehab: the unlearned model is what `unlearn` makes");
    }
    if let Some((name, width)) = &request.preset {
        return prepare_preset(request, name, *width, device);
    }
    let (file, _name) = request
        .source
        .rsplit_once(':')
        .filter(|(f, n)| !f.is_empty() && !n.is_empty())
        .ok_or_else(|| eyre!("'{}' is not FILE.py:NAME (a class or function in a Python file)", request.source))?;
    if !Path::new(file).is_file() {
        bail!("{file}: no such Python file");
    }
    if !request.weights.is_file() {
        bail!("{}: no such weights file", request.weights.display());
    }
    let norm = norm_argument(&request.input_norm, &request.format)?;
    let work = importer_dir()?;
    let script = work.0.join("import_graph.py");
    let shape = request.format.shape.map(|d| d.to_string()).join(",");
    let mut command = Command::new(python()?);
    command
        .arg(&script)
        .args(["--source", &request.source])
        .arg("--weights")
        .arg(&request.weights)
        .arg("--out")
        .arg(&work.0)
        .args(["--input-shape", &shape, "--norm", &norm]);
    if let Some(key) = &request.state_key {
        command.args(["--state-key", key]);
    }
    if request.trust_pickle {
        command.arg("--trust-pickle");
    }
    let (summary, warnings) = run_importer(&mut command)?;
    let spec = GraphSpec::load(&work.0.join("graph.json")).map_err(|e| eyre!(e))?;
    run::check_input(&spec, request.dataset, &request.format).map_err(|e| eyre!(e))?;
    let weights = Weights::load(&work.0.join("weights.safetensors"), &spec, device).map_err(|e| eyre!(e))?;
    let exec = Executor::new(spec, weights, device).map_err(|e| eyre!(e))?;
    let (probe_images, probe_max_diff) = probe(&exec, &work.0.join("probe.safetensors"))?;
    if probe_max_diff.is_nan() || probe_max_diff > PROBE_TOLERANCE {
        bail!(
            "the graph read from {} computes other logits than PyTorch: {probe_max_diff:.3e} apart on {probe_images} \
             random inputs (at most {PROBE_TOLERANCE:e} allowed); nothing was written",
            request.source
        );
    }
    let record = record(request, &summary, &exec, probe_images, probe_max_diff)?;
    Ok(Imported { exec, record, warnings })
}

/// `import --preset`: the graph from the preset, the weights read from a
/// safetensors file here, or from a `.pt` by the importer's `--weights-only`.
fn prepare_preset(request: &ImportRequest, name: &str, width: Option<i64>, device: Device) -> Result<Imported> {
    let spec = super::preset::by_name(name, request.format, width).map_err(|e| eyre!(e))?;
    if !request.weights.is_file() {
        bail!("{}: no such weights file", request.weights.display());
    }
    let is_safetensors = request.weights.extension().is_some_and(|e| e == "safetensors");
    let (weights, summary, warnings) = if is_safetensors && request.state_key.is_none() {
        let weights = Weights::load_state_dict(&request.weights, &spec, device).map_err(|e| eyre!(e))?;
        (weights, serde_json::Value::Null, Vec::new())
    } else {
        let work = importer_dir()?;
        let mut command = Command::new(python()?);
        command.arg(work.0.join("import_graph.py")).arg("--weights-only").arg("--weights").arg(&request.weights);
        command.arg("--out").arg(&work.0);
        if let Some(key) = &request.state_key {
            command.args(["--state-key", key]);
        }
        if request.trust_pickle {
            command.arg("--trust-pickle");
        }
        let (summary, warnings) = run_importer(&mut command)?;
        let path = work.0.join("weights.safetensors");
        let weights = Weights::load_state_dict(&path, &spec, device)
            .map_err(|e| eyre!("{}", e.replace(&path.display().to_string(), &request.weights.display().to_string())))?;
        (weights, summary, warnings)
    };
    let exec = Executor::new(spec, weights, device).map_err(|e| eyre!(e))?;
    let width = width.map(|w| format!(" width {w}")).unwrap_or_default();
    let request = ImportRequest { source: format!("preset {name}{width}"), ..request.clone() };
    let record = record(&request, &summary, &exec, 0, 0.0)?;
    Ok(Imported { exec, record, warnings })
}

/// Runs the importer: its summary (stdout's JSON) and warnings, or its error.
fn run_importer(command: &mut Command) -> Result<(serde_json::Value, Vec<String>)> {
    let output = command.output().wrap_err("cannot run the project's Python")?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    let warnings: Vec<String> = stderr.lines().filter(|l| l.starts_with("warning:")).map(str::to_string).collect();
    if !output.status.success() {
        // The importer's error, without its notes (what this side says itself)
        // and warnings (passed on above the error by the caller on success only).
        let errors: Vec<&str> =
            stderr.lines().filter(|l| !l.starts_with("warning:") && !l.starts_with("note:")).collect();
        let message = errors.join("\n");
        let message = message.trim().strip_prefix("error: ").unwrap_or(message.trim());
        bail!("{message}");
    }
    let summary: serde_json::Value = serde_json::from_slice(&output.stdout)
        .wrap_err_with(|| format!("the importer printed no summary: {}", String::from_utf8_lossy(&output.stdout)))?;
    Ok((summary, warnings))
}

fn record(
    request: &ImportRequest,
    summary: &serde_json::Value,
    exec: &Executor,
    probe_images: i64,
    probe_max_diff: f64,
) -> Result<ImportRecord> {
    let text = |key: &str| summary.get(key).and_then(|v| v.as_str()).map(str::to_string);
    // Absolute, so that the bench's PyTorch side finds them from anywhere.
    let absolute = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf()).display().to_string();
    let source = match request.source.rsplit_once(':') {
        Some((file, name)) if Path::new(file).is_file() => format!("{}:{name}", absolute(Path::new(file))),
        _ => request.source.clone(),
    };
    Ok(ImportRecord {
        source,
        weights: absolute(&request.weights),
        weights_sha256: crate::engine::run::files::file_sha256(&request.weights)?,
        state_key: text("state_key"),
        stripped_prefix: text("stripped_prefix"),
        trust_pickle: request.trust_pickle,
        dataset: request.dataset,
        input_norm: request.input_norm.clone(),
        probe_images,
        probe_max_diff,
        nodes: exec.spec.nodes.len(),
        parameters: exec.weights.parameter_count(),
        imported_unix: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
    })
}

/// Writes a checked import into `run`: the graph (new, or the same as the run's),
/// the weights and the record. Returns whether a model was replaced.
pub fn write(imported: &Imported, kind: ModelKind, run: &RunDir) -> Result<bool> {
    if let Some(study) = ModelKind::ALL.iter().find(|&&k| run.sidecar_path(k).is_file()) {
        bail!(
            "{} holds the study's {study} model (trained by trojanscope); import into another run (--run NAME)",
            run.root.display()
        );
    }
    run::check_same_dataset(run, imported.record.dataset)?;
    let graph = run::graph_path(run);
    if graph.is_file() {
        let theirs = GraphSpec::load(&graph).map_err(|e| eyre!(e))?;
        if theirs != imported.exec.spec {
            bail!(
                "{} holds models of another graph ({} nodes, output '{}'); a run's models share one graph: \
                 import into another run (--run NAME)",
                run.root.display(),
                theirs.nodes.len(),
                theirs.output
            );
        }
    }
    let _lock = RunLock::acquire(run)?;
    let replaced = run.has(kind);
    if !graph.is_file() {
        let text = imported.exec.spec.to_json();
        checkpoint::write_atomically(&graph, |tmp| Ok(std::fs::write(tmp, &text)?))?;
    }
    checkpoint::write_atomically(&run.model_path(kind), |tmp| imported.exec.weights.save(tmp).map_err(|e| eyre!(e)))?;
    checkpoint::save_json(&imported.record, &run::record_path(run, kind))?;
    Ok(replaced)
}

/// The mean and std the importer puts first, as `MEAN/STD`, or `none`.
fn norm_argument(asked: &str, format: &ImageFormat) -> Result<String> {
    match asked {
        "dataset" => Ok(format.normalisation.argument()),
        "none" => Ok("none".into()),
        text => {
            let numbers = |part: &str| part.split(',').map(|v| v.trim().parse::<f64>()).collect::<Result<Vec<_>, _>>();
            match text.split_once('/').map(|(m, s)| (numbers(m), numbers(s))) {
                Some((Ok(mean), Ok(std))) if !mean.is_empty() && std.iter().all(|&s| s > 0.0) => Ok(text.to_string()),
                _ => bail!(
                    "--input-norm '{text}' is not dataset, none or MEAN/STD (e.g. 0.1307/0.3081, or per channel \
                     0.49,0.48,0.45/0.25,0.24,0.26; std above 0)"
                ),
            }
        }
    }
}

/// Runs PyTorch's probe inputs through the graph: how many, and the largest
/// logit difference.
fn probe(exec: &Executor, path: &Path) -> Result<(i64, f64)> {
    let tensors = Tensor::read_safetensors(path).map_err(|e| eyre!("cannot read the probe {}: {e}", path.display()))?;
    let find = |name: &str| {
        tensors
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, t)| t.to_device(exec.device))
            .ok_or_else(|| eyre!("the probe has no '{name}'"))
    };
    let (inputs, expected) = (find("inputs")?, find("logits")?);
    let _guard = tch::no_grad_guard();
    let ours = exec.logits(&inputs, &[]);
    if ours.size() != expected.size() {
        bail!("the graph gives logits of shape {:?}; PyTorch's module {:?}", ours.size(), expected.size());
    }
    let diff = (ours - expected).abs().max().double_value(&[]);
    Ok((inputs.size()[0], diff))
}

/// The project's Python: $TROJANSCOPE_PYTHON, the active virtual environment,
/// the checkout's `.venv` (scripts/setup.sh links it), or setup's cached one.
fn python() -> Result<PathBuf> {
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(p) = std::env::var_os("TROJANSCOPE_PYTHON") {
        candidates.push(p.into());
    }
    if let Some(venv) = std::env::var_os("VIRTUAL_ENV") {
        candidates.push(Path::new(&venv).join("bin/python"));
    }
    candidates.push(Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python"));
    if let Some(home) = std::env::var_os("HOME") {
        candidates.push(Path::new(&home).join(".cache/trojanscope/venv-torch-2.11.0/bin/python"));
    }
    candidates.into_iter().find(|p| p.is_file()).ok_or_else(|| {
        eyre!(
            "import needs the project's Python with torch: run `source scripts/setup.sh` in the repository \
             (or set TROJANSCOPE_PYTHON to a python that has torch)"
        )
    })
}

/// A temporary folder holding the importer.
fn importer_dir() -> Result<TempDir> {
    let work = TempDir::new()?;
    for (name, text) in IMPORTER {
        std::fs::write(work.0.join(name), text).wrap_err("cannot write the importer into a temporary folder")?;
    }
    Ok(work)
}

/// A temporary folder removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Result<TempDir> {
        static COUNT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let nth = COUNT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("trojanscope-import-{}-{nth}", std::process::id()));
        std::fs::create_dir_all(&dir).wrap_err_with(|| format!("cannot create {}", dir.display()))?;
        Ok(TempDir(dir))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
