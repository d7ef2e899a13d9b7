//! The network as a graph: the study's CNN written as a graph computes what the
//! study's own network computes, and the generic executor's ablations are the
//! study's fast path's, unit for unit.

mod common;

use tch::{Device, Kind, Tensor};
use trojanscope::data::dataset::Dataset;
use trojanscope::engine::ablation::{AblationMode, AblationSet};
use trojanscope::engine::cache::ActivationCache;
use trojanscope::engine::checkpoint;
use trojanscope::engine::layer::Layer;
use trojanscope::engine::testset::TestSet;
use trojanscope::engine::train::TrainConfig;
use trojanscope::graph::eval::{evaluate, raw_test_set};
use trojanscope::graph::exec::Executor;
use trojanscope::graph::preset;
use trojanscope::graph::units::UnitSet;
use trojanscope::graph::weights::Weights;

/// Weights by state-dict name, as safetensors holds them.
type Named = Vec<(String, Tensor)>;

fn test_set(n: usize) -> TestSet {
    tch::set_num_threads(1);
    let data = common::mnist(0, n);
    TestSet::new(&data.test, &TrainConfig::default(), Device::Cpu).unwrap()
}

#[test]
fn the_study_graph_computes_the_study_network() {
    let test = test_set(500);
    let net = checkpoint::load_net(&common::tiny_run_model("poisoned"), Device::Cpu).unwrap();
    let exec = common::study_executor("poisoned");
    let raw = raw_test_set(&test, Dataset::Mnist.normalisation());
    let _guard = tch::no_grad_guard();
    let theirs = net.forward(&test.inputs);
    let ours = exec.logits(&raw.inputs, &[]);
    let diff = (&ours - &theirs).abs().max().double_value(&[]);
    let scale = theirs.abs().max().double_value(&[]);
    // Raw pixels normalised again differ from the study's inputs by rounding only.
    assert!(diff < 1e-4 * scale.max(1.0), "{diff:e} apart (logits up to {scale})");
    assert_eq!(evaluate(&exec, &raw, &[]), test.evaluate(&net));
}

#[test]
fn graph_ablations_are_the_study_fast_paths_in_every_mode() {
    let test = test_set(1000);
    let net = checkpoint::load_net(&common::tiny_run_model("poisoned"), Device::Cpu).unwrap();
    let cache = ActivationCache::build(&net, &test);
    let exec = common::study_executor("poisoned");
    let raw = raw_test_set(&test, Dataset::Mnist.normalisation());
    let clean = raw.clean();
    let block_nodes: Vec<usize> =
        Layer::ALL.iter().map(|&l| exec.spec.index_of(preset::study_block_output(l)).unwrap()).collect();
    let means = exec.mean_outputs(&clean, 250, &block_nodes);
    let cases = [(Layer::Conv1, vec![3, 9]), (Layer::Conv2, vec![36, 12, 50]), (Layer::Fc1, vec![0, 5])];
    for mode in [AblationMode::Zero, AblationMode::Mean, AblationMode::Weight] {
        for (layer, units) in &cases {
            let study = cache.evaluate(&test, &AblationSet::of(*layer, units), mode);
            // Weight mode acts on the layer itself (its output becomes its bias);
            // zero and mean on the block output, as the study's do.
            let node = match mode {
                AblationMode::Weight => format!("net.{}", layer.torch_index()),
                _ => preset::study_block_output(*layer).to_string(),
            };
            let text = format!("{node}:{}", units.iter().map(|u| u.to_string()).collect::<Vec<_>>().join(","));
            let set = UnitSet::parse(&text, &exec).unwrap();
            let at = |n: usize| means[block_nodes.iter().position(|&b| b == n).unwrap()].shallow_clone();
            let interventions = set.interventions(&exec, mode, at).unwrap();
            let ours = evaluate(&exec, &raw, &interventions);
            // Two implementations' float rounding may flip a borderline image.
            for (what, a, b) in [
                ("clean", ours.clean_acc, study.clean_acc),
                ("poison", ours.poison_acc, study.poison_acc),
                ("rehab", ours.rehab_acc, study.rehab_acc),
            ] {
                assert!((a - b).abs() <= 0.1 + 1e-9, "{mode} {text}: {what} {a} vs the study's {b}");
            }
        }
    }
}

#[test]
fn a_checkpoint_resumes_to_the_same_logits_with_and_without_interventions() {
    let test = test_set(64);
    let exec = common::study_executor("poisoned");
    let raw = raw_test_set(&test, Dataset::Mnist.normalisation());
    let _guard = tch::no_grad_guard();
    let x = raw.inputs.narrow(0, 0, 64);
    let at = exec.spec.index_of("net.3").unwrap();
    let checkpoint = exec.checkpoint(&x, at);
    assert_eq!(checkpoint.output().size(), vec![64, 64, 11, 11]);
    let set = UnitSet::parse("net.3:1,7 net.7:2", &exec).unwrap();
    for interventions in [Vec::new(), set.interventions(&exec, AblationMode::Zero, |_| unreachable!()).unwrap()] {
        let full = exec.logits(&x, &interventions);
        let resumed = exec.resume(&checkpoint, &x, &interventions);
        assert_eq!(full, resumed);
    }
    // The intervention changed something.
    let zeroed = set.interventions(&exec, AblationMode::Zero, |_| unreachable!()).unwrap();
    assert!(exec.logits(&x, &zeroed).ne_tensor(&exec.logits(&x, &[])).any().int64_value(&[]) == 1);
}

#[test]
fn units_name_nodes_and_bad_units_say_what_exists() {
    let exec = common::study_executor("clean");
    let cases = [
        ("net.3:64", "net.3 has units 0..63, not 64"),
        ("conv9:1", "the graph has no node 'conv9'"),
        ("net.3", "'net.3' is not NODE:UNIT"),
        ("net.3:x", "'x' in 'net.3:x' is not a unit number"),
        ("", "no units given"),
    ];
    for (text, needle) in cases {
        let err = UnitSet::parse(text, &exec).unwrap_err();
        assert!(err.contains(needle), "{text}: expected '{needle}' in: {err}");
    }
    let set = UnitSet::parse("net.8:3;net.0:1,0", &exec).unwrap();
    assert_eq!(set.to_string(), "net.0:0,1 net.8:3");
    let err = set.interventions(&exec, AblationMode::Weight, |_| unreachable!()).err().unwrap();
    assert!(err.contains("net.8 is a relu node"), "{err}");
}

#[test]
fn weights_that_do_not_fit_the_graph_are_refused_naming_the_key() {
    let spec = preset::study(Dataset::Mnist);
    let good: Vec<(String, Tensor)> = Tensor::read_safetensors(common::tiny_run_model("clean")).unwrap();
    let with = |edit: &dyn Fn(&mut Named)| {
        let mut tensors: Vec<(String, Tensor)> = good.iter().map(|(k, t)| (k.clone(), t.copy())).collect();
        edit(&mut tensors);
        Weights::from_tensors(tensors, &spec).err().unwrap()
    };
    let missing = with(&|t| t.retain(|(k, _)| k != "net.3.bias"));
    assert_eq!(missing, "missing weights the graph needs: net.3.bias");
    let extra = with(&|t| t.push(("net.11.weight".into(), Tensor::zeros([2], (Kind::Float, Device::Cpu)))));
    assert_eq!(extra, "weights no node of the graph uses: net.11.weight");
    let shape = with(&|t| {
        t.iter_mut().find(|(k, _)| k == "net.7.weight").unwrap().1 =
            Tensor::zeros([16, 1599], (Kind::Float, Device::Cpu))
    });
    assert_eq!(shape, "net.7.weight is [16, 1599]; the graph needs [16, 1600]");
    let nan = with(&|t| {
        let _ = t.iter_mut().find(|(k, _)| k == "net.9.bias").unwrap().1.get(3).fill_(f64::NAN);
    });
    assert_eq!(nan, "net.9.bias holds 1 NaN or infinite values");
    assert!(Weights::from_tensors(good, &spec).is_ok());
}

#[test]
fn a_graph_sweep_is_the_study_sweep_unit_for_unit() {
    let test = test_set(400);
    let net = checkpoint::load_net(&common::tiny_run_model("poisoned"), Device::Cpu).unwrap();
    let cache = ActivationCache::build(&net, &test);
    let exec = common::study_executor("poisoned");
    let raw = raw_test_set(&test, Dataset::Mnist.normalisation());
    let study = trojanscope::engine::sweep::sweep(&cache, &test, Layer::Conv2, AblationMode::Zero, |_, _| {
        std::ops::ControlFlow::Continue(())
    });
    let no_means = |_: usize| -> Tensor { unreachable!("zero mode reads no means") };
    let ours = trojanscope::graph::sweep::sweep(&exec, &raw, "net.5", AblationMode::Zero, &no_means, |_, _| {
        std::ops::ControlFlow::Continue(())
    })
    .unwrap();
    assert_eq!(ours.len(), 64);
    for (a, b) in ours.iter().zip(&study) {
        assert_eq!(a.unit as usize, b.unit);
        assert!((a.metrics.poison_acc - b.metrics.poison_acc).abs() <= 0.25 + 1e-9, "unit {}", a.unit);
        assert!((a.metrics.clean_acc - b.metrics.clean_acc).abs() <= 0.25 + 1e-9, "unit {}", a.unit);
    }
    // Stopped after 10 of 64 units in the first chunk: no unit saw every chunk.
    let mut calls = 0;
    let stopped = trojanscope::graph::sweep::sweep(&exec, &raw, "net.5", AblationMode::Zero, &no_means, |_, _| {
        calls += 1;
        if calls == 10 { std::ops::ControlFlow::Break(()) } else { std::ops::ControlFlow::Continue(()) }
    })
    .unwrap();
    assert!(stopped.is_empty(), "{} rows", stopped.len());
}

/// A sweep computes each unit as a change to the unablated pass
/// (exec/delta.rs); it must give the logits of the full pass with that unit
/// replaced, at every kind of node of a pre-activation ResNet.
#[test]
fn a_unit_changed_from_the_unablated_pass_gives_the_full_passs_logits() {
    tch::set_num_threads(1);
    let spec = preset::by_name("preactresnet18", Dataset::Mnist, Some(4)).unwrap();
    let weights = trojanscope::graph::train::init(&spec, 3, Device::Cpu).unwrap();
    // Batch norms with statistics of their own, so that folding them matters.
    for (key, tensor) in weights.iter() {
        let _guard = tch::no_grad_guard();
        if key.ends_with("running_mean") {
            let _ = tensor.shallow_clone().uniform_(-0.5, 0.5);
        } else if key.ends_with("running_var") {
            let _ = tensor.shallow_clone().uniform_(0.5, 2.0);
        }
    }
    let exec = Executor::new(spec, weights, Device::Cpu).unwrap();
    let _guard = tch::no_grad_guard();
    let x = Tensor::rand([16, 1, 28, 28], (Kind::Float, Device::Cpu));
    let base = exec.base_pass(&x);
    // A convolution (the one a bench sweeps), a batch norm, a ReLU, a residual
    // add, a shortcut convolution, the pooling and the first convolution.
    for site in ["layer3.0.conv2", "layer2.1.bn2", "relu_3", "add_1", "layer2.0.shortcut.0", "avgpool", "conv1"] {
        let node = exec.spec.index_of(site).unwrap_or_else(|| panic!("no node {site}"));
        let shape = &exec.shapes[node][1..];
        for (unit, value) in [(0, 0.0), (1, 0.7)] {
            let values = Tensor::full(shape, value, (Kind::Float, Device::Cpu));
            let ours = exec.logits_with_unit(&base, node, unit, &values);
            let set = UnitSet::parse(&format!("{site}:{unit}"), &exec).unwrap();
            let mut full = set.interventions(&exec, AblationMode::Zero, |_| unreachable!()).unwrap();
            full[0].replace = trojanscope::graph::exec::Replacement::Values(values.unsqueeze(0));
            let theirs = exec.logits(&x, &full);
            let scale = theirs.abs().max().double_value(&[]).max(1.0);
            let diff = (&ours - &theirs).abs().max().double_value(&[]);
            assert!(diff < 1e-5 * scale, "{site}:{unit} = {value}: {diff:e} apart (scale {scale})");
            assert!(ours.ne_tensor(&exec.logits(&x, &[])).any().int64_value(&[]) == 1, "{site}:{unit} changed nothing");
        }
    }
}

/// An evaluation and a sweep split between two threads (`exec::lanes`, chunks
/// dealt round-robin) give every image and unit what one thread gives.
#[test]
fn passes_split_between_threads_equal_one_thread() {
    let test = test_set(300);
    let exec = common::study_executor("poisoned");
    let raw = raw_test_set(&test, Dataset::Mnist.normalisation());
    let no_means = |_: usize| -> Tensor { unreachable!("zero mode reads no means") };
    let on = |threads| {
        tch::set_num_threads(threads);
        let lanes = trojanscope::graph::exec::lanes::count(Device::Cpu);
        let predictions = exec.predictions(&raw.inputs, &[]);
        let sweep = trojanscope::graph::sweep::sweep(&exec, &raw, "net.5", AblationMode::Zero, &no_means, |_, _| {
            std::ops::ControlFlow::Continue(())
        })
        .unwrap();
        (lanes, predictions, sweep)
    };
    let (one, two) = (on(1), on(2));
    assert_eq!((one.0, two.0), (1, 2), "the second pass is split between two threads");
    assert_eq!(one.1.size(), [600]);
    assert!(one.1.equal(&two.1), "every image's prediction the same");
    assert_eq!(one.2.len(), 64);
    for (a, b) in one.2.iter().zip(&two.2) {
        assert_eq!(
            (a.unit, a.metrics.clean_acc, a.metrics.poison_acc),
            (b.unit, b.metrics.clean_acc, b.metrics.poison_acc)
        );
    }
    // Some unit's ablation changes the numbers (the sweep is not vacuous).
    assert!(one.2.iter().any(|r| r.metrics.poison_acc != one.2[0].metrics.poison_acc));
}
