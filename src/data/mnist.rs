//! MNIST as the study uses it: the four IDX files, normalised tensors.

use super::dataset::{Dataset, Normalisation};
use super::idx::{self, IdxArray, IdxError};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};

pub const SIDE: usize = 28;
pub const PIXELS: usize = SIDE * SIDE;

pub const TRAIN_IMAGES: &str = "train-images-idx3-ubyte";
pub const TRAIN_LABELS: &str = "train-labels-idx1-ubyte";
pub const TEST_IMAGES: &str = "t10k-images-idx3-ubyte";
pub const TEST_LABELS: &str = "t10k-labels-idx1-ubyte";

/// One split: raw pixels (0..=255, row-major 28×28 per image) and labels.
#[derive(Debug, Clone)]
pub struct Split {
    pub pixels: Vec<u8>,
    pub labels: Vec<u8>,
    /// The dataset's pixel statistics, applied by `images`.
    pub normalisation: Normalisation,
}

impl Split {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// A copy of the first `n` examples (all of them when `n` is larger), without
    /// copying the rest.
    pub fn head(&self, n: usize) -> Split {
        let n = n.min(self.len());
        Split {
            pixels: self.pixels[..n * PIXELS].to_vec(),
            labels: self.labels[..n].to_vec(),
            normalisation: self.normalisation,
        }
    }

    /// Keeps the first `n` examples (all of them when `n` is larger).
    pub fn truncate(&mut self, n: usize) {
        let n = n.min(self.len());
        self.labels.truncate(n);
        self.pixels.truncate(n * PIXELS);
    }

    /// Normalised images as `[N, 1, 28, 28]` f32 on `device`.
    pub fn images(&self, device: Device) -> Tensor {
        let mut x = self.raw_images(device).unsqueeze(1);
        self.normalisation.normalise_(&mut x);
        x
    }

    /// Pixels scaled to [0, 1], not normalised, as `[N, 28, 28]` f32 on `device`.
    /// Scaled in place: each fresh tensor of the test set is 31 MB of memory a
    /// short command page-faults in.
    pub fn raw_images(&self, device: Device) -> Tensor {
        let mut x = Tensor::from_slice(&self.pixels).to_device(device).to_kind(Kind::Float).view([
            self.len() as i64,
            SIDE as i64,
            SIDE as i64,
        ]);
        let _ = x.g_div_scalar_(255.0);
        x
    }

    /// Labels as `[N]` i64 on `device`.
    pub fn label_tensor(&self, device: Device) -> Tensor {
        Tensor::from_slice(&self.labels).to_kind(Kind::Int64).to_device(device)
    }
}

/// A dataset's train and test splits plus where they came from.
#[derive(Debug, Clone)]
pub struct Mnist {
    pub dataset: Dataset,
    pub dir: PathBuf,
    pub train: Split,
    pub test: Split,
    /// SHA-256 of each file as read (recorded in checkpoint sidecars).
    pub checksums: BTreeMap<String, String>,
}

impl Mnist {
    /// Loads MNIST's four files from `dir` (raw or `.gz`).
    pub fn load(dir: &Path) -> Result<Mnist, IdxError> {
        Mnist::load_as(dir, Dataset::Mnist)
    }

    /// Loads `dataset`'s four files (MNIST's names and format) from `dir`.
    pub fn load_as(dir: &Path, dataset: Dataset) -> Result<Mnist, IdxError> {
        let mut data = Mnist::load_test(dir, dataset)?;
        data.load_train(None)?;
        Ok(data)
    }

    /// The test split only (the training split stays empty until `load_train`):
    /// what every command but training and trigger recovery reads, a fifth of
    /// the bytes.
    pub fn load_test(dir: &Path, dataset: Dataset) -> Result<Mnist, IdxError> {
        let mut checksums = BTreeMap::new();
        let norm = dataset.normalisation();
        let test = load_split(dir, TEST_IMAGES, TEST_LABELS, norm, &mut checksums)?;
        let train = Split { pixels: Vec::new(), labels: Vec::new(), normalisation: norm };
        Ok(Mnist { dataset, dir: dir.to_path_buf(), train, test, checksums })
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
    Ok(Split { pixels: images.data, labels: labels.data, normalisation })
}

fn read_checked(path: &Path, checksums: &mut BTreeMap<String, String>) -> Result<IdxArray, IdxError> {
    let bytes = std::fs::read(path).map_err(|e| IdxError::Io(path.to_path_buf(), e))?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    checksums.insert(name, super::checksum::sha256_hex(&bytes));
    idx::decode_idx(path, &bytes)
}
