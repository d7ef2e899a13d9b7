//! A graph as the classifier trigger recovery optimises against: the executor in
//! evaluation mode (batch norms on their running statistics, folded as always).
//! Loaded weights collect no gradients, so a backward pass reaches the input only.

use super::exec::Executor;
use crate::engine::classifier::Classifier;
use tch::{Device, Tensor};

impl Classifier for Executor {
    fn logits(&self, raw: &Tensor) -> Tensor {
        Executor::logits(self, raw, &[])
    }

    fn input_shape(&self) -> [i64; 3] {
        self.spec.input
    }

    fn classes(&self) -> usize {
        let output = self.spec.index_of(&self.spec.output).expect("checked at parse");
        self.shapes[output][0] as usize
    }

    fn device(&self) -> Device {
        self.device
    }
}
