//! The checksum a result is keyed by: a recovery or an unlearned model is computed
//! from a model's weights as they were read, and must not be saved as the result
//! of a file that another writer changed meanwhile.

use super::files::file_sha256;
use crate::engine::checkpoint;
use crate::engine::model::Net;
use color_eyre::eyre::{Result, bail};
use std::path::{Path, PathBuf};
use tch::Device;

/// A weights file and its SHA-256 when it was read.
#[derive(Debug, Clone, PartialEq)]
pub struct FileKey {
    pub path: PathBuf,
    pub sha256: String,
}

impl FileKey {
    pub fn of(path: &Path) -> Result<FileKey> {
        Ok(FileKey { path: path.to_path_buf(), sha256: file_sha256(path)? })
    }

    /// Reads a model and the checksum of the bytes it was read from (the same
    /// before and after reading, or the file was being written).
    pub fn read_model(path: &Path, device: Device) -> Result<(Net, FileKey)> {
        let key = FileKey::of(path)?;
        let net = checkpoint::load_net(path, device)?;
        key.unchanged(&path.display().to_string())?;
        Ok((net, key))
    }

    /// Fails, naming `what`, the file and both checksums, when the file no longer
    /// holds the bytes that were read.
    pub fn unchanged(&self, what: &str) -> Result<()> {
        let now = file_sha256(&self.path)?;
        if now != self.sha256 {
            bail!(
                "the {what} ({}) changed on disk while this command worked on it: SHA-256 {} when read, \
                 {now} now; nothing was saved (run the command again)",
                self.path.display(),
                self.sha256
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The probe's race: a recovery read the poisoned model, then a `train` beside
    /// it replaced the file; the result must not be saved as the new file's.
    #[test]
    fn a_file_replaced_after_reading_is_named_with_both_checksums() {
        let dir = std::env::temp_dir().join(format!("trojanscope-key-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("poisoned.safetensors");
        checkpoint::save_net(&Net::new(Device::Cpu), &path).unwrap();
        let (net, key) = FileKey::read_model(&path, Device::Cpu).unwrap();
        assert_eq!(key.sha256, file_sha256(&path).unwrap());
        assert_eq!(key.sha256.len(), 64);
        key.unchanged("poisoned model").unwrap();
        // Rewritten with the same weights: the same bytes, still the same model.
        checkpoint::save_net(&net, &path).unwrap();
        key.unchanged("poisoned model").unwrap();
        checkpoint::save_net(&Net::new(Device::Cpu), &path).unwrap();
        let now = file_sha256(&path).unwrap();
        assert_ne!(now, key.sha256);
        let error = key.unchanged("poisoned model").unwrap_err().to_string();
        assert!(error.starts_with("the poisoned model ("), "{error}");
        assert!(error.contains(&format!("SHA-256 {} when read, {now} now; nothing was saved", key.sha256)), "{error}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
