//! Neural Cleanse and unlearning on a graph: the study's CNN written as a graph
//! recovers what the study recovers, the batched loss's gradient on a residual
//! graph with batch norms is plain per-image autograd (and finite differences),
//! and `recover` then `unlearn` run on a graph run through the binary, where
//! unlearning gives what the study's unlearning gives from the same model and
//! trigger.

mod common;

use serde_json::Value;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::{Mutex, MutexGuard, PoisonError};
use tch::{Device, Kind, Tensor};
use trojanscope::data::dataset::Dataset;
use trojanscope::data::trigger::TriggerConfig;
use trojanscope::engine::checkpoint;
use trojanscope::engine::classifier::{Classifier, FrozenStudy};
use trojanscope::engine::cleanse::{BatchedCleanse, CleanseConfig, RecoveryEnd, RecoveryReport, recover};
use trojanscope::engine::inputopt::{squash, unsquash};
use trojanscope::graph::exec::Executor;
use trojanscope::graph::preset;
use trojanscope::graph::weights::Weights;

/// libtorch's one generator: a test that draws holds it, or another test's draws
/// interleave with its own (docs/testing.md).
static GENERATOR: Mutex<()> = Mutex::new(());

/// The generator held, and one libtorch thread (cargo runs tests side by side).
fn turn() -> MutexGuard<'static, ()> {
    let turn = GENERATOR.lock().unwrap_or_else(PoisonError::into_inner);
    tch::set_num_threads(1);
    turn
}

fn tiny_run() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-run")
}

fn recovered(net: &dyn Classifier, cfg: &CleanseConfig) -> RecoveryReport {
    let data = common::mnist(cfg.images, cfg.test_images);
    let end = recover(net, "poisoned", &data, Some(&TriggerConfig::default().footprint()), cfg, &mut |_| {
        ControlFlow::Continue(())
    });
    match end.unwrap() {
        RecoveryEnd::Done(report) => *report,
        RecoveryEnd::Cancelled => panic!("not stopped"),
    }
}

#[test]
fn the_study_graph_recovers_the_study_networks_masks() {
    let _turn = turn();
    let path = tiny_run().join("poisoned.safetensors");
    let net = checkpoint::load_net(&path, Device::Cpu).unwrap();
    let spec = preset::study(Dataset::Mnist);
    let exec = Executor::new(spec.clone(), Weights::load(&path, &spec, Device::Cpu).unwrap(), Device::Cpu).unwrap();
    assert_eq!((exec.classes(), exec.input_shape()), (10, [1, 28, 28]));
    let cfg = CleanseConfig { images: 96, epochs: 2, test_images: 200, labels: vec![1, 8], ..CleanseConfig::default() };
    let theirs = recovered(&FrozenStudy::of(&net, Dataset::Mnist.normalisation()), &cfg);
    let ours = recovered(&exec, &cfg);
    for (a, b) in ours.labels.iter().zip(&theirs.labels) {
        assert_eq!(a.label, b.label);
        let most = |x: &[f32], y: &[f32]| x.iter().zip(y).map(|(p, q)| (p - q).abs()).fold(0.0f32, f32::max);
        let (dm, dp) = (most(&a.mask, &b.mask), most(&a.pattern, &b.pattern));
        assert!((a.l1 - b.l1).abs() < 1e-5 * b.l1, "label {}: L1 {} vs {}", a.label, a.l1, b.l1);
        assert!(dm < 1e-5 && dp < 1e-5, "label {}: masks {dm:e} apart, patterns {dp:e}", a.label);
        assert_eq!((a.success, a.train_success), (b.success, b.train_success), "label {}", a.label);
    }
}

/// A residual graph with batch norms whose running statistics are not 0 and 1.
fn preact_graph() -> Executor {
    let spec = preset::by_name("preactresnet18", Dataset::Mnist, Some(4)).unwrap();
    let weights = trojanscope::graph::train::init(&spec, 5, Device::Cpu).unwrap();
    let _guard = tch::no_grad_guard();
    for (key, t) in weights.iter() {
        if key.ends_with("running_var") {
            let _ = t.shallow_clone().uniform_(0.5, 2.0);
        } else if key.ends_with("running_mean") {
            let _ = t.shallow_clone().uniform_(-0.3, 0.3);
        }
    }
    Executor::new(spec, weights, Device::Cpu).unwrap()
}

#[test]
fn the_cleanse_gradient_on_a_graph_is_per_image_autograd_and_finite_differences() {
    let _turn = turn();
    let exec = preact_graph();
    tch::manual_seed(2);
    let labels = [2u8, 5, 8];
    let costs = [0.0f32, 1e-3, 1e-2];
    let mask0 = Tensor::rand([3, 1, 28, 28], (Kind::Float, Device::Cpu)) * 0.9 + 0.05;
    let pattern0 = Tensor::rand([3, 1, 28, 28], (Kind::Float, Device::Cpu)) * 0.9 + 0.05;
    let raw = Tensor::rand([4, 1, 28, 28], (Kind::Float, Device::Cpu));
    let batched = BatchedCleanse::new(&exec, &labels, (&mask0, &pattern0), 0.1);
    let (mask_grad, pattern_grad) = batched.gradients(&raw, &Tensor::from_slice(&costs));
    // The slow path: one label, one image, one forward at a time, by autograd.
    let loss = |l: usize, mask_theta: &Tensor, pattern_theta: &Tensor| {
        let (m, p) = (squash(mask_theta), squash(pattern_theta));
        let mut ce = Tensor::zeros([], (Kind::Float, Device::Cpu));
        for b in 0..4 {
            let x: Tensor = m.ones_like().subtract(&m) * raw.get(b) + &m * &p;
            let target = Tensor::from_slice(&[labels[l] as i64]);
            ce += exec.logits(&x.unsqueeze(0), &[]).cross_entropy_for_logits(&target);
        }
        ce / 4.0 + m.sum(Kind::Float) * costs[l] as f64
    };
    for l in 0..3 {
        let mask_theta = unsquash(&mask0.get(l as i64)).set_requires_grad(true);
        let pattern_theta = unsquash(&pattern0.get(l as i64)).set_requires_grad(true);
        let grads =
            Tensor::run_backward(&[loss(l, &mask_theta, &pattern_theta)], &[&mask_theta, &pattern_theta], false, false);
        for (slow, fast, what) in
            [(&grads[0], mask_grad.get(l as i64), "mask"), (&grads[1], pattern_grad.get(l as i64), "pattern")]
        {
            let scale = slow.abs().max().double_value(&[]);
            let apart = (slow - &fast).abs().max().double_value(&[]);
            assert!(scale > 1e-4, "label {l}: the {what} gradient is {scale:e}");
            assert!(apart < 1e-4 * scale, "label {l}: {what} gradients {apart:e} apart (largest {scale:e})");
        }
        // Central differences on the mask's most sensitive pixel.
        let _guard = tch::no_grad_guard();
        let i = grads[0].abs().flatten(0, -1).argmax(0, false).int64_value(&[]);
        let h = 1e-2;
        let nudged = |by: f64| {
            let theta = mask_theta.detach().copy();
            let _ = theta.view([-1]).get(i).g_add_scalar_(by);
            loss(l, &theta, &pattern_theta.detach()).double_value(&[])
        };
        let numeric = (nudged(h) - nudged(-h)) / (2.0 * h);
        let analytic = mask_grad.get(l as i64).view([-1]).double_value(&[i]);
        assert!((numeric - analytic).abs() < 0.03 * analytic.abs(), "label {l} pixel {i}: {numeric:e} vs {analytic:e}");
    }
}

#[test]
fn one_cleanse_step_on_a_graph_is_pytorchs() {
    let _turn = turn();
    let exec = preact_graph();
    tch::manual_seed(4);
    let work = common::scratch("graph-cleanse-step");
    let weights = work.join("weights.safetensors");
    exec.weights.save(&weights).unwrap();
    let mask0 = Tensor::rand([3, 1, 28, 28], (Kind::Float, Device::Cpu)) * 0.9 + 0.05;
    let pattern0 = Tensor::rand([3, 1, 28, 28], (Kind::Float, Device::Cpu)) * 0.9 + 0.05;
    let raw = Tensor::rand([8, 1, 28, 28], (Kind::Float, Device::Cpu));
    let (labels, costs) = ([2u8, 5, 8], Tensor::from_slice(&[0.0f32, 1e-3, 1e-2]));
    let given = [
        ("mask", mask0.shallow_clone()),
        ("pattern", pattern0.shallow_clone()),
        ("images", raw.shallow_clone()),
        ("labels", Tensor::from_slice(&[2.0f32, 5.0, 8.0])),
        ("costs", costs.shallow_clone()),
    ];
    Tensor::write_safetensors(&given, work.join("in.safetensors")).unwrap();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let out = std::process::Command::new(root.join(".venv/bin/python"))
        .arg(root.join("benches/graph_cleanse.py"))
        .args(["--preactresnet18", "4", "--norm", "0.1307/0.3081", "--threads", "1", "--weights"])
        .arg(&weights)
        .arg("--step")
        .args([work.join("in.safetensors"), work.join("out.safetensors")])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let theirs: std::collections::HashMap<String, Tensor> =
        Tensor::read_safetensors(work.join("out.safetensors")).unwrap().into_iter().collect();
    let mut ours = BatchedCleanse::new(&exec, &labels, (&mask0, &pattern0), 0.1);
    let _ = ours.step(&raw, &costs);
    let (mask, pattern) = ours.mask_and_pattern();
    // Adam's first step is ±lr wherever the gradient is not ~0: every value moved.
    assert!((&mask - &mask0).abs().min().double_value(&[]) > 1e-3);
    for (a, b, what) in [(&mask, &theirs["mask"], "mask"), (&pattern, &theirs["pattern"], "pattern")] {
        let apart = (a - b).abs().max().double_value(&[]);
        assert!(apart < 1e-5, "{what}s {apart:e} apart after one step");
    }
}

fn trojanscope(checkpoints: &Path, run: &str, args: &[&str]) -> Output {
    let mut command = common::binary();
    let dir = checkpoints.display().to_string();
    command.args(["--checkpoints", &dir, "--run", run, "--threads", "1", "--test-limit", "500"]);
    command.args(args).output().expect("the binary runs")
}

/// Exit code 1 with one error line containing `needle`.
fn fails_with(o: &Output, needle: &str) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert_eq!(err.lines().filter(|l| l.starts_with("error: ")).count(), 1, "{err}");
    assert!(err.contains(needle), "expected '{needle}' in: {err}");
}

#[test]
fn recover_and_unlearn_run_on_a_graph_run_and_unlearn_as_the_study_does() {
    let checkpoints = common::scratch("graph-cleanse");
    let poisoned = tiny_run().join("poisoned.safetensors").display().to_string();
    let on_graph = |args: &[&str]| trojanscope(&checkpoints, "graph", args);
    common::json(&on_graph(&["import", "--preset", "study", &poisoned, "--model", "poisoned", "--json"]));
    let small = ["--labels", "1,8", "--images", "96", "--epochs", "2", "--test-images", "200", "--json"];
    let labels = common::json(&on_graph(&[&["recover"][..], &small].concat()));
    let run = checkpoints.join("graph");
    let saved: Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("recovery-poisoned.json")).unwrap()).unwrap();
    assert_eq!(saved["report"]["labels"], labels);
    assert_eq!(labels.as_array().unwrap().len(), 2);
    assert!(run.join("recovery-poisoned/mask-8.png").is_file());
    fails_with(&on_graph(&["recover", "--labels", "1,12", "--json"]), "unknown label 12");
    assert_eq!(
        serde_json::from_str::<Value>(&std::fs::read_to_string(run.join("recovery-poisoned.json")).unwrap()).unwrap(),
        saved
    );
    fails_with(&on_graph(&["unlearn", "--model", "unlearned"]), "the unlearned model is what unlearning writes");
    let lock =
        trojanscope::engine::run::RunLock::acquire(&trojanscope::engine::run::RunDir::new(&checkpoints, "graph"))
            .unwrap();
    fails_with(&on_graph(&["recover", "--json"]), "is being written by another process");
    drop(lock);

    let unlearn = ["unlearn", "--label", "8", "--images", "640", "--json"];
    let ours = common::json(&on_graph(&unlearn));
    assert_eq!(ours["label"], 8);
    let eval = common::json(&on_graph(&["eval", "--json"]));
    let models: Vec<&str> = eval.as_array().unwrap().iter().map(|r| r["model"].as_str().unwrap()).collect();
    assert_eq!(models, ["poisoned", "unlearned"]);
    assert_eq!(eval[0]["metrics"], ours["before"]);
    assert_eq!(eval[1]["metrics"], ours["after"]);
    assert!(run.join("unlearned.trained.json").is_file() && run.join("unlearned.unlearn.json").is_file());

    // The study's unlearning of the same model and recovered trigger (its run is
    // the fixture, the recovery keyed by its own file's checksum).
    let study = checkpoints.join("study");
    std::fs::create_dir_all(&study).unwrap();
    for name in ["poisoned.safetensors", "poisoned.json"] {
        std::fs::copy(tiny_run().join(name), study.join(name)).unwrap();
    }
    let mut theirs_recovery = saved.clone();
    let sha = trojanscope::engine::run::files::file_sha256(&study.join("poisoned.safetensors")).unwrap();
    theirs_recovery["checkpoint_sha256"] = Value::from(sha);
    std::fs::write(study.join("recovery-poisoned.json"), theirs_recovery.to_string()).unwrap();
    let theirs = common::json(&trojanscope(&checkpoints, "study", &unlearn));
    assert_eq!(theirs["before"], ours["before"]);
    // Unlearning removed the backdoor (the tiny model's poison accuracy: 74.8 %).
    assert!(ours["after"]["poison_acc"].as_f64().unwrap() < 20.0, "{ours}");
    for key in ["clean_acc", "poison_acc", "rehab_acc"] {
        let (a, b) = (ours["after"][key].as_f64().unwrap(), theirs["after"][key].as_f64().unwrap());
        // One test image of 500 is 0.2 %.
        assert!((a - b).abs() <= 0.2, "{key}: graph {a}, study {b}");
    }
}
