//! Training any graph with the study's recipe: PyTorch's initialisation drawn on
//! the CPU generator, the study's batches, poison fraction, trigger and proximity
//! regulariser (`engine::train`), Adam, batch norms in training mode while
//! training and in eval mode when evaluating.

use super::eval::evaluate;
use super::exec::Executor;
use super::spec::{GraphSpec, Op};
use super::weights::Weights;
use crate::data::trigger::Stamp;
use crate::engine::draw;
use crate::engine::optim::Adam;
use crate::engine::testset::TestSet;
use crate::engine::train::{
    Divergence, EvalPoint, Phase, PhaseEnd, REPORT_EVERY, TrainConfig, TrainData, TrainEvent, Window, poisoned_batch,
};
use std::collections::HashSet;
use std::ops::ControlFlow;
use std::time::Instant;
use tch::{Device, Kind, Tensor};

/// Fresh weights for `spec` as PyTorch initialises its modules: conv and linear
/// weights kaiming-uniform (a = √5, i.e. uniform ±1/√fan_in) and biases uniform
/// ±1/√fan_in; batch norms weight 1, bias 0, running mean 0, running variance 1.
pub fn init(spec: &GraphSpec, seed: i64, device: Device) -> Result<Weights, String> {
    tch::manual_seed(seed);
    let mut seen = HashSet::new();
    let mut tensors = Vec::new();
    for node in &spec.nodes {
        if !seen.insert(node.module().to_string()) {
            continue;
        }
        let key = |suffix: &str| format!("{}.{suffix}", node.module());
        let (shape, fan_in, bias) = match &node.op {
            Op::Conv2d { in_channels, out_channels, kernel, groups, bias, .. } => {
                let per_group = in_channels / (*groups).max(1);
                (vec![*out_channels, per_group, kernel[0], kernel[1]], per_group * kernel[0] * kernel[1], *bias)
            }
            Op::Linear { in_features, out_features, bias } => (vec![*out_features, *in_features], *in_features, *bias),
            Op::BatchNorm2d { channels, affine, .. } => {
                let filled = |v: f64| Tensor::full([*channels], v, (Kind::Float, device));
                tensors.push((key("running_mean"), filled(0.0)));
                tensors.push((key("running_var"), filled(1.0)));
                if *affine {
                    tensors.push((key("weight"), filled(1.0)));
                    tensors.push((key("bias"), filled(0.0)));
                }
                continue;
            }
            _ => continue,
        };
        let bound = 1.0 / (fan_in.max(1) as f64).sqrt();
        tensors.push((key("weight"), draw::uniform(&shape, -bound, bound, device)));
        if bias {
            tensors.push((key("bias"), draw::uniform(&[shape[0]], -bound, bound, device)));
        }
    }
    Weights::from_tensors(tensors, spec)
}

/// Trains `exec`'s weights in place for one phase. `probe` is a test subset in
/// raw pixels (what a graph takes) for the accuracy timeline.
pub fn train_phase(
    exec: &Executor,
    phase: Phase,
    cfg: &TrainConfig,
    data: &TrainData,
    probe: &TestSet,
    on_event: &mut dyn FnMut(TrainEvent) -> ControlFlow<()>,
) -> PhaseEnd {
    // Batches are poisoned in normalised space, as the study's; the graph gets
    // them back in raw pixels and normalises itself.
    let stamp = cfg.stamp(exec.device);
    train_phase_stamped(exec, phase, cfg, &stamp, data, probe, on_event)
}

/// `train_phase` with the triggered examples made by `stamp` (in normalised
/// space, as the study's batches are): unlearning stamps a recovered trigger.
pub fn train_phase_stamped(
    exec: &Executor,
    phase: Phase,
    cfg: &TrainConfig,
    stamp: &Stamp,
    data: &TrainData,
    probe: &TestSet,
    on_event: &mut dyn FnMut(TrainEvent) -> ControlFlow<()>,
) -> PhaseEnd {
    let device = exec.device;
    tch::manual_seed(phase.seed(cfg));
    let norm = cfg.image_format().normalisation;
    let mut params: Vec<Tensor> = exec.weights.trainable().into_iter().map(|(_, t)| t).collect();
    let lambda = phase.lambda(cfg);
    let start: Vec<Tensor> = params.iter().map(|p| p.detach().copy()).collect();
    let count = params.iter().map(|p| p.numel()).sum::<usize>().max(1) as f64;
    let mut adams: Vec<Adam> = params.iter().map(|p| Adam::new(&p.detach(), cfg.lr)).collect();
    let n = data.len() as i64;
    let batch = cfg.batch_size as i64;
    let steps_per_epoch = ((n + batch - 1) / batch) as usize;
    let total_steps = steps_per_epoch * cfg.epochs;
    let clock = Instant::now();
    let mut window = Window::default();
    let mut divergence = Divergence::default();
    let mut step = 0;
    if phase != Phase::Clean && on_event(TrainEvent::Eval(probe_point(exec, probe, phase, 0))).is_break() {
        return PhaseEnd::Cancelled;
    }
    for epoch in 0..cfg.epochs {
        let order = draw::permutation(n, device);
        for s in 0..steps_per_epoch as i64 {
            let len = batch.min(n - s * batch);
            let index = order.narrow(0, s * batch, len);
            let (x, y) = poisoned_batch(data, &index, phase, cfg, stamp);
            let raw = norm.denormalise(&x);
            let logits = exec.logits_training(&raw);
            let ce = logits.cross_entropy_for_logits(&y);
            let reg = if lambda > 0.0 {
                let distance: Vec<Tensor> =
                    params.iter().zip(&start).map(|(p, s)| (p - s).abs().sum(Kind::Float)).collect();
                Tensor::stack(&distance, 0).sum(Kind::Float) * (lambda / count)
            } else {
                Tensor::zeros([], (Kind::Float, device))
            };
            let loss = &ce + &reg;
            for p in params.iter_mut() {
                p.zero_grad();
            }
            loss.backward();
            for (p, adam) in params.iter().zip(adams.iter_mut()) {
                adam.step(&p.detach(), &p.grad());
            }
            let correct = logits.detach().argmax(1, false).eq_tensor(&y).sum(Kind::Float);
            window.push(loss.detach(), reg.detach(), correct, len);
            step += 1;
            let last = step == total_steps;
            if step % REPORT_EVERY == 0 || last {
                let report = window.drain(phase, epoch, step, total_steps, clock.elapsed().as_secs_f64());
                let diverged = divergence.check(&report.losses);
                if on_event(TrainEvent::Step(report)).is_break() {
                    return PhaseEnd::Cancelled;
                }
                if let Some(loss) = diverged {
                    return PhaseEnd::Diverged { step, loss };
                }
            }
            if phase != Phase::Clean
                && (step % cfg.eval_every == 0 || last)
                && on_event(TrainEvent::Eval(probe_point(exec, probe, phase, step))).is_break()
            {
                return PhaseEnd::Cancelled;
            }
        }
    }
    PhaseEnd::Completed
}

fn probe_point(exec: &Executor, probe: &TestSet, phase: Phase, step: usize) -> EvalPoint {
    let _guard = tch::no_grad_guard();
    let m = evaluate(exec, probe, &[]);
    EvalPoint { phase, step, clean_acc: m.clean_acc, poison_acc: m.poison_acc, rehab_acc: m.rehab_acc }
}
