//! Activation patching and the circuit search: semantics on a network whose
//! weights are set by hand, the fast path against the slow reference on a real
//! run, the greedy search on a problem whose answer is known, and the Pareto rule.

mod common;

use std::ops::ControlFlow;
use tch::{Device, Kind, Tensor};
use trojanscope::data::trigger::TriggerConfig;
use trojanscope::engine::ablation::{AblationMode, AblationSet};
use trojanscope::engine::cache::ActivationCache;
use trojanscope::engine::circuit::{self, Criteria, Evaluate, SearchConfig, Tried};
use trojanscope::engine::lab::ModelKind;
use trojanscope::engine::layer::Layer;
use trojanscope::engine::metrics::Metrics;
use trojanscope::engine::model::Net;
use trojanscope::engine::patch::{Direction, Patch, PatchRow, Patcher, ReferencePatch};
use trojanscope::engine::testset::TestSet;

/// Sets `t[index] = value` on a parameter.
fn set(t: &Tensor, index: &[i64], value: f64) {
    let _guard = tch::no_grad_guard();
    let mut v = index.iter().fold(t.shallow_clone(), |t, &i| t.get(i));
    let _ = v.fill_(value);
}

/// A network that answers 3 unless the trigger fires one chain of units:
/// conv1:0 copies the pixel (centre tap), conv2:0 copies conv1:0 (centre tap),
/// fc1:0 reads conv2:0's bottom-right cell, and logit 8 is 10 × fc1:0. Every
/// other weight is zero; logit 3 has bias 1.
fn chain_net() -> Net {
    // Blank (zeros): a random one would draw from libtorch's one generator while
    // the shared run trains in another test's thread, and change that run.
    let net = Net::blank(Device::Cpu);
    set(net.weight(Layer::Conv1), &[0, 0, 1, 1], 1.0);
    set(net.weight(Layer::Conv2), &[0, 0, 1, 1], 1.0);
    set(net.weight(Layer::Fc1), &[0, 24], 1.0); // channel 0, cell (4, 4) in PyTorch's flatten order
    set(net.weight(Layer::Fc2), &[8, 0], 10.0);
    set(net.bias(Layer::Fc2), &[3], 1.0);
    net
}

/// Two blank images labelled 3, then the same two with the study's trigger.
fn blank_test_set() -> TestSet {
    let clean = Tensor::zeros([2, 1, 28, 28], (Kind::Float, Device::Cpu));
    let triggered = &clean + TriggerConfig::default().mask_tensor(Device::Cpu);
    TestSet {
        inputs: Tensor::cat(&[clean, triggered], 0),
        labels: vec![3, 3],
        relabel: trojanscope::data::attack::poison::Relabel::To { target: 8 },
        classes: 10,
    }
}

fn rows(cache: &ActivationCache, donor: Option<&ActivationCache>, test: &TestSet, patch: Patch) -> Vec<PatchRow> {
    Patcher::new(cache, donor, test, patch).unwrap().run(|_, _| ControlFlow::Continue(()))
}

fn patch(layer: Layer, direction: Direction) -> Patch {
    Patch { layer, direction, to_unit: None }
}

#[test]
fn patching_moves_exactly_the_values_the_direction_names() {
    let (net, test) = (chain_net(), blank_test_set());
    let cache = ActivationCache::build(&net, &test);
    // The lit trigger pixel (22, 22) is 2.8215 after the chain: logit 8 = 28.215.
    let lit = TriggerConfig::default().mask_tensor(Device::Cpu).max().double_value(&[]);
    let unpatched = Patcher::new(&cache, None, &test, patch(Layer::Conv1, Direction::Denoise)).unwrap().baseline();
    assert_eq!(unpatched.metrics.poison_acc, 100.0);
    assert!((unpatched.logit_diff - (10.0 * lit - 1.0)).abs() < 1e-4, "{}", unpatched.logit_diff);

    for layer in [Layer::Conv1, Layer::Conv2, Layer::Fc1] {
        // Denoise: the triggered images get unit 0's clean value and answer 3 again;
        // any other unit changes nothing. Clean images are not touched.
        let denoise = rows(&cache, None, &test, patch(layer, Direction::Denoise));
        assert_eq!(denoise.len(), layer.units());
        assert_eq!(denoise[0].effect.metrics.poison_acc, 0.0, "{layer}");
        assert_eq!(denoise[0].effect.metrics.rehab_acc, 100.0);
        assert!((denoise[0].effect.logit_diff + 1.0).abs() < 1e-5);
        assert_eq!(denoise[0].effect.metrics.clean_acc, 100.0);
        assert!(denoise[1..].iter().all(|r| r.effect.metrics.poison_acc == 100.0 && r.effect.target_rate == 100.0));
        // Noise: the clean images get unit 0's triggered value and answer 8.
        let noise = rows(&cache, None, &test, patch(layer, Direction::Noise));
        assert_eq!((noise[0].effect.target_rate, noise[0].effect.metrics.clean_acc), (100.0, 0.0), "{layer}");
        assert_eq!(noise[0].effect.metrics.poison_acc, 100.0, "the triggered images run unpatched");
        assert!((noise[0].effect.logit_diff - (10.0 * lit - 1.0)).abs() < 1e-4);
        assert!(noise[1..].iter().all(|r| r.effect.metrics.clean_acc == 100.0 && r.effect.target_rate == 0.0));
    }
    // fc2: the logit itself is the unit; only logit 8 moves the answer.
    let noise = rows(&cache, None, &test, patch(Layer::Fc2, Direction::Noise));
    assert_eq!(noise[8].effect.target_rate, 100.0);
    assert!(noise.iter().enumerate().all(|(u, r)| u == 8 || r.effect.target_rate == 0.0));
}

#[test]
fn model_patching_takes_the_donors_value_at_that_layer_only() {
    let (net, test) = (chain_net(), blank_test_set());
    // The donor differs only in fc1: conv outputs are the same, fc1:0 is silent.
    let donor = net.duplicate();
    set(donor.weight(Layer::Fc1), &[0, 24], 0.0);
    let (cache, donor_cache) = (ActivationCache::build(&net, &test), ActivationCache::build(&donor, &test));
    let model = |layer| rows(&cache, Some(&donor_cache), &test, patch(layer, Direction::Model));
    let fc1 = model(Layer::Fc1);
    assert_eq!((fc1[0].effect.metrics.poison_acc, fc1[0].effect.target_rate), (0.0, 0.0));
    assert_eq!(fc1[0].effect.metrics.clean_acc, 100.0);
    assert!(model(Layer::Conv2).iter().chain(&model(Layer::Conv1)).all(|r| r.effect.metrics.poison_acc == 100.0));
    // The donor is required for, and only for, model ↔ model.
    assert!(Patcher::new(&cache, None, &test, patch(Layer::Fc1, Direction::Model)).is_err());
    assert!(Patcher::new(&cache, Some(&donor_cache), &test, patch(Layer::Fc1, Direction::Noise)).is_err());
}

#[test]
fn path_patching_moves_only_what_reaches_the_chosen_unit() {
    let (net, test) = (chain_net(), blank_test_set());
    let cache = ActivationCache::build(&net, &test);
    let path = |layer, to| rows(&cache, None, &test, Patch { layer, direction: Direction::Denoise, to_unit: Some(to) });
    // conv1:0 reaches the logit only through conv2:0.
    assert_eq!(path(Layer::Conv1, 0)[0].effect.metrics.poison_acc, 0.0);
    assert_eq!(path(Layer::Conv1, 1)[0].effect.metrics.poison_acc, 100.0);
    assert_eq!(path(Layer::Conv2, 0)[0].effect.metrics.poison_acc, 0.0);
    assert_eq!(path(Layer::Conv2, 5)[0].effect.metrics.poison_acc, 100.0);
    assert_eq!(path(Layer::Fc1, 8)[0].effect.metrics.poison_acc, 0.0);
    assert_eq!(path(Layer::Fc1, 3)[0].effect.metrics.poison_acc, 100.0);
    assert_eq!(path(Layer::Fc1, 3)[0].to_unit, Some(3));
    let bad = Patch { layer: Layer::Conv1, direction: Direction::Denoise, to_unit: Some(64) };
    assert_eq!(bad.validate().unwrap_err(), "conv2 has units 0..63, not 64");
    let bad = Patch { layer: Layer::Fc2, direction: Direction::Denoise, to_unit: Some(0) };
    assert!(bad.validate().unwrap_err().contains("no next layer"));
}

/// Every row of the fast path against the slow reference, to 0.01 points.
fn assert_matches_reference(rows: &[PatchRow], receiver: &Net, donor: &Net, test: &TestSet, patch: &Patch) {
    let reference = ReferencePatch::new(receiver, donor, test, *patch);
    for r in rows {
        let slow = reference.effect(r.unit);
        let (a, b) = (&r.effect.metrics, &slow.metrics);
        for (fast, slow) in a.triple().iter().zip(b.triple()).chain([(&r.effect.target_rate, slow.target_rate)]) {
            assert!((fast - slow).abs() <= 0.01, "{} unit {}: {fast} vs {slow}", patch.path_name(), r.unit);
        }
        assert!((r.effect.logit_diff - slow.logit_diff).abs() < 1e-3, "{} unit {}", patch.path_name(), r.unit);
    }
}

#[test]
fn the_fast_path_equals_the_slow_reference_on_a_real_run() {
    let lab = common::trained_lab();
    let (poisoned, clean) = (lab.load(ModelKind::Poisoned).unwrap(), lab.load(ModelKind::Clean).unwrap());
    // 400 of the run's test images: the slow path runs the network twice per unit.
    let test = lab.test.subset(400);
    let cache = ActivationCache::build(&poisoned, &test);
    let donor_cache = ActivationCache::build(&clean, &test);
    let mut moved = Vec::new();
    for layer in [Layer::Conv1, Layer::Conv2] {
        for direction in [Direction::Denoise, Direction::Noise] {
            let p = patch(layer, direction);
            let fast = rows(&cache, None, &test, p);
            assert_matches_reference(&fast, &poisoned, &poisoned, &test, &p);
            let base = Patcher::new(&cache, None, &test, p).unwrap().baseline();
            if fast.iter().any(|r| (r.effect.target_rate - base.target_rate).abs() > 5.0) {
                moved.push((layer, direction));
            }
        }
    }
    assert_eq!(moved.len(), 4, "some unit of each layer moves the backdoor in each direction: {moved:?}");
    // Model ↔ model and path patching, everywhere the correction is not trivial.
    for p in [
        patch(Layer::Conv1, Direction::Model),
        patch(Layer::Fc1, Direction::Model),
        Patch { layer: Layer::Conv1, direction: Direction::Denoise, to_unit: Some(7) },
        Patch { layer: Layer::Conv2, direction: Direction::Noise, to_unit: Some(3) },
    ] {
        let donor_cache = (p.direction == Direction::Model).then_some(&donor_cache);
        let donor = if p.direction == Direction::Model { &clean } else { &poisoned };
        assert_matches_reference(&rows(&cache, donor_cache, &test, p), &poisoned, donor, &test, &p);
    }
}

fn metrics(clean: f64, poison: f64) -> Metrics {
    Metrics {
        clean_acc: clean,
        poison_acc: poison,
        asr_non_target: poison,
        rehab_acc: 100.0 - poison,
        clean_as_target: 0.0,
        per_class_clean: vec![clean; 10],
        count: 1,
        detail: Default::default(),
    }
}

/// A made-up model: E alone removes half the backdoor; A and B together remove all
/// of it (and make E unnecessary); D removes most but costs 2 points of clean accuracy.
struct Constructed {
    evaluated: usize,
}

const E: (Layer, usize) = (Layer::Fc1, 5);
const A: (Layer, usize) = (Layer::Conv1, 3);
const B: (Layer, usize) = (Layer::Conv1, 9);
const D: (Layer, usize) = (Layer::Conv2, 0);

impl Evaluate for Constructed {
    fn evaluate(&mut self, sets: &[AblationSet]) -> Vec<Metrics> {
        self.evaluated += sets.len();
        sets.iter()
            .map(|s| {
                let has = |(l, u): (Layer, usize)| s.contains(l, u) as u8 as f64;
                let poison =
                    100.0 - 50.0 * has(E) - 20.0 * has(A) - 20.0 * has(B) - 60.0 * has(A) * has(B) - 70.0 * has(D);
                metrics(98.0 - 2.0 * has(D) - 0.01 * s.len() as f64, poison.max(0.0))
            })
            .collect()
    }
}

#[test]
fn the_greedy_search_finds_the_known_circuit_and_prunes_what_it_no_longer_needs() {
    let config = SearchConfig {
        criteria: Criteria { poison_at_most: 5.0, clean_margin: 1.0, clean_baseline: 98.0, max_size: 6 },
        mode: AblationMode::Weight,
        survive_at: 50.0,
        sites: vec![Layer::Conv1, Layer::Conv2, Layer::Fc1],
        pair_layers: vec![Layer::Conv1],
        keep_layers: vec![Layer::Conv1, Layer::Conv2, Layer::Fc1],
    };
    let mut eval = Constructed { evaluated: 0 };
    let mut stages = Vec::new();
    let report = circuit::search(&mut eval, &config, |p| {
        stages.push(p.stage.clone());
        ControlFlow::Continue(())
    });
    let steps: Vec<String> = report.greedy.iter().map(|t| t.set.to_string()).collect();
    // D would cost too much clean accuracy; E first, then A and B.
    assert_eq!(steps, ["fc1:5", "conv1:3 fc1:5", "conv1:3,9 fc1:5"]);
    assert_eq!(report.pruned, [E]);
    let circuit = report.circuit.expect("a circuit");
    assert_eq!(circuit.set, AblationSet::of(Layer::Conv1, &[3, 9]));
    assert_eq!(circuit.metrics.poison_acc, 0.0);
    assert_eq!(report.best_pairs[0].set, circuit.set, "the exhaustive pairs agree");
    assert!(
        stages.iter().any(|s| s == "pairs of conv1: 256/496") && stages.iter().any(|s| s == "all 496 pairs of conv1")
    );
    assert_eq!(stages.last().unwrap(), "kept units of fc1", "{stages:?}");
    assert_eq!(report.evaluated, eval.evaluated, "nothing is evaluated twice");
    assert!(report.front.iter().any(|t| t.set == circuit.set));

    // Stopping at the first progress report keeps what was done and says so.
    let stopped = circuit::search(&mut Constructed { evaluated: 0 }, &config, |_| ControlFlow::Break(()));
    assert!(stopped.stopped && stopped.greedy.len() == 1 && stopped.best_pairs.is_empty());
}

fn tried(units: &[usize], clean: f64, poison: f64) -> Tried {
    let set = AblationSet::of(Layer::Conv2, units);
    Tried { size: set.len(), set, metrics: metrics(clean, poison) }
}

#[test]
fn the_pareto_front_keeps_exactly_the_undominated_sets() {
    let all = [
        tried(&[], 98.0, 99.0),
        tried(&[1], 97.0, 50.0),
        tried(&[2], 96.0, 60.0),    // worse than [1] on both: dominated
        tried(&[1, 2], 97.5, 10.0), // bigger but better on both: kept
        tried(&[3, 4], 97.0, 50.0), // same as [1] but bigger: dominated
        tried(&[5, 6], 90.0, 5.0),  // lowest poison: kept
        tried(&[7, 8, 9], 96.0, 10.0),
    ];
    let front: Vec<String> = circuit::pareto_front(&all).iter().map(|t| t.set.to_string()).collect();
    assert_eq!(front, ["none", "conv2:1", "conv2:5,6", "conv2:1,2"]);
}
