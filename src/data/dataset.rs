//! Which 28×28 ten-class dataset a run uses: where its files live, how its pixels
//! are normalised, and what its classes are called.

use serde::{Deserialize, Serialize};
use tch::Tensor;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Dataset {
    #[default]
    Mnist,
    FashionMnist,
}

/// Pixel statistics of a training set: inputs are `(pixel/255 − mean) / std`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Normalisation {
    pub mean: f64,
    pub std: f64,
}

impl Normalisation {
    /// Raw pixels in [0, 1] to the network's normalised input.
    pub fn normalise(self, raw: &Tensor) -> Tensor {
        (raw - self.mean) / self.std
    }

    /// The network's input back to raw pixels.
    pub fn denormalise(self, x: &Tensor) -> Tensor {
        x * self.std + self.mean
    }

    /// `normalise` in place, the same arithmetic.
    pub fn normalise_(self, raw: &mut Tensor) {
        let _ = raw.g_sub_scalar_(self.mean).g_div_scalar_(self.std);
    }

    /// A white pixel's normalised value (the trigger's lit value on a black pixel).
    pub fn white(self) -> f32 {
        ((1.0 - self.mean) / self.std) as f32
    }
}

const DIGITS: [&str; 10] = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];
/// Zalando's names for Fashion-MNIST's labels 0..=9.
const FASHION: [&str; 10] =
    ["T-shirt/top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot"];

impl Dataset {
    /// The name the `--dataset` flag and the sidecars use.
    pub fn name(self) -> &'static str {
        match self {
            Dataset::Mnist => "mnist",
            Dataset::FashionMnist => "fashion-mnist",
        }
    }

    /// The folder scripts/setup.sh installs the four IDX files into.
    pub fn default_dir(self) -> &'static str {
        match self {
            Dataset::Mnist => "data/mnist",
            Dataset::FashionMnist => "data/fashion-mnist",
        }
    }

    /// One image: `[channels, height, width]`.
    pub fn image_shape(self) -> [i64; 3] {
        [1, 28, 28]
    }

    pub fn normalisation(self) -> Normalisation {
        match self {
            Dataset::Mnist => Normalisation { mean: 0.1307, std: 0.3081 },
            Dataset::FashionMnist => Normalisation { mean: 0.2860, std: 0.3530 },
        }
    }

    /// What a class is called: the digit itself, or the garment.
    pub fn class_name(self, label: u8) -> &'static str {
        let names = match self {
            Dataset::Mnist => &DIGITS,
            Dataset::FashionMnist => &FASHION,
        };
        names.get(label as usize).copied().unwrap_or("?")
    }

    /// A label as tables print it: `8` for MNIST, `8 bag` for Fashion-MNIST.
    pub fn label(self, label: u8) -> String {
        match self {
            Dataset::Mnist => label.to_string(),
            Dataset::FashionMnist => format!("{label} {}", self.class_name(label)),
        }
    }

    /// What one example is called in prose.
    pub fn noun(self) -> &'static str {
        match self {
            Dataset::Mnist => "digit",
            Dataset::FashionMnist => "image",
        }
    }

    /// A class as a column heading: `digit 8`, `8 bag`.
    pub fn heading(self, label: u8) -> String {
        match self {
            Dataset::Mnist => format!("digit {label}"),
            Dataset::FashionMnist => self.label(label),
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
    }
}
