//! Bring your own CNN, end to end through the binary: three PyTorch models
//! written the way BackdoorBench, torchvision and TrojanZoo write theirs
//! (tests/fixtures/graph, made by make_fixtures.py) are imported from their `.py`
//! and `.pt`, and `eval` and `ablate` agree with plain PyTorch (a forward hook on
//! the module: benches/graph_reference.py). Bad input is one clear error and
//! writes nothing.

mod common;

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Test images for the ablation comparisons (the import itself reads all 10,000).
const TEST_LIMIT: &str = "2000";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn fixture(name: &str) -> String {
    root().join("tests/fixtures/graph").join(name).display().to_string()
}

fn python() -> PathBuf {
    root().join(".venv/bin/python")
}

fn trojanscope(args: &[&str]) -> Output {
    common::binary().args(args).output().expect("the binary runs")
}

struct Fixture {
    name: &'static str,
    source: &'static str,
    weights: &'static str,
    norm: &'static str,
    /// Three nodes each for zero and mean ablation (module paths).
    ablations: [(&'static str, &'static str); 3],
}

const FIXTURES: [Fixture; 3] = [
    Fixture {
        name: "preact",
        source: "preact.py:PreActResNetTiny",
        weights: "preact.pt",
        norm: "0.1307/0.3081",
        // A convolution, a batch norm, and a whole block (its output: the residual add).
        ablations: [("layer2.0.conv2", "1,2"), ("layer1.0.bn2", "3"), ("layer3.0", "5,6")],
    },
    Fixture {
        name: "vgg_bn",
        source: "vgg_bn.py:vgg_tiny_bn",
        weights: "vgg_bn.pt",
        norm: "0.1307/0.3081",
        ablations: [("features.1", "0,4"), ("features.9", "2"), ("classifier.1", "7,9")],
    },
    Fixture {
        name: "tz_mnist",
        source: "tz_mnist.py:TzMnist",
        weights: "tz_mnist.pt",
        norm: "none",
        ablations: [("features.conv1", "1"), ("features.relu2", "3,4"), ("classifier", "8")],
    },
];

fn import(checkpoints: &Path, run: &str, source: &str, weights: &str, extra: &[&str]) -> Output {
    let checkpoints = checkpoints.display().to_string();
    let mut args = vec!["import", source, weights, "--model", "poisoned", "--checkpoints", &checkpoints, "--run", run];
    args.extend(extra);
    trojanscope(&args)
}

/// PyTorch's clean accuracy with each ablation, by `benches/graph_reference.py`.
fn pytorch_reference(f: &Fixture, mode: &str) -> Value {
    let mut command = Command::new(python());
    command.arg(root().join("benches/graph_reference.py")).args([
        "--source",
        &fixture(f.source),
        "--weights",
        &fixture(f.weights),
        "--norm",
        f.norm,
        "--data-dir",
        &common::data_dir().display().to_string(),
        "--test-limit",
        TEST_LIMIT,
    ]);
    for (module, units) in f.ablations {
        command.args(["--ablate", &format!("{module}:{units}:{mode}")]);
    }
    let out = command.output().expect("the project's python runs");
    common::json(&out)
}

#[test]
fn imported_models_compute_pytorchs_logits_accuracy_and_ablations() {
    let expected: Value = serde_json::from_str(&std::fs::read_to_string(fixture("expected.json")).unwrap()).unwrap();
    let checkpoints = common::scratch("graph-import");
    let dir = checkpoints.display().to_string();
    for f in &FIXTURES {
        let norm = if f.norm == "none" { "none" } else { "dataset" };
        let imported = common::json(&import(
            &checkpoints,
            f.name,
            &fixture(f.source),
            &fixture(f.weights),
            &["--input-norm", norm, "--json"],
        ));
        let record = &imported["record"];
        assert!(record["probe_max_diff"].as_f64().unwrap() <= 1e-5, "{}: {record}", f.name);
        assert_eq!(record["probe_images"], 16);
        // The full test set: PyTorch's accuracy (expected.json) to 0.01 points.
        let theirs = expected[f.name]["clean_acc"].as_f64().unwrap();
        assert!((imported["metrics"]["clean_acc"].as_f64().unwrap() - theirs).abs() < 0.01, "{}: {imported}", f.name);
        let eval = common::json(&trojanscope(&["eval", "--json", "--checkpoints", &dir, "--run", f.name]));
        assert_eq!(eval[0]["model"], "poisoned");
        assert!((eval[0]["metrics"]["clean_acc"].as_f64().unwrap() - theirs).abs() < 0.01, "{}: {eval}", f.name);
        for mode in ["zero", "mean"] {
            let reference = pytorch_reference(f, mode);
            for (i, (module, units)) in f.ablations.iter().enumerate() {
                let set = format!("{module}:{units}");
                let ours = common::json(&trojanscope(&[
                    "ablate",
                    &set,
                    "--mode",
                    mode,
                    "--json",
                    "--checkpoints",
                    &dir,
                    "--run",
                    f.name,
                    "--test-limit",
                    TEST_LIMIT,
                ]));
                let (a, b) = (&ours["ablated"]["clean_acc"], &reference["ablations"][i]["clean_acc"]);
                assert!(
                    (a.as_f64().unwrap() - b.as_f64().unwrap()).abs() < 0.01,
                    "{} {set} {mode}: ours {a}, PyTorch's {b}",
                    f.name
                );
                assert!(
                    (ours["baseline"]["clean_acc"].as_f64().unwrap() - reference["clean_acc"].as_f64().unwrap()).abs()
                        < 0.01
                );
            }
        }
    }
    // A sweep's row is that unit's ablation.
    let on_preact = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["--mode", "zero", "--json", "--checkpoints", &dir, "--run", "preact", "--test-limit", "500"]);
        common::json(&trojanscope(&all))
    };
    let sweep = on_preact(&["sweep", "layer2.0.conv2"]);
    assert_eq!(sweep.as_array().unwrap().len(), 16);
    let one = on_preact(&["ablate", "layer2.0.conv2:5"]);
    assert_eq!(sweep[5]["metrics"], one["ablated"]);
    // Weight mode on a node without weights per unit.
    common::assert_clean_failure(
        &trojanscope(&["ablate", "layer1.0.bn2:1", "--mode", "weight", "--checkpoints", &dir, "--run", "preact"]),
        "weight mode does not apply",
    );
}

#[test]
fn bad_imports_are_one_clear_error_and_write_nothing() {
    let checkpoints = common::scratch("graph-import-bad");
    let work = common::scratch("graph-import-files");
    // A NaN weight, a pickle that needs more than weights, a three-channel net.
    let script = format!(
        r#"
import torch, sys
sys.path.insert(0, {fixtures:?})
import argparse
sd = torch.load({tz:?}, weights_only=True)["state_dict"]
torch.save({{"model": sd, "args": argparse.Namespace(lr=0.01)}}, {work:?} + "/pickled.pt")
sd["classifier.weight"][0, 0] = float("nan")
torch.save(sd, {work:?} + "/nan.pt")
open({work:?} + "/rgb.py", "w").write('''
import torch.nn as nn
class Rgb(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4 * 26 * 26, 10)
    def forward(self, x):
        return self.fc(self.conv(x).flatten(1))
''')
"#,
        fixtures = fixture(""),
        tz = fixture("tz_mnist.pt"),
        work = work.display().to_string()
    );
    let made = Command::new(python()).args(["-c", &script]).output().unwrap();
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let rgb = Command::new(python())
        .args(["-c", &format!("import torch, sys; sys.path.insert(0, {0:?}); import rgb; torch.save(rgb.Rgb().state_dict(), {0:?} + '/rgb.pt')", work.display().to_string())])
        .output()
        .unwrap();
    assert!(rgb.status.success(), "{}", String::from_utf8_lossy(&rgb.stderr));
    let w = |name: &str| work.join(name).display().to_string();
    let tz = fixture("tz_mnist.py:TzMnist");
    let none = ["--input-norm", "none"];
    let cases: Vec<(Output, &str)> = vec![
        (
            import(&checkpoints, "r", &fixture("bad_ops.py:BadOps"), &fixture("tz_mnist.pt"), &none),
            "node 'sigmoid': op 'torch.sigmoid' is not supported",
        ),
        (
            import(&checkpoints, "r", &fixture("preact.py:PreActResNetTiny"), &fixture("extra_key.pt"), &[]),
            "linear.extra",
        ),
        (import(&checkpoints, "r", &tz, &w("nan.pt"), &none), "classifier.weight"),
        (import(&checkpoints, "r", &tz, &w("pickled.pt"), &none), "--trust-pickle"),
        (import(&checkpoints, "r", &format!("{}:Rgb", w("rgb.py")), &w("rgb.pt"), &[]), "1x28x28"),
        (import(&checkpoints, "r", &tz, &w("missing.pt"), &none), "missing.pt: no such weights file"),
        (
            import(&checkpoints, "r", "nowhere.py:Net", &fixture("tz_mnist.pt"), &none),
            "nowhere.py: no such Python file",
        ),
        (import(&checkpoints, "r", &fixture("tz_mnist.py"), &fixture("tz_mnist.pt"), &none), "is not FILE.py:NAME"),
        (
            import(&checkpoints, "r", &tz, &fixture("tz_mnist.pt"), &["--input-norm", "0.5/0"]),
            "is not dataset, none or MEAN/STD",
        ),
        (import(&checkpoints, "r", &fixture("tz_mnist.py:Nothing"), &fixture("tz_mnist.pt"), &none), "Nothing"),
    ];
    for (out, needle) in &cases {
        common::assert_clean_failure(out, needle);
    }
    assert!(!checkpoints.join("r").exists(), "a failed import wrote into the run");
    // With --trust-pickle the same checkpoint imports, with a warning.
    let trusted = import(&checkpoints, "r", &tz, &w("pickled.pt"), &["--input-norm", "none", "--trust-pickle"]);
    let err = String::from_utf8_lossy(&trusted.stderr);
    assert!(trusted.status.success() && err.contains("warning: --trust-pickle"), "{err}");
    // A second graph into a run that holds one, and an import into a study run.
    let other = import(&checkpoints, "r", &fixture("vgg_bn.py:vgg_tiny_bn"), &fixture("vgg_bn.pt"), &[]);
    common::assert_clean_failure(&other, "holds models of another graph");
    let fashion = ["--input-norm", "none", "--dataset", "fashion-mnist"];
    common::assert_clean_failure(
        &import(&checkpoints, "r", &tz, &fixture("tz_mnist.pt"), &fashion),
        "holds models for mnist",
    );
    let study = checkpoints.join("study");
    std::fs::create_dir_all(&study).unwrap();
    std::fs::write(study.join("clean.json"), "{}").unwrap();
    common::assert_clean_failure(
        &import(&checkpoints, "study", &tz, &fixture("tz_mnist.pt"), &none),
        "holds the study's clean model",
    );
}
