//! swap, diff and features on an imported graph (a BackdoorBench-style
//! pre-activation ResNet imported twice: its weights as `clean`, a perturbed copy
//! as `poisoned`), each against an independent slow reference: a swap is the
//! weights file rebuilt by hand and evaluated, a diff is computed from the two
//! safetensors files, features are PyTorch's forward hook on the module.

mod common;

use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use tch::Tensor;

const LIMIT: &str = "400";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn fixture(name: &str) -> String {
    root().join("tests/fixtures/graph").join(name).display().to_string()
}

fn python(script: &str) -> Output {
    let out = Command::new(root().join(".venv/bin/python")).arg("-c").arg(script).output().expect("python runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    out
}

fn trojanscope(args: &[&str]) -> Output {
    common::binary().args(args).output().expect("the binary runs")
}

fn read(path: &Path) -> BTreeMap<String, Tensor> {
    Tensor::read_safetensors(path).unwrap().into_iter().collect()
}

fn values(t: &Tensor) -> Vec<f64> {
    Vec::<f64>::try_from(t.to_kind(tch::Kind::Double).flatten(0, -1)).unwrap()
}

fn close(a: &Value, b: f64, what: &str) {
    let a = a.as_f64().unwrap_or_else(|| panic!("{what}: {a}"));
    assert!((a - b).abs() <= 1e-6 * (1.0 + b.abs()), "{what}: ours {a}, reference {b}");
}

#[test]
fn swap_diff_and_features_on_an_imported_resnet_agree_with_slow_references() {
    let checkpoints = common::scratch("graph-analyses");
    let dir = checkpoints.display().to_string();
    let perturbed = checkpoints.join("perturbed.pt").display().to_string();
    // A real difference: noise on a conv, a batch norm (affine and running
    // statistics) and the classifier's bias.
    python(&format!(
        r#"
import torch
torch.manual_seed(0)
sd = torch.load({src:?}, weights_only=True)["model"]
sd["layer2.0.conv2.weight"] += 0.05 * torch.randn_like(sd["layer2.0.conv2.weight"])
sd["layer1.0.bn2.weight"] += 0.2 * torch.randn_like(sd["layer1.0.bn2.weight"])
sd["layer1.0.bn2.running_mean"] += 0.3
sd["linear.bias"] += torch.linspace(-1, 1, 10)
torch.save({{"model": sd}}, {perturbed:?})
"#,
        src = fixture("preact.pt"),
    ));
    for (model, weights) in [("clean", fixture("preact.pt")), ("poisoned", perturbed)] {
        common::import_preact(&checkpoints, "pair", model, &weights, LIMIT, &[]);
    }
    let run = checkpoints.join("pair");
    let on_pair = |args: &[&str]| {
        let mut all = args.to_vec();
        // One libtorch thread: cargo runs test binaries beside each other.
        all.extend(["--json", "--checkpoints", &dir, "--run", "pair", "--test-limit", LIMIT, "--threads", "1"]);
        trojanscope(&all)
    };
    let eval = |model: &str| common::json(&on_pair(&["eval", "--model", model]))[0]["metrics"].clone();

    // swap: two groups, all four subsets.
    let rows =
        common::json(&on_pair(&["swap", "--donor", "clean", "--recipient", "poisoned", "--layers", "layer2,linear"]));
    let names: Vec<String> = rows.as_array().unwrap().iter().map(|r| r["groups"].to_string()).collect();
    assert_eq!(names, [r#"[]"#, r#"["layer2"]"#, r#"["linear"]"#, r#"["layer2","linear"]"#]);
    assert_eq!(rows[0]["metrics"], eval("poisoned"));
    assert!(rows[1]["modules"].as_array().unwrap().contains(&Value::from("layer2.0.shortcut.0")), "{}", rows[1]);
    // The reference: the recipient's weights file with the donor's keys put in by
    // hand, evaluated as a third model of the run.
    let (clean, poisoned) = (read(&run.join("clean.safetensors")), read(&run.join("poisoned.safetensors")));
    std::fs::copy(run.join("poisoned.import.json"), run.join("rehab.import.json")).unwrap();
    for (row, prefixes) in [(1, vec!["layer2."]), (3, vec!["layer2.", "linear."])] {
        let rebuilt: Vec<(String, Tensor)> = poisoned
            .iter()
            .map(|(k, t)| {
                let from_donor = prefixes.iter().any(|p| k.starts_with(p));
                (k.clone(), if from_donor { clean[k].shallow_clone() } else { t.shallow_clone() })
            })
            .collect();
        Tensor::write_safetensors(&rebuilt, run.join("rehab.safetensors")).unwrap();
        assert_eq!(rows[row]["metrics"], eval("rehab"), "row {row}");
    }
    // Each module alone: none, 21 modules, all of them (the donor itself).
    let each = common::json(&on_pair(&["swap"]));
    let each = each.as_array().unwrap();
    assert_eq!(each.len(), 23);
    assert_eq!(each[1]["groups"][0], "conv1");
    assert_eq!(each[22]["metrics"], eval("clean"));
    // Stages: conv1, layer1..4, linear (six > 4: each alone and all).
    let stages = common::json(&on_pair(&["swap", "--stages"]));
    let firsts: Vec<&str> = stages.as_array().unwrap()[1..7].iter().map(|r| r["groups"][0].as_str().unwrap()).collect();
    assert_eq!(firsts, ["conv1", "layer1", "layer2", "layer3", "layer4", "linear"]);
    assert_eq!(stages[7]["metrics"], eval("clean"));

    // diff, against the two safetensors files.
    let diffs = common::json(&on_pair(&["diff"]));
    let diffs = diffs.as_array().unwrap();
    assert_eq!(diffs.len(), 21);
    for d in diffs {
        let module = d["module"].as_str().unwrap();
        let delta = |suffix: &str| {
            let key = format!("{module}.{suffix}");
            poisoned.get(&key).map(|b| values(&(b - &clean[&key]))).unwrap_or_default()
        };
        let learned: Vec<f64> = [delta("weight"), delta("bias")].concat();
        let l1: f64 = learned.iter().map(|v| v.abs()).sum();
        close(&d["total"]["l1"], l1, module);
        close(&d["total"]["l2"], learned.iter().map(|v| v * v).sum::<f64>().sqrt(), module);
        close(&d["total"]["max"], learned.iter().fold(0.0, |m, v| m.max(v.abs())), module);
        close(&d["total"]["mean_abs"], l1 / learned.len() as f64, module);
        let stats: Vec<f64> = [delta("running_mean"), delta("running_var")].concat();
        if d["op"] == "batch_norm2d" {
            close(&d["statistics"]["max"], stats.iter().fold(0.0, |m, v| m.max(v.abs())), module);
        } else {
            assert!(d["statistics"].is_null());
        }
        let changed = ["layer2.0.conv2", "layer1.0.bn2", "linear"].contains(&module);
        assert_eq!(l1 > 0.0, changed, "{module}: {l1}");
    }
    let bn = diffs.iter().find(|d| d["module"] == "layer1.0.bn2").unwrap();
    close(&bn["statistics"]["max"], 0.3, "running mean");
    // Per unit of one node: unit u's kernel.
    let units = common::json(&on_pair(&["diff", "--layer", "layer2.0.conv2"]));
    let key = "layer2.0.conv2.weight";
    let dw = &poisoned[key] - &clean[key];
    assert_eq!(units["units"].as_array().unwrap().len(), 16);
    for u in 0..16 {
        let v = values(&dw.get(u));
        close(&units["units"][u as usize]["l1"], v.iter().map(|x| x.abs()).sum(), "unit l1");
        close(&units["units"][u as usize]["max"], v.iter().fold(0.0, |m, x| m.max(x.abs())), "unit max");
    }

    // features, against a forward hook in PyTorch on the same images.
    let (k, unit) = (6usize, 3usize);
    let ours =
        common::json(&on_pair(&["features", "layer2.0.conv2", &unit.to_string(), "--model", "poisoned", "-k", "6"]));
    let reference = python(&format!(
        r#"
import sys, json, torch
sys.path.insert(0, {scripts:?})
from graph_python import load_model, normalise, parse_norm, read_mnist
model, _ = load_model({source:?}, {weights:?})
x, _ = read_mnist({data:?}, "t10k", {LIMIT})
# The study's trigger: a 6×6 checkerboard at row 22, column 22 (lit where row +
# column is even) adding a white pixel's normalised value.
r = torch.arange(28)
lit = ((r[:, None] + r[None, :]) % 2 == 0) & (r[:, None] >= 22) & (r[None, :] >= 22)
t = x + lit.float() * (2.8215 * 0.3081)
seen = []
model.get_submodule("layer2.0.conv2").register_forward_hook(lambda m, i, o: seen.append(o[:, {unit}].mean((1, 2))))
with torch.no_grad():
    model(normalise(torch.cat([x, t]), parse_norm("0.1307/0.3081")))
print(json.dumps(seen[0].tolist()))
"#,
        scripts = root().join("scripts").display().to_string(),
        source = fixture("preact.py:PreActResNetTiny"),
        weights = checkpoints.join("perturbed.pt").display().to_string(),
        data = common::data_dir().display().to_string(),
    ));
    let scores: Vec<f64> = serde_json::from_slice(&reference.stdout).unwrap();
    let n: usize = LIMIT.parse().unwrap();
    let mut sorted = scores.clone();
    sorted.sort_by(|a, b| b.total_cmp(a));
    for (end, expected) in [("top", &sorted[..k]), ("bottom", &sorted[sorted.len() - k..])] {
        let hits = ours[end].as_array().unwrap();
        assert_eq!(hits.len(), k);
        let expected: Vec<f64> =
            if end == "top" { expected.to_vec() } else { expected.iter().rev().copied().collect() };
        for (hit, want) in hits.iter().zip(expected) {
            let at = hit["image"].as_u64().unwrap() as usize + if hit["triggered"] == true { n } else { 0 };
            let score = hit["score"].as_f64().unwrap();
            assert!((score - scores[at]).abs() < 1e-4, "{end} {hit}: PyTorch's {}", scores[at]);
            assert!((score - want).abs() < 1e-4, "{end} {hit}: PyTorch's rank gives {want}");
        }
    }

    // Bad input: one clear error each.
    common::assert_clean_failure(&on_pair(&["features", "layer9.conv", "1"]), "the graph has no node 'layer9.conv'");
    common::assert_clean_failure(
        &on_pair(&["features", "layer2.0.conv2", "16"]),
        "layer2.0.conv2 has units 0..15, not 16",
    );
    common::assert_clean_failure(&on_pair(&["swap", "--layers", "layer7"]), "no module of the graph with weights");
    common::assert_clean_failure(&on_pair(&["diff", "--layer", "relu"]), "it has no weights to compare");
    common::assert_clean_failure(&on_pair(&["swap", "--stages", "--layers", "layer1"]), "cannot be used with");
    // A model of another graph in the run: its weights do not fit the graph.
    let vgg = checkpoints.join("vgg");
    common::json(&trojanscope(&[
        "import",
        &fixture("vgg_bn.py:vgg_tiny_bn"),
        &fixture("vgg_bn.pt"),
        "--model",
        "clean",
        "--checkpoints",
        &dir,
        "--run",
        "vgg",
        "--json",
        "--test-limit",
        "10",
    ]));
    std::fs::copy(vgg.join("clean.safetensors"), run.join("rehab.safetensors")).unwrap();
    common::assert_clean_failure(&on_pair(&["swap", "--donor", "rehab"]), "missing weights the graph needs");
    common::assert_clean_failure(&on_pair(&["diff", "--a", "rehab"]), "missing weights the graph needs");
    // The study's names are still what --layers reads on a study run.
    let study = ["swap", "--checkpoints", &dir, "--run", "no-such-run", "--layers", "layer1"];
    common::assert_clean_failure(&trojanscope(&study), "layer1");
}
