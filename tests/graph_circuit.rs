//! patch and circuit on a graph, each against independent references: on the
//! study's CNN written as a graph, the study's own patching and circuit search;
//! on an imported pre-activation ResNet, a full forward per unit with the node's
//! output overwritten (the slow path) and PyTorch's forward hooks
//! (benches/graph_patch.py).

mod common;

use serde_json::Value;
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::process::{Command, Output};
use tch::Device;
use trojanscope::data::dataset::Dataset;
use trojanscope::data::trigger::TriggerConfig;
use trojanscope::engine::ablation::AblationMode;
use trojanscope::engine::cache::ActivationCache;
use trojanscope::engine::checkpoint;
use trojanscope::engine::circuit::{self, FastEvaluator, SearchConfig};
use trojanscope::engine::layer::Layer;
use trojanscope::engine::patch::{Direction, Patch, PatchEffect, Patcher};
use trojanscope::engine::testset::TestSet;
use trojanscope::engine::train::TrainConfig;
use trojanscope::graph::circuit::{GraphEvaluator, GraphSite};
use trojanscope::graph::eval::raw_test_set;
use trojanscope::graph::patch::NodePatch;
use trojanscope::graph::preset;

const LIMIT: usize = 200;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn test_set(n: usize) -> TestSet {
    tch::set_num_threads(1);
    TestSet::new(&common::mnist(0, n).test, &TrainConfig::default(), Device::Cpu).unwrap()
}

/// Equal but for float rounding: at most one patched image predicted otherwise.
fn assert_same_effect(ours: &PatchEffect, theirs: &PatchEffect, images: f64, what: &str) {
    let one_image = 100.0 / images + 1e-9;
    assert!((ours.target_rate - theirs.target_rate).abs() <= one_image, "{what}: {ours:?} vs {theirs:?}");
    assert!((ours.metrics.poison_acc - theirs.metrics.poison_acc).abs() <= one_image, "{what}");
    assert!((ours.metrics.clean_acc - theirs.metrics.clean_acc).abs() <= one_image, "{what}");
    assert!((ours.logit_diff - theirs.logit_diff).abs() <= 1e-3 * (1.0 + theirs.logit_diff.abs()), "{what}");
}

#[test]
fn graph_patching_of_the_study_graph_is_the_study_patch_unit_for_unit() {
    let test = test_set(300);
    let (net, clean_net) = (
        checkpoint::load_net(&common::tiny_run_model("poisoned"), Device::Cpu).unwrap(),
        checkpoint::load_net(&common::tiny_run_model("clean"), Device::Cpu).unwrap(),
    );
    let (cache, clean_cache) = (ActivationCache::build(&net, &test), ActivationCache::build(&clean_net, &test));
    let (exec, clean_exec) = (common::study_executor("poisoned"), common::study_executor("clean"));
    let raw = raw_test_set(&test, Dataset::Mnist.normalisation());
    for (layer, direction) in
        [(Layer::Conv2, Direction::Denoise), (Layer::Conv1, Direction::Noise), (Layer::Fc1, Direction::Model)]
    {
        let donor = (direction == Direction::Model).then_some(&clean_cache);
        let patch = Patch { layer, direction, to_unit: None };
        let study = Patcher::new(&cache, donor, &test, patch).unwrap();
        let study_rows = study.run(|_, _| ControlFlow::Continue(()));
        let graph_donor = (direction == Direction::Model).then_some(&clean_exec);
        let ours = NodePatch::new(&exec, graph_donor, &raw, direction).unwrap();
        let node = exec.spec.index_of(preset::study_block_output(layer)).unwrap();
        let rows = ours.patch(node, |_, _| ControlFlow::Continue(()));
        assert_eq!(rows.len(), layer.units());
        let images = if direction == Direction::Model { 600.0 } else { 300.0 };
        assert_same_effect(&ours.baseline(), &study.baseline(), images, "unpatched");
        for (a, b) in rows.iter().zip(&study_rows) {
            assert_eq!(a.unit as usize, b.unit);
            assert_same_effect(&a.effect, &b.effect, images, &format!("{layer}:{} {direction}", b.unit));
        }
        // Units differ: the patch is not a no-op.
        let diffs: Vec<f64> = rows.iter().map(|r| r.effect.logit_diff).collect();
        let spread = diffs.iter().fold(f64::MIN, |a, &b| a.max(b)) - diffs.iter().fold(f64::MAX, |a, &b| a.min(b));
        assert!(spread > 0.05, "{layer} {direction}: every unit's patch gives {diffs:?}");
    }
    // A donor for the twins, or none for model ↔ model, is refused.
    assert!(NodePatch::new(&exec, Some(&clean_exec), &raw, Direction::Noise).is_err());
    assert!(NodePatch::new(&exec, None, &raw, Direction::Model).is_err());
}

#[test]
fn the_circuit_search_on_the_study_graph_finds_the_study_circuit() {
    let test = test_set(LIMIT);
    let net = checkpoint::load_net(&common::tiny_run_model("poisoned"), Device::Cpu).unwrap();
    let cache = ActivationCache::build(&net, &test);
    let exec = common::study_executor("poisoned");
    let raw = raw_test_set(&test, Dataset::Mnist.normalisation());
    let layers = [Layer::Conv2, Layer::Fc1];
    let site = |l: Layer| GraphSite::of(&exec, exec.spec.index_of(preset::study_block_output(l)).unwrap());
    let sites: Vec<GraphSite> = layers.iter().map(|&l| site(l)).collect();
    let mode = AblationMode::Zero;
    let clean_acc = test.evaluate(&net).clean_acc;
    let study = circuit::search(
        &mut FastEvaluator { cache: &cache, test: &test, mode },
        &small_search(layers.to_vec(), Layer::Fc1, clean_acc),
        |_| ControlFlow::Continue(()),
    );
    let ours = circuit::search(
        &mut GraphEvaluator::new(&exec, &raw, mode, &sites).unwrap(),
        &small_search(sites.clone(), site(Layer::Fc1), clean_acc),
        |_| ControlFlow::Continue(()),
    );
    // The same sets, named by the study's layers.
    let named = |text: String| text.replace("net.5", "conv2").replace("net.8", "fc1");
    let greedy = |r: Vec<String>| r.into_iter().map(named).collect::<Vec<_>>();
    assert_eq!(
        greedy(ours.greedy.iter().map(|t| t.set.to_string()).collect()),
        greedy(study.greedy.iter().map(|t| t.set.to_string()).collect())
    );
    assert!(!study.greedy.is_empty());
    let circuit_of = |t: Option<String>| t.map(named);
    assert_eq!(
        circuit_of(ours.circuit.as_ref().map(|t| t.set.to_string())),
        circuit_of(study.circuit.as_ref().map(|t| t.set.to_string()))
    );
    let kept = |k: &[(String, Vec<usize>)]| k.to_vec();
    assert_eq!(
        kept(&ours.keep.iter().map(|k| (named(k.layer.to_string()), k.kept.clone())).collect::<Vec<_>>()),
        kept(&study.keep.iter().map(|k| (k.layer.to_string(), k.kept.clone())).collect::<Vec<_>>())
    );
    assert_eq!(ours.best_pairs.len(), 1);
    assert_eq!(named(ours.best_pairs[0].set.to_string()), study.best_pairs[0].set.to_string());
    for (a, b) in ours.greedy.iter().zip(&study.greedy) {
        assert!((a.metrics.poison_acc - b.metrics.poison_acc).abs() <= 100.0 / LIMIT as f64 + 1e-9);
    }
}

/// Up to 4 units over `sites` (each with its keep set), the pairs of `paired`.
fn small_search<S: Clone>(sites: Vec<S>, paired: S, clean_acc: f64) -> SearchConfig<S> {
    let mut config = SearchConfig::over(sites.clone(), 10.0, clean_acc, AblationMode::Zero);
    config.criteria.max_size = 4;
    config.pair_layers = vec![paired];
    config.keep_layers = sites;
    config
}

fn fixture(name: &str) -> String {
    root().join("tests/fixtures/graph").join(name).display().to_string()
}

fn trojanscope(args: &[&str]) -> Output {
    common::binary().args(args).output().expect("the binary runs")
}

/// Exit code 1, one `error:` line containing `needle`.
fn assert_clean_failure(o: &Output, needle: &str) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "stderr: {err}");
    assert_eq!(err.lines().filter(|l| l.starts_with("error: ")).count(), 1, "{err}");
    assert!(err.contains(needle), "expected '{needle}' in: {err}");
}

#[test]
fn patch_and_circuit_on_an_imported_resnet_agree_with_pytorch_hooks_and_the_slow_path() {
    let checkpoints = common::scratch("graph-circuit");
    let dir = checkpoints.display().to_string();
    let limit = LIMIT.to_string();
    common::import_preact(&checkpoints, "tiny", "poisoned", &fixture("preact.pt"), &limit, &[]);
    let on_run = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["--checkpoints", &dir, "--run", "tiny", "--test-limit", &limit, "--threads", "1"]);
        trojanscope(&all)
    };
    // Both twins' directions: the fast path, the slow path (--reference) and
    // PyTorch's forward hooks.
    let trigger = TriggerConfig::for_dataset(Dataset::Mnist);
    let norm = Dataset::Mnist.normalisation();
    for direction in ["denoise", "noise"] {
        let ours =
            common::json(&on_run(&["patch", "layer2.0.conv2", "--direction", direction, "--reference", "--json"]));
        assert_eq!(ours["rows"].as_array().unwrap().len(), 16, "{ours}");
        assert!(ours["reference_gap"].as_f64().unwrap() < 1e-3, "{}", ours["reference_gap"]);
        let out = Command::new(root().join(".venv/bin/python"))
            .arg(root().join("benches/graph_patch.py"))
            .args(["--source", &fixture("preact.py:PreActResNetTiny"), "--weights", &fixture("preact.pt")])
            .args(["--norm", &norm.argument(), "--test-limit", &limit])
            .arg("--data-dir")
            .arg(common::data_dir())
            .args(["--module", "layer2.0.conv2", "--direction", direction, "--std", &norm.std()[0].to_string()])
            .args([
                "--trigger",
                &format!("{},{},{},{},{}", trigger.size, trigger.row, trigger.col, trigger.amplitude, trigger.target),
            ])
            .output()
            .unwrap();
        let theirs = common::json(&out);
        let close = |a: &Value, b: &Value, what: &str| {
            let (a, b) = (a["logit_diff"].as_f64().unwrap(), b["logit_diff"].as_f64().unwrap());
            assert!((a - b).abs() <= 1e-4 * (1.0 + b.abs()), "{direction} {what}: logit diff {a} vs PyTorch's {b}");
        };
        close(&ours["baseline"], &theirs["baseline"], "unpatched");
        for (a, b) in ours["rows"].as_array().unwrap().iter().zip(theirs["units"].as_array().unwrap()) {
            assert_eq!(a["unit"], b["unit"]);
            close(a, b, &format!("unit {}", b["unit"]));
            assert_eq!(a["target_rate"], b["target_rate"], "{direction} unit {}", b["unit"]);
        }
    }
    // No node: every convolution's and linear layer's output but the logits, the
    // strongest patch first.
    let all = common::json(&on_run(&["patch", "--direction", "noise", "--json"]));
    let rows = all["rows"].as_array().unwrap();
    let rates: Vec<f64> = rows.iter().map(|r| r["target_rate"].as_f64().unwrap()).collect();
    assert!(rates.windows(2).all(|w| w[0] >= w[1]), "{rates:?}");
    assert!(rows.iter().all(|r| r["node"] != "linear") && rows.iter().any(|r| r["node"] == "conv1"));
    assert_clean_failure(&on_run(&["patch", "layer2.0.conv2", "--to-unit", "3"]), "--to-unit 3");
    assert_clean_failure(&on_run(&["patch", "layer9.conv"]), "no node 'layer9.conv'");

    // The circuit search within one node, every reported set re-evaluated by a
    // full forward with the units overwritten.
    let found = common::json(&on_run(&[
        "circuit",
        "--nodes",
        "layer2.0.conv2",
        "--mode",
        "zero",
        "--max-size",
        "2",
        "--poison-target",
        "3.5",
        "--json",
    ]));
    assert_eq!(found["reference_gap"].as_f64(), Some(0.0), "{found}");
    assert_eq!(found["best_pairs"].as_array().unwrap().len(), 1);
    assert_eq!(found["keep"][0]["layer"], "layer2.0.conv2");
    // The circuit meets the criteria, and `ablate` (a full forward) agrees.
    let circuit = &found["circuit"];
    let units: Vec<String> =
        circuit["set"]["units"]["layer2.0.conv2"].as_array().unwrap().iter().map(|u| u.to_string()).collect();
    assert!(!units.is_empty() && circuit["metrics"]["poison_acc"].as_f64().unwrap() <= 3.5, "{circuit}");
    let set = format!("layer2.0.conv2:{}", units.join(","));
    let ablated = common::json(&on_run(&["ablate", &set, "--mode", "zero", "--json"]));
    assert_eq!(ablated["ablated"], circuit["metrics"]);
    let refused =
        |nodes: &str, mode: &str| on_run(&["circuit", "--nodes", nodes, "--mode", mode, "--poison-target", "5"]);
    assert_clean_failure(&refused("layer9", "zero"), "no node 'layer9'");
    assert_clean_failure(&refused("layer2.0.bn1", "weight"), "weight mode");
}
