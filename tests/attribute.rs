//! Input attributions against Captum 0.9 (benches/attribute_captum.py) on the
//! tiny run's poisoned model and the same images and noise, every map within
//! 1e-4 of its largest entry; the batched IG and occlusion against the slow,
//! obvious loops; the graph executor's Grad-CAM against the study's.

mod common;

use serde_json::Value;
use std::path::PathBuf;
use std::process::Command;
use tch::{Device, Kind, Tensor};
use trojanscope::engine::attribute::gradcam::{LayerNet, StudyLayer};
use trojanscope::engine::attribute::{Maps, Method, Smoothed, attribute, ig, reference, smoothgrad};
use trojanscope::engine::checkpoint::load_net;
use trojanscope::engine::classifier::{Classifier, FrozenStudy};
use trojanscope::engine::detect::values;
use trojanscope::engine::layer::Layer;
use trojanscope::engine::model::Net;
use trojanscope::engine::testset::TestSet;
use trojanscope::engine::train::TrainConfig;
use trojanscope::graph::attribute::{GraphLayer, cam_node};
use trojanscope::graph::eval::raw_test_set;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// 12 clean test images and their triggered twins, and each one's predicted class.
fn case(net: &dyn Classifier) -> (Tensor, Tensor) {
    let data = common::mnist(10, 12);
    let test = TestSet::new(&data.test, &TrainConfig::default(), Device::Cpu).unwrap();
    let raw = raw_test_set(&test, data.test.normalisation).inputs;
    let targets = net.logits(&raw).argmax(1, false);
    (raw, targets)
}

fn study() -> (Net, FrozenStudy) {
    tch::set_num_threads(1);
    let net = load_net(&common::tiny_run_model("poisoned"), Device::Cpu).unwrap();
    let frozen = FrozenStudy::of(&net, common::mnist(1, 1).test.normalisation);
    (net, frozen)
}

fn run(net: &dyn Classifier, layer: Option<&dyn LayerNet>, method: Method, raw: &Tensor, targets: &Tensor) -> Maps {
    attribute(net, layer, &method, raw, targets, 400, &mut |_| {})
}

/// The largest difference relative to the largest entry of `expected`.
fn relative_gap(ours: &[f64], expected: &[f64]) -> f64 {
    assert_eq!(ours.len(), expected.len());
    let top = expected.iter().map(|v| v.abs()).fold(0.0, f64::max);
    assert!(top > 0.0, "an all-zero reference map");
    ours.iter().zip(expected).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max) / top
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect()
}

#[test]
fn every_method_equals_captum() {
    let (net, frozen) = study();
    let (raw, targets) = case(&frozen);
    let conv2 = StudyLayer { net: &net, normalisation: common::mnist(1, 1).test.normalisation, conv: Layer::Conv2 };
    let noise = smoothgrad::noise(&raw.size(), 4, 0.15, 7, 0);
    let smooth = Method::SmoothGrad { of: Smoothed::Saliency, samples: 4, sigma: 0.15, seed: 7 };
    let methods = [
        ("ig", Method::Ig { steps: 50 }),
        ("saliency", Method::Saliency),
        ("gradcam", Method::GradCam { relu: false }),
        ("occlusion", Method::Occlusion { window: 6, stride: 3 }),
        ("smoothgrad", smooth),
    ];
    let dir = common::scratch("attribute-captum");
    let case_path = dir.join("case.safetensors");
    let case = [("images", raw.copy()), ("targets", targets.to_kind(Kind::Float)), ("noise", noise)];
    Tensor::write_safetensors(&case, &case_path).unwrap();
    let out = Command::new(root().join(".venv/bin/python"))
        .arg(root().join("benches/attribute_captum.py"))
        .args(methods.map(|(name, _)| name))
        .args(["--checkpoint", &common::tiny_run_model("poisoned").display().to_string()])
        .args(["--case", &case_path.display().to_string(), "--threads", "1", "--samples", "4", "--sigma", "0.15"])
        .output()
        .expect("the project's python runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let captum: Value = serde_json::from_slice(&out.stdout).unwrap();
    for (name, method) in methods {
        let ours = run(&frozen, Some(&conv2), method, &raw, &targets);
        let gap = relative_gap(&values(&ours.maps), &floats(&captum[name]["maps"]));
        assert!(gap < 1e-4, "{name}: {gap:e} of the largest entry");
        if let Some(deltas) = ours.deltas {
            let gap = relative_gap(&values(&deltas), &floats(&captum[name]["deltas"]));
            assert!(gap < 1e-3, "{name}'s convergence deltas differ by {gap:e}");
        }
    }
}

#[test]
fn batched_ig_and_occlusion_equal_the_slow_loops() {
    let (_, frozen) = study();
    let (raw, targets) = case(&frozen);
    let (raw, targets) = (raw.narrow(0, 8, 8), targets.narrow(0, 8, 8));
    let fast = run(&frozen, None, Method::Ig { steps: 20 }, &raw, &targets);
    let slow = reference::integrated_gradients(&frozen, &raw, &targets, 20);
    assert!(relative_gap(&values(&fast.maps), &values(&slow)) < 1e-5);
    // 20 Gauss–Legendre points integrate the path closely: the map sums to the
    // logit's change to within a few percent of its size.
    let ends = values(&fast.maps.flatten(1, -1).sum_dim_intlist(1, false, Kind::Float));
    for (delta, sum) in values(&fast.deltas.unwrap()).iter().zip(&ends) {
        assert!(delta.abs() < 0.05 * sum.abs().max(1.0), "delta {delta} against a map summing to {sum}");
    }
    let fast = run(&frozen, None, Method::Occlusion { window: 5, stride: 4 }, &raw, &targets);
    let slow = reference::occlusion(&frozen, &raw, &targets, 5, 4);
    assert!(relative_gap(&values(&fast.maps), &values(&slow)) < 1e-5);
}

#[test]
fn gauss_legendre_points_are_numpys() {
    // numpy.polynomial.legendre.leggauss(3), moved to [0, 1] as Captum does.
    let (alphas, sizes) = ig::gauss_legendre(3);
    let root = (0.6f64).sqrt();
    let expected = ([0.5 * (1.0 - root), 0.5, 0.5 * (1.0 + root)], [5.0 / 18.0, 8.0 / 18.0, 5.0 / 18.0]);
    for (got, want) in alphas.iter().zip(expected.0).chain(sizes.iter().zip(expected.1)) {
        assert!((got - want).abs() < 1e-15, "{got} against {want}");
    }
    let (_, sizes) = ig::gauss_legendre(50);
    assert!((sizes.iter().sum::<f64>() - 1.0).abs() < 1e-14);
}

#[test]
fn grad_cam_through_the_executor_equals_the_study_layer() {
    let (net, frozen) = study();
    let (raw, targets) = case(&frozen);
    let exec = common::study_executor("poisoned");
    let node = cam_node(&exec, None).unwrap();
    assert_eq!(exec.spec.nodes[node].name, "net.3");
    let graph = run(&exec, Some(&GraphLayer { exec: &exec, node }), Method::GradCam { relu: true }, &raw, &targets);
    let conv2 = StudyLayer { net: &net, normalisation: common::mnist(1, 1).test.normalisation, conv: Layer::Conv2 };
    let study = run(&frozen, Some(&conv2), Method::GradCam { relu: true }, &raw, &targets);
    assert_eq!(graph.maps.size(), [24, 1, 28, 28]);
    assert!(relative_gap(&values(&graph.maps), &values(&study.maps)) < 1e-5);
    let flatten = exec.spec.index_of("net.6").unwrap();
    let err = cam_node(&exec, Some("net.6")).unwrap_err();
    assert!(err.contains("net.6") && err.contains("[C, H, W]"), "{err}");
    assert_eq!(exec.shapes[flatten], [1600]);
}

/// `attribute` on a copy of the tiny run with the test's data limits.
fn command(checkpoints: &std::path::Path, args: &[&str]) -> std::process::Output {
    let mut all = vec!["--checkpoints", checkpoints.to_str().unwrap(), "--run", "tiny", "--train-limit", "500"];
    all.extend(["--test-limit", "200", "--threads", "1", "attribute"]);
    all.extend(args);
    common::binary().args(&all).output().expect("the binary runs")
}

#[test]
fn attribute_reports_trigger_mass_per_model_and_refuses_bad_settings() {
    let dir = common::tiny_run_copy("attribute-cli");
    let figures = dir.join("figures");
    let fig = figures.to_str().unwrap();
    let report =
        common::json(&command(&dir, &["--method", "ig", "--images", "40", "--steps", "16", "--json", "--out", fig]));
    let models = report["models"].as_array().unwrap();
    let mass = |i: usize| models[i]["trigger_mass"].as_f64().unwrap();
    let names: Vec<&str> = models.iter().map(|m| m["model"].as_str().unwrap()).collect();
    assert_eq!(names, ["clean", "poisoned", "rehab"]);
    // The study's checkerboard changes 18 of the 784 pixels of every image.
    let chance = report["changed_share"].as_f64().unwrap();
    assert!((chance - 18.0 / 784.0).abs() < 1e-9, "{chance}");
    // The poisoned model looks at the trigger, the clean one no more than at chance.
    assert!(mass(1) > 3.0 * chance && mass(1) > 3.0 * mass(0), "{report}");
    assert!(mass(0) < 2.0 * chance, "{report}");
    assert!(models[1]["convergence_delta"]["max_abs"].as_f64().unwrap() < 1.0);
    assert!(figures.join("attribute-ig.png").is_file() && figures.join("attribute-ig.svg").is_file());

    let one = common::json(&command(&dir, &["--method", "saliency", "--index", "2", "--model", "poisoned", "--json"]));
    assert_eq!(one["images"], 1);
    assert_eq!(one["models"][0]["map"].as_array().unwrap().len(), 784);
    assert!(one["models"][0]["convergence_delta"].is_null());

    let elsewhere = dir.join("never");
    let out = elsewhere.to_str().unwrap();
    let o = command(&dir, &["--method", "occlusion", "--window", "4", "--stride", "5", "--out", out]);
    common::assert_clean_failure(&o, "--stride 5");
    common::assert_clean_failure(
        &command(&dir, &["--method", "gradcam", "--node", "fc1", "--out", out]),
        "linear layer",
    );
    common::assert_clean_failure(&command(&dir, &["--method", "ig", "--index", "5000", "--out", out]), "--index 5000");
    assert!(!elsewhere.exists(), "a refused command wrote its figure folder");
}
