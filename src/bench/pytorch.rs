//! Runs the PyTorch baselines under benches/ (the study's procedure as the study
//! coded it, and as an expert writing for speed codes it) and reads their timings.

use crate::data::dataset::Dataset;
use crate::engine::layer::Layer;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use std::path::Path;
use std::process::Command;

/// One run of a procedure script: its training epochs, its metrics (the fast
/// script times them every round, the study's with its evaluation only), and
/// (unless asked for training only) its evaluation figures `E`.
#[derive(Debug, Clone, Deserialize)]
pub struct ProcedureTimes<E> {
    pub clean_epoch_s: f64,
    pub poison_epoch_s: f64,
    #[serde(default)]
    pub metrics_s: Option<f64>,
    #[serde(flatten)]
    pub evaluation: Option<E>,
}

/// benches/study_pytorch.py's run.
pub type PytorchTimes = ProcedureTimes<EvaluationTimes>;
/// benches/fast_pytorch.py's run.
pub type FastTimes = ProcedureTimes<FastEvaluationTimes>;

/// What a procedure's rounds add up to: the medians of its clean and poison
/// epochs, and of its metrics over the rounds that timed them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RoundMedians {
    pub clean_epoch_s: f64,
    pub poison_epoch_s: f64,
    pub metrics_s: Option<f64>,
}

impl RoundMedians {
    /// Over `rounds` (at least one).
    pub fn of<E>(rounds: &[ProcedureTimes<E>]) -> RoundMedians {
        let metrics: Vec<f64> = rounds.iter().filter_map(|r| r.metrics_s).collect();
        RoundMedians {
            clean_epoch_s: super::median(rounds.iter().map(|r| r.clean_epoch_s).collect()),
            poison_epoch_s: super::median(rounds.iter().map(|r| r.poison_epoch_s).collect()),
            metrics_s: (!metrics.is_empty()).then(|| super::median(metrics)),
        }
    }
}

/// study_pytorch.py's evaluation: sweeps extrapolated from a few reloads per layer.
#[derive(Debug, Clone, Deserialize)]
pub struct EvaluationTimes {
    pub conv1_sweep_s: f64,
    pub conv2_sweep_s: f64,
    pub fc1_sweep_s: f64,
    pub conv1_per_channel_s: f64,
    pub conv2_per_channel_s: f64,
    pub fc1_per_channel_s: f64,
}

/// fast_pytorch.py's evaluation: every unit of each layer swept (from the layer's
/// output cached inside the timed call), and the units it swept.
#[derive(Debug, Clone, Deserialize)]
pub struct FastEvaluationTimes {
    pub conv1_sweep_s: f64,
    pub conv2_sweep_s: f64,
    pub fc1_sweep_s: f64,
    pub conv1_units: usize,
    pub conv2_units: usize,
    pub fc1_units: usize,
}

impl FastEvaluationTimes {
    /// The time to sweep every unit of `layer`, and how many units that was.
    pub fn sweep(&self, layer: Layer) -> Option<(f64, usize)> {
        match layer {
            Layer::Conv1 => Some((self.conv1_sweep_s, self.conv1_units)),
            Layer::Conv2 => Some((self.conv2_sweep_s, self.conv2_units)),
            Layer::Fc1 => Some((self.fc1_sweep_s, self.fc1_units)),
            Layer::Fc2 => None,
        }
    }
}

/// How a procedure script is asked to run.
pub struct Invocation<'a> {
    pub script: &'a Path,
    pub data: Data<'a>,
    pub threads: i32,
    /// Runs per evaluation figure (each training epoch is run once).
    pub repeat: usize,
    pub sweep_channels: usize,
    /// The first N training and test images only, as our side uses.
    pub train_limit: Option<usize>,
    pub test_limit: Option<usize>,
}

/// The dataset every script reads: its folder, and which one it is (the
/// normalisation and the trigger's lit value follow from it).
#[derive(Clone, Copy)]
pub struct Data<'a> {
    pub dir: &'a Path,
    pub dataset: Dataset,
}

/// `script` under the virtual environment's Python, pointed at `data`.
fn script_command(script: &Path, data: Data, threads: i32) -> Command {
    let mut command = Command::new(python());
    command.arg(script).arg("--data-dir").arg(data.dir);
    command.args(["--dataset", data.dataset.name(), "--threads", &threads.to_string()]);
    command
}

/// The virtual environment's Python (the one whose torch we link), else python3.
pub fn python() -> String {
    std::env::var("VIRTUAL_ENV")
        .ok()
        .map(|v| format!("{v}/bin/python"))
        .filter(|p| Path::new(p).exists())
        .or_else(|| Some(".venv/bin/python".to_string()).filter(|p| Path::new(p).exists()))
        .unwrap_or_else(|| "python3".into())
}

/// What benches/neural_cleanse.py reports.
#[derive(Debug, Clone, Deserialize)]
pub struct CleanseTimes {
    pub optimise_s: f64,
    pub flagged: Vec<u8>,
    pub smallest_l1_label: u8,
}

/// Runs the reference Neural Cleanse (one label after another, as its users run
/// it) on a checkpoint with the same images, epochs and batch as ours.
pub fn run_cleanse(
    script: &Path,
    data: Data,
    checkpoint: &Path,
    threads: i32,
    cfg: &crate::engine::cleanse::CleanseConfig,
) -> Result<CleanseTimes, String> {
    let mut command = script_command(script, data, threads);
    command.arg("--checkpoint").arg(checkpoint);
    for (flag, value) in [
        ("--images", cfg.images.to_string()),
        ("--epochs", cfg.epochs.to_string()),
        ("--batch-size", cfg.batch_size.to_string()),
        ("--seed", cfg.seed.to_string()),
        ("--test-images", cfg.test_images.to_string()),
    ] {
        command.args([flag, &value]);
    }
    last_json_line(script, command)
}

/// What benches/patching.py reports, per layer.
#[derive(Debug, Clone, Deserialize)]
pub struct PatchingTimes {
    pub layers: std::collections::BTreeMap<String, LayerPatchTime>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct LayerPatchTime {
    /// Every unit of the layer (extrapolated from the units timed).
    pub seconds_layer: f64,
    pub units_timed: usize,
}

/// What the hook-based patching loop is asked to time.
pub struct PatchingRun<'a> {
    pub direction: &'a str,
    /// Comma-separated layer names.
    pub layers: &'a str,
    /// Units timed per layer (the per-unit cost is constant; the layer is extrapolated).
    pub units: usize,
    /// The first N test images, as our side uses.
    pub test_limit: Option<usize>,
}

/// Runs benches/patching.py on a checkpoint.
pub fn run_patching(
    script: &Path,
    data: Data,
    checkpoint: &Path,
    threads: i32,
    how: &PatchingRun,
) -> Result<PatchingTimes, String> {
    let mut command = script_command(script, data, threads);
    command.arg("--checkpoint").arg(checkpoint);
    for (flag, value) in [
        ("--direction", how.direction.to_string()),
        ("--layers", how.layers.to_string()),
        ("--units", how.units.to_string()),
    ] {
        command.args([flag, &value]);
    }
    add_limits(&mut command, None, how.test_limit);
    last_json_line(script, command)
}

/// What benches/attacks_pytorch.py's `bench` reports for one attack.
#[derive(Debug, Clone, Deserialize)]
pub struct AttackTimes {
    /// Poisoning 10 % of the training set (median of its runs).
    pub poison_s: f64,
    /// Triggering the whole test set.
    pub test_s: f64,
}

/// Runs benches/attacks_pytorch.py's `bench` on the same images as ours.
pub fn run_attacks(
    script: &Path,
    data: Data,
    threads: i32,
    repeat: usize,
    (train_limit, test_limit): (Option<usize>, Option<usize>),
) -> Result<std::collections::BTreeMap<String, AttackTimes>, String> {
    let mut command = script_command(script, data, threads);
    add_limits(&mut command, train_limit, test_limit);
    command.args(["bench", "--repeat", &repeat.to_string()]);
    last_json_line(script, command)
}

/// Runs a script and parses the JSON object on the last line of its stdout.
pub fn last_json_line<T: DeserializeOwned>(script: &Path, mut command: Command) -> Result<T, String> {
    let output = command.output().map_err(|e| format!("cannot start {}: {e}", python()))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(format!("{} failed: {}", script.display(), stderr.lines().last().unwrap_or("")));
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout.lines().last().unwrap_or("");
    serde_json::from_str(line).map_err(|e| format!("unreadable output from {}: {e}", script.display()))
}

/// One clean and one poison epoch, then the evaluation figures if `evaluate`.
pub fn run<E: DeserializeOwned>(how: &Invocation, evaluate: bool) -> Result<ProcedureTimes<E>, String> {
    let script = how.script;
    let mut command = script_command(script, how.data, how.threads);
    command
        .args(["--epochs-repeat", "1", "--repeat", &how.repeat.to_string()])
        .args(["--sweep-channels", &how.sweep_channels.to_string()])
        .args((!evaluate).then_some("--training-only"));
    add_limits(&mut command, how.train_limit, how.test_limit);
    last_json_line(script, command)
}

/// `--train-limit N` and `--test-limit N` where given: the first N images, as our side uses.
fn add_limits(command: &mut Command, train_limit: Option<usize>, test_limit: Option<usize>) {
    for (flag, limit) in [("--train-limit", train_limit), ("--test-limit", test_limit)] {
        command.args(limit.iter().flat_map(|n| [flag.to_string(), n.to_string()]));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round<E: DeserializeOwned>(json: &str) -> ProcedureTimes<E> {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn metrics_take_the_median_of_the_rounds_that_timed_them() {
        // The fast script times its metrics every round, its sweeps in the last only.
        let fast: Vec<FastTimes> = vec![
            round(r#"{"clean_epoch_s": 9.0, "poison_epoch_s": 10.0, "metrics_s": 1.3}"#),
            round(r#"{"clean_epoch_s": 7.0, "poison_epoch_s": 12.0, "metrics_s": 0.9}"#),
            round(
                r#"{"clean_epoch_s": 8.0, "poison_epoch_s": 11.0, "metrics_s": 1.1, "conv1_sweep_s": 30.0,
                "conv2_sweep_s": 12.0, "fc1_sweep_s": 1.0, "conv1_units": 32, "conv2_units": 64, "fc1_units": 128}"#,
            ),
        ];
        assert!(fast[0].evaluation.is_none() && fast[2].evaluation.as_ref().unwrap().conv2_units == 64);
        let medians = RoundMedians::of(&fast);
        assert_eq!(medians, RoundMedians { clean_epoch_s: 8.0, poison_epoch_s: 11.0, metrics_s: Some(1.1) });
        // The study's script times its metrics with its evaluation, in the last round.
        let study: Vec<PytorchTimes> = vec![
            round(r#"{"clean_epoch_s": 15.0, "poison_epoch_s": 16.0}"#),
            round(
                r#"{"clean_epoch_s": 14.0, "poison_epoch_s": 17.0, "metrics_s": 6.3, "conv1_sweep_s": 200.0,
                "conv2_sweep_s": 400.0, "fc1_sweep_s": 100.0, "conv1_per_channel_s": 6.2,
                "conv2_per_channel_s": 6.1, "fc1_per_channel_s": 6.0}"#,
            ),
        ];
        assert_eq!(RoundMedians::of(&study).metrics_s, Some(6.3));
        assert!(study[1].evaluation.is_some());
        assert_eq!(RoundMedians::of(&study[..1]).metrics_s, None);
    }
}
