//! `<run>/run.json`: the one record of what a run studies (the dataset and the
//! SHA-256 of its files, the trigger, the training recipe). Every phase trained
//! into the run and every command reading data for it must match it, so a run's
//! models and numbers never come from different settings or data without a word.

use super::dir::RunDir;
use crate::data::loaded::LoadedData;
use crate::engine::checkpoint;
use crate::engine::lab::ModelKind;
use crate::engine::train::TrainConfig;
use color_eyre::eyre::{Result, WrapErr, bail};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunSettings {
    /// The recipe, with the dataset and the trigger.
    pub config: TrainConfig,
    /// SHA-256 of each data file read when the run's models were trained.
    pub data_sha256: BTreeMap<String, String>,
}

/// Settings that only set how often and on how many images training is watched:
/// they do not change the models, so phases may differ in them.
const WATCHING_ONLY: [&str; 2] = ["eval_every", "eval_subset"];

impl RunSettings {
    pub fn of(config: &TrainConfig, data: &LoadedData) -> RunSettings {
        RunSettings { config: config.clone(), data_sha256: data.checksums.clone() }
    }

    /// The run's record: `run.json`, else (a run saved before it existed) the
    /// sidecar of its first study model; `None` for a run without models.
    pub fn load(run: &RunDir) -> Result<Option<RunSettings>> {
        let path = run.settings_path();
        if path.is_file() {
            return checkpoint::load_json(&path).map(Some);
        }
        for kind in ModelKind::STUDY {
            if run.sidecar_path(kind).is_file()
                && let Ok(sidecar) = run.sidecar(kind)
            {
                return Ok(Some(RunSettings { config: sidecar.config, data_sha256: sidecar.data_sha256 }));
            }
        }
        Ok(None)
    }

    pub fn save(&self, run: &RunDir) -> Result<()> {
        checkpoint::save_json(self, &run.settings_path())
    }

    /// Each setting of `asked` that differs from the record, as `target 8 → 3`
    /// (named like its command-line flag).
    pub fn differences(&self, asked: &TrainConfig) -> Vec<String> {
        let mut recorded = BTreeMap::new();
        let mut wanted = BTreeMap::new();
        flatten("", &serde_json::to_value(&self.config).unwrap_or_default(), &mut recorded);
        flatten("", &serde_json::to_value(asked).unwrap_or_default(), &mut wanted);
        recorded
            .iter()
            .filter(|(name, value)| !WATCHING_ONLY.contains(&name.as_str()) && wanted.get(*name) != Some(value))
            .map(|(name, value)| {
                let now = wanted.get(name).map(|v| v.to_string()).unwrap_or_else(|| "none".into());
                format!("{} {value} → {now}", flag_name(name))
            })
            .collect()
    }

    /// Fails, naming the file and both checksums, when a data file read now is
    /// not the one the run's models were trained on. A gzip file read where the
    /// run recorded the raw file is compared by its decompressed bytes (the raw
    /// file's checksum); a raw file where the run recorded a gzip one cannot be
    /// compared and passes.
    pub fn check_data(&self, data: &LoadedData) -> Result<()> {
        for (file, sha) in &data.checksums {
            let path = data.dir.join(file);
            let raw_name = file.strip_suffix(".gz");
            let (recorded, now) = match (self.data_sha256.get(file), raw_name.and_then(|r| self.data_sha256.get(r))) {
                (Some(recorded), _) => (recorded, sha.clone()),
                (None, Some(recorded)) => (recorded, gunzipped_sha256(&path)?),
                (None, None) => continue,
            };
            if *recorded != now {
                bail!(
                    "{}: SHA-256 {now}{}, but this run's models were trained on a file with SHA-256 {recorded}; \
                     point --data-dir at the {} data the run was trained on, or train a new --run on this data",
                    path.display(),
                    if now == *sha { "" } else { " (decompressed)" },
                    self.config.dataset
                );
            }
        }
        Ok(())
    }
}

/// The SHA-256 of a gzip file's decompressed bytes.
fn gunzipped_sha256(path: &std::path::Path) -> Result<String> {
    use std::io::Read;
    let file = std::fs::File::open(path).wrap_err_with(|| format!("cannot read {}", path.display()))?;
    let mut bytes = Vec::new();
    flate2::read::GzDecoder::new(file)
        .read_to_end(&mut bytes)
        .wrap_err_with(|| format!("{}: not a readable gzip file", path.display()))?;
    Ok(crate::data::checksum::sha256_hex(&bytes))
}

/// `trigger.row` → "trigger-row", `trigger.target` → "target", `batch_size` → "batch-size".
fn flag_name(path: &str) -> String {
    let name = if path == "trigger.target" { "target" } else { path };
    name.replace(['.', '_'], "-")
}

/// Every leaf of a JSON object under its dotted path.
fn flatten(prefix: &str, value: &serde_json::Value, out: &mut BTreeMap<String, serde_json::Value>) {
    match value {
        serde_json::Value::Object(fields) => {
            for (key, field) in fields {
                let path = if prefix.is_empty() { key.clone() } else { format!("{prefix}.{key}") };
                flatten(&path, field, out);
            }
        }
        leaf => {
            out.insert(prefix.to_string(), leaf.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn differences_name_each_changed_setting_like_its_flag() {
        let record = RunSettings { config: TrainConfig::default(), data_sha256: BTreeMap::new() };
        let mut asked = TrainConfig::default();
        assert!(record.differences(&asked).is_empty());
        asked.trigger.target = 3;
        asked.trigger.row = 0;
        asked.batch_size = 64;
        asked.eval_every = 7;
        assert_eq!(record.differences(&asked), ["batch-size 32 → 64", "trigger-row 22 → 0", "target 8 → 3"]);
    }
}
