//! The four parameterised layers of the study's network and their PyTorch names.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Layer {
    Conv1,
    Conv2,
    Fc1,
    Fc2,
}

impl Layer {
    pub const ALL: [Layer; 4] = [Layer::Conv1, Layer::Conv2, Layer::Fc1, Layer::Fc2];

    /// Position in `ALL`, i.e. depth order.
    pub fn position(self) -> usize {
        self as usize
    }

    /// Index in the PyTorch `nn.Sequential` (`net.<index>.weight`).
    pub fn torch_index(self) -> usize {
        match self {
            Layer::Conv1 => 0,
            Layer::Conv2 => 3,
            Layer::Fc1 => 7,
            Layer::Fc2 => 9,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Layer::Conv1 => "conv1",
            Layer::Conv2 => "conv2",
            Layer::Fc1 => "fc1",
            Layer::Fc2 => "fc2",
        }
    }

    /// Output channels (convolutions) or units (linear layers).
    pub fn units(self) -> usize {
        self.weight_shape()[0] as usize
    }

    pub fn is_conv(self) -> bool {
        matches!(self, Layer::Conv1 | Layer::Conv2)
    }

    pub fn weight_shape(self) -> Vec<i64> {
        match self {
            Layer::Conv1 => vec![32, 1, 3, 3],
            Layer::Conv2 => vec![64, 32, 3, 3],
            Layer::Fc1 => vec![16, 1600],
            Layer::Fc2 => vec![10, 16],
        }
    }

    /// Inputs feeding one output unit (PyTorch's fan_in, used for initialisation).
    pub fn fan_in(self) -> i64 {
        self.weight_shape()[1..].iter().product()
    }

    pub fn weight_name(self) -> String {
        format!("net.{}.weight", self.torch_index())
    }

    pub fn bias_name(self) -> String {
        format!("net.{}.bias", self.torch_index())
    }

    /// Shape of one example's output of this layer's block as the next layer sees it
    /// (after ReLU and pooling where the network has them).
    pub fn output_shape(self) -> Vec<i64> {
        match self {
            Layer::Conv1 => vec![32, 13, 13],
            Layer::Conv2 => vec![64, 5, 5],
            Layer::Fc1 => vec![16],
            Layer::Fc2 => vec![10],
        }
    }

    pub fn next(self) -> Option<Layer> {
        Layer::ALL.get(self.position() + 1).copied()
    }
}

/// One value per layer, indexed by `Layer` (never by a bare position), in depth order.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PerLayer<T>(Vec<T>);

impl<T> PerLayer<T> {
    pub fn from_fn(mut value: impl FnMut(Layer) -> T) -> PerLayer<T> {
        PerLayer(Layer::ALL.iter().map(|&l| value(l)).collect())
    }

    pub fn iter(&self) -> impl Iterator<Item = (Layer, &T)> {
        Layer::ALL.into_iter().zip(&self.0)
    }
}

impl<T> std::ops::Index<Layer> for PerLayer<T> {
    type Output = T;
    fn index(&self, layer: Layer) -> &T {
        &self.0[layer.position()]
    }
}

impl<T> std::ops::IndexMut<Layer> for PerLayer<T> {
    fn index_mut(&mut self, layer: Layer) -> &mut T {
        &mut self.0[layer.position()]
    }
}

// Also accepts the PyTorch index: `0`, or `net.0`.
crate::named_enum!(Layer, "layer", "conv1, conv2, fc1, fc2 (or 0, 3, 7, 9)", |l: Layer, s: &str| {
    s.strip_prefix("net.").unwrap_or(s) == l.torch_index().to_string()
});
