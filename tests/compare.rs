//! `compare --runs`: three copies of the committed tiny run, two of them with
//! their saved metrics changed by hand, read side by side; runs of another
//! dataset refused naming both groups.

mod common;
mod svg;

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Output;

/// Three runs `a`, `b`, `c` in a fresh folder: the tiny run's files, with the
/// poisoned model's saved clean accuracy set to `clean[i]`.
fn runs(clean: [f64; 3]) -> PathBuf {
    let root = std::env::temp_dir().join(format!("ui26b-compare-{}-{}", std::process::id(), clean[0]));
    let _ = std::fs::remove_dir_all(&root);
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-run");
    for (name, acc) in ["a", "b", "c"].iter().zip(clean) {
        let run = root.join(name);
        std::fs::create_dir_all(&run).unwrap();
        for entry in std::fs::read_dir(&fixture).unwrap() {
            let path = entry.unwrap().path();
            std::fs::copy(&path, run.join(path.file_name().unwrap())).unwrap();
        }
        edit_sidecar(&run.join("poisoned.json"), |s| s["metrics"]["clean_acc"] = acc.into());
    }
    root
}

fn edit_sidecar(path: &Path, edit: impl Fn(&mut Value)) {
    let mut sidecar: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    edit(&mut sidecar);
    std::fs::write(path, serde_json::to_string_pretty(&sidecar).unwrap()).unwrap();
}

fn compare(root: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["compare", "--runs", "a,b,c", "--checkpoints", root.to_str().unwrap()];
    args.extend(extra);
    common::binary().args(&args).output().expect("the binary runs")
}

#[test]
fn compare_reads_each_run_and_gives_mean_sd_and_a_figure() {
    let root = runs([50.0, 52.0, 54.0]);
    let out = root.join("figures");
    let json = compare(&root, &["--json", "--out", out.to_str().unwrap()]);
    assert!(json.status.success(), "{}", String::from_utf8_lossy(&json.stderr));
    let v: Value = serde_json::from_slice(&json.stdout).unwrap();
    let runs = v["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 3);
    assert_eq!(runs[1]["models"]["poisoned"]["clean_acc"], 52.0);
    // 260 of the 500 test images: Wilson's 95 % interval, in percent.
    let ci = &runs[1]["models"]["poisoned"]["clean_acc_ci"];
    assert!((ci[0].as_f64().unwrap() - 47.622).abs() < 1e-2 && (ci[1].as_f64().unwrap() - 56.348).abs() < 1e-2);
    assert_eq!((runs[0]["circuit"].clone(), runs[0]["flagged"].clone()), (Value::Null, Value::Null));
    let spread = v["spread"].as_array().unwrap();
    let clean = spread.iter().find(|s| s["model"] == "poisoned" && s["metric"] == "clean_acc").unwrap();
    assert_eq!((clean["mean"].as_f64(), clean["sd"].as_f64()), (Some(52.0), Some(2.0)));
    // The other models are the same in every run: sd 0.
    let rehab = spread.iter().find(|s| s["model"] == "clean" && s["metric"] == "rehab_acc").unwrap();
    assert_eq!(rehab["sd"].as_f64(), Some(0.0));
    let texts = svg::svg_texts(&svg::figure_svg(&out, "compare-poisoned"));
    for text in ["poisoned model across 3 runs (legend: mean ± sd)", "clean 52.00 ± 2.00", "run: 1 a · 2 b · 3 c"] {
        assert!(texts.iter().any(|t| t == text), "{text} missing from {texts:?}");
    }
    // The table: a row per run and model, the mean ± sd rows, what was not computed.
    let table = String::from_utf8(compare(&root, &[]).stdout).unwrap();
    assert!(table.lines().any(|l| l.starts_with("mean ± sd") && l.contains("52.00 ± 2.00")), "{table}");
    assert!(table.contains("not computed"), "{table}");
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn runs_of_different_datasets_are_refused_naming_each_group() {
    let root = runs([60.0, 61.0, 62.0]);
    for model in ["clean", "poisoned", "rehab"] {
        edit_sidecar(&root.join("c").join(format!("{model}.json")), |s| {
            s["config"]["dataset"] = "fashion-mnist".into()
        });
    }
    let out = compare(&root, &["--out", root.join("figures").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "these runs are not one network on one dataset: a, b (the study's CNN on mnist); \
             c (the study's CNN on fashion-mnist); compare one group at a time"
        ),
        "{err}"
    );
    assert!(!root.join("figures").exists(), "nothing is written");
    let missing = compare(&root, &["--runs", "a,zz"]);
    assert!(String::from_utf8_lossy(&missing.stderr).contains("there is no run"), "{missing:?}");
    std::fs::remove_dir_all(&root).unwrap();
}
