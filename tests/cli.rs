//! The binary end to end: a small real run through every command, and bad input
//! that must end in one clear message and a non-zero exit, never a panic.

mod common;
mod svg;

use std::path::Path;
use std::process::Output;
use trojanscope::data::idx::{IdxArray, encode_idx};

fn trojanscope(args: &[&str]) -> Output {
    common::binary().args(args).output().expect("the binary runs")
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
    assert_eq!(
        lines[0],
        "unit,clean,poison (ASR),ASR excl. target,rehab,clean_lo,clean_hi,poison_lo,poison_hi,\
         asr_non_target_lo,asr_non_target_hi,rehab_lo,rehab_hi"
    );
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
    assert!(run.join("recovery-poisoned/mask-8.png").is_file());
    let overview = svg::svg_texts(&svg::figure_svg(&run.join("recovery-poisoned"), "overview"));
    assert!(overview.iter().any(|t| t.starts_with("label 8")), "{overview:?}");
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
    assert!(run.join("visualize/fc2-8-poisoned.png").is_file());
    let side_by_side = svg::svg_texts(&svg::figure_svg(&run.join("visualize"), "fc2-8"));
    assert!(side_by_side.iter().any(|t| t == "feature visualisation of fc2:8: the input that excites it most"));

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
    assert!(run.join("prune/fc1-random.png").is_file());
    let clp = svg::svg_texts(&svg::figure_svg(&run.join("prune"), "fc1-clp"));
    assert!(clp.iter().any(|t| t == "fc1 units pruned") && clp.iter().any(|t| t.starts_with("best DER ")), "{clp:?}");

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
    assert!(doctor.contains("2.11.0") && doctor.contains("poisoned model"), "{doctor}");
    assert!(
        doctor.contains("read from poisoned.json (not re-measured)") && doctor.contains("measured now"),
        "{doctor}"
    );
    assert!(doctor.contains("ok: the recorded numbers agree"), "{doctor}");

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

/// The pictures' links in a report: each image's file and the caption line after it.
fn linked_pictures(markdown: &str) -> Vec<(String, String)> {
    let lines: Vec<&str> = markdown.lines().collect();
    let mut links = Vec::new();
    for (i, line) in lines.iter().enumerate().filter(|(_, l)| l.starts_with("![")) {
        let file = line.split("](").nth(1).and_then(|rest| rest.strip_suffix(')')).expect("![title](file)");
        let caption = lines[i + 1..].iter().find(|l| !l.is_empty()).copied().unwrap_or("");
        links.push((file.to_string(), caption.to_string()));
    }
    links
}

#[test]
fn run_draws_the_report_pictures_and_links_each_one() {
    use trojanscope::engine::lab::{Lab, ModelKind};
    use trojanscope::engine::layer::Layer;
    use trojanscope::engine::run::RunDir;
    use trojanscope::figure::style::number;

    let dir = common::scratch("cli-report");
    let cp = dir.to_str().unwrap();
    let o = trojanscope(&with_run(cp, &["run", "--eval-every", "50", "--json"]));
    assert!(o.status.success(), "{}", stderr(&o));
    let run = dir.join("cli");
    let markdown = std::fs::read_to_string(run.join("report.md")).unwrap();
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("report.json")).unwrap()).unwrap();

    // Every link is relative and names a PNG that exists with its SVG beside it;
    // every figure written is linked; every caption gives its colour scale; each
    // SVG holds the figure's title.
    let links = linked_pictures(&markdown);
    let mut linked: Vec<String> = links.iter().map(|(f, _)| f.clone()).collect();
    linked.sort();
    let written = |ext: &str| {
        let mut files: Vec<String> = std::fs::read_dir(run.join("report-images"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter_map(|f| f.strip_suffix(ext).map(|stem| format!("report-images/{stem}.png")))
            .collect();
        files.sort();
        files
    };
    assert_eq!((&linked, &linked), (&written(".png"), &written(".svg")));
    let pictures = report["pictures"].as_array().unwrap();
    assert_eq!(pictures.len(), links.len());
    let mut texts = std::collections::BTreeMap::new();
    for (file, caption) in &links {
        let entry = pictures.iter().find(|p| p["file"] == file.as_str()).unwrap_or_else(|| panic!("{file} unlisted"));
        assert_eq!(entry["svg"].as_str().unwrap(), file.replace(".png", ".svg"));
        assert!(caption.starts_with('*') && (caption.contains('±') || caption.contains(" = ")), "{file}: {caption}");
        assert!(caption.contains(&format!("([SVG]({}))", entry["svg"].as_str().unwrap())), "{caption}");
        let stem = file.strip_prefix("report-images/").unwrap().strip_suffix(".png").unwrap();
        let found = svg::svg_texts(&svg::figure_svg(&run.join("report-images"), stem));
        assert!(found.iter().any(|t| t == entry["title"].as_str().unwrap()), "{file}: no title in {found:?}");
        texts.insert(stem.to_string(), found);
    }

    // The report is keyed by the weights it read.
    let poisoned = trojanscope::engine::run::files::file_sha256(&run.join("poisoned.safetensors")).unwrap();
    assert_eq!(report["models_sha256"][1], serde_json::json!(["poisoned", poisoned]));

    // The sweeps: a row per drop, named, over the layer's unit numbers; the colour
    // bar's ends are the largest drop or rise of either row.
    let baseline = &report["models"][1][1];
    for rows in report["sweeps"].as_array().unwrap() {
        let rows = rows.as_array().unwrap();
        let layer: Layer = rows[0]["layer"].as_str().unwrap().parse().unwrap();
        assert_eq!(rows.len(), layer.units());
        let drops = ["poison_acc", "clean_acc"].map(|metric| {
            let before = baseline[metric].as_f64().unwrap();
            rows.iter().map(move |r| (before - r["metrics"][metric].as_f64().unwrap()) as f32)
        });
        let span = drops.into_iter().flatten().fold(1e-12f32, |m, d| m.max(d.abs())) as f64;
        assert!(span > 0.01, "{layer}: the ablations change nothing");
        let found = &texts[&format!("sweep-{layer}")];
        for text in ["poison-accuracy drop", "clean-accuracy drop", "accuracy drop (points)", "0"] {
            assert!(found.iter().any(|t| t == text), "{layer}: {text} missing from {found:?}");
        }
        // Unit numbers run to the layer's last unit (plotters picks the step).
        let last = found.iter().filter_map(|t| t.parse::<usize>().ok()).filter(|&u| u < layer.units()).max();
        assert!(last.is_some_and(|u| u + 5 > layer.units()), "{layer}: unit numbers end at {last:?}");
        for end in [number(span, 2.0 * span), number(-span, 2.0 * span)] {
            assert!(found.contains(&end), "{layer}: colour bar end {end} missing from {found:?}");
        }
    }

    // conv1's kernels, and two units of each later swept layer: clean | poisoned, and Δ.
    assert!(texts.contains_key("kernels-conv1") && texts.contains_key("kernels-conv1-diff"));
    for layer in [Layer::Conv2, Layer::Fc1] {
        let figures = texts.keys().filter(|f| f.starts_with(&format!("kernels-{layer}-"))).count();
        assert_eq!(figures, 4, "{layer}");
    }

    // The trigger's Δ maps on digit 0: the colour bar spans ±max |Δ| of
    // (poisoned on triggered − clean on clean) over every channel.
    let run_dir = RunDir::new(&dir, "cli");
    let config = run_dir.sidecar(ModelKind::Poisoned).unwrap().config;
    let lab = Lab::new(tch::Device::Cpu, common::mnist(3000, 300), config, run_dir).unwrap();
    let n = lab.test.len() as i64;
    let clean = trojanscope::engine::probe::activations(&lab.load(ModelKind::Clean).unwrap(), &lab.test.inputs.get(0));
    let poisoned =
        trojanscope::engine::probe::activations(&lab.load(ModelKind::Poisoned).unwrap(), &lab.test.inputs.get(n));
    for layer in Layer::ALL.into_iter().filter(|l| l.is_conv()) {
        let (c, p) = (&clean[layer.position()], &poisoned[layer.position()]);
        let scale = c.values.iter().zip(&p.values).fold(1e-12f32, |m, (a, b)| m.max((b - a).abs())) as f64;
        let found = &texts[&format!("activations-{layer}-diff")];
        for end in [number(scale, 2.0 * scale), number(-scale, 2.0 * scale)] {
            assert!(found.contains(&end), "{layer}: colour bar end {end} missing from {found:?}");
        }
        let top = c.values.iter().chain(&p.values).fold(0f32, |m, v| m.max(*v)) as f64;
        assert!(texts[&format!("activations-{layer}")].contains(&number(top, top)), "{layer}");
    }

    // A second report replaces the pictures and removes those it no longer draws.
    for stale in ["stale.png", "stale.svg"] {
        std::fs::write(run.join("report-images").join(stale), b"old").unwrap();
    }
    let o = trojanscope(&with_run(cp, &["run", "--eval-every", "50", "--json"]));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!run.join("report-images/stale.png").exists() && !run.join("report-images/stale.svg").exists());
    assert_eq!(linked_pictures(&std::fs::read_to_string(run.join("report.md")).unwrap()).len(), links.len());
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
    let run = trojanscope::engine::run::RunDir::new(&dir, "cli");
    let lock = trojanscope::engine::run::RunLock::acquire(&run).unwrap();
    let o = trojanscope(&with_run(cp, &["train"]));
    last_error(&o, &format!("is being written by another process (process {})", std::process::id()));
    drop(lock);
    assert!(!dir.join("cli/clean.safetensors").exists());
}

#[test]
fn a_fashion_mnist_run_records_its_dataset_and_names_its_classes() {
    let dir = common::scratch("cli-fashion");
    let cp = dir.to_str().unwrap();
    let o = trojanscope(&with_run(cp, &["train", "--dataset", "fashion-mnist"]));
    assert!(o.status.success(), "{}", stderr(&o));
    let sidecar: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("cli/poisoned.json")).unwrap()).unwrap();
    assert_eq!(sidecar["config"]["dataset"], "fashion-mnist");
    // A white pixel in Fashion-MNIST's normalised space: (1 − 0.2860) / 0.3530.
    let amplitude = sidecar["config"]["trigger"]["amplitude"].as_f64().unwrap();
    assert!((amplitude - 2.0227).abs() < 1e-4, "{amplitude}");
    // Later commands need no flag: the sidecar says which data to read.
    let o = trojanscope(&with_run(cp, &["eval", "--per-class"]));
    let table = stdout(&o);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(table.contains("8 bag") && table.contains("9 ankle boot"), "{table}");
    let eval: serde_json::Value =
        serde_json::from_str(&stdout(&trojanscope(&with_run(cp, &["eval", "--json"])))).unwrap();
    // Trained on garments, the clean model is far above chance on garments, and
    // the trigger teaches "bag" (3,000 images: 77 % and 72 % here; the full set
    // reaches the README's figures).
    let rate = |model: usize, metric: &str| eval[model]["metrics"][metric].as_f64().unwrap();
    assert!(rate(0, "clean_acc") > 60.0, "{eval}");
    assert!(rate(1, "poison_acc") > rate(0, "poison_acc") + 40.0, "{eval}");
    let o = trojanscope(&with_run(cp, &["eval", "--dataset", "mnist"]));
    last_error(&o, "holds fashion-mnist models; --dataset mnist needs another run");
}

/// A scratch folder of runs whose run `r` holds a clean model file (never read by
/// the data errors below: the data is read before the model), for commands that
/// must get as far as reading data.
fn runs_holding_clean(name: &str) -> std::path::PathBuf {
    let dir = common::scratch(name);
    std::fs::create_dir_all(dir.join("r")).unwrap();
    std::fs::write(dir.join("r/clean.safetensors"), b"unread").unwrap();
    dir
}

#[test]
fn a_missing_data_folder_is_one_clear_error() {
    let dir = runs_holding_clean("cli-no-data");
    let checkpoints = dir.to_str().unwrap();
    let args =
        ["eval", "--model", "clean", "--checkpoints", checkpoints, "--run", "r", "--data-dir", "/nonexistent/mnist"];
    let o = trojanscope(&args);
    // eval reads the test split only, so that is the file it misses.
    assert_clean_failure(&o, "/nonexistent/mnist/t10k-images-idx3-ubyte: file not found");
    assert!(stderr(&o).contains("scripts/run.sh fetches it into data/mnist"), "{}", stderr(&o));
    // A run without the models a command studies fails on that before reading any
    // data: the missing data folder goes unnoticed.
    for command in [&["eval"][..], &["sweep", "conv1"], &["swap"], &["recover"], &["circuit"]] {
        let mut args = command.to_vec();
        args.extend(["--checkpoints", checkpoints, "--run", "nosuch", "--data-dir", "/nonexistent/mnist"]);
        let o = trojanscope(&args);
        assert_clean_failure(&o, "model in ");
        assert!(
            stderr(&o).contains("nosuch: train it first") && !stderr(&o).contains("/nonexistent"),
            "{}",
            stderr(&o)
        );
    }
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
    let runs = runs_holding_clean("cli-corrupt-runs");
    let run = ["--checkpoints", runs.to_str().unwrap(), "--run", "r"];
    let o = trojanscope(&[&["eval", "--model", "clean", "--data-dir", dir.to_str().unwrap()][..], &run].concat());
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
    if !doctor_json()["cuda_available"].as_bool().unwrap() {
        assert_clean_failure(&trojanscope(&["eval", "--device", "cuda"]), "CUDA is not available");
    }
    assert_clean_failure(&trojanscope(&["eval", "--device", "tpu"]), "unknown device 'tpu'");
    // Argument errors exit 1 like every other error, with one line naming the value.
    assert_clean_failure(&trojanscope(&["ablate", "conv1:99"]), "conv1 has units 0..31, not 99");
    let o = trojanscope(&["train", "--poison-fraction", "1.5", "--checkpoints", "/tmp/unused"]);
    assert_clean_failure(&o, "poison fraction 1.5");
}

fn doctor_json() -> serde_json::Value {
    serde_json::from_str(&stdout(&trojanscope(&["doctor", "--json"]))).unwrap()
}

/// libtorch_cuda is opened at run time, not linked: `doctor` opens it, and then a
/// tensor on the GPU reaches the CUDA backend (on a machine without a GPU libtorch
/// answers that there is no driver, not that CUDA support is missing). `--device
/// cuda` opens it too and says so when no GPU can be used.
#[test]
fn cuda_support_is_opened_when_a_gpu_is_asked_for() {
    let doctor = doctor_json();
    assert_eq!(doctor["cuda_support"], "loaded", "{doctor}");
    let backend = doctor["cuda_backend"].as_str().unwrap();
    assert!(backend == "ok" || backend.contains("NVIDIA driver"), "{backend}");
    if !doctor["cuda_available"].as_bool().unwrap() {
        let o = trojanscope(&["eval", "--device", "cuda"]);
        assert_clean_failure(&o, "libtorch CUDA support: loaded, but no usable GPU");
    }
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
        (&["patch"], "patch needs the LAYER"),
        (&["circuit", "--nodes", "layer3"], "--nodes chooses an imported graph's nodes"),
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
/// virtual environment) and the fast one (benches/fast_pytorch.py) alternately with
/// our epochs and reports them side by side, then times this executable whole on
/// the saved run.
#[test]
fn bench_measures_both_sides_and_reports_ratios() {
    let dir = common::scratch("cli-bench");
    // The whole-process figures start the commands and the explorer on a saved run.
    let trained = trojanscope(&with_run(dir.to_str().unwrap(), &["train", "--eval-every", "50"]));
    assert!(trained.status.success(), "{}", stderr(&trained));
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
        "--strip-inputs",
        "10",
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
        "STRIP (N = 100) over 20 inputs",
        "badnets: poison 10 % of the training set",
        "wanet: poison 10 % of the training set",
        "sig: the triggered test set",
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
    // The fast PyTorch procedure has a figure beside our epochs, metrics and sweeps.
    assert!(report["fast_pytorch_error"].is_null(), "{}", report["fast_pytorch_error"]);
    for name in ["clean epoch", "poison epoch", "metrics", "conv1 sweep", "conv2 sweep", "fc1 sweep"] {
        let fast = figure(name)["fast_pytorch_s"].as_f64().unwrap_or(f64::NAN);
        assert!(fast.is_finite() && fast > 0.0, "{name}: {}", figure(name));
    }
    assert!(figure("toggle a conv1")["fast_pytorch_s"].is_null());
    // Even batched, re-running the layers downstream per unit loses to our cached sweep.
    let conv2 = figure("conv2 sweep");
    assert!(conv2["fast_pytorch_s"].as_f64().unwrap() > 5.0 * conv2["ours_s"].as_f64().unwrap(), "{conv2}");
    // Each command and the explorer, started whole on the saved run.
    let whole = report["whole_process"].as_array().unwrap();
    let names: Vec<&str> = whole.iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "whole process: eval --model poisoned",
            "whole process: ablate conv1:31",
            "whole process: sweep conv1",
            "whole process: swap",
            "whole process: explorer → ready",
        ]
    );
    for p in whole {
        assert!(p["not_measured"].is_null(), "{p}");
        assert!(p["wall_s"].as_f64().unwrap() > 0.0 && p["peak_rss_bytes"].as_u64().unwrap() > 0, "{p}");
    }
    // Each model's cache: the 300 clean images' conv2 pre-activation (10·10·64), the
    // triggered twins' on the 2×2 lines the trigger's one pooled cell reads, and
    // fc1's pre-activation and the logits of all 600 (16 + 10) floats. The pooled
    // conv2 output (5·5·64 each) is not held until a conv2 ablation needs it.
    let cache = report["cache_bytes_three_models"].as_u64().unwrap();
    assert_eq!(cache, 3 * (300 * 6400 + 300 * 2 * 2 * 64 + 600 * (16 + 10)) * 4);
    assert!(report["peak_rss_bytes"].as_u64().unwrap() > cache);
}

fn trojanscope_with(args: &[&str], variable: (&str, &str)) -> Output {
    common::binary().args(args).env(variable.0, variable.1).output().expect("the binary runs")
}

#[test]
fn a_mistyped_cpu_path_stops_every_command_at_start() {
    // Ignored, it would run the CPU's best loops while the user believes they are
    // testing another path (the GPU's, say).
    for args in [&["eval"][..], &["doctor"], &["sweep", "conv1"], &[]] {
        let o = trojanscope_with(args, ("TROJANSCOPE_CPU_PATH", "avx1024"));
        assert_clean_failure(&o, r#"TROJANSCOPE_CPU_PATH="avx1024" is not one of torch, portable, avx2, avx512"#);
        assert_eq!(stderr(&o).lines().count(), 1, "{args:?}: {}", stderr(&o));
        assert!(o.stdout.is_empty(), "{args:?}");
    }
    // A valid level is named by doctor, with why.
    let o = trojanscope_with(&["doctor", "--json"], ("TROJANSCOPE_CPU_PATH", "torch"));
    let doctor: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert!(doctor["cpu_path"].as_str().unwrap().starts_with("torch (TROJANSCOPE_CPU_PATH=torch;"), "{doctor}");
}

#[test]
fn configurations_that_cannot_learn_are_refused_before_anything_is_written() {
    let dir = common::scratch("cli-cannot-learn");
    let cp = dir.to_str().unwrap();
    // The probe's finding: three chance-level models saved with exit 0.
    let o = trojanscope(&["train", "--train-limit", "1", "--checkpoints", cp, "--run", "tiny"]);
    last_error(&o, "1 training images are fewer than one batch per class (32 × 10 = 320)");
    let o = trojanscope(&["train", "--train-limit", "319", "--checkpoints", cp, "--run", "tiny"]);
    last_error(&o, "319 training images are fewer than one batch per class");
    let o = trojanscope(&["train", "--train-limit", "79", "--batch-size", "8", "--checkpoints", cp, "--run", "tiny"]);
    last_error(&o, "79 training images are fewer than one batch per class (8 × 10 = 80)");
    assert!(!dir.join("tiny").join("clean.safetensors").exists(), "nothing saved");
    // Threads beyond the cores only take turns on them (a sweep ran 40× slower).
    let cores = std::thread::available_parallelism().unwrap().get();
    let o = trojanscope(&["sweep", "conv1", "--threads", "1000", "--checkpoints", cp, "--run", "tiny"]);
    assert_clean_failure(&o, &format!("1000 threads is more than the {cores} cores this process may use"));
    assert_clean_failure(&trojanscope(&["eval", "--threads", "0"]), "at least 1 thread");
}

#[test]
fn doctor_says_which_numbers_it_measured_and_which_it_read() {
    use trojanscope::engine::lab::{Lab, ModelKind};
    use trojanscope::engine::run::RunDir;
    let dir = common::scratch("cli-doctor");
    let run = RunDir::new(&dir, "r");
    let config = trojanscope::engine::train::TrainConfig::default();
    let lab = Lab::new(tch::Device::Cpu, common::mnist(0, 300), config, run.clone()).unwrap();
    let net = trojanscope::engine::checkpoint::load_net(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pytorch_net.safetensors"),
        tch::Device::Cpu,
    )
    .unwrap();
    let saved = lab.save(ModelKind::Poisoned, &net, &lab.config, 0.0, None).unwrap();
    let args = ["doctor", "--json", "--checkpoints", dir.to_str().unwrap(), "--run", "r", "--test-limit", "300"];
    let model = |o: &Output| -> serde_json::Value {
        let doctor: serde_json::Value = serde_json::from_str(&stdout(o)).unwrap();
        doctor["models"].as_array().unwrap().iter().find(|m| m["model"] == "poisoned").unwrap().clone()
    };
    let fresh = model(&trojanscope(&args));
    assert_eq!(fresh["measured"]["poison_acc"].as_f64().unwrap(), saved.poison_acc, "{fresh}");
    assert_eq!(fresh["recorded"]["poison_acc"].as_f64().unwrap(), saved.poison_acc, "{fresh}");
    assert!(fresh["verdict"].as_str().unwrap().starts_with("ok: the recorded numbers agree"), "{fresh}");
    // The probe's finding: a sidecar left from other weights read as "ok".
    let mut sidecar: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.sidecar_path(ModelKind::Poisoned)).unwrap()).unwrap();
    sidecar["metrics"]["poison_acc"] = serde_json::json!(85.7);
    std::fs::write(run.sidecar_path(ModelKind::Poisoned), sidecar.to_string()).unwrap();
    let stale = model(&trojanscope(&args));
    let verdict = stale["verdict"].as_str().unwrap();
    let expected = format!("MISMATCH: poison 85.70 recorded, {:.2} measured", saved.poison_acc);
    assert!(verdict.starts_with(&expected), "{verdict}");
    let table = stdout(&trojanscope(&[&["doctor"][..], &args[2..]].concat()));
    assert!(
        table.contains("poison 85.70 / rehab") && table.contains("read from poisoned.json (not re-measured)"),
        "{table}"
    );
    assert!(
        table.contains(&format!("poison {:.2} / rehab", saved.poison_acc)) && table.contains("measured now"),
        "{table}"
    );
    // Measured on fewer images than recorded: shown, not compared.
    let fewer = model(&trojanscope(&[&args[..args.len() - 1], &["200"]].concat()));
    assert_eq!(fewer["measured"]["count"], 200);
    assert!(
        fewer["verdict"].as_str().unwrap().starts_with("not compared: recorded on 300 test images, measured on 200")
    );
}

#[test]
fn tf32_is_off_unless_a_flag_allows_it() {
    // libtorch's default runs a GPU's convolutions in TF32; the binary switches it
    // off at start, as libtorch reads its own flags back.
    assert!(doctor_json()["tf32"].as_str().unwrap().starts_with("off: full float32"));
    let allowed: serde_json::Value =
        serde_json::from_str(&stdout(&trojanscope(&["doctor", "--json", "--allow-tf32"]))).unwrap();
    assert_eq!(allowed["tf32"], "on for convolutions, recurrent layers, matrix products (--allow-tf32)");
}
