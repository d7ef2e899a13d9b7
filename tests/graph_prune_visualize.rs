//! `prune` and `visualize` on a graph, each against an independent reference:
//! on the study's CNN written as a graph they give the study's own curves and
//! pictures; on an imported pre-activation ResNet a pruning step is `ablate` of
//! the same units, the Fine-Pruning curve is plain PyTorch's
//! (benches/graph_prune.py), and the visualised unit's activation rises.

mod common;

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use tch::{Device, Tensor};
use trojanscope::data::dataset::Dataset;
use trojanscope::data::trigger::TriggerConfig;
use trojanscope::engine::ablation::AblationMode;
use trojanscope::engine::cache::ActivationCache;
use trojanscope::engine::checkpoint;
use trojanscope::engine::featvis::{self, VisConfig};
use trojanscope::engine::layer::Layer;
use trojanscope::engine::prune::{self, Ranking};
use trojanscope::engine::testset::TestSet;
use trojanscope::engine::train::TrainConfig;
use trojanscope::graph::eval::raw_test_set;
use trojanscope::graph::exec::Executor;
use trojanscope::graph::spec::GraphSpec;
use trojanscope::graph::{preset, prune as graph_prune, visualize as graph_visualize};

const LIMIT: &str = "400";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn fixture(name: &str) -> String {
    root().join("tests/fixtures/graph").join(name).display().to_string()
}

fn trojanscope(args: &[&str]) -> Output {
    common::binary().args(args).output().expect("the binary runs")
}

/// The study's conv1 and conv2 (their convolution nodes, `net.0` and `net.3`):
/// each ranking's order and every point of its curve are the study's, in zero
/// and weight mode (the modes whose ablation at the convolution is the study's
/// ablation of its block): the data rankings on conv1, the weight rankings and
/// the random one on conv2.
#[test]
fn prune_on_the_study_graph_is_the_study_prune_curve() {
    tch::set_num_threads(1);
    let data = common::mnist(0, 200);
    let test = TestSet::new(&data.test, &TrainConfig::default(), Device::Cpu).unwrap();
    let raw = raw_test_set(&test, Dataset::Mnist.normalisation());
    let (net, clean) = (
        checkpoint::load_net(&common::tiny_run_model("poisoned"), Device::Cpu).unwrap(),
        checkpoint::load_net(&common::tiny_run_model("clean"), Device::Cpu).unwrap(),
    );
    let cache = ActivationCache::build(&net, &test);
    let (exec, clean_exec) = (common::study_executor("poisoned"), common::study_executor("clean"));
    let study_inputs = prune::RankingInputs { net: &net, clean: &clean, test: &test, seed: 5 };
    let graph_inputs = graph_prune::RankingInputs { exec: &exec, clean: &clean_exec, raw: &raw, seed: 5 };
    let no_means = |_: usize| -> Tensor { unreachable!("weight and zero mode read no means") };
    let cases = [
        ("conv1", "net.0", AblationMode::Zero, &[Ranking::FinePruning, Ranking::Tac][..]),
        ("conv2", "net.3", AblationMode::Weight, &[Ranking::Clp, Ranking::WeightChange, Ranking::Random]),
    ];
    for (layer, node, mode, rankings) in cases {
        let layer: Layer = layer.parse().unwrap();
        let at = exec.spec.index_of(node).unwrap();
        let mut orders = Vec::new();
        for &ranking in rankings {
            let ours = graph_prune::ranking_order(ranking, at, &graph_inputs).unwrap();
            assert_eq!(ours, prune::ranking_order(ranking, layer, &study_inputs), "{layer} {ranking}");
            orders.push((ranking, ours));
        }
        let mut steps = 0;
        let curves = graph_prune::curves(&exec, &raw, node, orders, mode, &no_means, |done, total| {
            steps += 1;
            assert!(done <= total);
            std::ops::ControlFlow::Continue(())
        })
        .unwrap();
        assert!(steps > 0);
        for ours in &curves {
            let study = prune::curve(&cache, &test, layer, ours.ranking, ours.order.clone(), mode);
            assert_eq!(ours.points.len(), layer.units() + 1);
            for (a, b) in ours.points.iter().zip(&study.points) {
                assert_eq!(a.unit, b.unit);
                // Two implementations' float rounding may flip a borderline image (1/200).
                for (what, x, y) in [
                    ("clean", a.metrics.clean_acc, b.metrics.clean_acc),
                    ("poison", a.metrics.poison_acc, b.metrics.poison_acc),
                    ("rehab", a.metrics.rehab_acc, b.metrics.rehab_acc),
                ] {
                    assert!((x - y).abs() <= 0.5 + 1e-9, "{layer} {} k={}: {what} {x} vs {y}", ours.ranking, a.pruned);
                }
            }
            // The curve moves: the comparison is not between constants.
            let last = &ours.points[layer.units()].metrics;
            assert!(last.clean_acc < 50.0, "{layer} {}: {last:?}", ours.ranking);
        }
    }
}

/// Fine-Pruning and TAC read a convolution after the ReLU it feeds alone,
/// directly (the study) or through a batch norm (a pre-activation block's first
/// convolution); a convolution read by a residual add is read itself.
#[test]
fn rankings_read_a_unit_after_the_relu_it_feeds() {
    let spec = preset::by_name("preactresnet18", Dataset::Mnist, Some(2)).unwrap();
    let weights = trojanscope::graph::train::init(&spec, 1, Device::Cpu).unwrap();
    let resnet = Executor::new(spec, weights, Device::Cpu).unwrap();
    let study = common::study_executor("clean");
    for (exec, node, read) in [
        (&study, "net.0", "net.1"),
        (&study, "net.7", "net.8"),
        (&study, "net.9", "net.9"),
        (&resnet, "layer2.0.conv1", "relu_5"),
        (&resnet, "layer2.0.conv2", "layer2.0.conv2"),
        (&resnet, "layer2.0.bn1", "relu_4"),
    ] {
        let at = graph_prune::activation_node(exec, exec.spec.index_of(node).unwrap());
        assert_eq!(exec.spec.nodes[at].name, read, "{node}");
    }
}

/// The study's `visualize conv2 5` and the graph's `visualize net.3 5` (the
/// convolution's channel mean, before its ReLU) from one seed: the same image.
#[test]
fn visualize_on_the_study_graph_is_the_study_visualisation() {
    tch::set_num_threads(1);
    let net = checkpoint::load_net(&common::tiny_run_model("poisoned"), Device::Cpu).unwrap();
    let exec = common::study_executor("poisoned");
    let cfg = VisConfig { steps: 40, seed: 3, ..VisConfig::default() };
    let input = (28, Dataset::Mnist.normalisation());
    let study = featvis::visualize(&net, (Layer::Conv2, 5), input, &cfg).unwrap();
    let ours = graph_visualize::visualize(&exec, "net.3", 5, &cfg).unwrap();
    assert_eq!((ours.channels, ours.height, ours.width), (1, 28, 28));
    assert_eq!(ours.image.len(), study.image.len());
    let apart = ours.image.iter().zip(&study.image).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    assert!(apart < 1e-3, "images {apart} apart");
    for (a, b) in [(ours.start_activation, study.start_activation), (ours.activation, study.activation)] {
        assert!((a - b).abs() <= 1e-3 * (1.0 + b.abs()), "{a} vs the study's {b}");
    }
    assert!(study.activation > study.start_activation + 0.5, "{study:?}");
}

/// A three-channel graph (an input the datasets do not have, so seeded
/// weights): the optimised image has three channels and raises its unit.
#[test]
fn a_three_channel_graph_is_visualised_in_colour() {
    tch::set_num_threads(1);
    let spec = GraphSpec::parse(
        r#"{"format": "trojanscope-graph/1", "input": [3, 12, 10], "nodes": [
            {"name": "conv", "op": "conv2d", "inputs": ["input"], "in_channels": 3, "out_channels": 4,
             "kernel": [3, 3], "stride": [1, 1], "padding": [1, 1], "dilation": [1, 1], "groups": 1, "bias": true},
            {"name": "relu", "op": "relu", "inputs": ["conv"]},
            {"name": "flatten", "op": "flatten", "inputs": ["relu"]},
            {"name": "fc", "op": "linear", "inputs": ["flatten"], "in_features": 480, "out_features": 10, "bias": true}
        ], "output": "fc"}"#,
    )
    .unwrap();
    let weights = trojanscope::graph::train::init(&spec, 7, Device::Cpu).unwrap();
    let exec = Executor::new(spec, weights, Device::Cpu).unwrap();
    let cfg = VisConfig { steps: 30, ..VisConfig::default() };
    let v = graph_visualize::visualize(&exec, "conv", 2, &cfg).unwrap();
    assert_eq!((v.channels, v.height, v.width, v.image.len()), (3, 12, 10, 360));
    // Seeded small weights: the unit starts near 0 (−0.022) and ends above 0.05.
    assert!(v.activation > v.start_activation + 0.05, "{} → {}", v.start_activation, v.activation);
    // The channels differ: each is optimised, not one grey copied three times.
    assert!(v.image[..120] != v.image[120..240]);
    let err = graph_visualize::visualize(&exec, "conv", 4, &cfg).unwrap_err();
    assert_eq!(err, "conv has units 0..3, not 4");
    let picture = trojanscope::picture::input_picture(&v.image, [3, 12, 10], 2).unwrap();
    assert_eq!(picture.dimensions(), (20, 24));
}

fn values(json: &Value, key: &str) -> Vec<f64> {
    json.as_array().unwrap().iter().map(|p| p["metrics"][key].as_f64().unwrap()).collect()
}

/// The imported ResNet as the run's clean, poisoned and rehab model.
fn imported_run(checkpoints: &Path) {
    common::import_preact(
        checkpoints,
        "preact",
        "poisoned",
        &fixture("preact.pt"),
        LIMIT,
        &["--input-norm", "0.1307/0.3081"],
    );
    let run = checkpoints.join("preact");
    for (model, ext) in ["clean", "rehab"].iter().flat_map(|m| ["safetensors", "import.json"].map(|e| (m, e))) {
        std::fs::copy(run.join(format!("poisoned.{ext}")), run.join(format!("{model}.{ext}"))).unwrap();
    }
}

#[test]
fn prune_and_visualize_on_an_imported_resnet_agree_with_slow_references() {
    let checkpoints = common::scratch("graph-prune");
    imported_run(&checkpoints);
    let dir = checkpoints.display().to_string();
    let run = checkpoints.join("preact");
    let on_run = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["--json", "--checkpoints", &dir, "--run", "preact", "--test-limit", LIMIT, "--threads", "1"]);
        trojanscope(&all)
    };

    // Fine-Pruning of layer2.0.conv2 (16 channels, read by the residual add).
    for mode in ["zero", "mean"] {
        let curves = common::json(&on_run(&["prune", "layer2.0.conv2", "--ranking", "fine-pruning", "--mode", mode]));
        let curve = &curves[0];
        assert_eq!(curve["layer"], "layer2.0.conv2");
        let order: Vec<u64> = curve["order"].as_array().unwrap().iter().map(|u| u.as_u64().unwrap()).collect();
        assert_eq!(order.len(), 16);
        let points = &curve["points"];
        // The slow obvious path: each step is `ablate` of the same units.
        let steps: &[usize] = if mode == "zero" { &[1, 5, 16] } else { &[5] };
        for &k in steps {
            let set = order[..k].iter().map(u64::to_string).collect::<Vec<_>>().join(",");
            let ablated = common::json(&on_run(&["ablate", &format!("layer2.0.conv2:{set}"), "--mode", mode]));
            assert_eq!(points[k]["metrics"], ablated["ablated"], "{mode} k={k}");
            assert_eq!(points[0]["metrics"], ablated["baseline"]);
        }
        // Plain PyTorch's curve: its own order, every point.
        let trigger = TriggerConfig::for_dataset(Dataset::Mnist);
        let out = Command::new(root().join(".venv/bin/python"))
            .arg(root().join("benches/graph_prune.py"))
            .args(["--source", &fixture("preact.py:PreActResNetTiny"), "--weights", &fixture("preact.pt")])
            .args(["--norm", "0.1307/0.3081", "--data-dir", &common::data_dir().display().to_string()])
            .args(["--test-limit", LIMIT, "--module", "layer2.0.conv2", "--mode", mode])
            .args([
                "--trigger",
                &format!("{},{},{},{},{}", trigger.size, trigger.row, trigger.col, trigger.amplitude, trigger.target),
                "--std",
                &Dataset::Mnist.normalisation().std()[0].to_string(),
            ])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let pytorch: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(curve["order"], pytorch["order"], "{mode}");
        let theirs = pytorch["points"].as_array().unwrap();
        for (key, ours) in [("clean_acc", values(points, "clean_acc")), ("poison_acc", values(points, "poison_acc"))] {
            let theirs: Vec<f64> = theirs.iter().map(|p| p[key].as_f64().unwrap()).collect();
            for (k, (a, b)) in ours.iter().zip(&theirs).enumerate() {
                // One borderline image of 400 may round the other way.
                assert!((a - b).abs() <= 0.25 + 1e-9, "{mode} {key} k={k}: ours {a}, PyTorch {b}");
            }
        }
        let clean = values(points, "clean_acc");
        // Pruning the whole node costs clean accuracy: the curve moves.
        assert!(clean[0] > 90.0 && clean[16] < clean[0] - 30.0, "{clean:?}");
    }
    assert!(run.join("prune/layer2.0.conv2-fine-pruning.png").exists());

    // The default node is the last convolution; rankings that read weights do
    // not apply to a batch norm, and asking for one says so.
    let curves = common::json(&on_run(&["prune", "--ranking", "random", "--mode", "zero"]));
    assert_eq!(curves[0]["layer"], "layer4.0.conv2");
    assert_eq!(curves[0]["points"].as_array().unwrap().len(), 65);
    let all = common::json(&on_run(&["prune", "layer1.0.bn2", "--mode", "zero"]));
    let names: Vec<&str> = all.as_array().unwrap().iter().map(|c| c["ranking"].as_str().unwrap()).collect();
    assert_eq!(names, ["fine-pruning", "tac", "random"]);
    let o = on_run(&["prune", "layer1.0.bn2", "--ranking", "clp"]);
    common::assert_clean_failure(&o, "the clp ranking reads each unit's weights; layer1.0.bn2 is a batch_norm2d node");
    common::assert_clean_failure(&on_run(&["prune", "layer9"]), "the graph has no node 'layer9'");

    // visualize: the unit's activation rises, for each model; the pictures are saved.
    let vis = common::json(&on_run(&["visualize", "layer2.0.conv2", "3", "--steps", "48"]));
    let vis = vis.as_array().unwrap();
    assert_eq!(vis.len(), 3, "clean, poisoned and rehab");
    for v in vis {
        let (start, end) = (v["start_activation"].as_f64().unwrap(), v["activation"].as_f64().unwrap());
        // From −0.50 to −0.24 in 48 steps.
        assert!(end > start + 0.2, "{v}");
        assert_eq!(v["image"].as_array().unwrap().len(), 784);
    }
    for name in ["layer2.0.conv2-3-poisoned.png", "layer2.0.conv2-3.png"] {
        assert!(run.join("visualize").join(name).exists(), "{name}");
    }
    let before = std::fs::read_dir(run.join("visualize")).unwrap().count();
    common::assert_clean_failure(
        &on_run(&["visualize", "layer2.0.conv2", "16"]),
        "layer2.0.conv2 has units 0..15, not 16",
    );
    assert_eq!(std::fs::read_dir(run.join("visualize")).unwrap().count(), before);
}
