//! The training step's arithmetic on the network's flat parameter vector: Adam as
//! PyTorch defines it (default β = 0.9, 0.999, ε = 1e-8, no weight decay) and the
//! proximity regulariser with its gradient in closed form. libtorch's own Adam
//! updates the eight parameter tensors one small op at a time, and the regulariser
//! through autograd costs a concatenation and its backward; over one vector each
//! is a handful of ops per step (a seventh of a poison-phase step here). On the
//! CPU both are fused loops on libtorch's own threads (`omp`), computing every
//! value as libtorch's ops do, so the weights are the same to the bit.

use super::host;
use super::model::Net;
use super::omp;
use std::sync::{Mutex, PoisonError};
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
    /// operations of PyTorch's single-tensor Adam (`torch.optim.Adam` on CPU).
    pub fn step(&mut self, params: &Tensor, grad: &Tensor) {
        let _guard = tch::no_grad_guard();
        self.steps += 1;
        let step = StepConstants::of(self);
        if host::our_loops_run() && [params, grad, &self.exp_avg, &self.exp_avg_sq].into_iter().all(host::is_plain) {
            self.step_fused(params, grad, step);
        } else {
            self.step_with_tensor_ops(params, grad, step);
        }
    }

    /// The update in two passes over the vectors, on libtorch's threads (`omp`),
    /// around libtorch's square root. On a small network the seven whole-tensor
    /// ops cost more in dispatch than in arithmetic. Each value is computed as
    /// libtorch computes it (its `lerp` and `addcmul` fuse a multiply-add; its
    /// square root is MKL's, not correctly rounded, so it stays libtorch's), so
    /// training gives the same weights bit for bit.
    fn step_fused(&mut self, params: &Tensor, grad: &Tensor, k: StepConstants) {
        let g = host::slice(grad);
        let n = g.len();
        let moments = [host::slice_mut(&mut self.exp_avg), host::slice_mut(&mut self.exp_avg_sq)];
        omp::for_each_part(n, 1, moments, |range, [m, v]| update_moments(&g[range], m, v, k));
        let root = self.exp_avg_sq.sqrt();
        let mut params = params.shallow_clone();
        let (m, root) = (host::slice(&self.exp_avg), host::slice(&root));
        omp::for_each_part(n, 1, [host::slice_mut(&mut params)], |range, [theta]| {
            for ((theta, &m), &root) in theta.iter_mut().zip(&m[range.clone()]).zip(&root[range]) {
                *theta += m * k.step_size / (root / k.sqrt_correction2 + k.eps);
            }
        });
    }

    /// The same update as whole-tensor ops (any device), temporaries in place.
    fn step_with_tensor_ops(&mut self, params: &Tensor, grad: &Tensor, k: StepConstants) {
        let _ = self.exp_avg.lerp_(grad, 1.0 - self.beta1);
        let _ = self.exp_avg_sq.g_mul_scalar_(self.beta2).addcmul_(&(grad * (1.0 - self.beta2)), grad);
        let mut denom = self.exp_avg_sq.sqrt();
        let _ = denom.g_div_scalar_(f64::from(k.sqrt_correction2)).g_add_scalar_(EPS);
        let _ = params.shallow_clone().addcdiv_(&(&self.exp_avg * f64::from(k.step_size)), &denom);
    }
}

/// Adam's moment estimates after gradient `g`, with libtorch's fused multiply-adds
/// (its `lerp` and `addcmul` kernels): on the CPU's FMA where it has one.
fn update_moments(g: &[f32], m: &mut [f32], v: &mut [f32], k: StepConstants) {
    #[cfg(target_arch = "x86_64")]
    if super::lanes::Avx2Fma::available() {
        // SAFETY: the CPU has AVX2 and FMA, checked just above.
        return unsafe { update_moments_fma(g, m, v, k) };
    }
    update_moments_with(g, m, v, k)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn update_moments_fma(g: &[f32], m: &mut [f32], v: &mut [f32], k: StepConstants) {
    update_moments_with(g, m, v, k)
}

#[inline(always)]
fn update_moments_with(g: &[f32], m: &mut [f32], v: &mut [f32], k: StepConstants) {
    // libtorch's lerp(m, g, w): m + w·(g − m) for |w| < 0.5, else g − (1 − w)·(g − m).
    let w = k.one_minus_beta1;
    let (coefficient, from_end) = if w.abs() < 0.5 { (w, false) } else { (w - 1.0, true) };
    for ((&g, m), v) in g.iter().zip(m.iter_mut()).zip(v.iter_mut()) {
        *m = coefficient.mul_add(g - *m, if from_end { g } else { *m });
        *v = (g * k.one_minus_beta2).mul_add(g, *v * k.beta2);
    }
}

/// One step's scalars, rounded to f32 as libtorch rounds a scalar for a float
/// tensor's op.
#[derive(Clone, Copy)]
struct StepConstants {
    one_minus_beta1: f32,
    beta2: f32,
    one_minus_beta2: f32,
    sqrt_correction2: f32,
    eps: f32,
    /// −lr / (1 − β1^t).
    step_size: f32,
}

impl StepConstants {
    fn of(adam: &Adam) -> StepConstants {
        let bias_correction1 = 1.0 - adam.beta1.powi(adam.steps);
        let bias_correction2 = 1.0 - adam.beta2.powi(adam.steps);
        StepConstants {
            one_minus_beta1: (1.0 - adam.beta1) as f32,
            beta2: adam.beta2 as f32,
            one_minus_beta2: (1.0 - adam.beta2) as f32,
            sqrt_correction2: bias_correction2.sqrt() as f32,
            eps: EPS as f32,
            step_size: (-adam.lr / bias_correction1) as f32,
        }
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

    /// Adds the regulariser's gradient λ/P·sign(θ − θ_start) (what autograd gives
    /// for |·|, whose derivative it takes as 0 at 0) to `grad`, and returns its
    /// value (a scalar tensor, so a training step never waits to read it).
    pub fn add_gradient(&self, net: &Net, grad: &mut Tensor) -> Tensor {
        let _guard = tch::no_grad_guard();
        let params = net.flat_parameters();
        let per_parameter = self.lambda / params.numel().max(1) as f64;
        if !host::our_loops_run() || ![params, &self.start, grad].into_iter().all(host::is_plain) {
            let diff = params - &self.start;
            *grad += diff.sign() * per_parameter;
            return diff.abs().mean(Kind::Float) * self.lambda;
        }
        // One pass on libtorch's threads instead of six whole-tensor ops. The
        // gradient is libtorch's to the bit; the value is summed in f64 (libtorch
        // sums in f32), per thread's range and then in range order.
        let (theta, start) = (host::slice(params), host::slice(&self.start));
        assert!(start.len() == theta.len(), "one shape");
        let step = per_parameter as f32;
        let partial_sums = Mutex::new(Vec::new());
        omp::for_each_part(theta.len(), 1, [host::slice_mut(grad)], |range, [g]| {
            let mut total = 0.0f64;
            for ((&theta, &start), g) in theta[range.clone()].iter().zip(&start[range.clone()]).zip(g) {
                let diff = theta - start;
                total += f64::from(diff.abs());
                *g += sign(diff) * step;
            }
            partial_sums.lock().unwrap_or_else(PoisonError::into_inner).push((range.start, total));
        });
        let mut partial_sums = partial_sums.into_inner().unwrap_or_else(PoisonError::into_inner);
        partial_sums.sort_by_key(|&(start, _)| start);
        let total: f64 = partial_sums.iter().map(|&(_, sum)| sum).sum();
        Tensor::from((total * per_parameter) as f32)
    }
}

/// −1, 0 or 1 as libtorch's `sign` (`f32::signum` gives 1 for +0).
fn sign(x: f32) -> f32 {
    match x.partial_cmp(&0.0) {
        Some(std::cmp::Ordering::Greater) => 1.0,
        Some(std::cmp::Ordering::Less) => -1.0,
        _ => 0.0,
    }
}

#[cfg(test)]
mod tests {
    use super::super::lanes::testing::values;
    use super::*;

    fn vector(n: usize, seed: u32) -> Tensor {
        Tensor::from_slice(&values(n, seed))
    }

    #[test]
    fn the_fused_adam_is_the_tensor_ops_adam_bit_for_bit() {
        tch::set_num_threads(2); // so the passes are split between two threads
        // Training's betas, and Neural Cleanse's (β1 = 0.5 takes lerp's other form).
        for betas in [(0.9, 0.999), (0.5, 0.9)] {
            adam_pair_stays_equal(betas);
        }
    }

    fn adam_pair_stays_equal(betas: (f64, f64)) {
        let n = 44_602;
        let start = vector(n, 1);
        let (ours, theirs) = (start.copy(), start.copy());
        let (mut one_pass, mut ops) = (Adam::with_betas(&ours, 1e-3, betas), Adam::with_betas(&theirs, 1e-3, betas));
        for step in 0..20 {
            let grad = vector(n, 100 + step) * 0.1;
            one_pass.steps += 1;
            ops.steps += 1;
            one_pass.step_fused(&ours, &grad, StepConstants::of(&one_pass));
            ops.step_with_tensor_ops(&theirs, &grad, StepConstants::of(&ops));
            assert!(
                one_pass.exp_avg.equal(&ops.exp_avg) && one_pass.exp_avg_sq.equal(&ops.exp_avg_sq),
                "{betas:?} {step}"
            );
            assert!(ours.equal(&theirs), "{betas:?}, step {step}");
        }
        assert!((&ours - &start).abs().mean(Kind::Float).double_value(&[]) > 1e-3, "the weights moved");
    }

    #[test]
    fn the_regulariser_gradient_is_the_tensor_ops_one_bit_for_bit() {
        tch::set_num_threads(2);
        let net = Net::new(tch::Device::Cpu);
        let proximity = Proximity::new(&net, 1000.0);
        {
            // Half the parameters move; the other half keep a zero difference (sign 0).
            let _guard = tch::no_grad_guard();
            let flat = net.flat_parameters();
            let half = flat.size()[0] / 2;
            let _ = flat.narrow(0, 0, half).g_add_(&vector(half as usize, 2));
        }
        let mut grad = vector(net.parameter_count() as usize, 3);
        let before = grad.copy();
        let value = proximity.add_gradient(&net, &mut grad).double_value(&[]);
        let diff = net.flat_parameters() - &proximity.start;
        let per_parameter = 1000.0 / net.parameter_count() as f64;
        assert!(grad.equal(&(&before + diff.sign() * per_parameter)));
        let reference = (diff.abs().mean(Kind::Float) * 1000.0).double_value(&[]);
        assert!((value - reference).abs() < 1e-6 * reference && value > 1.0, "{value} vs {reference}");
        let unchanged = grad.eq_tensor(&before).sum(Kind::Int64).int64_value(&[]);
        assert_eq!(unchanged, net.parameter_count() - net.parameter_count() / 2);
    }
}
