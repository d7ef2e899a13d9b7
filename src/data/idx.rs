//! Reader for the IDX format that MNIST ships in, raw or gzip-compressed.

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Type codes of the IDX header; MNIST uses only unsigned bytes.
const UNSIGNED_BYTE: u8 = 0x08;

/// An IDX file's contents: its dimensions and its bytes in row-major order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdxArray {
    pub dims: Vec<usize>,
    pub data: Vec<u8>,
}

/// What can be wrong with an IDX file. Every variant names the file.
#[derive(Debug)]
pub enum IdxError {
    Missing(PathBuf),
    Io(PathBuf, std::io::Error),
    BadMagic { path: PathBuf, found: [u8; 4] },
    WrongDims { path: PathBuf, expected: String, found: Vec<usize> },
    Truncated { path: PathBuf, expected: usize, found: usize },
    TrailingBytes { path: PathBuf, expected: usize, found: usize },
    CountMismatch { images: PathBuf, image_count: usize, labels: PathBuf, label_count: usize },
}

impl fmt::Display for IdxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IdxError::Missing(p) => write!(f, "{}: file not found (also looked for {}.gz)", p.display(), p.display()),
            IdxError::Io(p, e) => write!(f, "{}: cannot read: {e}", p.display()),
            IdxError::BadMagic { path, found } => write!(
                f,
                "{}: not an IDX file of unsigned bytes: magic number is {:02x} {:02x} {:02x} {:02x}, expected 00 00 08 0N",
                path.display(),
                found[0],
                found[1],
                found[2],
                found[3]
            ),
            IdxError::WrongDims { path, expected, found } => {
                write!(f, "{}: expected dimensions {expected}, found {found:?}", path.display())
            }
            IdxError::Truncated { path, expected, found } => write!(
                f,
                "{}: truncated: the header promises {expected} bytes of data, the file has {found}",
                path.display()
            ),
            IdxError::TrailingBytes { path, expected, found } => write!(
                f,
                "{}: the header promises {expected} bytes of data, the file has {found} (extra bytes at the end)",
                path.display()
            ),
            IdxError::CountMismatch { images, image_count, labels, label_count } => write!(
                f,
                "{} holds {image_count} images but {} holds {label_count} labels; they must match",
                images.display(),
                labels.display()
            ),
        }
    }
}

impl std::error::Error for IdxError {}

/// Finds `name` in `dir`, raw or with a `.gz` suffix.
pub fn locate(dir: &Path, name: &str) -> Result<PathBuf, IdxError> {
    let raw = dir.join(name);
    let gz = dir.join(format!("{name}.gz"));
    if raw.is_file() {
        Ok(raw)
    } else if gz.is_file() {
        Ok(gz)
    } else {
        Err(IdxError::Missing(raw))
    }
}

/// Reads a whole IDX file; gzip is recognised by its magic bytes, not the name.
pub fn read_idx(path: &Path) -> Result<IdxArray, IdxError> {
    let bytes = std::fs::read(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => IdxError::Missing(path.to_path_buf()),
        _ => IdxError::Io(path.to_path_buf(), e),
    })?;
    decode_idx(path, &bytes)
}

/// Decodes a file's bytes, gunzipping them first when they start with gzip's magic.
pub fn decode_idx(path: &Path, bytes: &[u8]) -> Result<IdxArray, IdxError> {
    if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::with_capacity(bytes.len() * 4);
        flate2::read::GzDecoder::new(bytes).read_to_end(&mut out).map_err(|e| IdxError::Io(path.to_path_buf(), e))?;
        parse_idx(path, &out)
    } else {
        parse_idx(path, bytes)
    }
}

/// Parses IDX bytes; `path` only labels the errors.
pub fn parse_idx(path: &Path, bytes: &[u8]) -> Result<IdxArray, IdxError> {
    let mut magic = [0u8; 4];
    let head = bytes.len().min(4);
    magic[..head].copy_from_slice(&bytes[..head]);
    let rank = magic[3] as usize;
    if head < 4 || magic[0] != 0 || magic[1] != 0 || magic[2] != UNSIGNED_BYTE || rank == 0 {
        return Err(IdxError::BadMagic { path: path.to_path_buf(), found: magic });
    }
    let header_len = 4 + 4 * rank;
    if bytes.len() < header_len {
        return Err(IdxError::Truncated { path: path.to_path_buf(), expected: header_len, found: bytes.len() });
    }
    let dims: Vec<usize> =
        bytes[4..header_len].chunks_exact(4).map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as usize).collect();
    let expected: usize = dims.iter().product();
    let found = bytes.len() - header_len;
    if found < expected {
        return Err(IdxError::Truncated { path: path.to_path_buf(), expected, found });
    }
    if found > expected {
        return Err(IdxError::TrailingBytes { path: path.to_path_buf(), expected, found });
    }
    Ok(IdxArray { dims, data: bytes[header_len..].to_vec() })
}

/// Serialises an array as IDX (used to write test fixtures and data subsets).
pub fn encode_idx(array: &IdxArray) -> Vec<u8> {
    let mut out = vec![0, 0, UNSIGNED_BYTE, array.dims.len() as u8];
    for d in &array.dims {
        out.extend_from_slice(&(*d as u32).to_be_bytes());
    }
    out.extend_from_slice(&array.data);
    out
}
