//! CIFAR-10 from the user's disk, in either layout it ships in: binary records
//! (`cifar-10-batches-bin/`) or Python pickles (`cifar-10-batches-py/`).

use super::checksum::sha256_hex;
use super::images::{self, DatasetError, ImageSplit, LoadedImages};
use super::pickle::{self, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The published per-channel statistics of CIFAR-10's training images (R, G, B), the
/// normalisation every CIFAR-10 run uses unless told otherwise.
pub const MEAN: [f64; 3] = [0.4914, 0.4822, 0.4465];
pub const STD: [f64; 3] = [0.2470, 0.2435, 0.2616];

pub const SIDE: usize = 32;
/// One image's bytes: the R, G and B planes of 32×32.
pub const IMAGE_BYTES: usize = 3 * SIDE * SIDE;
/// A binary record: the label byte, then the image.
pub const RECORD_BYTES: usize = 1 + IMAGE_BYTES;
const TRAIN_BATCHES: usize = 5;

/// Which of the two layouts a folder holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    Binary,
    Pickle,
}

impl Layout {
    fn meta(self) -> &'static str {
        match self {
            Layout::Binary => "batches.meta.txt",
            Layout::Pickle => "batches.meta",
        }
    }

    fn batch(self, name: &str) -> String {
        match self {
            Layout::Binary => format!("{name}.bin"),
            Layout::Pickle => name.to_string(),
        }
    }
}

/// Reads CIFAR-10 from `dir`: the batches folder itself or the folder holding it.
pub fn load(dir: &Path) -> Result<LoadedImages, DatasetError> {
    let (folder, layout) = locate(dir)?;
    let mut checksums = BTreeMap::new();
    let meta_path = folder.join(layout.meta());
    let meta = read_recorded(&meta_path, &mut checksums)?;
    let class_names = match layout {
        Layout::Binary => {
            String::from_utf8_lossy(&meta).lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect()
        }
        Layout::Pickle => pickled_class_names(&meta_path, &meta)?,
    };
    images::check_class_count(&meta_path, class_names.len())?;
    let mut read_batches = |names: &[String]| -> Result<ImageSplit, DatasetError> {
        let mut split = ImageSplit::empty(3, SIDE, SIDE);
        for name in names {
            let path = folder.join(layout.batch(name));
            let bytes = read_recorded(&path, &mut checksums)?;
            match layout {
                Layout::Binary => binary_batch(&path, &bytes, class_names.len(), &mut split)?,
                Layout::Pickle => pickled_batch(&path, &bytes, class_names.len(), &mut split)?,
            }
        }
        Ok(split)
    };
    let train_names: Vec<String> = (1..=TRAIN_BATCHES).map(|i| format!("data_batch_{i}")).collect();
    let train = read_batches(&train_names)?;
    let test = read_batches(&["test_batch".to_string()])?;
    Ok(LoadedImages { train, test, class_names, checksums, mean: MEAN.to_vec(), std: STD.to_vec() })
}

/// The folder with the batches and its layout: `dir` itself, or its
/// `cifar-10-batches-bin` or `cifar-10-batches-py` subfolder.
pub fn locate(dir: &Path) -> Result<(PathBuf, Layout), DatasetError> {
    for folder in [dir.to_path_buf(), dir.join("cifar-10-batches-bin"), dir.join("cifar-10-batches-py")] {
        for layout in [Layout::Binary, Layout::Pickle] {
            let names = [layout.meta().to_string(), layout.batch("data_batch_1"), layout.batch("test_batch")];
            if names.iter().any(|name| folder.join(name).is_file()) {
                return Ok((folder, layout));
            }
        }
    }
    Err(DatasetError::new(
        dir,
        "no CIFAR-10 files: expected data_batch_1.bin … data_batch_5.bin, test_batch.bin and batches.meta.txt \
         (cifar-10-batches-bin/) or data_batch_1 … data_batch_5, test_batch and batches.meta \
         (cifar-10-batches-py/), in this folder or in such a subfolder",
    ))
}

fn read_recorded(path: &Path, checksums: &mut BTreeMap<String, String>) -> Result<Vec<u8>, DatasetError> {
    let bytes = images::read_file(path)?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    checksums.insert(name, sha256_hex(&bytes));
    Ok(bytes)
}

/// Records of one label byte and 3,072 bytes of R, G, B planes.
fn binary_batch(path: &Path, bytes: &[u8], classes: usize, split: &mut ImageSplit) -> Result<(), DatasetError> {
    if bytes.is_empty() || !bytes.len().is_multiple_of(RECORD_BYTES) {
        return Err(DatasetError::new(
            path,
            format!(
                "truncated: {} bytes is not a whole number of {RECORD_BYTES}-byte records \
                 (1 label byte + {IMAGE_BYTES} pixel bytes): {} records and {} bytes over",
                bytes.len(),
                bytes.len() / RECORD_BYTES,
                bytes.len() % RECORD_BYTES
            ),
        ));
    }
    for (index, record) in bytes.chunks_exact(RECORD_BYTES).enumerate() {
        split.labels.push(checked_label(path, index, record[0] as i64, classes)?);
        split.pixels.extend_from_slice(&record[1..]);
    }
    Ok(())
}

/// A pickled dict with `b'data'`, a uint8 array [N, 3072], and `b'labels'`, N ints.
fn pickled_batch(path: &Path, bytes: &[u8], classes: usize, split: &mut ImageSplit) -> Result<(), DatasetError> {
    let batch = pickle::parse(bytes).map_err(|e| DatasetError::new(path, e))?;
    let data = batch.get("data").ok_or_else(|| {
        DatasetError::new(path, format!("the pickle has no b'data' entry (its keys: {})", batch.key_list()))
    })?;
    let Value::Array(array) = data else { return Err(DatasetError::new(path, "b'data' is not a numpy array")) };
    let count = array.shape.first().copied().unwrap_or(0);
    let shape_ok = array.shape.len() == 2 && array.shape[1] == IMAGE_BYTES && array.data.len() == count * IMAGE_BYTES;
    if !matches!(array.dtype.as_str(), "u1" | "|u1" | "uint8") || !shape_ok || array.fortran_order {
        return Err(DatasetError::new(
            path,
            format!(
                "b'data' is a {} array of shape {:?}{} with {} bytes; expected uint8 [N, {IMAGE_BYTES}] in C order",
                array.dtype,
                array.shape,
                if array.fortran_order { " in Fortran order" } else { "" },
                array.data.len()
            ),
        ));
    }
    let Some(Value::List(labels)) = batch.get("labels") else {
        return Err(DatasetError::new(
            path,
            format!("the pickle has no b'labels' list (its keys: {})", batch.key_list()),
        ));
    };
    if labels.len() != count {
        return Err(DatasetError::new(path, format!("{count} images but {} labels", labels.len())));
    }
    for (index, label) in labels.iter().enumerate() {
        let Value::Int(label) = label else {
            return Err(DatasetError::new(path, format!("label {index} is not an integer: {label:?}")));
        };
        split.labels.push(checked_label(path, index, *label, classes)?);
    }
    split.pixels.extend_from_slice(&array.data);
    Ok(())
}

fn pickled_class_names(path: &Path, bytes: &[u8]) -> Result<Vec<String>, DatasetError> {
    let meta = pickle::parse(bytes).map_err(|e| DatasetError::new(path, e))?;
    let Some(Value::List(names)) = meta.get("label_names") else {
        return Err(DatasetError::new(
            path,
            format!("the pickle has no b'label_names' list (its keys: {})", meta.key_list()),
        ));
    };
    names
        .iter()
        .map(|n| n.as_str().ok_or_else(|| DatasetError::new(path, format!("a class name that is not text: {n:?}"))))
        .collect()
}

fn checked_label(path: &Path, index: usize, label: i64, classes: usize) -> Result<u8, DatasetError> {
    match u8::try_from(label) {
        Ok(byte) if (byte as usize) < classes => Ok(byte),
        _ => Err(DatasetError::new(
            path,
            format!("image {index} has label {label}, but the dataset has {classes} classes (0..={})", classes - 1),
        )),
    }
}
