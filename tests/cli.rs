//! The binary end to end: a small real run through every command, and bad input
//! that must end in one clear message and a non-zero exit, never a panic.

mod common;

use std::path::Path;
use std::process::{Command, Output};
use trojanscope::data::idx::{IdxArray, encode_idx};

fn trojanscope(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_trojanscope"))
        .args(args)
        .env("TROJANSCOPE_DATA_DIR", common::data_dir())
        .output()
        .expect("the binary runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Fails with exit code 1 and an `error:` line containing `needle`, no panic.
fn assert_clean_failure(o: &Output, needle: &str) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(1), "stderr: {err}");
    assert!(err.starts_with("error: "), "{err}");
    assert!(err.contains(needle), "expected '{needle}' in: {err}");
    assert!(!err.contains("panicked") && !err.contains("backtrace") && !err.contains("RUST_BACKTRACE"), "{err}");
}

/// Exit code 1, no panic, and the last line of stderr (after what training
/// announces) is the error containing `needle`; returns that line.
fn last_error(o: &Output, needle: &str) -> String {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(1), "stderr: {err}");
    assert!(!err.contains("panicked"), "{err}");
    let last = err.lines().last().unwrap_or("").to_string();
    assert!(last.starts_with("error: ") && last.contains(needle), "expected '{needle}' in: {last}");
    last
}

const SMALL: [&str; 4] = ["--train-limit", "3000", "--test-limit", "300"];

fn with_run<'a>(checkpoints: &'a str, args: &[&'a str]) -> Vec<&'a str> {
    let mut all = args.to_vec();
    all.extend(["--checkpoints", checkpoints, "--run", "cli"]);
    all.extend(SMALL);
    all
}

#[test]
fn every_command_works_on_a_small_real_run() {
    let dir = common::scratch("cli-run");
    let cp = dir.to_str().unwrap();
    let o = trojanscope(&with_run(cp, &["train", "--eval-every", "50"]));
    assert!(o.status.success(), "{}", stderr(&o));
    for kind in ["clean", "poisoned", "rehab"] {
        assert!(dir.join("cli").join(format!("{kind}.safetensors")).is_file());
        assert!(dir.join("cli").join(format!("{kind}.json")).is_file());
    }
    let eval: serde_json::Value =
        serde_json::from_str(&stdout(&trojanscope(&with_run(cp, &["eval", "--json"])))).unwrap();
    assert_eq!(eval.as_array().unwrap().len(), 3);
    assert_eq!(eval[1]["model"], "poisoned");
    assert_eq!(eval[1]["metrics"]["count"], 300);

    let ablate: serde_json::Value = serde_json::from_str(&stdout(&trojanscope(&with_run(
        cp,
        &["ablate", "conv1:1,2 fc1:0", "--json", "--reference"],
    ))))
    .unwrap();
    assert_eq!(ablate["set"], "conv1:1,2 fc1:0");
    assert_eq!(ablate["ablated"]["clean_acc"], ablate["reference"]["clean_acc"]);

    let csv = stdout(&trojanscope(&with_run(cp, &["sweep", "fc1", "--csv"])));
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], "unit,clean,poison (ASR),ASR excl. target,rehab");
    assert_eq!(lines.len(), 17);
    assert!(lines[1].starts_with("fc1:0,"));

    let swap = stdout(&trojanscope(&with_run(cp, &["swap"])));
    assert_eq!(swap.lines().count(), 2 + 16, "{swap}");
    assert!(swap.contains("conv1 (0) + conv2 (3) + fc1 (7) + fc2 (9)"));

    let diff: serde_json::Value =
        serde_json::from_str(&stdout(&trojanscope(&with_run(cp, &["diff", "--json"])))).unwrap();
    assert_eq!(diff.as_array().unwrap().len(), 4);
    assert!(diff[0]["total"]["l1"].as_f64().unwrap() > 0.0);

    let features: serde_json::Value =
        serde_json::from_str(&stdout(&trojanscope(&with_run(cp, &["features", "conv1", "5", "-k", "3", "--json"]))))
            .unwrap();
    assert_eq!(features["top"].as_array().unwrap().len(), 3);
    let top = features["top"][0]["score"].as_f64().unwrap();
    let bottom = features["bottom"][0]["score"].as_f64().unwrap();
    assert!(top >= bottom);

    // Trigger recovery: one object per label with its mask and pattern; pictures
    // and the saved report beside the run.
    let small_recovery = ["--images", "200", "--epochs", "2", "--test-images", "100"];
    let mut args = vec!["recover", "--json"];
    args.extend(small_recovery);
    let o = trojanscope(&with_run(cp, &args));
    assert!(o.status.success(), "{}", stderr(&o));
    let labels: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let labels = labels.as_array().unwrap();
    assert_eq!(labels.len(), 10);
    for (i, l) in labels.iter().enumerate() {
        assert_eq!(l["label"], i);
        assert_eq!(l["mask"].as_array().unwrap().len(), 784);
        assert_eq!(l["pattern"].as_array().unwrap().len(), 784);
        assert!(l["l1"].as_f64().unwrap() > 0.0 && l["success"].as_f64().unwrap() <= 100.0);
        assert!(l["anomaly_index"].as_f64().unwrap() >= 0.0 && l["flagged"].is_boolean());
    }
    let run = dir.join("cli");
    assert!(run.join("recovery-poisoned.json").is_file());
    assert!(run.join("recovery-poisoned/overview.png").is_file() && run.join("recovery-poisoned/mask-8.png").is_file());
    // Unlearning label 8's recovered trigger writes the unlearned model, which the
    // other commands then know.
    let o = trojanscope(&with_run(cp, &["unlearn", "--label", "8", "--images", "600", "--json"]));
    assert!(o.status.success(), "{}", stderr(&o));
    let unlearned: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(unlearned["label"], 8);
    assert!(run.join("unlearned.safetensors").is_file() && run.join("unlearned.json").is_file());
    let eval: serde_json::Value =
        serde_json::from_str(&stdout(&trojanscope(&with_run(cp, &["eval", "--model", "unlearned", "--json"]))))
            .unwrap();
    assert_eq!(eval[0]["metrics"]["poison_acc"], unlearned["after"]["poison_acc"]);
    let o = trojanscope(&with_run(cp, &["visualize", "fc2", "8", "--steps", "30", "--json"]));
    assert!(o.status.success(), "{}", stderr(&o));
    let vis: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(vis.as_array().unwrap().len(), 3);
    assert!(vis[1]["activation"].as_f64().unwrap() > vis[1]["start_activation"].as_f64().unwrap());
    assert!(run.join("visualize/fc2-8.png").is_file() && run.join("visualize/fc2-8-poisoned.png").is_file());

    // A PyTorch-exported checkpoint can be examined too.
    let fixture = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/pytorch_net.safetensors");
    let mut args = vec!["recover", "--checkpoint", fixture, "--labels", "3,8"];
    args.extend(small_recovery);
    let o = trojanscope(&with_run(cp, &args));
    assert!(o.status.success(), "{}", stderr(&o));
    // Two header lines, a row per label and the verdict.
    assert!(stdout(&o).lines().count() == 5 && run.join("recovery-pytorch_net.json").is_file(), "{}", stdout(&o));

    // Pruning curves: every point of each ranking as CSV, from nothing to all pruned.
    let csv = stdout(&trojanscope(&with_run(cp, &["prune", "fc1", "--ranking", "clp,random", "--csv"])));
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], "ranking,pruned,unit,clean,poison,asr_non_target,rehab,der");
    assert_eq!(lines.len(), 1 + 2 * 17, "{csv}");
    assert!(lines[1].starts_with("clp,0,,") && lines[18].starts_with("random,0,,"), "{csv}");
    assert!(run.join("prune/fc1-clp.png").is_file() && run.join("prune/fc1-random.png").is_file());

    // Patching: one row per unit in sweep's shape plus the direction and logit
    // difference, equal to the slow path.
    let o = trojanscope(&with_run(cp, &["patch", "conv1", "--direction", "noise", "--reference", "--json"]));
    assert!(o.status.success(), "{}", stderr(&o));
    let patch: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(patch["direction"], "noise");
    assert!(patch["meaning"].as_str().unwrap().contains("clean images run"));
    let rows = patch["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 32);
    assert_eq!((rows[5]["layer"].as_str(), rows[5]["unit"].as_u64()), (Some("conv1"), Some(5)));
    assert!(
        rows[5]["metrics"]["clean_acc"].is_f64() && rows[5]["logit_diff"].is_f64() && rows[5]["direction"] == "noise"
    );
    // At most one image of these 300 may flip between the two paths (a near-tie of
    // two logits, rounded differently): 100/279 points of the non-target images.
    assert!(patch["reference_gap"].as_f64().unwrap() <= 0.4, "{}", patch["reference_gap"]);
    // The circuit search: a verified report with its Pareto front.
    let o = trojanscope(&with_run(cp, &["circuit", "--max-size", "4", "--json"]));
    assert!(o.status.success(), "{}", stderr(&o));
    let circuit: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let front = circuit["front"].as_array().unwrap();
    assert!(front.len() >= 2 && front[0]["size"] == 0, "the unablated model starts the front");
    assert!(circuit["evaluated"].as_u64().unwrap() > 496 + 2016, "both layers' pairs are tried");
    assert!(circuit["verified_sets"].as_u64().unwrap() >= front.len() as u64);
    assert!(circuit["reference_gap"].as_f64().unwrap() <= 0.4, "{}", circuit["reference_gap"]);

    let doctor = stdout(&trojanscope(&with_run(cp, &["doctor"])));
    assert!(doctor.contains("2.11.0") && doctor.contains("poisoned model") && doctor.contains("ok: clean"), "{doctor}");

    // Retraining with another configuration into the same run is refused by `run`.
    let o = trojanscope(&with_run(cp, &["run", "--seed", "5"]));
    assert_clean_failure(&o, "another configuration");

    // A garbage sidecar is a warning: the weights beside it still serve every command.
    std::fs::write(run.join("clean.json"), "{ not json").unwrap();
    let o = trojanscope(&with_run(cp, &["eval", "--json"]));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("warning:") && stderr(&o).contains("clean.json: malformed JSON"), "{}", stderr(&o));
    let eval: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(eval.as_array().unwrap().len(), 3);
}

#[test]
fn a_diverging_run_and_a_second_writer_are_refused_clearly() {
    let dir = common::scratch("cli-diverge");
    let cp = dir.to_str().unwrap();
    let o = trojanscope(&with_run(cp, &["train", "--lr", "1000"]));
    let last = last_error(&o, "error: the clean phase diverged at step 25: loss ");
    assert!(last.contains("learning rate 1000"), "{last}");
    assert!(!dir.join("cli/clean.safetensors").exists() && !dir.join("cli/poisoned.safetensors").exists());
    // While this process holds the run's lock, a training command names it and stops.
    let run = trojanscope::engine::lab::RunDir::new(&dir, "cli");
    let lock = trojanscope::engine::lab::RunLock::acquire(&run).unwrap();
    let o = trojanscope(&with_run(cp, &["train"]));
    last_error(&o, &format!("is being written by another process (process {})", std::process::id()));
    drop(lock);
    assert!(!dir.join("cli/clean.safetensors").exists());
}

#[test]
fn a_missing_data_folder_is_one_clear_error() {
    let o = trojanscope(&["eval", "--data-dir", "/nonexistent/mnist"]);
    assert_clean_failure(&o, "/nonexistent/mnist/train-images-idx3-ubyte: file not found");
}

#[test]
fn a_corrupt_data_file_is_one_clear_error() {
    let dir = common::scratch("cli-corrupt");
    for name in
        ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]
    {
        std::fs::copy(common::data_dir().join(name), dir.join(name)).unwrap();
    }
    let labels = dir.join("t10k-labels-idx1-ubyte");
    let bytes = std::fs::read(&labels).unwrap();
    std::fs::write(&labels, &bytes[..bytes.len() - 100]).unwrap();
    let o = trojanscope(&["eval", "--data-dir", dir.to_str().unwrap()]);
    assert_clean_failure(&o, "truncated");
    assert!(stderr(&o).contains("t10k-labels-idx1-ubyte"));
}

#[test]
fn a_mismatched_checkpoint_is_one_clear_error() {
    let dir = common::scratch("cli-mismatch");
    let run = dir.join("bad");
    std::fs::create_dir_all(&run).unwrap();
    let wrong = tch::Tensor::zeros([8, 1, 3, 3], (tch::Kind::Float, tch::Device::Cpu));
    tch::Tensor::write_safetensors(&[("net.0.weight", &wrong)], run.join("poisoned.safetensors")).unwrap();
    let o = trojanscope(&["eval", "--model", "poisoned", "--checkpoints", dir.to_str().unwrap(), "--run", "bad"]);
    assert_clean_failure(&o, "'net.0.weight' has shape [8, 1, 3, 3], expected [32, 1, 3, 3]");
    let o = trojanscope(&["eval", "--model", "rehab", "--checkpoints", dir.to_str().unwrap(), "--run", "bad"]);
    assert_clean_failure(&o, "no rehab model");
}

#[test]
fn impossible_requests_are_refused_clearly() {
    if !tch::Cuda::is_available() {
        assert_clean_failure(&trojanscope(&["eval", "--device", "cuda"]), "CUDA is not available");
    }
    assert_clean_failure(&trojanscope(&["eval", "--device", "tpu"]), "unknown device 'tpu'");
    // Argument errors exit 1 like every other error, with one line naming the value.
    assert_clean_failure(&trojanscope(&["ablate", "conv1:99"]), "conv1 has units 0..31, not 99");
    let o = trojanscope(&["train", "--poison-fraction", "1.5", "--checkpoints", "/tmp/unused"]);
    assert_clean_failure(&o, "poison fraction 1.5");
}

#[test]
fn trigger_commands_refuse_bad_input_clearly() {
    let dir = common::scratch("cli-trigger-bad");
    let cp = dir.to_str().unwrap();
    assert_clean_failure(&trojanscope(&with_run(cp, &["recover", "--labels", "3,12"])), "unknown label 12");
    assert_clean_failure(&trojanscope(&with_run(cp, &["recover", "--images", "0"])), "must each be at least 1");
    assert_clean_failure(&trojanscope(&with_run(cp, &["visualize", "conv1", "32"])), "conv1 has units 0..=31, not 32");
    let wrong = dir.join("wrong.safetensors");
    let tensor = tch::Tensor::zeros([16, 1, 3, 3], (tch::Kind::Float, tch::Device::Cpu));
    tch::Tensor::write_safetensors(&[("net.0.weight", &tensor)], &wrong).unwrap();
    let o = trojanscope(&with_run(cp, &["recover", "--checkpoint", wrong.to_str().unwrap()]));
    assert_clean_failure(&o, "'net.0.weight' has shape [16, 1, 3, 3], expected [32, 1, 3, 3]");
    // No run trained here: unlearning says which model is missing.
    assert_clean_failure(&trojanscope(&with_run(cp, &["unlearn"])), "no poisoned model");
    assert_clean_failure(
        &trojanscope(&with_run(cp, &["unlearn", "--model", "unlearned"])),
        "pick the model to unlearn",
    );
    // Nothing half-written by any of them.
    assert!(!dir.join("cli").join("recovery-poisoned.json").exists());
}

#[test]
fn patching_and_circuit_refuse_bad_input_in_one_line() {
    let dir = common::scratch("cli-patch-bad");
    let cp = dir.to_str().unwrap();
    for (args, needle) in [
        (&["patch", "conv9"][..], "unknown layer 'conv9'"),
        (&["patch", "conv1", "--direction", "sideways"], "unknown patching direction 'sideways'"),
        (&["patch", "conv1", "--to-unit", "64"], "conv2 has units 0..63, not 64"),
        (&["patch", "fc2", "--to-unit", "1"], "fc2 has no next layer"),
        (&["patch", "conv1", "--donor", "teacher"], "unknown model 'teacher'"),
        (&["patch", "conv1", "--direction", "noise", "--donor", "clean"], "needs --direction model"),
        (&["patch", "conv1", "--direction", "model"], "needs --donor MODEL"),
        (&["prune", "conv1", "--ranking", "magnitude"], "unknown ranking 'magnitude'"),
        (&["circuit", "--model", "teacher"], "unknown model 'teacher'"),
        (&["circuit"], "no poisoned model"),
    ] {
        let o = trojanscope(&with_run(cp, args));
        assert_clean_failure(&o, needle);
        assert!(stderr(&o).lines().count() <= 2, "{args:?}: {}", stderr(&o));
    }
}

#[test]
fn gzip_data_from_another_folder_is_accepted() {
    let dir = common::scratch("cli-gz");
    let write = |name: &str, array: IdxArray| {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut enc, &encode_idx(&array)).unwrap();
        std::fs::write(dir.join(format!("{name}.gz")), enc.finish().unwrap()).unwrap();
    };
    write("train-images-idx3-ubyte", IdxArray { dims: vec![4, 28, 28], data: vec![0; 4 * 784] });
    write("train-labels-idx1-ubyte", IdxArray { dims: vec![4], data: vec![1, 2, 3, 4] });
    write("t10k-images-idx3-ubyte", IdxArray { dims: vec![2, 28, 28], data: vec![9; 2 * 784] });
    write("t10k-labels-idx1-ubyte", IdxArray { dims: vec![2], data: vec![7, 8] });
    let out = stdout(&trojanscope(&["doctor", "--data-dir", dir.to_str().unwrap()]));
    assert!(out.contains("ok: 4 train, 2 test images"), "{out}");
    assert!(Path::new(&dir).join("t10k-labels-idx1-ubyte.gz").is_file());
}

#[test]
fn the_explorer_off_a_terminal_says_so_and_writes_nothing_to_stdout() {
    let o = trojanscope(&[]);
    assert_clean_failure(&o, "the explorer needs an interactive terminal");
    assert!(o.stdout.is_empty(), "no escape sequences into a pipe: {:?}", stdout(&o));
}

/// `bench` runs the study's PyTorch loop (benches/study_pytorch.py, from the same
/// virtual environment) alternately with our epochs and reports both side by side.
#[test]
fn bench_measures_both_sides_and_reports_ratios() {
    let dir = common::scratch("cli-bench");
    let args = [
        "bench",
        "--json",
        "--repeat",
        "2",
        "--sweep-channels",
        "1",
        "--threads",
        "1",
        "--recover-images",
        "160",
        "--recover-epochs",
        "2",
    ];
    let o = trojanscope(&with_run(dir.to_str().unwrap(), &args));
    assert!(o.status.success(), "{}", stderr(&o));
    let report: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert!(report["pytorch_error"].is_null(), "{}", report["pytorch_error"]);
    let figures = report["figures"].as_array().unwrap();
    let figure = |name: &str| figures.iter().find(|f| f["name"].as_str().unwrap().starts_with(name)).unwrap();
    for name in [
        "clean epoch",
        "poison epoch",
        "metrics",
        "conv1 sweep",
        "conv2 sweep",
        "fc1 sweep",
        "toggle a conv1",
        "trigger recovery, all labels (160 images × 2 epochs)",
        "patch every conv1 unit (denoise",
        "patch every conv2 unit (noise",
        "every conv1 pair (496 sets",
        "whole circuit search",
    ] {
        let f = figure(name);
        let (ours, theirs) = (f["ours_s"].as_f64().unwrap(), f["pytorch_s"].as_f64().unwrap());
        assert!(ours > 0.0 && theirs > 0.0, "{name}: {f}");
    }
    // Sweeping conv2 from the cache beats reloading and re-evaluating per channel.
    let conv2 = figure("conv2 sweep");
    assert!(conv2["pytorch_s"].as_f64().unwrap() > 5.0 * conv2["ours_s"].as_f64().unwrap(), "{conv2}");
    assert!(figure("rehab epoch")["pytorch_s"].is_null());
    // Patching from the cache beats a hooked forward per unit.
    let patch = figure("patch every conv2 unit (denoise");
    assert!(patch["pytorch_s"].as_f64().unwrap() > 5.0 * patch["ours_s"].as_f64().unwrap(), "{patch}");
    // Both recoveries ran on the same model and name their smallest mask.
    let verdict = &report["recovery_verdict"];
    assert!(verdict["ours_smallest"].as_u64().unwrap() < 10, "{verdict}");
    assert!(verdict["pytorch_smallest"].as_u64().unwrap() < 10, "{verdict}");
    assert!(figure("feature visualisation")["ours_s"].as_f64().unwrap() > 0.0);
    // Each model's cache: 2·300 images × (10·10·64 + 5·5·64 + 16 + 10) floats.
    let cache = report["cache_bytes_three_models"].as_u64().unwrap();
    assert_eq!(cache, 3 * 600 * (6400 + 1600 + 16 + 10) * 4);
    assert!(report["peak_rss_bytes"].as_u64().unwrap() > cache);
}
