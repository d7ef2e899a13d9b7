//! A dataset as every command holds it: both splits as bytes with their image
//! shape and normalisation, the class names and the SHA-256 of what was read.

use super::dataset::{Dataset, ImageFormat, Normalisation};
use super::images::{ImageSplit, LoadedImages};
use std::collections::BTreeMap;
use std::path::PathBuf;
use tch::{Device, Kind, Tensor};

/// One split: raw pixels (0..=255, planes of `shape` = [C, H, W] per image) and labels.
#[derive(Debug, Clone)]
pub struct Split {
    pub pixels: Vec<u8>,
    pub labels: Vec<u8>,
    /// One image's `[channels, height, width]`.
    pub shape: [usize; 3],
    /// The dataset's pixel statistics, applied by `images`.
    pub normalisation: Normalisation,
}

impl Split {
    /// A split of `shape` images with none read yet.
    pub fn empty(shape: [usize; 3], normalisation: Normalisation) -> Split {
        Split { pixels: Vec::new(), labels: Vec::new(), shape, normalisation }
    }

    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Bytes of one image.
    pub fn image_len(&self) -> usize {
        self.shape.iter().product()
    }

    /// A copy of the first `n` examples (all of them when `n` is larger), without
    /// copying the rest.
    pub fn head(&self, n: usize) -> Split {
        let n = n.min(self.len());
        Split {
            pixels: self.pixels[..n * self.image_len()].to_vec(),
            labels: self.labels[..n].to_vec(),
            shape: self.shape,
            normalisation: self.normalisation,
        }
    }

    /// Keeps the first `n` examples (all of them when `n` is larger).
    pub fn truncate(&mut self, n: usize) {
        let n = n.min(self.len());
        self.labels.truncate(n);
        self.pixels.truncate(n * self.image_len());
    }

    /// Normalised images as `[N, C, H, W]` f32 on `device`.
    pub fn images(&self, device: Device) -> Tensor {
        let mut x = self.raw_images(device);
        self.normalisation.normalise_(&mut x);
        x
    }

    /// Pixels scaled to [0, 1], not normalised, as `[N, C, H, W]` f32 on `device`.
    /// Scaled in place: each fresh tensor of the test set is 31 MB of memory a
    /// short command page-faults in.
    pub fn raw_images(&self, device: Device) -> Tensor {
        let [c, h, w] = self.shape.map(|d| d as i64);
        let mut x =
            Tensor::from_slice(&self.pixels).to_device(device).to_kind(Kind::Float).view([self.len() as i64, c, h, w]);
        let _ = x.g_div_scalar_(255.0);
        x
    }

    /// Labels as `[N]` i64 on `device`.
    pub fn label_tensor(&self, device: Device) -> Tensor {
        Tensor::from_slice(&self.labels).to_kind(Kind::Int64).to_device(device)
    }

    fn of(split: ImageSplit, normalisation: Normalisation) -> Split {
        let shape = [split.channels, split.height, split.width];
        Split { pixels: split.pixels, labels: split.labels, shape, normalisation }
    }
}

/// A dataset's train and test splits plus where they came from.
#[derive(Debug, Clone)]
pub struct LoadedData {
    pub dataset: Dataset,
    pub dir: PathBuf,
    pub train: Split,
    pub test: Split,
    /// Class names in label order.
    pub class_names: Vec<String>,
    /// SHA-256 of each file as read (recorded in checkpoint sidecars).
    pub checksums: BTreeMap<String, String>,
}

impl LoadedData {
    /// A dataset read by one of the image readers (CIFAR-10, GTSRB, a folder).
    pub fn of_images(dataset: Dataset, dir: PathBuf, images: LoadedImages) -> Result<LoadedData, String> {
        let normalisation = Normalisation::per_channel(&images.mean, &images.std)
            .map_err(|e| format!("{}: {e} (computed from the training images)", dir.display()))?;
        Ok(LoadedData {
            dataset,
            dir,
            train: Split::of(images.train, normalisation),
            test: Split::of(images.test, normalisation),
            class_names: images.class_names,
            checksums: images.checksums,
        })
    }

    /// What a network sees of the data: the image shape, the classes and the
    /// normalisation.
    pub fn format(&self) -> ImageFormat {
        ImageFormat {
            shape: self.test.shape.map(|d| d as i64),
            classes: self.class_names.len(),
            normalisation: self.test.normalisation,
        }
    }
}
