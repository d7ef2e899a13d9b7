//! Each attack's image function equals the plain PyTorch reference written from
//! BackdoorBench's formulas (benches/attacks_pytorch.py) on real MNIST images,
//! pixel for pixel (≤ 1e-6); and a run records its attack, poisons what it
//! says, and every analysis runs under it.

mod common;

use std::path::PathBuf;
use std::process::Command;
use tch::{Device, Tensor};
use trojanscope::data::attack::images::{RawTrigger, blend_noise, wanet};
use trojanscope::data::attack::{Attack, Blend, Patch, PatchMode, PatchPattern, Sig};

const IMAGES: usize = 300;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The reference's triggered images `[IMAGES, 1, 28, 28]` for `args`.
fn pytorch(name: &str, args: &[&str]) -> Tensor {
    let out = common::scratch(&format!("attack-{name}")).join("triggered.f32");
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    let status = Command::new(root().join(".venv/bin/python"))
        .arg(root().join("benches/attacks_pytorch.py"))
        .args(["--data-dir", &common::data_dir().display().to_string(), "--test-limit", &IMAGES.to_string()])
        .args(["--out", &out.display().to_string()])
        .args(args)
        .output()
        .expect("the project's python runs");
    assert!(status.status.success(), "{}", String::from_utf8_lossy(&status.stderr));
    let bytes = std::fs::read(&out).unwrap();
    let values: Vec<f32> = bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
    Tensor::from_slice(&values).view([IMAGES as i64, 1, 28, 28])
}

fn ours(attack: &Attack) -> (Tensor, Tensor) {
    let raw = common::mnist(0, IMAGES).test.raw_images(Device::Cpu);
    let trigger = RawTrigger::new(attack, [1, 28, 28], Device::Cpu).expect("a raw-pixel attack");
    (trigger.apply(&raw), raw)
}

fn assert_same(name: &str, attack: &Attack, args: &[&str]) {
    let (triggered, raw) = ours(attack);
    let reference = pytorch(name, args);
    let diff = (&triggered - &reference).abs().max().double_value(&[]);
    assert!(diff <= 1e-6, "{name}: ours and PyTorch's differ by {diff}");
    // The attack changed something: the comparison is not of two copies of the input.
    let changed = (&triggered - &raw).abs().gt(1e-3).sum(tch::Kind::Int64).int64_value(&[]);
    assert!(changed > IMAGES as i64, "{name}: only {changed} pixels changed");
}

#[test]
fn badnets_patches_equal_pytorchs() {
    let solid = Attack::Badnets(Patch::default());
    assert_same("badnets", &solid, &["badnets", "--size", "3"]);
    // Exactly the 3×3 bottom-right corner is white, the rest untouched.
    let (triggered, raw) = ours(&solid);
    let corner = triggered.narrow(2, 25, 3).narrow(3, 25, 3);
    assert_eq!(corner.min().double_value(&[]), 1.0);
    let outside = (&triggered - &raw).narrow(2, 0, 25).abs().max().double_value(&[]);
    assert_eq!(outside, 0.0);
    let checker = Attack::Badnets(Patch {
        size: 4,
        row: Some(2),
        col: Some(5),
        pattern: PatchPattern::Checkerboard,
        mode: PatchMode::Add,
        value: 0.6,
    });
    let args =
        ["badnets", "--size", "4", "--pos", "2,5", "--pattern", "checkerboard", "--mode", "add", "--value", "0.6"];
    assert_same("badnets-checker", &checker, &args);
}

#[test]
fn blended_sig_and_wanet_equal_pytorchs() {
    let blended = Attack::Blended(Blend { alpha: 0.2, image: blend_noise(7, [1, 28, 28]) });
    assert_same("blended", &blended, &["blended", "--alpha", "0.2", "--noise-seed", "7"]);
    let sig = Attack::Sig(Sig::default());
    assert_same("sig", &sig, &["sig", "--delta", &(40.0f64 / 255.0).to_string(), "--freq", "6"]);
    let warp = Attack::Wanet(wanet(4, 0.5, 3, 2.0, 28, 28));
    assert_same("wanet", &warp, &["wanet", "--k", "4", "--s", "0.5", "--seed", "3"]);
}

/// The binary on a small run of the study's CNN planted with `attack_args`.
struct SmallRun {
    checkpoints: String,
    dir: PathBuf,
}

const SMALL: [&str; 4] = ["--train-limit", "320", "--test-limit", "200"];

impl SmallRun {
    fn train(name: &str, attack_args: &[&str]) -> SmallRun {
        let dir = common::scratch(&format!("attack-run-{name}"));
        let run = SmallRun { checkpoints: dir.display().to_string(), dir: dir.join("r") };
        let mut args = vec!["train", "--eval-every", "50"];
        args.extend(attack_args);
        run.ok(&args);
        run
    }

    fn output(&self, args: &[&str]) -> std::process::Output {
        let mut all = args.to_vec();
        all.extend(["--checkpoints", &self.checkpoints, "--run", "r"]);
        all.extend(SMALL);
        common::binary().args(&all).output().expect("the binary runs")
    }

    /// Runs a command that must succeed; its stdout parsed as JSON when it says `--json`.
    fn ok(&self, args: &[&str]) -> serde_json::Value {
        let o = self.output(args);
        assert!(o.status.success(), "{args:?}: {}", String::from_utf8_lossy(&o.stderr));
        if args.contains(&"--json") { common::json(&o) } else { serde_json::Value::Null }
    }

    fn recorded(&self) -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(self.dir.join("run.json")).unwrap()).unwrap()
    }

    /// `poisoned-train.json`: which training images were poisoned.
    fn poison_record(&self) -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(self.dir.join("poisoned-train.json")).unwrap()).unwrap()
    }

    fn poisoned_indices(&self) -> Vec<u64> {
        self.poison_record()["indices"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect()
    }
}

/// Trigger recovery on two labels, tiny.
const RECOVER: [&str; 10] =
    ["recover", "--labels", "0,1", "--images", "200", "--epochs", "1", "--test-images", "100", "--json"];

/// Trains a small run planted with `attack_args` and runs every analysis on it,
/// then `run`, whose report must name the attack as `described`.
fn every_analysis_runs_under(name: &str, attack_args: &[&str], described: &str) -> Analysed {
    let run = SmallRun::train(name, attack_args);
    let eval = run.ok(&["eval", "--json"]);
    // Every model is scored on the 200 images and their triggered twins.
    assert!(eval.as_array().unwrap().iter().all(|m| m["metrics"]["count"] == 200), "{eval}");
    for args in [
        &["ablate", "conv1:1,2", "--mode", "mean", "--json"][..],
        &["sweep", "conv1", "--json"],
        &["swap", "--json"],
        &["features", "conv2", "3", "-k", "2", "--json"],
        &["patch", "conv2", "--direction", "noise", "--json"],
        &["circuit", "--max-size", "2", "--json"],
        &["prune", "fc1", "--ranking", "tac", "--json"],
        &["unlearn", "--label", "0", "--images", "400", "--json"],
        &["visualize", "fc2", "0", "--steps", "5", "--json"],
    ] {
        run.ok(args);
    }
    let recovered = run.ok(&RECOVER);
    assert_eq!(recovered.as_array().unwrap().len(), 2, "{recovered}");
    // `run` finds the three models saved and writes the report, which names the attack.
    run.ok(&["run", "--eval-every", "50"]);
    let report = std::fs::read_to_string(run.dir.join("report.md")).unwrap();
    assert!(report.contains(&format!("attack {described}")), "{}", &report[..400]);
    Analysed { run, eval, recovered }
}

/// Blends, sines and warps change pixels everywhere: no recovered mask is
/// scored against a patch (`null`, "no patch trigger" on screen).
fn assert_no_patch_to_score(recovered: &serde_json::Value) {
    assert!(recovered.as_array().unwrap().iter().all(|l| l["on_trigger"].is_null()), "{recovered}");
}

/// A small run every analysis ran on, with `eval`'s and the trigger recovery's
/// JSON (two labels) for each attack's own checks.
struct Analysed {
    run: SmallRun,
    eval: serde_json::Value,
    recovered: serde_json::Value,
}

#[test]
fn every_analysis_runs_under_badnets_and_recovery_scores_the_mask_on_its_patch() {
    let described = "badnets (3×3 solid patch of value 1 replacing the pixels bottom-right)";
    let Analysed { run, eval, recovered } = every_analysis_runs_under("badnets", &["--attack", "badnets"], described);
    let config = &run.recorded()["config"];
    assert_eq!(config["attack"]["kind"], "badnets");
    assert_eq!(config["trigger"]["target"], 0);
    assert_eq!(config["poison_ratio"], 0.1);
    assert_eq!(config["lambda_poison"], 0.0);
    // 10 % of 320, none of them already the target class.
    let labels = common::mnist(320, 0).train.labels;
    let indices = run.poisoned_indices();
    assert_eq!(indices.len(), 32);
    assert!(indices.iter().all(|&i| labels[i as usize] != 0));
    assert_eq!(eval[0]["asr"], eval[0]["metrics"]["asr_non_target"]);
    // Each mask is scored on the patch's 9 pixels: its top 9 pixels hit a whole number of them.
    for label in recovered.as_array().unwrap() {
        let on = &label["on_trigger"];
        assert!((0.0..=1.0).contains(&on["mass_share"].as_f64().expect("a patch has a place to score")));
        let hits = on["top_pixel_overlap"].as_f64().unwrap() * 9.0;
        assert!((hits - hits.round()).abs() < 1e-9, "{on}");
    }
}

#[test]
fn every_analysis_runs_under_blended_all_to_all_which_targets_the_next_class() {
    let attack = ["--attack", "blended", "--blend-image", "noise:3", "--all-to-all"];
    let Analysed { run, eval, recovered } =
        every_analysis_runs_under("blended", &attack, "blended (α 0.2 with uniform noise, seed 3)");
    let config = &run.recorded()["config"];
    assert_eq!(config["attack"]["kind"], "blended");
    assert_eq!(config["all_to_all"], true);
    // All-to-all: every image is eligible, and a clean model sends almost no
    // triggered image to its label + 1.
    assert_eq!(run.poisoned_indices().len(), 32);
    assert!(eval[0]["asr"].as_f64().unwrap() < 30.0, "{}", eval[0]);
    assert_eq!(eval[0]["asr"], eval[0]["metrics"]["poison_acc"]);
    assert_no_patch_to_score(&recovered);
}

#[test]
fn every_analysis_runs_under_sig_which_poisons_only_the_target_class_and_keeps_its_labels() {
    let attack = ["--attack", "sig", "--target", "3"];
    let Analysed { run, recovered, .. } = every_analysis_runs_under("sig", &attack, "sig (Δ 0.1569, f 6, clean-label)");
    let labels = common::mnist(320, 0).train.labels;
    let indices = run.poisoned_indices();
    assert!(!indices.is_empty() && indices.iter().all(|&i| labels[i as usize] == 3));
    assert_eq!(run.poison_record()["clean_label"], true);
    assert_no_patch_to_score(&recovered);
}

#[test]
fn every_analysis_runs_under_wanet() {
    let attack = ["--attack", "wanet", "--poison-ratio", "0.2"];
    let Analysed { run, recovered, .. } =
        every_analysis_runs_under("wanet", &attack, "wanet (k 4, s 0.5, seed 0, cross ratio 2)");
    let config = &run.recorded()["config"];
    assert_eq!(config["attack"]["grid"].as_array().unwrap().len(), 28 * 28 * 2);
    let record = run.poison_record();
    // 20 % of 320 warped, twice as many noise-mode images beside them, apart.
    let (poisoned, cross) = (record["indices"].as_array().unwrap(), record["cross"].as_array().unwrap());
    assert_eq!((poisoned.len(), cross.len()), (64, 128));
    assert!(cross.iter().all(|c| !poisoned.contains(c)));
    assert_no_patch_to_score(&recovered);
    let report = std::fs::read_to_string(run.dir.join("report.md")).unwrap();
    assert!(report.contains("20.0 % of the training set poisoned once"));
}

/// The blend picture (a grey ramp, as a PNG and as raw f32 for the reference),
/// and the reference's JSON for `extra` flags: PyTorch's clean accuracy and ASR of
/// the committed TrojanZoo-style model under it (benches/graph_reference.py --blend).
fn blended_reference(dir: &std::path::Path, extra: &[&str]) -> (PathBuf, serde_json::Value) {
    let png = dir.join("blend.png");
    let grey: Vec<u8> = (0..28 * 28).map(|i| ((i / 28) * 9 + (i % 28) * 5) as u8).collect();
    image::GrayImage::from_raw(28, 28, grey.clone()).unwrap().save(&png).unwrap();
    let raw = dir.join("blend.f32");
    std::fs::write(&raw, grey.iter().flat_map(|&v| (f32::from(v) / 255.0).to_le_bytes()).collect::<Vec<u8>>()).unwrap();
    let reference = common::json(
        &Command::new(root().join(".venv/bin/python"))
            .arg(root().join("benches/graph_reference.py"))
            .args(["--source", &fixture("tz_mnist.py:TzMnist"), "--weights", &fixture("tz_mnist.pt"), "--norm", "none"])
            .args(["--data-dir", &common::data_dir().display().to_string(), "--test-limit", "2000"])
            .args(["--blend", &raw.display().to_string(), "--alpha", "0.2", "--target", "0"])
            .args(extra)
            .output()
            .unwrap(),
    );
    (png, reference)
}

fn fixture(name: &str) -> String {
    root().join("tests/fixtures/graph").join(name).display().to_string()
}

/// `trojanscope ARGS --checkpoints DIR --run mine --test-limit 2000`.
fn in_run(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    common::binary()
        .args(args)
        .args(["--checkpoints", &dir.display().to_string(), "--run", "mine", "--test-limit", "2000"])
        .output()
        .unwrap()
}

fn import_tz_mnist(dir: &std::path::Path, model: &str, attack: &[&str]) -> std::process::Output {
    let import = [&["import", &fixture("tz_mnist.py:TzMnist"), &fixture("tz_mnist.pt"), "--model", model], attack];
    in_run(dir, &[&import.concat()[..], &["--target", "0", "--input-norm", "none"]].concat())
}

/// The check a user's own model gets: a model normalising inside, imported with
/// a blended trigger from a PNG, α 0.2, target 0, and `eval --json` gives
/// PyTorch's clean accuracy and ASR (benches/graph_reference.py --blend) to
/// 0.01 points.
#[test]
fn an_imported_model_under_a_blended_png_scores_pytorchs_asr() {
    let dir = common::scratch("attack-import");
    let (png, reference) = blended_reference(&dir, &[]);
    let png = png.display().to_string();
    let import = import_tz_mnist(&dir, "poisoned", &["--attack", "blended", "--blend-image", &png, "--alpha", "0.2"]);
    assert!(import.status.success(), "{}", String::from_utf8_lossy(&import.stderr));
    let eval = common::json(&in_run(&dir, &["eval", "--json"]));
    let (ours, theirs) = (&eval[0], &reference);
    for (a, b) in [(&ours["metrics"]["clean_acc"], &theirs["clean_acc"]), (&ours["asr"], &theirs["asr"])] {
        assert!((a.as_f64().unwrap() - b.as_f64().unwrap()).abs() < 0.01, "ours {ours}, PyTorch's {theirs}");
    }
    // The triggered half really is blended: some predictions moved.
    assert_ne!(ours["metrics"]["rehab_acc"], ours["metrics"]["clean_acc"], "{ours}");
    // A second import with another attack into the run is refused, naming both.
    let other = import_tz_mnist(&dir, "clean", &["--attack", "badnets"]);
    common::assert_clean_failure(&other, "records the attack blended");
}

/// `--attack images`: the same blended images written by the reference as 8-bit
/// PNGs in BackdoorBench's bd_test_dataset layout score PyTorch's ASR on those
/// files; a folder covering fewer images scores only those; a file in the wrong
/// label folder is refused naming it; nothing trains on files.
#[test]
fn backdoorbenchs_poisoned_test_folder_scores_pytorchs_asr() {
    let dir = common::scratch("attack-images");
    let folder = dir.join("bd_test_dataset");
    let (_, reference) = blended_reference(&dir, &["--bd-test-out", &folder.display().to_string()]);
    let folder_arg = folder.display().to_string();
    let import = import_tz_mnist(&dir, "poisoned", &["--attack", "images", "--poisoned-test", &folder_arg]);
    assert!(import.status.success(), "{}", String::from_utf8_lossy(&import.stderr));
    let eval = common::json(&in_run(&dir, &["eval", "--json"]));
    let ours = &eval[0];
    assert_eq!(ours["metrics"]["count"], 2000, "every image kept: the folder covers all but the target's");
    for (a, b) in [(&ours["metrics"]["clean_acc"], &reference["clean_acc"]), (&ours["asr"], &reference["asr_files"])] {
        assert!((a.as_f64().unwrap() - b.as_f64().unwrap()).abs() < 0.01, "ours {ours}, PyTorch's {reference}");
    }
    // The files are the triggered twins: some predictions moved.
    assert_ne!(ours["metrics"]["rehab_acc"], ours["metrics"]["clean_acc"], "{ours}");
    // One file fewer: 1,999 images scored, none of them a clean image counted as a triggered one.
    let first = std::fs::read_dir(folder.join("1")).unwrap().next().unwrap().unwrap().path();
    let moved = dir.join("kept-aside.png");
    std::fs::rename(&first, &moved).unwrap();
    assert_eq!(common::json(&in_run(&dir, &["eval", "--json"]))[0]["metrics"]["count"], 1999);
    // The same file under another label: refused, naming it.
    let wrong = folder.join("2").join(first.file_name().unwrap());
    std::fs::rename(&moved, &wrong).unwrap();
    common::assert_clean_failure(&in_run(&dir, &["eval"]), &wrong.display().to_string());
    std::fs::rename(&wrong, &first).unwrap();
    common::assert_clean_failure(&in_run(&dir, &["train", "--phases", "clean"]), "no trigger to train with");
}
