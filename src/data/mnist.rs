//! MNIST as the study uses it: the four IDX files, normalised tensors.

use super::dataset::{Dataset, Normalisation};
use super::idx::{self, IdxArray, IdxError};
use super::loaded::{LoadedData, Split};
use std::collections::BTreeMap;
use std::path::Path;

pub const SIDE: usize = 28;
pub const PIXELS: usize = SIDE * SIDE;
const IMAGE_SHAPE: [usize; 3] = [1, SIDE, SIDE];

pub const TRAIN_IMAGES: &str = "train-images-idx3-ubyte";
pub const TRAIN_LABELS: &str = "train-labels-idx1-ubyte";
pub const TEST_IMAGES: &str = "t10k-images-idx3-ubyte";
pub const TEST_LABELS: &str = "t10k-labels-idx1-ubyte";

impl LoadedData {
    /// Loads MNIST's four files from `dir` (raw or `.gz`).
    pub fn load(dir: &Path) -> Result<LoadedData, IdxError> {
        LoadedData::load_as(dir, Dataset::Mnist)
    }

    /// Loads `dataset`'s four files (MNIST's names and format) from `dir`.
    pub fn load_as(dir: &Path, dataset: Dataset) -> Result<LoadedData, IdxError> {
        let mut data = LoadedData::load_test(dir, dataset)?;
        data.load_train(None)?;
        Ok(data)
    }

    /// The test split only (the training split stays empty until `load_train`):
    /// what every command but training and trigger recovery reads, a fifth of
    /// the bytes.
    pub fn load_test(dir: &Path, dataset: Dataset) -> Result<LoadedData, IdxError> {
        let mut checksums = BTreeMap::new();
        let norm = dataset.normalisation();
        let test = load_split(dir, TEST_IMAGES, TEST_LABELS, norm, &mut checksums)?;
        let train = Split::empty(IMAGE_SHAPE, norm);
        let class_names = (0..10).map(|c| dataset.class_name(c).to_string()).collect();
        Ok(LoadedData { dataset, dir: dir.to_path_buf(), train, test, class_names, checksums })
    }

    /// Reads the training split (its first `limit` examples) unless it is read.
    pub fn load_train(&mut self, limit: Option<usize>) -> Result<(), IdxError> {
        if self.train.is_empty() {
            let norm = self.dataset.normalisation();
            self.train = load_split(&self.dir, TRAIN_IMAGES, TRAIN_LABELS, norm, &mut self.checksums)?;
            self.train.truncate(limit.unwrap_or(usize::MAX));
        }
        Ok(())
    }
}

fn load_split(
    dir: &Path,
    images_name: &str,
    labels_name: &str,
    normalisation: Normalisation,
    checksums: &mut BTreeMap<String, String>,
) -> Result<Split, IdxError> {
    let images_path = idx::locate(dir, images_name)?;
    let labels_path = idx::locate(dir, labels_name)?;
    let images = read_checked(&images_path, checksums)?;
    let labels = read_checked(&labels_path, checksums)?;
    if images.dims.len() != 3 || images.dims[1] != SIDE || images.dims[2] != SIDE {
        return Err(IdxError::WrongDims { path: images_path, expected: "[N, 28, 28]".into(), found: images.dims });
    }
    if labels.dims.len() != 1 {
        return Err(IdxError::WrongDims { path: labels_path, expected: "[N]".into(), found: labels.dims });
    }
    if images.dims[0] != labels.dims[0] {
        return Err(IdxError::CountMismatch {
            images: images_path,
            image_count: images.dims[0],
            labels: labels_path,
            label_count: labels.dims[0],
        });
    }
    if let Some(bad) = labels.data.iter().find(|&&l| l > 9) {
        return Err(IdxError::WrongDims {
            path: labels_path,
            expected: "labels 0..=9".into(),
            found: vec![*bad as usize],
        });
    }
    Ok(Split { pixels: images.data, labels: labels.data, shape: IMAGE_SHAPE, normalisation })
}

fn read_checked(path: &Path, checksums: &mut BTreeMap<String, String>) -> Result<IdxArray, IdxError> {
    let bytes = std::fs::read(path).map_err(|e| IdxError::Io(path.to_path_buf(), e))?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    checksums.insert(name, super::checksum::sha256_hex(&bytes));
    idx::decode_idx(path, &bytes)
}
