//! Writing inside a run folder: never through a symbolic link (writing to one
//! writes wherever it points: as root, any file), and a folder that cannot be
//! written is found by trying, before a long job computes.

use color_eyre::eyre::{Result, WrapErr, bail};
use std::path::Path;

/// Fails naming `path` when it is a symbolic link.
pub fn refuse_link(path: &Path) -> Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_symlink() => bail!(
            "{} is a symbolic link: trojanscope never writes through a link in a run folder; \
             remove it (or use another --run)",
            path.display()
        ),
        _ => Ok(()),
    }
}

/// Creates `dir` if needed and proves it writable by creating and removing a file
/// in it. Only trying tells: root ignores permission bits, and `access(W_OK)`
/// says yes to root on a folder it cannot write (an immutable one, a read-only mount).
pub fn ensure_writable(dir: &Path) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    refuse_link(dir)?;
    let read_only = |e: std::io::Error| {
        color_eyre::eyre::eyre!(
            "{} cannot be written ({e}): nothing could be saved there, so nothing was started; \
             copy the run to a writable --checkpoints folder, or use another --run",
            dir.display()
        )
    };
    std::fs::create_dir_all(dir).map_err(read_only)?;
    // A name of this call's own: two threads of one process (the explorer's
    // worker and a command, or tests in parallel) may probe the same folder at once.
    static PROBES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let nth = PROBES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let probe = dir.join(format!(".write-check-{}-{nth}", std::process::id()));
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&probe)
        .map_err(read_only)?;
    std::fs::remove_file(&probe).wrap_err_with(|| format!("cannot remove {}", probe.display()))
}

/// The SHA-256 of a file's bytes, in hex.
pub fn file_sha256(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).wrap_err_with(|| format!("cannot read {}", path.display()))?;
    Ok(crate::data::checksum::sha256_hex(&bytes))
}

#[cfg(test)]
mod tests {
    use super::ensure_writable;

    /// The snapshot tests' workers opened one run at once and one of them found it
    /// "read-only": both probed with the same file name.
    #[test]
    fn threads_probing_one_folder_at_once_all_find_it_writable() {
        let dir = std::env::temp_dir().join(format!("trojanscope-probe-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let answers: Vec<bool> = std::thread::scope(|s| {
            let probes: Vec<_> = (0..8).map(|_| s.spawn(|| (0..50).all(|_| ensure_writable(&dir).is_ok()))).collect();
            probes.into_iter().map(|p| p.join().unwrap()).collect()
        });
        let left = std::fs::read_dir(&dir).unwrap().count();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(answers.iter().all(|&ok| ok), "every probe found the folder writable");
        assert_eq!(left, 0, "every probe file removed");
    }
}
