//! `checkpoints/<run>/`: where each of a run's files lives, and which names a run
//! may have.

use crate::engine::checkpoint;
use crate::engine::lab::{ModelKind, Sidecar};
use crate::engine::model::Net;
use color_eyre::eyre::{Result, bail};
use std::path::{Path, PathBuf};
use tch::Device;

/// `checkpoints/<run>/`: one safetensors file and one sidecar per model, and the
/// training log.
#[derive(Debug, Clone)]
pub struct RunDir {
    pub root: PathBuf,
}

impl RunDir {
    pub fn new(checkpoints: &Path, run: &str) -> RunDir {
        RunDir { root: checkpoints.join(run) }
    }

    /// A run is one folder inside the checkpoints folder: a name, never a path
    /// (`..`, `/x` or `a/b` would write outside it or into another run).
    pub fn check_name(name: &str) -> Result<String, String> {
        let allowed = |c: char| c.is_ascii_alphanumeric() || "-_.".contains(c);
        if name.is_empty() || name == "." || name == ".." || !name.chars().all(allowed) {
            return Err(format!(
                "'{name}' is not a run name: a run is a folder inside --checkpoints, named with letters, \
                 digits, '-', '_' and '.' (not '.' or '..'); to use another folder, pass --checkpoints"
            ));
        }
        Ok(name.to_string())
    }

    pub fn model_path(&self, kind: ModelKind) -> PathBuf {
        self.root.join(format!("{kind}.safetensors"))
    }

    pub fn sidecar_path(&self, kind: ModelKind) -> PathBuf {
        self.root.join(format!("{kind}.json"))
    }

    /// The record of the run's settings (`run/settings.rs`).
    pub fn settings_path(&self) -> PathBuf {
        self.root.join("run.json")
    }

    /// Which training images the run's poisoning triggered (`--poison-ratio`).
    pub fn poisoned_train_path(&self) -> PathBuf {
        self.root.join("poisoned-train.json")
    }

    pub fn metrics_log(&self) -> PathBuf {
        self.root.join("metrics.jsonl")
    }

    /// The training log of unlearning (kept apart from the study's timeline).
    pub fn unlearn_log(&self) -> PathBuf {
        self.root.join("unlearn.jsonl")
    }

    /// Where trigger recovery on a model (a run's, or a checkpoint file's stem)
    /// keeps its result, and the folder of its pictures.
    pub fn recovery_path(&self, model: &str) -> PathBuf {
        self.root.join(format!("recovery-{model}.json"))
    }

    pub fn recovery_pictures(&self, model: &str) -> PathBuf {
        self.root.join(format!("recovery-{model}"))
    }

    pub fn has(&self, kind: ModelKind) -> bool {
        self.model_path(kind).is_file()
    }

    pub fn load(&self, kind: ModelKind, device: Device) -> Result<Net> {
        self.require(&[kind])?;
        checkpoint::load_net(&self.model_path(kind), device)
    }

    /// Fails, naming the first one missing, unless the run holds all of `kinds`.
    pub fn require(&self, kinds: &[ModelKind]) -> Result<()> {
        match kinds.iter().find(|&&kind| !self.has(kind)) {
            Some(kind) => {
                bail!("no {kind} model in {}: train it first (trojanscope train --run …)", self.root.display())
            }
            None => Ok(()),
        }
    }

    pub fn sidecar(&self, kind: ModelKind) -> Result<Sidecar> {
        checkpoint::load_json(&self.sidecar_path(kind))
    }
}
