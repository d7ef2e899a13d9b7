//! The training step's arithmetic on the network's flat parameter vector: Adam as
//! PyTorch defines it (default β = 0.9, 0.999, ε = 1e-8, no weight decay) and the
//! proximity regulariser with its gradient in closed form. libtorch's own Adam
//! updates the eight parameter tensors one small op at a time, and the regulariser
//! through autograd costs a concatenation and its backward; over one vector each
//! is a handful of ops per step (a seventh of a poison-phase step here).

use super::model::Net;
use tch::{Kind, Tensor};

const EPS: f64 = 1e-8;

/// Adam over one tensor of parameters (a network's flat buffer, or the inputs
/// that trigger recovery and feature visualisation optimise).
pub struct Adam {
    lr: f64,
    beta1: f64,
    beta2: f64,
    steps: i32,
    /// First and second moment estimates, one value per parameter.
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
}

impl Adam {
    /// PyTorch's default betas (0.9, 0.999), for parameters shaped like `params`.
    pub fn new(params: &Tensor, lr: f64) -> Adam {
        Adam::with_betas(params, lr, (0.9, 0.999))
    }

    pub fn with_betas(params: &Tensor, lr: f64, (beta1, beta2): (f64, f64)) -> Adam {
        Adam { lr, beta1, beta2, steps: 0, exp_avg: params.zeros_like(), exp_avg_sq: params.zeros_like() }
    }

    /// One update of `params` in place from `grad` (same shape), in the order of
    /// operations of PyTorch's single-tensor Adam (`torch.optim.Adam` on CPU), with
    /// the temporaries updated in place.
    pub fn step(&mut self, params: &Tensor, grad: &Tensor) {
        let _guard = tch::no_grad_guard();
        self.steps += 1;
        let bias_correction1 = 1.0 - self.beta1.powi(self.steps);
        let bias_correction2 = 1.0 - self.beta2.powi(self.steps);
        let _ = self.exp_avg.lerp_(grad, 1.0 - self.beta1);
        let _ = self.exp_avg_sq.g_mul_scalar_(self.beta2).addcmul_(&(grad * (1.0 - self.beta2)), grad);
        let mut denom = self.exp_avg_sq.sqrt();
        let _ = denom.g_div_scalar_(bias_correction2.sqrt()).g_add_scalar_(EPS);
        let _ = params.shallow_clone().addcdiv_(&(&self.exp_avg * (-self.lr / bias_correction1)), &denom);
    }
}

/// The proximity regulariser λ·mean(|θ − θ_start|) over all parameters flattened.
pub struct Proximity {
    start: Tensor,
    lambda: f64,
}

impl Proximity {
    /// Anchored at `net`'s parameters now.
    pub fn new(net: &Net, lambda: f64) -> Proximity {
        Proximity { start: net.flat_parameters().copy(), lambda }
    }

    /// The value and its gradient λ/P·sign(θ − θ_start): what autograd gives for
    /// |·| (whose derivative it takes as 0 at 0).
    pub fn value_and_gradient(&self, net: &Net) -> (Tensor, Tensor) {
        let _guard = tch::no_grad_guard();
        let diff = net.flat_parameters() - &self.start;
        let value = diff.abs().mean(Kind::Float) * self.lambda;
        let gradient = diff.sign() * (self.lambda / diff.numel().max(1) as f64);
        (value, gradient)
    }
}
