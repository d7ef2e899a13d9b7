//! Colour images end to end: a tiny CIFAR-10 in the binary layout made here (each
//! class a coloured block at its own place on noise), a width-4 pre-activation
//! ResNet trained on it by the binary, `eval` and `ablate` on the run, the run's
//! record, the refusals, and the explorer showing the image in colour at 80×24; an
//! image folder of three classes whose size, classes and statistics the run records;
//! GTSRB's 43 classes and computed statistics through training and `eval`.

mod tui_support;

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;
use tui_support::scratch;
use tui_support::shared::{binary, json};
use tui_support::tmux::Tmux;

const TRAIN_PER_BATCH: usize = 128;
const TEST_IMAGES: usize = 200;

/// Class `c`'s colour and the top-left corner of its 8×5 block.
fn block(c: usize) -> ([u8; 3], usize, usize) {
    ([(c * 50 % 256) as u8, ((c * 90 + 60) % 256) as u8, (255 - c * 25) as u8], (c / 5) * 12 + 4, (c % 5) * 5 + 2)
}

/// Record `n` of a batch seeded `seed`: label `n % 10`, noise in 0..100, the class's block.
fn record(n: usize, seed: usize) -> Vec<u8> {
    let c = n % 10;
    let noise = |k: usize| ((k * 2_654_435_761 + (n + 1000 * seed) * 40_503) >> 9) % 100;
    let mut image: Vec<u8> = (0..3072).map(|k| noise(k) as u8).collect();
    let (colour, row, col) = block(c);
    for (ch, &value) in colour.iter().enumerate() {
        for y in row..row + 8 {
            for x in col..col + 5 {
                image[ch * 1024 + y * 32 + x] = value;
            }
        }
    }
    [vec![c as u8], image].concat()
}

fn batch(count: usize, seed: usize) -> Vec<u8> {
    (0..count).flat_map(|n| record(n, seed)).collect()
}

/// 640 training and 200 test images in CIFAR-10's binary layout.
fn cifar_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = scratch("cifar-data");
        let names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"];
        std::fs::write(dir.join("batches.meta.txt"), names.join("\n")).unwrap();
        for b in 1..=5 {
            std::fs::write(dir.join(format!("data_batch_{b}.bin")), batch(TRAIN_PER_BATCH, b)).unwrap();
        }
        std::fs::write(dir.join("test_batch.bin"), batch(TEST_IMAGES, 0)).unwrap();
        dir
    })
}

/// The flags every command here takes: the run `c` in its folder, the data, one thread.
fn on_run(checkpoints: &Path) -> Vec<String> {
    ["--checkpoints", &checkpoints.display().to_string(), "--run", "c", "--threads", "1"]
        .into_iter()
        .chain(["--data-dir", &cifar_dir().display().to_string()])
        .map(String::from)
        .collect()
}

/// Clean and poisoned PreActResNet-18s of width 4, a 6×6 white BadNets patch on a
/// fifth of the training set, three epochs each (seconds on one core).
fn cifar_run() -> &'static Path {
    static RUN: OnceLock<PathBuf> = OnceLock::new();
    RUN.get_or_init(|| {
        let checkpoints = scratch("cifar-run");
        let out = binary()
            .args(on_run(&checkpoints))
            .args(["train", "--preset", "preactresnet18", "--width", "4", "--dataset", "cifar10"])
            .args(["--epochs", "3", "--phases", "clean,poison", "--poison-ratio", "0.2", "--patch-size", "6"])
            .output()
            .expect("the binary runs");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        checkpoints
    })
}

fn command(args: &[&str]) -> Value {
    json(&binary().args(on_run(cifar_run())).args(args).output().unwrap())
}

#[test]
fn a_graph_trained_on_cifar10_learns_the_classes_and_the_backdoor_and_eval_and_ablate_run_on_it() {
    let evals = command(&["eval", "--model", "clean,poisoned", "--json"]);
    let metrics = |i: usize| evals[i]["metrics"].clone();
    let (clean, poisoned) = (metrics(0), metrics(1));
    let at = |m: &Value, k: &str| m[k].as_f64().unwrap();
    assert_eq!(at(&clean, "count"), TEST_IMAGES as f64);
    assert_eq!(clean["per_class_clean"].as_array().unwrap().len(), 10);
    assert!(at(&clean, "clean_acc") >= 70.0, "{clean}");
    // The clean model ignores the patch; the poisoned one obeys it and keeps its classes.
    assert!(at(&clean, "asr_non_target") <= 10.0, "{clean}");
    assert!(at(&poisoned, "asr_non_target") >= 90.0 && at(&poisoned, "clean_acc") >= 70.0, "{poisoned}");
    // Zeroing all four units of the first convolution leaves nothing of the image:
    // one answer for every image, right for one class in ten.
    let ablated = command(&["ablate", "conv1:0,1,2,3", "--mode", "zero", "--json"]);
    assert_eq!(ablated["baseline"], poisoned, "the unablated numbers are eval's");
    assert_eq!(ablated["ablated"]["count"], TEST_IMAGES);
    assert_eq!(ablated["ablated"]["clean_acc"], 10.0, "{ablated}");
    // The run records its dataset and the attack, so later commands need no flags.
    let record: Value =
        serde_json::from_str(&std::fs::read_to_string(cifar_run().join("c/run.json")).unwrap()).unwrap();
    assert_eq!(record["config"]["dataset"], "cifar10");
    assert_eq!(record["config"]["attack"]["kind"], "badnets");
    assert_eq!(record["config"]["attack"]["size"], 6);
}

#[test]
fn cifar10_refusals_are_one_line_naming_the_folder_or_the_graph_to_use() {
    let empty = scratch("cifar-empty");
    let checkpoints = scratch("cifar-refused");
    let run = ["--checkpoints", &checkpoints.display().to_string(), "--run", "r", "--dataset", "cifar10"];
    let out = binary()
        .args(run)
        .args(["--data-dir", &empty.display().to_string(), "train", "--preset", "preactresnet18", "--width", "2"])
        .output()
        .unwrap();
    tui_support::shared::assert_clean_failure(&out, &format!("{}: no CIFAR-10 files", empty.display()));
    let out = binary().args(run).args(["--data-dir", &cifar_dir().display().to_string(), "train"]).output().unwrap();
    tui_support::shared::assert_clean_failure(
        &out,
        "the study's CNN takes 28×28 grey images; cifar10 images need a graph",
    );
    assert!(!checkpoints.join("r").exists(), "nothing written");
}

/// `root/{train,test}/<class>/N.png`: 12×12 images of three classes (red, green and
/// blue on a grey ramp), `per_class` of each in each split.
fn write_folder(root: &Path, per_class: usize) {
    for (split, offset) in [("train", 0), ("test", 1000)] {
        for (c, name) in ["cherry", "leaf", "sky"].iter().enumerate() {
            let dir = root.join(split).join(name);
            std::fs::create_dir_all(&dir).unwrap();
            for n in 0..per_class {
                let image = image::RgbImage::from_fn(12, 12, |x, y| {
                    let ramp = ((x + y) as usize * 7 + n + offset) % 90;
                    let mut pixel = [ramp as u8; 3];
                    if (3..9).contains(&x) && (3..9).contains(&y) {
                        pixel[c] = 250;
                    }
                    image::Rgb(pixel)
                });
                image.save(dir.join(format!("{n}.png"))).unwrap();
            }
        }
    }
}

#[test]
fn a_folder_run_records_its_side_classes_and_statistics_and_eval_reads_them_back() {
    let data = scratch("folder-data");
    write_folder(&data, 20);
    let checkpoints = scratch("folder-run");
    let flags = ["--checkpoints", &checkpoints.display().to_string(), "--run", "f", "--threads", "1"];
    let out = binary()
        .args(flags)
        .args(["--data-dir", &data.display().to_string(), "--dataset", "folder", "--image-size", "8"])
        .args(["train", "--preset", "tz-mnist", "--width", "4", "--epochs", "12", "--batch-size", "8"])
        .args(["--phases", "clean", "--attack", "wanet"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let record: Value =
        serde_json::from_str(&std::fs::read_to_string(checkpoints.join("f/run.json")).unwrap()).unwrap();
    let format = &record["config"]["format"];
    assert_eq!(format["shape"], serde_json::json!([3, 8, 8]));
    // The warp is drawn at the images' side, not a folder's nominal 32.
    assert_eq!(record["config"]["attack"]["grid"].as_array().unwrap().len(), 8 * 8 * 2);
    assert_eq!(format["classes"], 3);
    let (mean, std) = (format["normalisation"]["mean"].as_array().unwrap(), &format["normalisation"]["std"]);
    assert_eq!((mean.len(), std.as_array().unwrap().len()), (3, 3));
    // Every later command reads the folder at the recorded side, without --image-size.
    let evals = json(
        &binary()
            .args(flags)
            .args(["--data-dir", &data.display().to_string(), "eval", "--model", "clean", "--json"])
            .output()
            .unwrap(),
    );
    let metrics = &evals[0]["metrics"];
    assert_eq!(metrics["count"], 60);
    assert_eq!(metrics["per_class_clean"].as_array().unwrap().len(), 3);
    assert!(metrics["clean_acc"].as_f64().unwrap() >= 90.0, "{metrics}");
}

fn write_ppm(path: &Path, colour: [u8; 3], side: usize) {
    let mut bytes = format!("P6\n{side} {side}\n255\n").into_bytes();
    bytes.extend((0..side * side).flat_map(|_| colour));
    std::fs::write(path, bytes).unwrap();
}

/// GTSRB's plain layout: per class two 6×6 training images and one test image of the
/// class's own colour.
fn write_gtsrb(root: &Path) {
    const HEADER: &str = "Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId\n";
    let colour = |c: usize| [(c * 6) as u8, (255 - c * 5) as u8, (c * 37 % 256) as u8];
    let test = root.join("Test");
    std::fs::create_dir_all(&test).unwrap();
    let mut test_rows = String::from(HEADER);
    for c in 0..43 {
        let folder = root.join(format!("Train/{c:05}"));
        std::fs::create_dir_all(&folder).unwrap();
        let mut rows = String::from(HEADER);
        for n in 0..2 {
            write_ppm(&folder.join(format!("{n}.ppm")), colour(c), 6);
            rows += &format!("{n}.ppm;6;6;0;0;5;5;{c}\n");
        }
        std::fs::write(folder.join(format!("GT-{c:05}.csv")), rows).unwrap();
        write_ppm(&test.join(format!("{c:05}.ppm")), colour(c), 6);
        test_rows += &format!("{c:05}.ppm;6;6;0;0;5;5;{c}\n");
    }
    std::fs::write(test.join("GT-final_test.csv"), test_rows).unwrap();
}

#[test]
fn a_gtsrb_run_has_43_classes_and_the_training_splits_statistics_first_in_its_graph() {
    let data = scratch("gtsrb-data");
    write_gtsrb(&data);
    let checkpoints = scratch("gtsrb-run");
    let flags = ["--checkpoints", &checkpoints.display().to_string(), "--run", "g", "--threads", "1"];
    let data_flag = ["--data-dir", &data.display().to_string()];
    let out = binary()
        .args(flags)
        .args(data_flag)
        .args(["--dataset", "gtsrb", "train", "--preset", "tz-mnist", "--width", "2", "--batch-size", "2"])
        .args(["--phases", "clean"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let read = |file: &str| -> Value {
        serde_json::from_str(&std::fs::read_to_string(checkpoints.join("g").join(file)).unwrap()).unwrap()
    };
    let format = &read("run.json")["config"]["format"];
    assert_eq!((&format["shape"], &format["classes"]), (&serde_json::json!([3, 32, 32]), &serde_json::json!(43)));
    // Each channel's mean over the 86 training images: the mean of the classes' values.
    let mean =
        |k: usize| (0..43).map(|c| [(c * 6) as f64, (255 - c * 5) as f64, (c * 37 % 256) as f64][k]).sum::<f64>();
    let recorded = format["normalisation"]["mean"].as_array().unwrap();
    for (k, m) in recorded.iter().enumerate() {
        assert!((m.as_f64().unwrap() - mean(k) / 43.0 / 255.0).abs() < 1e-12, "channel {k}: {m}");
    }
    let graph = read("graph.json");
    let norm = graph["nodes"].as_array().unwrap().iter().find(|n| n["name"] == "input_norm").unwrap().clone();
    // The graph normalises with them, as float32's shortest decimals.
    for (k, m) in recorded.iter().enumerate() {
        let shortest: f64 = (m.as_f64().unwrap() as f32).to_string().parse().unwrap();
        assert_eq!(norm["mean"][k], shortest, "{norm}");
    }
    assert_eq!(norm["std"].as_array().unwrap().len(), 3);
    let evals =
        json(&binary().args(flags).args(data_flag).args(["eval", "--model", "clean", "--json"]).output().unwrap());
    assert_eq!(evals[0]["metrics"]["count"], 43);
    assert_eq!(evals[0]["metrics"]["per_class_clean"].as_array().unwrap().len(), 43);
}

/// The truecolour cells of screen `rows` within `columns`, from `capture-pane -e`.
fn colours(screen: &str, rows: std::ops::Range<usize>, columns: std::ops::Range<usize>) -> Vec<[u8; 3]> {
    let mut found = Vec::new();
    for line in screen.lines().skip(rows.start).take(rows.len()) {
        let (mut column, mut rest) = (0, line);
        while let Some(c) = rest.chars().next() {
            if let Some(sgr) = rest.strip_prefix("\x1b[") {
                let end = sgr.find('m').unwrap_or(sgr.len());
                let params: Vec<u16> = sgr[..end].split(';').filter_map(|p| p.parse().ok()).collect();
                for rgb in params.windows(5).filter(|w| matches!(w[..2], [38 | 48, 2])) {
                    if columns.contains(&column) {
                        found.push([rgb[2], rgb[3], rgb[4]].map(|v| v as u8));
                    }
                }
                rest = &sgr[(end + 1).min(sgr.len())..];
            } else {
                column += 1;
                rest = &rest[c.len_utf8()..];
            }
        }
    }
    found
}

#[test]
fn the_explorer_shows_a_cifar10_image_in_colour_at_80x24() {
    let mut args = on_run(cifar_run());
    args.extend(["--device=cpu", "--image-protocol=halfblocks"].map(String::from));
    let tmux = Tmux::start("cifar80x24", (80, 24), &args);
    let wait = |what: &str, done: &dyn Fn(&str) -> bool| tmux.wait(what, Duration::from_secs(60), done);
    wait("the graph's nodes", &|s| s.contains("● ready") && s.contains("▸ layer4"));
    tmux.keys(&["4"]);
    let shown = wait("the activations", &|s| s.contains("conv1:0 · #0 (0 airplane)"));
    let title = shown.lines().position(|l| l.contains("│image")).unwrap_or_else(|| panic!("{shown}"));
    // The image's cells (the first picture, left of the maps) carry colours, not greys.
    let screen = tmux.run(&["capture-pane", "-p", "-e"]);
    let cells = colours(&screen, title + 1..title + 7, 1..11);
    assert!(cells.len() > 20, "the image is drawn in truecolour half blocks:\n{screen}");
    let coloured = cells.iter().filter(|[r, g, b]| r.abs_diff(*g).max(g.abs_diff(*b)) > 40).count();
    assert!(coloured >= 2, "the class's blue block shows in colour: {cells:?}");
    tmux.quit_leaves_the_terminal_restored();
}
