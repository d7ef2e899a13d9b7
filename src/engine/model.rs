//! The study's CNN, parameters named as PyTorch names them.

use super::draw;
use super::layer::Layer;
use tch::nn::{Init, VarStore};
use tch::{Device, Tensor};

/// conv1 → ReLU → pool → conv2 → ReLU → pool → fc1 → ReLU → fc2, holding its
/// parameters in a `VarStore` under `net.<index>.{weight,bias}`.
pub struct Net {
    vs: VarStore,
    weights: Vec<Tensor>,
    biases: Vec<Tensor>,
    /// One buffer holding every parameter, in `parameters()` order: the weights
    /// and biases are windows onto it, so the optimiser and the regulariser work
    /// on one vector instead of eight tensors.
    flat: Tensor,
}

impl Net {
    /// A freshly initialised network: every weight and bias uniform in ±1/√fan_in,
    /// as PyTorch initialises Conv2d and Linear (tch's defaults differ).
    pub fn new(device: Device) -> Net {
        Net::build(device, true)
    }

    /// A net whose parameters are about to be overwritten (a load, a copy): zeros,
    /// so it draws nothing from libtorch's global generator, which a training or a
    /// trigger recovery in another thread of the process may be drawing from.
    pub fn blank(device: Device) -> Net {
        Net::build(device, false)
    }

    fn build(device: Device, random: bool) -> Net {
        let vs = VarStore::new(device);
        let root = vs.root() / "net";
        let mut weights = Vec::new();
        let mut biases = Vec::new();
        for layer in Layer::ALL {
            let path = &root / layer.torch_index();
            let bound = 1.0 / (layer.fan_in() as f64).sqrt();
            let bias_shape = [layer.units() as i64];
            if random {
                // Drawn on the CPU (weight, then bias), so a seed gives this net on any device.
                let uniform = |shape: &[i64]| draw::uniform(shape, -bound, bound, device);
                weights.push(path.var_copy("weight", &uniform(&layer.weight_shape())));
                biases.push(path.var_copy("bias", &uniform(&bias_shape)));
            } else {
                weights.push(path.var("weight", &layer.weight_shape(), Init::Const(0.0)));
                biases.push(path.var("bias", &bias_shape, Init::Const(0.0)));
            }
        }
        let flat = one_buffer(weights.iter_mut().zip(biases.iter_mut()).flat_map(|(w, b)| [w, b]), device);
        Net { vs, weights, biases, flat }
    }

    pub fn device(&self) -> Device {
        self.vs.device()
    }

    pub fn var_store(&self) -> &VarStore {
        &self.vs
    }

    pub fn weight(&self, layer: Layer) -> &Tensor {
        &self.weights[layer.position()]
    }

    pub fn bias(&self, layer: Layer) -> &Tensor {
        &self.biases[layer.position()]
    }

    /// Every parameter, in layer order: weight then bias.
    pub fn parameters(&self) -> impl Iterator<Item = &Tensor> {
        self.weights.iter().zip(&self.biases).flat_map(|(w, b)| [w, b])
    }

    /// All parameters as one vector, in `parameters()` order. It shares their
    /// storage (writing to it writes the parameters) and carries no gradient.
    pub fn flat_parameters(&self) -> &Tensor {
        &self.flat
    }

    pub fn parameter_count(&self) -> i64 {
        self.flat.size()[0]
    }

    /// Logits for a batch `[N, 1, 28, 28]`.
    pub fn forward(&self, x: &Tensor) -> Tensor {
        Layer::ALL.iter().fold(x.shallow_clone(), |h, &l| self.block(l, &h))
    }

    /// Every layer's weight, then every layer's bias, in `Layer::ALL` order.
    pub fn weights_and_biases(&self) -> (&[Tensor], &[Tensor]) {
        (&self.weights, &self.biases)
    }

    /// One layer's block applied to its input.
    pub fn block(&self, layer: Layer, input: &Tensor) -> Tensor {
        block(layer, input, self.weight(layer), self.bias(layer))
    }

    /// Overwrites every parameter with `other`'s.
    pub fn copy_from(&mut self, other: &Net) {
        for layer in Layer::ALL {
            self.copy_layer_from(other, layer);
        }
    }

    /// Overwrites one layer's weight and bias with `other`'s (a layer swap).
    pub fn copy_layer_from(&mut self, other: &Net, layer: Layer) {
        let _guard = tch::no_grad_guard();
        let i = layer.position();
        self.weights[i].copy_(&other.weights[i]);
        self.biases[i].copy_(&other.biases[i]);
    }

    /// A copy with its own storage on the same device.
    pub fn duplicate(&self) -> Net {
        let mut copy = Net::blank(self.device());
        copy.copy_from(self);
        copy
    }

    /// Sets `weight[unit]` of `layer` to zero, keeping its bias: the study's ablation.
    pub fn zero_unit_weights(&mut self, layer: Layer, unit: usize) {
        let _guard = tch::no_grad_guard();
        let _ = self.weights[layer.position()].get(unit as i64).zero_();
    }
}

/// Moves each parameter's values into one new buffer and makes the parameter a
/// window onto it (same values, same autograd leaf); returns the buffer.
fn one_buffer<'a>(parameters: impl Iterator<Item = &'a mut Tensor>, device: Device) -> Tensor {
    let mut parameters: Vec<&mut Tensor> = parameters.collect();
    let total: i64 = parameters.iter().map(|p| p.numel() as i64).sum();
    let flat = Tensor::zeros([total], (tch::Kind::Float, device));
    let _guard = tch::no_grad_guard();
    let mut offset = 0;
    for p in parameters.iter_mut() {
        let n = p.numel() as i64;
        let mut window = flat.narrow(0, offset, n).view(p.size().as_slice());
        window.copy_(p);
        p.set_data(&window);
        offset += n;
    }
    flat
}

/// A layer's block: the layer itself, then ReLU and 2×2 max pooling where the
/// network has them. Flattening happens at fc1's input.
pub fn block(layer: Layer, input: &Tensor, weight: &Tensor, bias: &Tensor) -> Tensor {
    match layer {
        Layer::Conv1 | Layer::Conv2 => channels_last(&input.conv2d(weight, Some(bias), [1, 1], [0, 0], [1, 1], 1))
            .relu()
            .max_pool2d([2, 2], [2, 2], [0, 0], [1, 1], false),
        Layer::Fc1 => input.flatten(1, -1).linear(weight, Some(bias)).relu(),
        Layer::Fc2 => input.linear(weight, Some(bias)),
    }
}

/// `x` (`[N, C, H, W]`) with channels-last strides, so that ReLU and pooling run
/// on that layout: libtorch's channels-first max pooling took 14× as long at
/// conv1's shape (a fifth of a training step), and conv1's output comes
/// channels-first whatever its input. conv2 reads and writes channels-last then.
/// Same values, same shape; a tensor already laid out so is returned as is.
pub fn channels_last(x: &Tensor) -> Tensor {
    let [_, c, h, w] = x.size()[..] else { return x.shallow_clone() };
    if x.stride() == [c * h * w, 1, w * c, c] {
        return x.shallow_clone();
    }
    x.permute([0, 2, 3, 1]).contiguous().permute([0, 3, 1, 2])
}
