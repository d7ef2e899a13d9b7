//! A run folder's single-writer lock.

use super::dir::RunDir;
use super::files::{ensure_writable, refuse_link};
use color_eyre::eyre::{Result, WrapErr, bail};
use std::io::Write;

/// `<run>/.lock`, locked (flock) while a process writes into the folder and
/// holding that process's id. The kernel drops the lock when the process ends,
/// however it ends. Taking it first proves the folder writable, so a command on
/// a read-only run fails before it computes anything.
pub struct RunLock {
    _file: std::fs::File,
}

impl RunLock {
    pub fn acquire(run: &RunDir) -> Result<RunLock> {
        use std::os::fd::AsRawFd;
        use std::os::unix::fs::OpenOptionsExt;
        ensure_writable(&run.root)?;
        let path = run.root.join(".lock");
        refuse_link(&path)?;
        // O_NOFOLLOW: a link put there after the check above is refused too.
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .wrap_err_with(|| format!("cannot open {}", path.display()))?;
        // SAFETY: flock on a descriptor this function owns.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let holder = std::fs::read_to_string(&path).unwrap_or_default().trim().to_string();
            let who = if holder.is_empty() { String::new() } else { format!(" (process {holder})") };
            bail!(
                "{} is being written by another process{who}; wait for it to finish or use another --run (lock: {})",
                run.root.display(),
                path.display()
            );
        }
        file.set_len(0)
            .and_then(|()| write!(file, "{}", std::process::id()))
            .wrap_err_with(|| format!("cannot write {}", path.display()))?;
        Ok(RunLock { _file: file })
    }
}
