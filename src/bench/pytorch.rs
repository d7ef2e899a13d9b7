//! Runs benches/study_pytorch.py (the study's PyTorch procedure) and reads its
//! timings.

use serde::Deserialize;
use std::path::Path;
use std::process::Command;

#[derive(Debug, Clone, Deserialize)]
pub struct PytorchTimes {
    pub torch: String,
    pub clean_epoch_s: f64,
    pub poison_epoch_s: f64,
    pub metrics_s: f64,
    pub conv1_sweep_s: f64,
    pub conv2_sweep_s: f64,
    pub fc1_sweep_s: f64,
    pub conv1_per_channel_s: f64,
    pub conv2_per_channel_s: f64,
    pub fc1_per_channel_s: f64,
    pub conv1_channels_timed: usize,
}

/// The virtual environment's Python (the one whose torch we link), else python3.
fn python() -> String {
    std::env::var("VIRTUAL_ENV")
        .ok()
        .map(|v| format!("{v}/bin/python"))
        .filter(|p| Path::new(p).exists())
        .or_else(|| Some(".venv/bin/python".to_string()).filter(|p| Path::new(p).exists()))
        .unwrap_or_else(|| "python3".into())
}

pub fn run(
    script: &Path,
    data_dir: &Path,
    threads: i32,
    repeat: usize,
    sweep_channels: usize,
) -> Result<PytorchTimes, String> {
    let output = Command::new(python())
        .arg(script)
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--threads", &threads.to_string(), "--repeat", &repeat.to_string()])
        .args(["--sweep-channels", &sweep_channels.to_string()])
        .output()
        .map_err(|e| format!("cannot start {}: {e}", python()))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(format!("{} failed: {}", script.display(), stderr.lines().last().unwrap_or("")));
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout.lines().last().unwrap_or("");
    serde_json::from_str(line).map_err(|e| format!("unreadable output from {}: {e}", script.display()))
}
