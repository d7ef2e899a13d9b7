//! The engine's pieces on small, known inputs: metrics, the regulariser, ablation
//! semantics, swaps, diffs and checkpoints.

mod common;

use common::scratch;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use tch::nn::OptimizerConfig;
use tch::{Device, Kind, Tensor};
use trojanscope::engine::ablation::{AblatedModel, AblationMode, AblationSet, clean_means};
use trojanscope::engine::backprop::{Backprop, cross_entropy_gradient, through_autograd};
use trojanscope::engine::cache::ActivationCache;
use trojanscope::engine::checkpoint::{load_net, save_net};
use trojanscope::engine::circuit::{Evaluate, FastEvaluator};
use trojanscope::engine::diff::diff;
use trojanscope::engine::draw;
use trojanscope::engine::layer::Layer;
use trojanscope::engine::lean::lean_forward;
use trojanscope::engine::metrics::{Metrics, argmax_rows};
use trojanscope::engine::model::Net;
use trojanscope::engine::optim::{Adam, Proximity};
use trojanscope::engine::swap::{all_subsets, swapped};
use trojanscope::engine::testset::TestSet;
use trojanscope::engine::tf32;
use trojanscope::engine::train::TrainConfig;

/// libtorch has one random generator per process, and this file's tests run in
/// parallel: a test holds this lock from its seed to its last draw, so it draws the
/// same values on every run (a gradient test near a ReLU kink would flicker).
static GENERATOR: Mutex<()> = Mutex::new(());

fn seeded<T>(seed: i64, draw: impl FnOnce() -> T) -> T {
    let _turn = GENERATOR.lock().unwrap_or_else(PoisonError::into_inner);
    tch::manual_seed(seed);
    draw()
}

fn seeded_net(seed: i64) -> Net {
    seeded(seed, || Net::new(Device::Cpu))
}

/// Random batches of images `[n, 1, 28, 28]` and labels, one per size in `batches`.
fn seeded_batches(seed: i64, batches: &[i64]) -> Vec<(Tensor, Tensor)> {
    let draw = |&batch: &i64| {
        let x = Tensor::randn([batch, 1, 28, 28], (Kind::Float, Device::Cpu));
        (x, Tensor::randint(10, [batch], (Kind::Int64, Device::Cpu)))
    };
    seeded(seed, || batches.iter().map(draw).collect())
}

fn values(t: &Tensor) -> Vec<f32> {
    Vec::<f32>::try_from(t.to_kind(Kind::Float).flatten(0, -1)).unwrap()
}

#[test]
fn metrics_follow_the_study_definitions() {
    // Five images, labels 8, 1, 2, 8, 3; target 8.
    let labels = [8u8, 1, 2, 8, 3];
    let clean_logits: Vec<f32> =
        [8, 1, 7, 8, 3].iter().flat_map(|&c| (0..10).map(move |k| if k == c { 5.0 } else { 0.0 })).collect();
    let clean = argmax_rows(&clean_logits, 10);
    assert_eq!(clean, vec![8, 1, 7, 8, 3]);
    let triggered = vec![8, 8, 2, 8, 8];
    let m = Metrics::from_predictions(
        &labels,
        &clean,
        &triggered,
        trojanscope::data::attack::poison::Relabel::To { target: 8 },
        10,
    );
    assert_eq!(m.clean_acc, 80.0);
    // All triggered images predicted 8, true 8s included: 4 of 5.
    assert_eq!(m.poison_acc, 80.0);
    // Excluding the two true 8s: 2 of 3.
    assert!((m.asr_non_target - 200.0 / 3.0).abs() < 1e-9);
    // Triggered images with their true label: 8, 2, 8.
    assert_eq!(m.rehab_acc, 60.0);
    assert_eq!(m.per_class_clean[2], 0.0);
    assert_eq!(m.per_class_clean[8], 100.0);
    assert_eq!(m.count, 5);
    // Ties go to the lowest class, as torch.argmax does.
    assert_eq!(argmax_rows(&[1.0, 3.0, 3.0, 0.0], 4), vec![1]);
}

#[test]
fn network_has_the_study_shape_and_pytorch_init() {
    let net = seeded_net(0);
    assert_eq!(net.parameter_count(), 44_602);
    let mut names: Vec<String> = net.var_store().variables().into_keys().collect();
    names.sort();
    assert_eq!(
        names,
        [
            "net.0.bias",
            "net.0.weight",
            "net.3.bias",
            "net.3.weight",
            "net.7.bias",
            "net.7.weight",
            "net.9.bias",
            "net.9.weight"
        ]
    );
    for layer in Layer::ALL {
        let bound = 1.0 / (layer.fan_in() as f64).sqrt();
        // Uniform in ±bound: nothing beyond it, and the extremes come close to it.
        for (t, near) in [(net.weight(layer), 0.9), (net.bias(layer), 0.5)] {
            let max = t.abs().max().double_value(&[]);
            assert!(max <= bound && max > near * bound, "{layer}: max {max} vs bound {bound}");
        }
    }
    let logits = net.forward(&Tensor::zeros([3, 1, 28, 28], (Kind::Float, Device::Cpu)));
    assert_eq!(logits.size(), vec![3, 10]);
}

#[test]
fn regulariser_is_lambda_times_mean_absolute_change() {
    let net = seeded_net(1);
    let proximity = Proximity::new(&net, 1000.0);
    let mut grad = net.flat_parameters().zeros_like();
    assert_eq!(proximity.add_gradient(&net, &mut grad).double_value(&[]), 0.0);
    assert_eq!(grad.abs().max().double_value(&[]), 0.0);
    // Move exactly one parameter by 0.5: mean |Δ| = 0.5 / 44602, and only that
    // parameter's gradient is λ / 44602.
    {
        let _g = tch::no_grad_guard();
        let _ = net.bias(Layer::Fc2).get(3).g_add_scalar_(0.5);
    }
    let reg = proximity.add_gradient(&net, &mut grad).double_value(&[]);
    assert!((reg - 1000.0 * 0.5 / 44_602.0).abs() < 1e-6, "{reg}");
    let moved = grad.nonzero().flatten(0, -1);
    assert_eq!(Vec::<i64>::try_from(&moved).unwrap(), [44_602 - 10 + 3]);
    assert!((grad.double_value(&[44_602 - 10 + 3]) - 1000.0 / 44_602.0).abs() < 1e-7);
}

/// The parameters are windows onto the flat vector: writing one shows in the other.
#[test]
fn parameters_share_the_flat_vector() {
    let net = seeded_net(4);
    let flat = net.flat_parameters();
    assert_eq!(flat.size(), vec![44_602]);
    let first_bias = 32 * 9;
    assert_eq!(values(&flat.narrow(0, first_bias, 32)), values(net.bias(Layer::Conv1)));
    let _ = flat.shallow_clone().narrow(0, first_bias, 1).fill_(7.5);
    assert_eq!(net.bias(Layer::Conv1).double_value(&[0]), 7.5);
    assert!(net.bias(Layer::Conv1).requires_grad() && !flat.requires_grad());
}

/// A loss with the study's regulariser, through autograd the obvious way. The
/// forward is the lean one training differentiates: autograd through `Net::forward`
/// misses the gradient (see the f64 test below), and on weights whose gradient is
/// near Adam's ε that alone moves the first step by 1e-5.
fn autograd_loss(net: &Net, start: &Tensor, x: &Tensor, y: &Tensor) -> Tensor {
    let flat: Vec<Tensor> = net.parameters().map(|p| p.flatten(0, -1)).collect();
    let reg = (Tensor::cat(&flat, 0) - start).abs().mean(Kind::Float) * 1000.0;
    let (weights, biases) = net.weights_and_biases();
    lean_forward(x, weights, biases).cross_entropy_for_logits(y) + reg
}

/// Our step (flat gradient + closed-form regulariser gradient + flat Adam) moves
/// the weights as libtorch's Adam does on the autograd loss, step for step. The
/// gradient is autograd's here: the CPU's hand-made one rounds differently, and
/// Adam's first step (g / (|g| + ε)) turns those roundings into 1e-6 moves on
/// weights whose gradient is near ε; the f64 test below holds that gradient.
#[test]
fn flat_adam_and_the_closed_form_regulariser_match_libtorch() {
    let ours = seeded_net(5);
    let theirs = ours.duplicate();
    let start = theirs.flat_parameters().copy();
    let proximity = Proximity::new(&ours, 1000.0);
    let mut adam = Adam::new(ours.flat_parameters(), 1e-3);
    let mut reference = tch::nn::Adam::default().build(theirs.var_store(), 1e-3).unwrap();
    for (step, (x, y)) in seeded_batches(9, &[8; 6]).iter().enumerate() {
        let mut step_pass = through_autograd(&ours, x, y);
        let value = proximity.add_gradient(&ours, &mut step_pass.gradient);
        let ce = step_pass.loss;
        // The loss we report is the study's formula on the same parameters.
        let formula = autograd_loss(&ours, &start, x, y).double_value(&[]);
        assert!((ce.double_value(&[]) + value.double_value(&[]) - formula).abs() < 1e-5, "step {step}");
        adam.step(ours.flat_parameters(), &step_pass.gradient);
        reference.backward_step(&autograd_loss(&theirs, &start, x, y));
        let moved = (ours.flat_parameters() - &start).abs().max().double_value(&[]);
        let apart = (ours.flat_parameters() - theirs.flat_parameters()).abs().max().double_value(&[]);
        // Adam's first step moves every weight with a gradient by lr: the comparison
        // below is between weights that really moved.
        assert!(moved > 0.9e-3, "step {step}: Adam moved the weights by at most {moved}");
        assert!(apart < 1e-6, "step {step}: {apart} apart");
    }
}

/// The gradient of the study's loss with respect to each parameter block, in f64
/// through the obvious forward (channels-first, ReLU before pooling).
fn f64_reference_gradient(net: &Net, x: &Tensor, y: &Tensor) -> Vec<Tensor> {
    let leaves: Vec<Tensor> =
        net.parameters().map(|p| p.detach().to_kind(Kind::Double).set_requires_grad(true)).collect();
    let mut h = x.to_kind(Kind::Double);
    for (i, layer) in Layer::ALL.into_iter().enumerate() {
        let (w, b) = (&leaves[2 * i], &leaves[2 * i + 1]);
        h = match layer.is_conv() {
            true => {
                h.conv2d(w, Some(b), [1, 1], [0, 0], [1, 1], 1).relu().max_pool2d([2, 2], [2, 2], [0, 0], [1, 1], false)
            }
            false => h.flatten(1, -1).linear(w, Some(b)),
        };
        if !layer.is_conv() && layer.next().is_some() {
            h = h.relu();
        }
    }
    let loss = h.cross_entropy_for_logits(y);
    let wrt: Vec<&Tensor> = leaves.iter().collect();
    Tensor::run_backward(&[&loss], &wrt, false, false)
}

/// f32's unit roundoff, 2⁻²⁴.
const UNIT_ROUNDOFF: f64 = f32::EPSILON as f64 / 2.0;

/// How many standard deviations of rounding `images_near_a_kink` allows for.
const LAMBDA: f64 = 6.0;

/// Which images of `x` have a ReLU or max-pooling decision that f32 arithmetic
/// could take either way: the gradient has a kink there, so the f32 gradient may
/// rightly differ from the f64 one by a whole unit's contribution (on a CPU
/// without AVX-512 one such image put conv1's weight gradient 1 % of its scale
/// off the f64 one). Bounds in f64 through the obvious forward: a sum of K
/// products in f32, in any order, errs by at most λ·√K·u·Σ|terms| except with
/// probability 2·exp(−λ²/2) (Higham and Mary's probabilistic bound, 2019; the
/// worst case K·u·Σ|terms| flags nearly every image of a random network), here
/// λ = 6 (1e-8 per value); twice that covers Winograd's transforms, whose few
/// extra additions per value round too; an input's own error carries through
/// |W|; max pooling and ReLU never enlarge an error. A decision is ambiguous
/// where a window's largest value is within that bound of 0 or of the
/// runner-up, or an fc1 pre-activation within it of 0.
fn images_near_a_kink(net: &Net, x: &Tensor) -> Vec<bool> {
    let params: Vec<Tensor> = net.parameters().map(|p| p.detach().to_kind(Kind::Double)).collect();
    let n = x.size()[0];
    let (mut h, mut error) = (x.to_kind(Kind::Double), x.to_kind(Kind::Double).zeros_like());
    let mut near = Tensor::zeros([n], (Kind::Bool, Device::Cpu));
    for (i, layer) in Layer::ALL.into_iter().enumerate() {
        let (w, b) = (&params[2 * i], &params[2 * i + 1]);
        let fan_in = w.size()[1..].iter().product::<i64>() as f64;
        let (pre, terms, carried) = match layer.is_conv() {
            true => {
                let conv = |x: &Tensor, w: &Tensor, b: Option<&Tensor>| x.conv2d(w, b, [1, 1], [0, 0], [1, 1], 1);
                (conv(&h, w, Some(b)), conv(&h.abs(), &w.abs(), Some(&b.abs())), conv(&error, &w.abs(), None))
            }
            false => {
                let (flat, flat_error) = (h.flatten(1, -1), error.flatten(1, -1));
                (
                    flat.linear(w, Some(b)),
                    flat.abs().linear(&w.abs(), Some(&b.abs())),
                    flat_error.linear(&w.abs(), None::<Tensor>),
                )
            }
        };
        let bound = terms * (2.0 * LAMBDA * fan_in.sqrt() * UNIT_ROUNDOFF) + carried;
        if layer.is_conv() {
            let windows = |t: &Tensor| {
                let [n, c, side, _] = t.size()[..] else { unreachable!("a 4-D map") };
                let cells = side / 2; // floor-mode pooling drops an odd last row and column
                t.narrow(2, 0, 2 * cells)
                    .narrow(3, 0, 2 * cells)
                    .reshape([n, c, cells, 2, cells, 2])
                    .permute([0, 1, 2, 4, 3, 5])
                    .reshape([n, c, cells, cells, 4])
            };
            let (sorted, _) = windows(&pre).sort(-1, true);
            let (top, second) = (sorted.select(-1, 0), sorted.select(-1, 1));
            let window_bound = windows(&bound).amax([-1].as_slice(), false);
            let at_zero = top.abs().le_tensor(&window_bound);
            let at_a_tie =
                top.gt_tensor(&window_bound).logical_and(&(&top - &second).le_tensor(&(&window_bound * 2.0)));
            near = near.logical_or(&at_zero.logical_or(&at_a_tie).flatten(1, -1).any_dim(1, false));
            (h, error) = (top.relu(), window_bound);
        } else if layer.next().is_some() {
            near = near.logical_or(&pre.abs().le_tensor(&bound).any_dim(1, false));
            (h, error) = (pre.relu(), bound);
        }
    }
    Vec::<bool>::try_from(near).expect("one flag per image")
}

/// Batches of `sizes` images whose every decision is clear of a kink
/// (`images_near_a_kink`), drawn from six times as many random images (on a
/// random network about 30 % are clear: conv2's pooling windows hold most
/// near-ties).
fn batches_clear_of_kinks(net: &Net, seed: i64, sizes: &[i64]) -> Vec<(Tensor, Tensor)> {
    let candidates: Vec<i64> = sizes.iter().map(|size| 6 * size).collect();
    seeded_batches(seed, &candidates)
        .into_iter()
        .zip(sizes)
        .map(|((x, y), &size)| {
            let clear: Vec<i64> = (0..)
                .zip(images_near_a_kink(net, &x))
                .filter_map(|(i, near)| (!near).then_some(i))
                .take(size as usize)
                .collect();
            assert_eq!(clear.len() as i64, size, "a sixth of the random images clear of every kink");
            let keep = Tensor::from_slice(&clear);
            (x.index_select(0, &keep), y.index_select(0, &keep))
        })
        .collect()
}

/// The training step's gradient is the loss's gradient computed in f64, block by
/// block, on full and ragged batches whose images are clear of the loss's kinks
/// (`images_near_a_kink`); its loss and logits are the plain forward's. Both
/// ways: the CPU's (the convolution blocks by hand where the CPU path has them)
/// and autograd's (a GPU's). With every decision the same, only rounding
/// separates them: f32 sums of up to 18,432 terms (conv1's weight gradient),
/// measured at most 2.4e-6 of a block's largest entry on the avx512, avx2,
/// portable and torch paths; 1e-4 keeps a factor of 40 from that and of 100 from
/// the 1e-2 a flipped decision gave.
#[test]
fn the_training_gradient_is_the_f64_gradient_of_the_study_loss() {
    let net = seeded_net(11);
    type GradientOf = fn(&Net, &Tensor, &Tensor) -> Backprop;
    let ways: [(&str, GradientOf); 2] = [("training step", cross_entropy_gradient), ("autograd", through_autograd)];
    let mut largest = 0f64;
    for (x, y) in batches_clear_of_kinks(&net, 12, &[32, 7]) {
        let batch = x.size()[0];
        for (way, gradient_of) in ways {
            let ours = gradient_of(&net, &x, &y);
            let mut offset = 0;
            for (p, reference) in net.parameters().zip(f64_reference_gradient(&net, &x, &y)) {
                let n = p.numel() as i64;
                let mine = ours.gradient.narrow(0, offset, n).to_kind(Kind::Double);
                let scale = reference.abs().max().double_value(&[]);
                let apart = (&mine - reference.flatten(0, -1)).abs().max().double_value(&[]);
                assert!(scale > 0.0, "batch {batch}: a parameter block with no gradient at all");
                assert!(
                    apart <= 1e-4 * scale,
                    "{way}, batch {batch}, block at {offset}: {apart} apart (scale {scale})"
                );
                largest = largest.max(apart / scale);
                offset += n;
            }
            assert_eq!(offset, ours.gradient.size()[0], "the flat gradient covers every parameter once");
            let logits = net.forward(&x);
            let loss_gap = (ours.loss.double_value(&[]) - logits.cross_entropy_for_logits(&y).double_value(&[])).abs();
            assert!(loss_gap < 1e-6, "{way}: loss {loss_gap} apart");
            assert!((ours.logits - logits).abs().max().double_value(&[]) < 1e-5, "{way}: logits");
        }
    }
    let line = format!("gradient check: at most {largest:.2e} of a block's scale from f64\n");
    let _ = std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes());
}

/// A network whose conv1 outputs are known: every kernel weight 0.1 and channel k's
/// bias 0.01·k − 0.1, so on an all-ones image channel k outputs 0.9 + bias.
fn known_net() -> Net {
    let net = seeded_net(2);
    let _g = tch::no_grad_guard();
    let _ = net.weight(Layer::Conv1).shallow_clone().fill_(0.1);
    let bias = Tensor::arange(32, (Kind::Float, Device::Cpu)) * 0.01 - 0.1;
    net.bias(Layer::Conv1).shallow_clone().copy_(&bias);
    net
}

#[test]
fn ablation_modes_replace_a_channel_by_their_constant() {
    let net = known_net();
    let x = Tensor::ones([2, 1, 28, 28], (Kind::Float, Device::Cpu));
    // Means over a "test set" of two ones images equal the outputs themselves.
    let means: Vec<Tensor> = AblatedModel::new(&net, &[], &AblationSet::default(), AblationMode::Zero)
        .block_outputs(&x)
        .iter()
        .map(|h| h.mean_dim(0, false, Kind::Float))
        .collect();
    let set = AblationSet::of(Layer::Conv1, &[3, 20]);
    let conv1 = |mode| AblatedModel::new(&net, &means, &set, mode).block_outputs(&x).remove(0);
    let unablated =
        AblatedModel::new(&net, &means, &AblationSet::default(), AblationMode::Weight).block_outputs(&x).remove(0);
    // Unablated: 0.9 + bias everywhere.
    assert!((values(&unablated.get(0).get(3))[0] - (0.9 + 0.03 - 0.1)).abs() < 1e-6);
    // weight: the channel outputs ReLU(bias): channel 3 has bias −0.07 → 0; channel 20 has 0.1.
    let w = conv1(AblationMode::Weight);
    assert!(values(&w.get(1).get(3)).iter().all(|&v| v == 0.0));
    assert!(values(&w.get(1).get(20)).iter().all(|&v| (v - 0.1).abs() < 1e-6));
    // zero: both channels 0.
    let z = conv1(AblationMode::Zero);
    assert!(values(&z.narrow(1, 3, 1)).iter().chain(values(&z.narrow(1, 20, 1)).iter()).all(|&v| v == 0.0));
    // mean: the channel's mean map, here its own output.
    let m = conv1(AblationMode::Mean);
    assert!(values(&(&m - &unablated).abs()).iter().all(|&v| v < 1e-6));
    // Other channels are untouched in every mode.
    for out in [&w, &z] {
        assert!(values(&(out.get(0).get(4) - unablated.get(0).get(4)).abs()).iter().all(|&v| v < 1e-7));
    }
}

#[test]
fn ablation_sets_parse_toggle_and_validate() {
    let mut set: AblationSet = "conv1:9,15 conv2:37".parse().unwrap();
    assert_eq!(set.len(), 3);
    assert_eq!(set.to_string(), "conv1:9,15 conv2:37");
    assert_eq!(set.first_layer(), Some(Layer::Conv1));
    assert!(!set.toggle(Layer::Conv1, 9));
    assert!(!set.toggle(Layer::Conv1, 15));
    assert_eq!(set.first_layer(), Some(Layer::Conv2));
    assert!(set.toggle(Layer::Fc1, 1));
    assert_eq!(set.to_string(), "conv2:37 fc1:1");
    assert!("conv1:32".parse::<AblationSet>().unwrap_err().contains("0..31"));
    assert!("conv9:1".parse::<AblationSet>().is_err());
    assert!("net.7:5".parse::<AblationSet>().unwrap().contains(Layer::Fc1, 5));
}

#[test]
fn swap_copies_exactly_the_chosen_layers() {
    let (a, b) = (seeded_net(3), seeded_net(4));
    let s = swapped(&b, &a, &[Layer::Conv2, Layer::Fc2]);
    let same = |x: &Tensor, y: &Tensor| x.equal(y);
    assert!(same(s.weight(Layer::Conv2), a.weight(Layer::Conv2)) && same(s.bias(Layer::Fc2), a.bias(Layer::Fc2)));
    assert!(same(s.weight(Layer::Conv1), b.weight(Layer::Conv1)) && same(s.weight(Layer::Fc1), b.weight(Layer::Fc1)));
    // The recipient itself is untouched.
    assert!(!same(b.weight(Layer::Conv2), a.weight(Layer::Conv2)));
    let subsets = all_subsets();
    assert_eq!(subsets.len(), 16);
    assert!(subsets[0].is_empty() && subsets[15].len() == 4);
}

#[test]
fn diff_reports_norms_per_layer_and_unit() {
    let a = seeded_net(5);
    let b = a.duplicate();
    {
        let _g = tch::no_grad_guard();
        let _ = b.weight(Layer::Conv1).get(7).get(0).get(1).get(2).g_add_scalar_(-0.3);
        let _ = b.bias(Layer::Conv1).get(7).g_add_scalar_(0.4);
    }
    let d = diff(&a, &b);
    let conv1 = &d[Layer::Conv1.position()];
    assert!((conv1.total.l1 - 0.7).abs() < 1e-6);
    assert!((conv1.total.l2 - 0.5).abs() < 1e-6);
    assert!((conv1.total.max - 0.4).abs() < 1e-6);
    assert!((conv1.total.mean_abs - 0.7 / 320.0).abs() < 1e-8);
    assert!((conv1.units[7].l1 - 0.7).abs() < 1e-6);
    assert_eq!(conv1.units[6].l1, 0.0);
    assert_eq!(d[Layer::Conv2.position()].total.l1, 0.0);
}

#[test]
fn checkpoints_round_trip_with_pytorch_names() {
    let dir = scratch("roundtrip");
    let net = seeded_net(6);
    let path = dir.join("m.safetensors");
    save_net(&net, &path).unwrap();
    let names: Vec<String> = Tensor::read_safetensors(&path).unwrap().into_iter().map(|(n, _)| n).collect();
    assert!(names.contains(&"net.0.weight".to_string()) && names.contains(&"net.9.bias".to_string()));
    assert_eq!(names.len(), 8);
    let back = load_net(&path, Device::Cpu).unwrap();
    for layer in Layer::ALL {
        assert!(back.weight(layer).equal(net.weight(layer)) && back.bias(layer).equal(net.bias(layer)));
    }
    // No temporary file is left behind.
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
}

#[test]
fn wrong_shapes_and_garbage_are_rejected_clearly() {
    let dir = scratch("wrong");
    let path = dir.join("bad.safetensors");
    let mut tensors: Vec<(String, Tensor)> = Tensor::read_safetensors(fixture("pytorch_net.safetensors")).unwrap();
    tensors.retain(|(n, _)| n != "net.9.bias");
    for (name, t) in tensors.iter_mut() {
        if name == "net.3.weight" {
            *t = Tensor::zeros([64, 16, 3, 3], (Kind::Float, Device::Cpu));
        }
    }
    tensors.push(("extra".into(), Tensor::zeros([2], (Kind::Float, Device::Cpu))));
    Tensor::write_safetensors(&tensors, &path).unwrap();
    let msg = load_net(&path, Device::Cpu).err().unwrap().to_string();
    assert!(msg.contains("'net.3.weight' has shape [64, 16, 3, 3], expected [64, 32, 3, 3]"), "{msg}");
    assert!(msg.contains("missing tensor 'net.9.bias'"), "{msg}");
    assert!(msg.contains("unexpected tensor 'extra'"), "{msg}");
    std::fs::write(&path, b"not a checkpoint").unwrap();
    assert!(load_net(&path, Device::Cpu).err().unwrap().to_string().contains("not a readable safetensors file"));
    assert!(load_net(&dir.join("none.safetensors"), Device::Cpu).err().unwrap().to_string().contains("not found"));
}

#[test]
fn weights_that_are_not_finite_are_refused_naming_the_tensor() {
    // The probe's finding: a NaN made every prediction class 0 and the checkpoint
    // loaded as a model with "no backdoor" (poison accuracy 0.00).
    let dir = scratch("non-finite");
    let path = dir.join("broken.safetensors");
    let mut tensors: Vec<(String, Tensor)> = Tensor::read_safetensors(fixture("pytorch_net.safetensors")).unwrap();
    for (name, t) in tensors.iter_mut() {
        let flat = t.view([-1]);
        match name.as_str() {
            "net.7.weight" => {
                for (i, v) in [(0, f64::NAN), (5, f64::NAN), (9, f64::NAN), (11, f64::INFINITY)] {
                    let _ = flat.get(i).fill_(v);
                }
            }
            // Finite in f64, Inf once held as the network's f32.
            "net.9.bias" => *t = Tensor::full([10], 1e300, (Kind::Double, Device::Cpu)),
            _ => {}
        }
    }
    Tensor::write_safetensors(&tensors, &path).unwrap();
    let msg = load_net(&path, Device::Cpu).err().unwrap().to_string();
    assert!(msg.starts_with(&path.display().to_string()), "{msg}");
    assert!(msg.contains("net.7.weight: 3 NaN, 1 Inf; net.9.bias: 10 Inf"), "{msg}");
    assert!(!msg.contains("net.0.weight"), "finite tensors are not named: {msg}");
}

#[test]
fn a_seed_draws_the_cpu_generators_weights_and_batches_whatever_the_device() {
    // `Net::new` and the shuffles of training and recovery, drawn on the CPU and
    // moved, against plain draws on the CPU generator for the same seed: a GPU
    // run gets these same weights and batches.
    let images = 12_000;
    let (net, order) = seeded(11, || (Net::new(Device::Cpu), draw::permutation(images, Device::Cpu)));
    let (plain, plain_order) = seeded(11, || {
        let uniform =
            |shape: &[i64], bound: f64| Tensor::zeros(shape, (Kind::Float, Device::Cpu)).uniform_(-bound, bound);
        let layers: Vec<(Tensor, Tensor)> = Layer::ALL
            .iter()
            .map(|l| {
                let bound = 1.0 / (l.fan_in() as f64).sqrt();
                (uniform(&l.weight_shape(), bound), uniform(&[l.units() as i64], bound))
            })
            .collect();
        (layers, Tensor::randperm(images, (Kind::Int64, Device::Cpu)))
    });
    for (&layer, (weight, bias)) in Layer::ALL.iter().zip(&plain) {
        assert!(net.weight(layer).equal(weight) && net.bias(layer).equal(bias), "{layer}");
    }
    let first_batches = |o: &Tensor| Vec::<i64>::try_from(o.narrow(0, 0, 3 * 32)).unwrap();
    assert_eq!(first_batches(&order), first_batches(&plain_order));
    assert!(order.equal(&plain_order));
    // The same seed draws the same again; another seed other weights.
    assert!(seeded_net(11).weight(Layer::Fc1).equal(net.weight(Layer::Fc1)));
    assert!(!seeded_net(12).weight(Layer::Fc1).equal(net.weight(Layer::Fc1)));
}

#[test]
fn every_random_draw_of_the_engine_is_made_on_the_cpu_generator() {
    // A draw made on the tensors' device would give a GPU other weights and
    // batches than the CPU for the same seed: every draw goes through draw.rs.
    let draws = [
        "randperm(",
        "Tensor::rand",
        "randint(",
        "uniform_(",
        "normal_(",
        "bernoulli",
        "multinomial",
        "rand_like",
        "randn_like",
        "dropout",
        "Init::Uniform",
        "Init::Randn",
        "Init::Kaiming",
    ];
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    walk(&root, &mut files);
    assert!(files.len() > 50, "the walk found the sources");
    let mut found = Vec::new();
    for file in files.iter().filter(|f| !f.ends_with("engine/draw.rs")) {
        let source = std::fs::read_to_string(file).unwrap();
        // A file's own tests (CPU only) come last.
        let code = source.split("#[cfg(test)]").next().unwrap_or("");
        for (i, line) in code.lines().enumerate() {
            let line = line.split("//").next().unwrap_or("");
            // A name in a string (a node called "classifier.dropout1") draws nothing.
            let line: String = line.split('"').step_by(2).collect();
            found.extend(
                draws.iter().filter(|d| line.contains(*d)).map(|d| format!("{}:{}: {d}", file.display(), i + 1)),
            );
        }
    }
    assert!(found.is_empty(), "draws outside engine/draw.rs: {found:#?}");
}

#[test]
fn the_search_reads_a_pass_of_sets_in_one_copy_with_each_sets_own_metrics() {
    // The circuit search evaluates 64 sets per pass and copies their predictions
    // to the host once; each set's metrics must be those of evaluating it alone.
    let net = load_net(&fixture("pytorch_net.safetensors"), Device::Cpu).unwrap();
    let test = TestSet::new(&common::mnist(0, 300).test, &TrainConfig::default(), Device::Cpu).unwrap();
    let cache = ActivationCache::build(&net, &test);
    let sets: Vec<AblationSet> = (0..70)
        .map(|i| match i % 3 {
            0 => AblationSet::of(Layer::Conv1, &[i % 32, (i + 7) % 32]),
            1 => AblationSet::of(Layer::Conv2, &[i % 64]),
            _ => AblationSet::of(Layer::Fc1, &[i % 16]),
        })
        .collect();
    let mut evaluator = FastEvaluator { cache: &cache, test: &test, mode: AblationMode::Zero };
    let together = evaluator.evaluate(&sets);
    let alone: Vec<Metrics> = sets.iter().map(|s| test.metrics(&cache.predict(&test, s, AblationMode::Zero))).collect();
    assert_eq!(together, alone);
    let distinct: std::collections::BTreeSet<String> = alone.iter().map(|m| format!("{:.2}", m.clean_acc)).collect();
    assert!(distinct.len() > 3, "the sets differ, so an order mix-up would show: {distinct:?}");
}

#[test]
fn tf32_is_off_until_allowed_as_libtorch_reads_it_back() {
    // libtorch's own default runs a GPU's cuDNN convolutions in TF32; the binary
    // switches it off at start unless --allow-tf32 (checked through doctor in
    // tests/cli.rs). No GPU is needed: the flags live in libtorch's context.
    assert!(tf32::allowed_ops().contains(&"convolutions"), "libtorch's default: {:?}", tf32::allowed_ops());
    tf32::allow(false);
    assert!(tf32::allowed_ops().is_empty(), "{:?}", tf32::allowed_ops());
    assert!(tf32::describe().starts_with("off: full float32"), "{}", tf32::describe());
    tf32::allow(true);
    assert_eq!(tf32::allowed_ops(), ["convolutions", "recurrent layers", "matrix products"]);
    tf32::allow(false);
    assert!(tf32::allowed_ops().is_empty());
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

#[test]
fn a_pytorch_state_dict_loads_and_computes_the_same_logits() {
    let net = load_net(&fixture("pytorch_net.safetensors"), Device::Cpu).unwrap();
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("pytorch_logits.json")).unwrap()).unwrap();
    let expected: Vec<f32> = expected["logits"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r.as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32))
        .collect();
    let x = Tensor::linspace(-0.5, 2.5, 2 * 28 * 28, (Kind::Float, Device::Cpu)).view([2, 1, 28, 28]);
    let logits = values(&tch::no_grad(|| net.forward(&x)));
    assert_eq!(logits.len(), 20);
    for (a, b) in logits.iter().zip(&expected) {
        assert!((a - b).abs() < 1e-5, "{a} vs {b}");
    }
}

#[test]
fn clean_means_average_block_outputs_over_clean_images_only() {
    use trojanscope::data::loaded::Split;
    let net = known_net();
    // Two all-white images: the triggered copies must not enter the mean.
    let split = Split {
        pixels: vec![255; 2 * 784],
        labels: vec![1, 2],
        shape: [1, 28, 28],
        normalisation: trojanscope::data::dataset::Dataset::Mnist.normalisation(),
    };
    let test = TestSet::new(&split, &TrainConfig::default(), Device::Cpu).unwrap();
    let means = clean_means(&net, &test.clean());
    let white = test.inputs.narrow(0, 0, 1);
    let h1 = net.block(Layer::Conv1, &white).squeeze_dim(0);
    assert!(values(&(&means[0] - h1).abs()).iter().all(|&v| v < 1e-5));
    assert_eq!(means[1].size(), vec![64, 5, 5]);
}

#[test]
fn activations_of_one_digit_cover_every_layer_at_full_resolution() {
    use trojanscope::engine::probe::activations;
    let net = known_net();
    let image = Tensor::ones([1, 28, 28], (Kind::Float, Device::Cpu));
    let acts = activations(&net, &image);
    let shapes: Vec<Vec<usize>> = acts.iter().map(|a| a.shape.clone()).collect();
    assert_eq!(shapes, vec![vec![32, 26, 26], vec![64, 11, 11], vec![16], vec![10]]);
    // conv1 channel 20 on an all-ones image: ReLU(0.9 + 0.1) at every position.
    assert!(acts[0].channel(20).iter().all(|&v| (v - 1.0).abs() < 1e-5));
    assert_eq!(acts[0].channel(20).len(), 26 * 26);
    let logits = values(&tch::no_grad(|| net.forward(&image.view([1, 1, 28, 28]))));
    for (a, b) in acts[3].values.iter().zip(&logits) {
        assert!((a - b).abs() < 1e-5);
    }
}
