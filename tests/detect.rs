//! Poisoned-input detection (STRIP, SCALE-UP) and poisoned-data inspection
//! (spectral signatures, activation clustering) against the plain PyTorch
//! script that follows BackdoorBench (benches/detect_pytorch.py), on the same
//! model, images and draws; the batched paths against the slow, obvious ones;
//! and the commands' JSON and errors on small runs.

mod common;

use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Command;
use tch::{Device, Kind, Tensor};
use trojanscope::data::attack::{Attack, Patch};
use trojanscope::engine::checkpoint::load_net;
use trojanscope::engine::classifier::FrozenStudy;
use trojanscope::engine::detect::roc::{Side, auroc, threshold_at_frr};
use trojanscope::engine::detect::scan::removed;
use trojanscope::engine::detect::{Populations, StudyFeatures, ac, all_features, scaleup, spectral, strip, values};
use trojanscope::engine::layer::Layer;
use trojanscope::engine::testset::TestSet;
use trojanscope::engine::train::{TrainConfig, TrainData};
use trojanscope::graph::eval::raw_test_set;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The reference's answer for `method` on the tiny run's poisoned model, given
/// the images (`case`) and the draws.
fn pytorch(method: &str, case: &[(&str, Tensor)], draws: &Value) -> Value {
    let dir = common::scratch(&format!("detect-{method}"));
    let (case_path, draws_path) = (dir.join("case.safetensors"), dir.join("draws.json"));
    let case: Vec<(&str, Tensor)> = case.iter().map(|(n, t)| (*n, t.to_kind(Kind::Float).contiguous())).collect();
    Tensor::write_safetensors(&case, &case_path).unwrap();
    std::fs::write(&draws_path, draws.to_string()).unwrap();
    let model = common::tiny_run_model("poisoned");
    let out = Command::new(root().join(".venv/bin/python"))
        .arg(root().join("benches/detect_pytorch.py"))
        .arg(method)
        .args(["--checkpoint", &model.display().to_string(), "--threads", "1"])
        .args(["--case", &case_path.display().to_string(), "--draws", &draws_path.display().to_string()])
        .output()
        .expect("the project's python runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect()
}

fn indices(v: &Value) -> Vec<usize> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as usize).collect()
}

fn largest_gap(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max)
}

fn study_net() -> trojanscope::engine::model::Net {
    tch::set_num_threads(1);
    load_net(&common::tiny_run_model("poisoned"), Device::Cpu).unwrap()
}

#[test]
fn strip_and_scale_up_equal_the_pytorch_script_and_the_slow_path() {
    let net = study_net();
    let data = common::mnist(500, 200);
    let frozen = FrozenStudy::of(&net, data.test.normalisation);
    let test = TestSet::new(&data.test, &TrainConfig::default(), Device::Cpu).unwrap();
    // 150 inputs: two of BackdoorBench's batches of 128, each with its own draw.
    let p = Populations::of(&raw_test_set(&test, data.test.normalisation), Some(150));
    assert_eq!((p.clean.size()[0], p.triggered.size()[0]), (150, 150));
    let pool = data.train.raw_images(Device::Cpu);
    let cfg = strip::StripConfig { n: 20, ..strip::StripConfig::default() };
    let overlays = strip::overlays(&pool, data.train.normalisation, cfg.alpha);
    let (draws_c, draws_t) = (strip::draws(500, 150, &cfg, 0), strip::draws(500, 150, &cfg, 1));
    assert_eq!(draws_c.len(), 2);
    assert_ne!(draws_c[0], draws_c[1]);
    let clean = strip::entropies(&frozen, &p.clean, &overlays, &draws_c);
    let triggered = strip::entropies(&frozen, &p.triggered, &overlays, &draws_t);
    // The slow path on the first 20 inputs and the last 10 (the second batch's draw).
    let mut slow = strip::entropies_reference(&frozen, &p.clean.narrow(0, 0, 20), &overlays, &draws_c[..1]);
    slow.extend(strip::entropies_reference(&frozen, &p.clean.narrow(0, 140, 10), &overlays, &draws_c[1..]));
    let fast_ends: Vec<f64> = clean[..20].iter().chain(&clean[140..]).copied().collect();
    assert!(largest_gap(&fast_ends, &slow) < 1e-5, "batched and one-at-a-time STRIP differ");

    let frr = 0.05;
    let draws = json!({"clean": draws_c, "triggered": draws_t, "alpha": 1.0, "frr": frr});
    let case = [("clean", p.clean.shallow_clone()), ("triggered", p.triggered.shallow_clone()), ("pool", pool)];
    let theirs = pytorch("strip", &case, &draws);
    assert!(largest_gap(&clean, &floats(&theirs["clean"])) < 1e-4);
    assert!(largest_gap(&triggered, &floats(&theirs["triggered"])) < 1e-4);
    let threshold = threshold_at_frr(&clean, frr, Side::Low);
    assert!((threshold - theirs["threshold"].as_f64().unwrap()).abs() < 1e-4);
    let flagged: Vec<usize> = (0..150).filter(|&i| Side::Low.flags(triggered[i], threshold)).collect();
    assert_eq!(flagged, indices(&theirs["flagged"]));
    // The tiny run's backdoor lowers the entropy of superimposed triggered inputs
    // (weakly at N = 20: AUROC 0.565).
    let separation = auroc(&clean, &triggered, Side::Low);
    assert!(separation > 0.55, "AUROC {separation}");

    let scaled = scaleup::consistency(&frozen, &p.triggered);
    assert_eq!(scaled[..40], scaleup::consistency_reference(&frozen, &p.triggered.narrow(0, 0, 40)));
    let theirs = pytorch("scaleup", &case[..2], &json!({}));
    assert_eq!(scaleup::consistency(&frozen, &p.clean), floats(&theirs["clean"]));
    assert_eq!(scaled, floats(&theirs["triggered"]));
    assert!(scaled.iter().all(|s| [0.0, 0.2, 0.4, 0.6, 0.8, 1.0].iter().any(|v| (s - v).abs() < 1e-12)));
}

#[test]
fn spectral_signatures_and_activation_clustering_equal_the_pytorch_script() {
    let net = study_net();
    let data = common::mnist(400, 0);
    let mut cfg =
        TrainConfig { attack: Attack::Badnets(Patch::default()), poison_ratio: Some(0.1), ..TrainConfig::default() };
    cfg.trigger.target = 0;
    let set = TrainData::for_run(&data.train, &cfg, Device::Cpu).poisoned.unwrap();
    assert_eq!(set.record.indices.len(), 40);
    let raw = data.train.normalisation.denormalise(&set.images);
    let labels: Vec<u8> = values(&set.labels).iter().map(|&l| l as u8).collect();
    let reader = StudyFeatures { net: &net, normalisation: data.train.normalisation, layer: Layer::Fc1 };
    let features = all_features(&reader, &raw);
    assert_eq!(features.size(), [400, 16]);
    let case = [("images", raw), ("labels", set.labels.to_kind(Kind::Float))];

    let verdicts = spectral::scan(&features, &labels, 10);
    let theirs = pytorch("spectral", &case, &json!({}));
    let mut their_removed = Vec::new();
    for (v, t) in verdicts.iter().zip(theirs["classes"].as_array().unwrap()) {
        let scale = v.scores.iter().copied().fold(1.0, f64::max);
        assert!(largest_gap(&v.scores, &floats(&t["scores"])) < 1e-4 * scale);
        assert!((v.threshold - t["threshold"].as_f64().unwrap()).abs() < 1e-4 * scale);
        their_removed.extend(indices(&t["removed"]));
        // The 85th percentile removes 15 % of the class (rounded).
        let gone = v.removed.iter().filter(|&&r| r).count();
        assert!(gone.abs_diff(v.members.len() * 15 / 100) <= 1, "{gone} of {}", v.members.len());
    }
    their_removed.sort_unstable();
    assert_eq!(removed(&verdicts), their_removed);

    let (starts, verdicts) = ac::scan(&features, &labels, 10, 0);
    let theirs = pytorch("ac", &case, &json!({"starts": starts}));
    let mut their_removed = Vec::new();
    for (v, t) in verdicts.iter().zip(theirs["classes"].as_array().unwrap()) {
        assert_eq!(v.flagged, t["flagged"].as_bool().unwrap());
        assert!((v.statistic - t["silhouette"].as_f64().unwrap()).abs() < 1e-4);
        assert!(v.statistic > 0.0 && v.statistic < 1.0, "silhouette {}", v.statistic);
        their_removed.extend(indices(&t["removed"]));
    }
    their_removed.sort_unstable();
    assert_eq!(removed(&verdicts), their_removed);
    // Dead units leave some classes' features of lower rank: FastICA keeps what there is.
    assert!(starts.iter().all(|s| s.components <= ac::DIMS && s.w_init.len() == s.components * s.components));
}

/// A copy of the tiny run (study attack, no fixed poisoned set) to run commands on.
fn tiny_run() -> (PathBuf, &'static str) {
    (common::tiny_run_copy("detect-tiny"), "tiny")
}

fn command(checkpoints: &Path, run: &str, args: &[&str]) -> std::process::Output {
    let mut all = vec!["--checkpoints", checkpoints.to_str().unwrap(), "--run", run, "--train-limit", "500"];
    all.extend(["--test-limit", "200", "--threads", "1"]);
    all.extend(args);
    common::binary().args(&all).output().expect("the binary runs")
}

#[test]
fn detect_inputs_reports_its_numbers_and_scan_data_needs_a_poison_record() {
    let (dir, run) = tiny_run();
    let out = dir.join("figures");
    let strip = ["detect-inputs", "--method", "strip", "--limit", "60", "--n", "10", "--json", "--out"];
    let o = command(&dir, run, &[&strip[..], &[out.to_str().unwrap()]].concat());
    let report = common::json(&o);
    let clean = floats(&report["clean_scores"]);
    let triggered = floats(&report["triggered_scores"]);
    assert_eq!((clean.len(), triggered.len()), (60, 60));
    // --frr 0.01 of 60 clean inputs reads the sorted entropies at index 0: the smallest.
    let threshold = report["threshold"].as_f64().unwrap();
    assert_eq!(threshold, clean.iter().copied().fold(f64::INFINITY, f64::min));
    let tpr = triggered.iter().filter(|&&t| t < threshold).count() as f64 / 60.0;
    assert_eq!(report["tpr"].as_f64().unwrap(), tpr);
    let auroc = report["auroc"].as_f64().unwrap();
    assert!(auroc > 0.6, "AUROC {auroc}");
    let hist = &report["histogram"];
    assert_eq!(indices(&hist["clean"]).iter().sum::<usize>(), 60);
    assert_eq!(report["roc"].as_array().unwrap().last().unwrap()["tpr"], 1.0);
    // --out: the histograms with the threshold, the ROC curve with this AUROC.
    let svg = |name: &str| std::fs::read_to_string(out.join(format!("{name}.svg"))).unwrap();
    assert!(svg("strip-histogram").contains(&format!("threshold {threshold:.3}")));
    assert!(svg("strip-roc").contains(&format!("ROC (AUROC {auroc:.3})")));
    assert!(out.join("strip-roc.png").is_file() && out.join("strip-histogram.png").is_file());

    let o = command(&dir, run, &["detect-inputs", "--method", "scale-up", "--limit", "30", "--json"]);
    let report = common::json(&o);
    assert_eq!(report["threshold"], 0.5);
    let fpr = floats(&report["clean_scores"]).iter().filter(|&&s| s > 0.5).count() as f64 / 30.0;
    assert_eq!(report["fpr"].as_f64().unwrap(), fpr);

    common::assert_clean_failure(
        &command(&dir, run, &["detect-inputs", "--method", "strip", "--frr", "1.5"]),
        "--frr 1.5",
    );
    common::assert_clean_failure(&command(&dir, run, &["scan-data", "--method", "spectral"]), "has no poison record");
    let o = command(&dir, "missing", &["detect-inputs", "--method", "strip"]);
    assert_eq!(o.status.code(), Some(1));
}

#[test]
fn scan_data_scores_retrains_and_draws_a_small_badnets_run() {
    let dir = common::scratch("detect-badnets");
    let train = ["train", "--attack", "badnets", "--phases", "clean,poison", "--eval-every", "100"];
    let o = command(&dir, "bad", &train);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let record: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("bad/poisoned-train.json")).unwrap()).unwrap();
    let poisoned = indices(&record["indices"]).len();
    assert_eq!(poisoned, 50);
    for method in ["spectral", "ac"] {
        let report = common::json(&command(&dir, "bad", &["scan-data", "--method", method, "--json"]));
        assert_eq!(report["node"], "fc1");
        let classes = report["classes"].as_array().unwrap();
        assert_eq!(classes.len(), 10);
        // Every poisoned image is relabelled to the target 0: all sit in class 0.
        assert_eq!(classes[0]["poisoned"].as_u64().unwrap() as usize, poisoned);
        assert!(classes[1..].iter().all(|c| c["poisoned"] == 0 && c["tpr"].is_null()));
        let (removed, caught) = (report["removed"].as_f64().unwrap(), report["tpr"].as_f64().unwrap() * 50.0);
        let fpr = report["fpr"].as_f64().unwrap();
        assert!((removed - caught - fpr * 450.0).abs() < 1e-6, "removed {removed}, caught {caught}, FPR {fpr}");
        let auroc = classes[0]["auroc"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&auroc));
    }
    common::assert_clean_failure(&command(&dir, "bad", &["scan-data", "--method", "ac", "--node", "conv9"]), "conv9");

    // --retrain: the recipe from scratch without the removed images, into a model of its own.
    let (out, run) = (dir.join("figures"), dir.join("bad"));
    let poisoned = std::fs::read(run.join("poisoned.safetensors")).unwrap();
    let scan = ["scan-data", "--method", "spectral", "--retrain", "--json", "--out", out.to_str().unwrap()];
    let report = common::json(&command(&dir, "bad", &scan));
    let retrained = &report["retrained"];
    assert_eq!(retrained["model"], "scan-spectral");
    // Spectral removes the top 15 % of every class: trained on the rest.
    let removed = report["removed"].as_u64().unwrap();
    assert!(removed >= 60, "removed {removed}");
    assert_eq!(retrained["images"].as_u64().unwrap(), 500 - removed);
    assert!(run.join("scan-spectral.safetensors").is_file());
    assert_eq!(std::fs::read(run.join("poisoned.safetensors")).unwrap(), poisoned, "the poisoned model is untouched");
    // The scanned model's numbers are its sidecar's, on the same 200 test images.
    let sidecar: Value = serde_json::from_str(&std::fs::read_to_string(run.join("poisoned.json")).unwrap()).unwrap();
    assert_eq!(retrained["scanned"]["clean_acc"], sidecar["metrics"]["clean_acc"]);
    assert_eq!(retrained["scanned"]["asr"], sidecar["metrics"]["asr_non_target"]);
    let (clean_acc, asr) = (retrained["clean_acc"].as_f64().unwrap(), retrained["asr"].as_f64().unwrap());
    assert!(clean_acc > 20.0 && (0.0..=100.0).contains(&asr), "clean {clean_acc}, ASR {asr}");
    // Each class's scores and the per-class numbers, drawn.
    let svg = |name: &str| std::fs::read_to_string(out.join(format!("{name}.svg"))).unwrap();
    assert!(svg("spectral-class-0").contains("spectral signatures: class 0 (poisoned model, fc1)"));
    assert!(svg("spectral-classes").contains("AUROC (%)") && out.join("spectral-class-9.png").is_file());
    // A second retraining is refused without --force; with it, the seeded recipe gives the same model.
    common::assert_clean_failure(&command(&dir, "bad", &scan[..4]), "--force replaces it");
    let again = common::json(&command(&dir, "bad", &[&scan[..5], &["--force"]].concat()));
    assert_eq!(
        (&again["retrained"]["clean_acc"], &again["retrained"]["asr"]),
        (&retrained["clean_acc"], &retrained["asr"])
    );
    common::assert_clean_failure(
        &command(&dir, "bad", &["scan-data", "--method", "ac", "--retrain", "--model", "unlearned"]),
        "not the unlearned model",
    );
}
