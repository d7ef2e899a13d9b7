//! Presets and training any graph: a preset equals what the importer traces from
//! the same PyTorch code, a tiny PreActResNet trains end to end through the binary
//! with a backdoor, and bad input is one clear error that writes nothing.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;
use tch::{Device, Tensor};
use trojanscope::data::dataset::Dataset;
use trojanscope::engine::lab::ModelKind;
use trojanscope::engine::run::RunDir;
use trojanscope::graph::preset;
use trojanscope::graph::run as graph_run;
use trojanscope::graph::spec::GraphSpec;
use trojanscope::graph::weights::expected_shapes;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn trojanscope(checkpoints: &Path, run: &str, args: &[&str]) -> Output {
    let mut command = common::binary();
    command.args(["--checkpoints", &checkpoints.display().to_string(), "--run", run]);
    command.args(args).output().expect("the binary runs")
}

#[test]
fn the_preactresnet18_preset_is_the_graph_the_importer_traces() {
    let work = common::scratch("preset-import");
    let python = root().join(".venv/bin/python");
    let fixtures = root().join("tests/fixtures/graph");
    let weights = work.join("preact18.pt");
    let save = format!(
        "import sys, torch; sys.path.insert(0, {:?}); from preact18 import preact18_w8; \
         torch.save(preact18_w8().state_dict(), {:?})",
        fixtures.display().to_string(),
        weights.display().to_string()
    );
    let made = std::process::Command::new(&python).args(["-c", &save]).output().unwrap();
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let out = work.join("out");
    let traced = std::process::Command::new(&python)
        .arg(root().join("scripts/import_graph.py"))
        .args(["--source", &fixtures.join("preact18.py:preact18_w8").display().to_string()])
        .args(["--weights", &weights.display().to_string(), "--out", &out.display().to_string()])
        .args(["--input-shape", "1,28,28", "--norm", "0.1307/0.3081"])
        .output()
        .unwrap();
    assert!(traced.status.success(), "{}", String::from_utf8_lossy(&traced.stderr));
    let imported = GraphSpec::load(&out.join("graph.json")).unwrap();
    let ours = preset::by_name("preactresnet18", Dataset::Mnist, Some(8)).unwrap();
    assert_eq!(ours.nodes.len(), imported.nodes.len());
    for (a, b) in ours.nodes.iter().zip(&imported.nodes) {
        assert_eq!(a, b, "node {} differs from the importer's {}", a.name, b.name);
    }
    assert_eq!(ours, imported);

    // `import --preset` reads only the weights (a .pt through the importer) and
    // computes what the traced import computes.
    let checkpoints = work.join("runs");
    let w = weights.display().to_string();
    let a = common::json(&trojanscope(
        &checkpoints,
        "preset",
        &[
            "import",
            "--preset",
            "preactresnet18",
            "--width",
            "8",
            &w,
            "--model",
            "clean",
            "--json",
            "--test-limit",
            "500",
        ],
    ));
    let source = fixtures.join("preact18.py:preact18_w8").display().to_string();
    let b = common::json(&trojanscope(
        &checkpoints,
        "traced",
        &["import", &source, &w, "--model", "clean", "--json", "--test-limit", "500"],
    ));
    assert_eq!(a["metrics"], b["metrics"]);
    assert_eq!(a["record"]["source"], "preset preactresnet18 width 8");
    // The safetensors it wrote imports with no Python at all.
    let written = checkpoints.join("preset/clean.safetensors").display().to_string();
    let c = common::json(&trojanscope(
        &checkpoints,
        "again",
        &[
            "import",
            "--preset",
            "preactresnet18",
            "--width",
            "8",
            &written,
            "--model",
            "clean",
            "--json",
            "--test-limit",
            "500",
        ],
    ));
    assert_eq!(a["metrics"], c["metrics"]);
    // A preset of another width names the missing and unused keys, writing nothing.
    let wrong = trojanscope(
        &checkpoints,
        "wrong",
        &["import", "--preset", "preactresnet18", "--width", "4", &w, "--model", "clean"],
    );
    let err = String::from_utf8_lossy(&wrong.stderr);
    assert_eq!(wrong.status.code(), Some(1), "{err}");
    assert!(err.contains("conv1.weight is [8, 1, 3, 3]; the graph needs [4, 1, 3, 3]"), "{err}");
    assert!(!checkpoints.join("wrong").exists());
}

#[test]
fn presets_have_pytorchs_key_names_and_shapes() {
    let preact = expected_shapes(&preset::by_name("preactresnet18", Dataset::FashionMnist, None).unwrap());
    assert_eq!(preact["conv1.weight"], [64, 1, 3, 3]);
    assert_eq!(preact["layer2.0.shortcut.0.weight"], [128, 64, 1, 1]);
    assert_eq!(preact["layer4.1.bn2.running_var"], [512]);
    assert_eq!(preact["linear.weight"], [10, 512]);
    assert!(!preact.contains_key("layer1.0.shortcut.0.weight"));
    assert_eq!(preact.len(), 1 + 16 * 6 - 16 + 3 + 2, "convs, batch norms, shortcuts and the linear");
    // TrojanZoo's MNIST net at its own width: fc1 takes 9216 features.
    let tz = expected_shapes(&preset::by_name("tz-mnist", Dataset::Mnist, None).unwrap());
    assert_eq!(tz["features.conv1.weight"], [32, 1, 3, 3]);
    assert_eq!(tz["features.conv2.weight"], [64, 32, 3, 3]);
    assert_eq!(tz["classifier.fc1.weight"], [128, 9216]);
    assert_eq!(tz["classifier.fc2.bias"], [10]);
    // torchvision's VGG pools five times: 28×28 images are too small, said clearly.
    let vgg = preset::by_name("vgg11-bn", Dataset::Mnist, Some(8)).unwrap_err();
    assert!(vgg.contains("does not fit"), "{vgg}");
    let nosuch = preset::by_name("nosuch", Dataset::Mnist, None).unwrap_err();
    assert!(nosuch.contains("preactresnet18") && nosuch.contains("tz-mnist"), "{nosuch}");
    let study = preset::by_name("study", Dataset::Mnist, None).unwrap();
    assert_eq!(study, preset::study(Dataset::Mnist));
}

#[test]
fn a_tiny_preactresnet_trains_with_a_backdoor_and_every_analysis_runs_on_it() {
    let checkpoints = common::scratch("graph-train");
    let limits = ["--train-limit", "3000", "--test-limit", "500"];
    let mut args = vec!["train", "--preset", "preactresnet18", "--width", "4", "--eval-every", "1000"];
    args.extend(limits);
    let trained = trojanscope(&checkpoints, "tiny", &args);
    assert!(trained.status.success(), "{}", String::from_utf8_lossy(&trained.stderr));
    let run = RunDir::new(&checkpoints, "tiny");
    for kind in ModelKind::STUDY {
        assert!(run.has(kind) && graph_run::trained_path(&run, kind).is_file(), "{kind}");
    }
    assert_eq!(graph_run::dataset_of(&run), Some(Dataset::Mnist));

    let mut eval = vec!["eval", "--json"];
    eval.extend(limits);
    let metrics = common::json(&trojanscope(&checkpoints, "tiny", &eval));
    let poison = |i: usize| metrics[i]["metrics"]["poison_acc"].as_f64().unwrap();
    assert_eq!(metrics[1]["model"], "poisoned");
    assert!(poison(1) > poison(0) + 30.0, "poisoned {} vs clean {}", poison(1), poison(0));
    let mut ablate = vec!["ablate", "layer3.0.conv2:1,2", "--mode", "zero", "--json"];
    ablate.extend(limits);
    let ablated = common::json(&trojanscope(&checkpoints, "tiny", &ablate));
    assert_eq!(ablated["baseline"]["poison_acc"].as_f64().unwrap(), poison(1));

    // doctor reads the graph, measures each model and agrees with training's record.
    let mut doctor = vec!["doctor", "--json"];
    doctor.extend(limits);
    let report = common::json(&trojanscope(&checkpoints, "tiny", &doctor));
    for model in report["models"].as_array().unwrap() {
        let verdict = model["verdict"].as_str().unwrap();
        assert!(verdict.starts_with("ok: the recorded numbers agree"), "{model}");
    }

    // The report's circuit within the swept node and its patching (on all the
    // test images here, 100 of them): the circuit's full-test-set numbers are
    // `ablate`'s, the strongest patched unit `patch --sorted`'s.
    let limits = ["--train-limit", "3000", "--test-limit", "100"];
    let mut run_report = vec!["run", "--json"];
    run_report.extend(limits);
    let report = common::json(&trojanscope(&checkpoints, "tiny", &run_report));
    let node = report["sweep_node"].as_str().unwrap().to_string();
    assert_eq!(report["search_images"], 100);
    let mut patch = vec!["patch", &node, "--sorted", "--json"];
    patch.extend(limits);
    let patched = common::json(&trojanscope(&checkpoints, "tiny", &patch));
    let strongest = &report["top_patched"][0];
    assert_eq!(strongest["unit"], patched["rows"][0]["unit"]);
    assert_eq!(strongest["target_rate"], patched["rows"][0]["target_rate"]);
    let circuit = &report["circuit"]["circuit"];
    if let Some(units) = circuit["set"][&node].as_array() {
        let units: Vec<String> = units.iter().map(|u| u.to_string()).collect();
        let set = format!("{node}:{}", units.join(","));
        let mut ablate = vec!["ablate", &set, "--mode", "zero", "--json"];
        ablate.extend(limits);
        let ablated = common::json(&trojanscope(&checkpoints, "tiny", &ablate));
        assert_eq!(report["circuit_on_all"], ablated["ablated"]);
        assert_eq!(report["circuit_on_all"], circuit["metrics"], "the search ran on all 100 images");
    } else {
        assert!(report["circuit_on_all"].is_null(), "{report}");
    }

    // Batch norms learned running statistics, and evaluation uses them.
    let clean = graph_run::load(&run, ModelKind::Clean, Device::Cpu).unwrap();
    let mean = clean.weights.get("layer1.0.bn1.running_mean");
    let var = clean.weights.get("layer1.0.bn1.running_var");
    assert!(mean.abs().max().double_value(&[]) > 1e-3, "running means stayed 0");
    assert!((var - 1.0).abs().max().double_value(&[]) > 1e-3, "running variances stayed 1");
    let x = Tensor::rand([8, 1, 28, 28], (tch::Kind::Float, Device::Cpu));
    let _guard = tch::no_grad_guard();
    let before = clean.logits(&x, &[]);
    let _ = clean.weights.get("layer1.0.bn1.running_mean").shallow_clone().fill_(0.0);
    let after = clean.logits(&x, &[]);
    assert!((before - after).abs().max().double_value(&[]) > 1e-4, "eval ignores the running statistics");
}

#[test]
fn bad_graph_training_is_one_clear_error_and_writes_nothing() {
    let checkpoints = common::scratch("graph-train-bad");
    let unsupported = checkpoints.join("gelu.json");
    std::fs::write(
        &unsupported,
        r#"{"format": "trojanscope-graph/1", "input": [1, 28, 28],
            "nodes": [{"name": "act", "op": "gelu", "inputs": ["input"]}], "output": "act"}"#,
    )
    .unwrap();
    let arch = unsupported.display().to_string();
    let cases: [(&[&str], &str); 4] = [
        (&["train", "--preset", "nosuch"], "the presets are"),
        (&["run", "--arch", &arch], "gelu"),
        (&["train", "--arch", &arch, "--preset", "tz-mnist"], "cannot be used with"),
        (&["run", "--preset", "vgg19-bn", "--width", "8"], "does not fit"),
    ];
    for (i, (args, needle)) in cases.iter().enumerate() {
        let run = format!("bad{i}");
        let o = trojanscope(&checkpoints, &run, args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{args:?} succeeded");
        let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error: ")).collect();
        assert_eq!(errors.len(), 1, "{err}");
        assert!(err.contains(needle), "expected '{needle}' in: {err}");
        assert!(!err.contains("panicked"), "{err}");
        assert!(!checkpoints.join(&run).exists(), "{args:?} wrote {}", checkpoints.join(&run).display());
    }
}
