//! Which dataset a run uses: where its files live, the shape of its images, how
//! its pixels are normalised, and what its classes are called.

use serde::{Deserialize, Serialize};
use tch::Tensor;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Dataset {
    #[default]
    Mnist,
    FashionMnist,
    /// From the user's disk (binary or pickle layout), 3×32×32.
    Cifar10,
    /// From the user's disk, resized to 3×32×32; its normalisation is computed.
    Gtsrb,
    /// `root/train/<class>/`, `root/test/<class>/`: size, channels, classes and
    /// normalisation all come from the files.
    Folder,
}

/// Channels an image may have (grey or RGB; alpha is dropped when read).
const MAX_CHANNELS: usize = 3;

/// Pixel statistics of a training set, one pair per channel: inputs are
/// `(pixel/255 − mean[c]) / std[c]`. Grey images have one pair, applied as scalars
/// (the study's arithmetic, bit for bit).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "PerChannel", into = "PerChannel")]
pub struct Normalisation {
    channels: usize,
    mean: [f64; MAX_CHANNELS],
    std: [f64; MAX_CHANNELS],
}

/// `Normalisation` as run.json records it.
#[derive(Serialize, Deserialize)]
struct PerChannel {
    mean: Vec<f64>,
    std: Vec<f64>,
}

impl TryFrom<PerChannel> for Normalisation {
    type Error = String;
    fn try_from(p: PerChannel) -> Result<Normalisation, String> {
        Normalisation::per_channel(&p.mean, &p.std)
    }
}

impl From<Normalisation> for PerChannel {
    fn from(n: Normalisation) -> PerChannel {
        PerChannel { mean: n.mean().to_vec(), std: n.std().to_vec() }
    }
}

impl Normalisation {
    /// One mean and deviation for grey images.
    pub const fn scalar(mean: f64, std: f64) -> Normalisation {
        Normalisation { channels: 1, mean: [mean, 0.0, 0.0], std: [std, 1.0, 1.0] }
    }

    /// One pair per channel (1 to 3 channels, every deviation positive).
    pub fn per_channel(mean: &[f64], std: &[f64]) -> Result<Normalisation, String> {
        let channels = mean.len();
        if !(1..=MAX_CHANNELS).contains(&channels) || std.len() != channels {
            return Err(format!("a normalisation needs 1 to 3 channels' means and deviations, not {mean:?}/{std:?}"));
        }
        if std.iter().any(|&s| !(s > 0.0 && s.is_finite())) || mean.iter().any(|m| !m.is_finite()) {
            return Err(format!("the normalisation {mean:?}/{std:?} has a deviation that is not positive"));
        }
        let mut n = Normalisation { channels, mean: [0.0; MAX_CHANNELS], std: [1.0; MAX_CHANNELS] };
        n.mean[..channels].copy_from_slice(mean);
        n.std[..channels].copy_from_slice(std);
        Ok(n)
    }

    pub fn channels(&self) -> usize {
        self.channels
    }

    pub fn mean(&self) -> &[f64] {
        &self.mean[..self.channels]
    }

    pub fn std(&self) -> &[f64] {
        &self.std[..self.channels]
    }

    /// `values` as a `[C, 1, 1]` tensor beside `like`, which broadcasts over
    /// `[C, H, W]` and `[N, C, H, W]`.
    fn planes(&self, values: &[f64], like: &Tensor) -> Tensor {
        let v: Vec<f32> = values.iter().map(|&v| v as f32).collect();
        Tensor::from_slice(&v).view([self.channels as i64, 1, 1]).to_device(like.device())
    }

    /// Raw pixels in [0, 1] (`[C, H, W]` or `[N, C, H, W]`) to the network's
    /// normalised input.
    pub fn normalise(self, raw: &Tensor) -> Tensor {
        if self.channels == 1 {
            return (raw - self.mean[0]) / self.std[0];
        }
        (raw - self.planes(self.mean(), raw)) / self.planes(self.std(), raw)
    }

    /// The network's input back to raw pixels.
    pub fn denormalise(self, x: &Tensor) -> Tensor {
        if self.channels == 1 {
            return x * self.std[0] + self.mean[0];
        }
        x * self.planes(self.std(), x) + self.planes(self.mean(), x)
    }

    /// `normalise` in place, the same arithmetic.
    pub fn normalise_(self, raw: &mut Tensor) {
        if self.channels == 1 {
            let _ = raw.g_sub_scalar_(self.mean[0]).g_div_scalar_(self.std[0]);
        } else {
            let (mean, std) = (self.planes(self.mean(), raw), self.planes(self.std(), raw));
            let _ = raw.g_sub_(&mean).g_div_(&std);
        }
    }

    /// `MEAN/STD` as `--input-norm` and the PyTorch scripts take it, channels
    /// separated by commas.
    pub fn argument(&self) -> String {
        let list = |v: &[f64]| v.iter().map(f64::to_string).collect::<Vec<_>>().join(",");
        format!("{}/{}", list(self.mean()), list(self.std()))
    }

    /// A white pixel's normalised value in the first channel (the study's trigger's
    /// lit value on a black pixel; the study's images are grey).
    pub fn white(self) -> f32 {
        ((1.0 - self.mean[0]) / self.std[0]) as f32
    }
}

/// How a dataset's images reach a network: their shape `[C, H, W]`, how many
/// classes they have and how they are normalised. Fixed by the dataset for MNIST,
/// Fashion-MNIST and CIFAR-10; read from the files for GTSRB (its normalisation)
/// and folders (all of it), and then recorded in the run's recipe.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ImageFormat {
    pub shape: [i64; 3],
    pub classes: usize,
    pub normalisation: Normalisation,
}

impl From<Dataset> for ImageFormat {
    fn from(dataset: Dataset) -> ImageFormat {
        dataset.format()
    }
}

const DIGITS: [&str; 10] = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];
/// Zalando's names for Fashion-MNIST's labels 0..=9.
const FASHION: [&str; 10] =
    ["T-shirt/top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot"];
/// CIFAR-10's `batches.meta` names.
const CIFAR: [&str; 10] = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"];

impl Dataset {
    /// The name the `--dataset` flag and the sidecars use.
    pub fn name(self) -> &'static str {
        match self {
            Dataset::Mnist => "mnist",
            Dataset::FashionMnist => "fashion-mnist",
            Dataset::Cifar10 => "cifar10",
            Dataset::Gtsrb => "gtsrb",
            Dataset::Folder => "folder",
        }
    }

    /// The folder the dataset is read from without `--data-dir`.
    pub fn default_dir(self) -> String {
        format!("data/{}", self.name())
    }

    /// Whether the study's hand-written CNN (28×28×1) can take its images.
    pub fn is_study_shaped(self) -> bool {
        matches!(self, Dataset::Mnist | Dataset::FashionMnist)
    }

    /// Why the study's CNN cannot take this dataset's images, and what can.
    pub fn study_refusal(self) -> String {
        format!(
            "the study's CNN takes 28×28 grey images; {self} images need a graph, e.g. `run --preset preactresnet18 \
             --width 8 --dataset {self} --data-dir DIR` (docs/graph.md)"
        )
    }

    /// Whether the format comes from the files rather than the dataset's name.
    pub fn format_is_read(self) -> bool {
        matches!(self, Dataset::Gtsrb | Dataset::Folder)
    }

    /// One image: `[channels, height, width]` (a folder's nominal shape until its
    /// images are read).
    pub fn image_shape(self) -> [i64; 3] {
        if self.is_study_shaped() { [1, 28, 28] } else { [3, 32, 32] }
    }

    /// The format known from the name alone. For GTSRB and folders, whose
    /// statistics come from their files, a neutral normalisation (0 / 1) and a
    /// folder's nominal shape and classes stand until the files are read.
    pub fn format(self) -> ImageFormat {
        let classes = match self {
            Dataset::Gtsrb => super::gtsrb::CLASSES,
            _ => 10,
        };
        ImageFormat { shape: self.image_shape(), classes, normalisation: self.normalisation() }
    }

    pub fn normalisation(self) -> Normalisation {
        match self {
            Dataset::Mnist => Normalisation::scalar(0.1307, 0.3081),
            Dataset::FashionMnist => Normalisation::scalar(0.2860, 0.3530),
            Dataset::Cifar10 => Normalisation { channels: 3, mean: super::cifar::MEAN, std: super::cifar::STD },
            Dataset::Gtsrb | Dataset::Folder => Normalisation { channels: 3, mean: [0.0; 3], std: [1.0; 3] },
        }
    }

    /// What a class is called: the digit itself, the garment, the CIFAR-10 class,
    /// the sign; a folder's names are its folders', which only its files know ("").
    pub fn class_name(self, label: u8) -> &'static str {
        let names: &[&str] = match self {
            Dataset::Mnist => &DIGITS,
            Dataset::FashionMnist => &FASHION,
            Dataset::Cifar10 => &CIFAR,
            Dataset::Gtsrb => &super::gtsrb::CLASS_NAMES,
            Dataset::Folder => &[],
        };
        names.get(label as usize).copied().unwrap_or(if self == Dataset::Folder { "" } else { "?" })
    }

    /// A label as tables print it: `8` for MNIST (and folders), `8 bag` for the others.
    pub fn label(self, label: u8) -> String {
        match self {
            Dataset::Mnist | Dataset::Folder => label.to_string(),
            _ => format!("{label} {}", self.class_name(label)),
        }
    }

    /// What one example is called in prose.
    pub fn noun(self) -> &'static str {
        match self {
            Dataset::Mnist => "digit",
            _ => "image",
        }
    }

    /// A class as a column heading: `digit 8`, `8 bag`, `class 8`.
    pub fn heading(self, label: u8) -> String {
        match self {
            Dataset::Mnist => format!("digit {label}"),
            Dataset::Folder => format!("class {label}"),
            _ => self.label(label),
        }
    }
}

impl std::fmt::Display for Dataset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lit_value_is_a_white_pixel_in_each_datasets_normalised_space() {
        // MNIST's is the study's 2.8215; Fashion-MNIST's follows the same rule.
        assert!((Dataset::Mnist.normalisation().white() - 2.8215).abs() < 1e-4);
        assert!((Dataset::FashionMnist.normalisation().white() - 2.0227).abs() < 1e-4);
        assert_eq!(Dataset::FashionMnist.label(8), "8 bag");
        assert_eq!(Dataset::Mnist.label(8), "8");
        assert_eq!(Dataset::Cifar10.label(3), "3 cat");
        assert_eq!(Dataset::Gtsrb.label(14), "14 Stop");
    }

    #[test]
    fn a_normalisation_per_channel_applies_each_planes_numbers_and_is_recorded_as_lists() {
        let n = Dataset::Cifar10.normalisation();
        // Two 1×1 images of three channels: 0.5 everywhere, then 1.0.
        let raw = Tensor::from_slice(&[0.5f32, 0.5, 0.5, 1.0, 1.0, 1.0]).view([2, 3, 1, 1]);
        let x = Vec::<f32>::try_from(n.normalise(&raw).view([-1])).unwrap();
        for (i, v) in x.iter().enumerate() {
            let (c, p) = (i % 3, if i < 3 { 0.5 } else { 1.0 });
            let want = ((p - super::super::cifar::MEAN[c]) / super::super::cifar::STD[c]) as f32;
            assert!((v - want).abs() < 1e-6, "channel {c}: {v} vs {want}");
        }
        let mut in_place = raw.copy();
        n.normalise_(&mut in_place);
        let back = n.denormalise(&in_place);
        assert!(f64::try_from((back - &raw).abs().max()).unwrap() < 1e-6);
        let text = serde_json::to_string(&n).unwrap();
        assert_eq!(text, r#"{"mean":[0.4914,0.4822,0.4465],"std":[0.247,0.2435,0.2616]}"#);
        assert_eq!(serde_json::from_str::<Normalisation>(&text).unwrap(), n);
        assert_eq!(n.argument(), "0.4914,0.4822,0.4465/0.247,0.2435,0.2616");
        assert_eq!(Dataset::Mnist.normalisation().argument(), "0.1307/0.3081");
        assert!(serde_json::from_str::<Normalisation>(r#"{"mean":[0.5],"std":[0]}"#).is_err());
    }
}
