//! Image datasets as read from disk (CIFAR-10, GTSRB, image folders): the plain splits
//! the readers return, the one error they share, and the training split's statistics.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// Labels are bytes, so a dataset has at most this many classes.
pub const MAX_CLASSES: usize = 256;

/// One split as read from disk: pixels 0..=255 in planes (N × C × H × W, row-major)
/// and one label per image.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageSplit {
    pub pixels: Vec<u8>,
    pub labels: Vec<u8>,
    pub channels: usize,
    pub height: usize,
    pub width: usize,
}

impl ImageSplit {
    /// A split with no images yet, of images `channels × height × width`.
    pub fn empty(channels: usize, height: usize, width: usize) -> ImageSplit {
        ImageSplit { pixels: Vec::new(), labels: Vec::new(), channels, height, width }
    }

    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Bytes of one image: `channels × height × width`.
    pub fn image_len(&self) -> usize {
        self.channels * self.height * self.width
    }

    /// Image `image`'s value at channel `c`, row `y`, column `x`.
    pub fn pixel(&self, image: usize, c: usize, y: usize, x: usize) -> u8 {
        self.pixels[image * self.image_len() + (c * self.height + y) * self.width + x]
    }

    /// Per-channel mean and standard deviation of the pixels scaled to [0, 1], over
    /// every pixel of every image (the population deviation, as the published CIFAR-10
    /// figures are). Sums are exact integers, so the order of images changes nothing.
    pub fn channel_stats(&self) -> (Vec<f64>, Vec<f64>) {
        let plane = self.height * self.width;
        let mut sums = vec![(0u64, 0u64); self.channels];
        for image in self.pixels.chunks_exact(self.image_len()) {
            for (sum, channel) in sums.iter_mut().zip(image.chunks_exact(plane)) {
                for &p in channel {
                    sum.0 += p as u64;
                    sum.1 += (p as u64) * (p as u64);
                }
            }
        }
        let n = (self.len() * plane) as f64;
        sums.iter()
            .map(|&(s, s2)| {
                let mean = s as f64 / 255.0 / n;
                let var = s2 as f64 / (255.0 * 255.0) / n - mean * mean;
                (mean, var.max(0.0).sqrt())
            })
            .unzip()
    }
}

/// A dataset as read: both splits, class names in label order, the SHA-256 of what was
/// read (file name → hex; for folders of many images one digest per split, see
/// `checksum::FileListDigest`), and the per-channel normalisation.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadedImages {
    pub train: ImageSplit,
    pub test: ImageSplit,
    pub class_names: Vec<String>,
    pub checksums: BTreeMap<String, String>,
    pub mean: Vec<f64>,
    pub std: Vec<f64>,
}

impl LoadedImages {
    /// Both splits with the normalisation computed from the training split.
    pub fn with_training_stats(
        train: ImageSplit,
        test: ImageSplit,
        class_names: Vec<String>,
        checksums: BTreeMap<String, String>,
    ) -> LoadedImages {
        let (mean, std) = train.channel_stats();
        LoadedImages { train, test, class_names, checksums, mean, std }
    }
}

/// What is wrong with a dataset, naming the file or folder it is about.
#[derive(Debug)]
pub struct DatasetError {
    pub path: PathBuf,
    pub problem: String,
}

impl DatasetError {
    pub fn new(path: &Path, problem: impl Into<String>) -> DatasetError {
        DatasetError { path: path.to_path_buf(), problem: problem.into() }
    }
}

impl fmt::Display for DatasetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.problem)
    }
}

impl std::error::Error for DatasetError {}

/// A file's bytes; a missing file says so rather than the OS's "No such file".
pub fn read_file(path: &Path) -> Result<Vec<u8>, DatasetError> {
    std::fs::read(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => DatasetError::new(path, "file not found"),
        _ => DatasetError::new(path, format!("cannot read: {e}")),
    })
}

/// Refuses more classes than a label byte can name.
pub fn check_class_count(path: &Path, count: usize) -> Result<(), DatasetError> {
    if count == 0 {
        return Err(DatasetError::new(path, "names no classes"));
    }
    if count > MAX_CLASSES {
        return Err(DatasetError::new(path, format!("{count} classes; at most {MAX_CLASSES} are supported")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_stats_are_each_planes_mean_and_population_deviation() {
        // Two 1×2 images of two channels: channel 0 holds 0, 255, 255, 255; channel 1 all 51.
        let split = ImageSplit {
            pixels: vec![0, 255, 51, 51, 255, 255, 51, 51],
            labels: vec![0, 1],
            channels: 2,
            height: 1,
            width: 2,
        };
        let (mean, std) = split.channel_stats();
        assert!((mean[0] - 0.75).abs() < 1e-12 && (std[0] - 0.1875f64.sqrt()).abs() < 1e-12);
        assert!((mean[1] - 0.2).abs() < 1e-12 && std[1] < 1e-7);
        assert_eq!(split.pixel(1, 0, 0, 1), 255);
        assert_eq!(split.pixel(0, 1, 0, 0), 51);
    }
}
