//! The explorer on a graph run (a tiny pre-activation ResNet trained from the
//! preset by the binary): in tmux at 80×24 and 120×40 the Layers pane lists
//! module paths folded by stage and block, `/` finds a unit in Channels, Space
//! ablates it and `w` sweeps the node, and the numbers shown are `ablate --json`'s
//! on the same run; the worker answers an ablation on a sample first (the CLI on
//! that many images agrees), then on the full test set.

mod tui_support;

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::mpsc::channel;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;
use trojanscope::cli::args::Cli;
use trojanscope::tui::protocol::{Command, Reply};
use trojanscope::tui::worker::WorkerHandle;
use tui_support::shared::{binary, json};
use tui_support::tmux::Tmux;
use tui_support::{data_dir, scratch};

const TEST_LIMIT: usize = 300;
const NODE: &str = "layer3.0.conv2";
const UNIT: usize = 5;

/// One tmux test at a time: they share two cores.
static SERIAL: Mutex<()> = Mutex::new(());

/// A width-2 PreActResNet-18 trained for one epoch per phase on 600 images
/// (seconds on one core): a real graph run with stages and blocks.
fn graph_run() -> &'static Path {
    static RUN: OnceLock<PathBuf> = OnceLock::new();
    RUN.get_or_init(|| {
        let checkpoints = scratch("tui-graph");
        let out = binary()
            .args(["--checkpoints", &checkpoints.display().to_string(), "--run", "g", "--threads", "1"])
            .args(["--train-limit", "600", "--test-limit", &TEST_LIMIT.to_string()])
            .args(["train", "--preset", "preactresnet18", "--width", "2", "--epochs", "1"])
            .output()
            .expect("the binary runs");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        checkpoints
    })
}

/// `ablate NODE:UNIT --mode zero --json` on the poisoned model: the ablated metrics.
fn ablated(test_limit: usize) -> Value {
    let mut command = binary();
    let checkpoints = graph_run().display().to_string();
    command.args(["--checkpoints", &checkpoints, "--run", "g", "--threads", "1"]);
    command.args(["--test-limit", &test_limit.to_string(), "ablate", &format!("{NODE}:{UNIT}"), "--mode", "zero"]);
    let out = command.args(["--model", "poisoned", "--json"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    json(&out)["ablated"].clone()
}

/// The four headline numbers as the Ablation pane prints them.
fn printed(metrics: &Value) -> String {
    ["clean_acc", "poison_acc", "asr_non_target", "rehab_acc"]
        .map(|k| format!("{:.2}", metrics[k].as_f64().unwrap()))
        .join(" ")
}

fn numbers_after(screen: &str, label: &str) -> String {
    let line = screen.lines().find(|l| l.contains(label)).unwrap_or_else(|| panic!("no {label} row:\n{screen}"));
    let cells: Vec<&str> = line.split(['│', ' ']).filter(|c| c.parse::<f64>().is_ok()).collect();
    cells.join(" ")
}

fn browse(size: (u16, u16)) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let expected = ablated(TEST_LIMIT);
    let args = [
        format!("--checkpoints={}", graph_run().display()),
        "--run=g".into(),
        format!("--data-dir={}", data_dir().display()),
        "--device=cpu".into(),
        format!("--test-limit={TEST_LIMIT}"),
    ];
    let tmux = Tmux::start(&format!("graph{}x{}", size.0, size.1), size, &args);
    let wait = |what: &str, done: &dyn Fn(&str) -> bool| tmux.wait(what, Duration::from_secs(60), done);
    // Layers: the nodes by module path, the stages folded.
    let first = wait("the graph's nodes", &|s| s.contains("● ready") && s.contains("▸ layer4"));
    assert!(first.contains("conv1") && first.contains("▸ layer3") && first.contains("linear"), "{first}");
    assert!(!first.contains("layer3.0.conv2"), "folded stages hide their nodes:\n{first}");
    // Unfold layer3, then its first block, and select its second convolution.
    tmux.keys(&["1", "j", "j", "j", "Enter"]);
    wait("layer3 unfolded", &|s| s.contains("▾ layer3") && s.contains("▸ layer3.0"));
    tmux.keys(&["j", "Enter"]);
    wait("layer3.0 unfolded", &|s| s.contains(NODE));
    tmux.keys(&["j", "j", "j", "j", "j", "j", "j", "2"]);
    wait("the node's channels", &|s| s.contains(&format!("{NODE} · conv2d · 8 units")));
    // `/` finds a unit; Space ablates it.
    tmux.keys(&["/", &UNIT.to_string()]);
    wait("the find prompt", &|s| s.contains(&format!("find unit: {UNIT}")));
    tmux.keys(&["Enter", "Space"]);
    let set = format!("{NODE}:{UNIT}");
    wait("the ablation set", &|s| s.contains(&format!("ablating {set} (zero)")));
    tmux.keys(&["5"]);
    let done = wait("the full test set's answer", &|s| {
        s.contains(&format!("{TEST_LIMIT} images")) && !s.contains("evaluating")
    });
    assert_eq!(numbers_after(&done, "poisoned + set"), printed(&expected), "{done}");
    // A sweep of the node: unit 5's row in Channels is the same lone ablation.
    tmux.keys(&["w"]);
    wait("the sweep", &|s| s.contains(&format!("sweep {NODE} (zero)")));
    tmux.keys(&["2"]);
    let swept = wait("the swept channels", &|s| s.contains("swept (zero)"));
    let row = numbers_after(&swept, "✗");
    let [clean, poison, _, rehab] = ["clean_acc", "poison_acc", "asr_non_target", "rehab_acc"]
        .map(|k| format!("{:.2}", expected[k].as_f64().unwrap()));
    assert!(row.starts_with(&format!("{UNIT} ")) && row.ends_with(&format!("{clean} {poison} {rehab}")), "{row}");
    // Kernels per input channel, activations, and the study's own panes say so.
    tmux.keys(&["3"]);
    wait("the kernels", &|s| s.contains(&format!("{NODE} unit {UNIT} · 8 inputs of 3×3")));
    tmux.keys(&["4"]);
    wait("the activations", &|s| s.contains(&format!("{NODE}:{UNIT} · #0 (")));
    tmux.keys(&["7"]);
    wait("the study-only pane", &|s| s.contains("runs on the study's CNN only"));
    tmux.quit_leaves_the_terminal_restored();
}

#[test]
fn a_graph_run_browsed_at_80x24() {
    browse((80, 24));
}

#[test]
fn a_graph_run_browsed_at_120x40() {
    browse((120, 40));
}

/// The worker answers a toggle on the sample (the first fifth of the test set
/// here), then on all of it; the CLI on those images gives the same numbers.
#[test]
fn an_ablation_is_answered_on_a_sample_then_on_the_full_test_set() {
    let checkpoints = graph_run().display().to_string();
    let data = data_dir().display().to_string();
    let argv = ["trojanscope", "--checkpoints", &checkpoints, "--run", "g", "--data-dir", &data, "--threads", "1"];
    let limit = TEST_LIMIT.to_string();
    let common = <Cli as clap::Parser>::parse_from(argv.iter().copied().chain(["--test-limit", &limit])).common;
    let (tx, rx) = channel();
    let worker = WorkerHandle::spawn(common, Box::new(move |r| drop(tx.send(r)))).unwrap();
    worker.send(Command::Open);
    let mut set = trojanscope::graph::units::UnitSet::default();
    set.sites.insert(NODE.into(), [UNIT as i64].into());
    worker.send(Command::GraphAblate { set, mode: trojanscope::engine::ablation::AblationMode::Zero });
    let mut answers = Vec::new();
    while answers.len() < 2 {
        match rx.recv_timeout(Duration::from_secs(120)).expect("the worker answers") {
            Reply::GraphEvaluated(e) => answers.push(*e),
            Reply::Failed { message, .. } => panic!("{message}"),
            _ => {}
        }
    }
    let (sample, full) = (&answers[0], &answers[1]);
    assert!(sample.sample && !full.sample);
    assert_eq!((sample.metrics.count, full.metrics.count), (TEST_LIMIT / 5, TEST_LIMIT));
    let json = |m: &trojanscope::engine::metrics::Metrics| printed(&serde_json::to_value(m).unwrap());
    assert_eq!(json(&sample.metrics), printed(&ablated(TEST_LIMIT / 5)));
    assert_eq!(json(&full.metrics), printed(&ablated(TEST_LIMIT)));
    worker.shutdown(Duration::from_secs(1));
}
