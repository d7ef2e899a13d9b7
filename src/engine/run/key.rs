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
