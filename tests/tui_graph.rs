//! The explorer on a graph run (a tiny pre-activation ResNet trained from the
//! preset by the binary): in tmux at 80×24 and 120×40 the Layers pane lists
//! module paths folded by stage and block, `/` finds a unit in Channels, Space
//! ablates it and `w` sweeps the node, and the numbers shown are `ablate --json`'s
//! on the same run; the worker answers an ablation on a sample first (the CLI on
//! that many images agrees), then on the full test set.

mod tui_support;

use ratatui::crossterm::event::KeyCode;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::mpsc::channel;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;
use trojanscope::cli::args::Cli;
use trojanscope::setup::CommonArgs;
use trojanscope::tui::protocol::{Command, Reply};
use trojanscope::tui::worker::WorkerHandle;
use tui_support::shared::{binary, json};
use tui_support::tmux::Tmux;
use tui_support::{Harness, data_dir, scratch};

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
        // The tests share the run: a session another one saved is not restored.
        "--fresh".into(),
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
    // Kernels per input channel, activations, and the Training pane says it is the study's.
    tmux.keys(&["3"]);
    wait("the kernels", &|s| s.contains(&format!("{NODE} unit {UNIT} · 8 inputs of 3×3")));
    tmux.keys(&["4"]);
    wait("the activations", &|s| s.contains(&format!("{NODE}:{UNIT} · #0 (")));
    tmux.keys(&["6"]);
    wait("the study-only pane", &|s| s.contains("runs on the study's CNN only"));
    // The Circuit pane patches every node's units on the sample, its rows scrolled to fit.
    tmux.keys(&["8", "P"]);
    let map = wait("the patching map", &|s| s.contains(&format!("denoise on {} images · black 0", TEST_LIMIT / 5)));
    assert!(map.contains("conv1:0 → target") && map.contains("C searches the selected node"), "{map}");
    tmux.keys(&["7"]);
    wait("the Trigger pane", &|s| s.contains("Neural Cleanse on every label"));
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

/// The explorer's flags for a graph run in `checkpoints`: the images it was
/// trained and measured on, the CPU, one thread.
fn graph_common(checkpoints: &Path) -> CommonArgs {
    let (checkpoints, data) = (checkpoints.display().to_string(), data_dir().display().to_string());
    let argv = ["trojanscope", "--checkpoints", &checkpoints, "--run", "g", "--data-dir", &data, "--threads", "1"];
    let limits = ["--train-limit", "600", "--test-limit", &TEST_LIMIT.to_string(), "--device", "cpu"].map(String::from);
    <Cli as clap::Parser>::parse_from(argv.iter().map(|a| a.to_string()).chain(limits)).common
}

/// The worker answers a toggle on the sample (the first fifth of the test set
/// here), then on all of it; the CLI on those images gives the same numbers.
#[test]
fn an_ablation_is_answered_on_a_sample_then_on_the_full_test_set() {
    let common = graph_common(graph_run());
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

/// A graph run's harness, ready, at `size`.
fn graph_harness(checkpoints: &Path, size: (u16, u16)) -> Harness {
    let mut h = Harness::open(graph_common(checkpoints), size);
    // The tests share the run: a session another one saved is not restored.
    h.app.fresh = true;
    h.wait_for("the graph run", |app| app.study.ready && app.study.graph.is_some() && app.study.base.is_some());
    h
}

/// The line of `screen` holding `needle`, whole (a cut line fails the test).
fn line_with<'s>(screen: &'s str, needle: &str) -> &'s str {
    screen.lines().find(|l| l.contains(needle)).unwrap_or_else(|| panic!("no line with {needle:?}:\n{screen}"))
}

/// R on a graph run asks, recovers through the executor (a few steps here) and
/// saves what the pane shows; x stops a second recovery without touching it; u
/// unlearns the flagged trigger into the run's unlearned model, whose saved
/// metrics the pane prints beside the others'.
#[test]
fn the_trigger_pane_recovers_stops_and_unlearns_on_a_graph_run() {
    use trojanscope::engine::cleanse::CleanseConfig;
    use trojanscope::engine::metrics::Metrics;
    use trojanscope::engine::recovery_store::SavedRecovery;
    use trojanscope::tui::effect::{Popup, Question};
    use trojanscope::tui::protocol::Job;
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // The study's committed tiny run imported as a graph: a backdoor (to label 8)
    // Neural Cleanse finds in a few steps, where the one-epoch ResNet has none.
    let checkpoints = scratch("tui-graph-trigger");
    tui_support::tiny_as_graph(&checkpoints, 300);
    let mut h = graph_harness(&checkpoints, (120, 40));
    h.app.panes.trigger.config = CleanseConfig { images: 160, test_images: 200, ..CleanseConfig::default() };
    h.type_keys("7R");
    assert_eq!(h.app.popup, Some(Popup::Confirm(Question::Recover)));
    h.press(KeyCode::Char('y'));
    assert!(h.app.jobs.is_running(Job::Recover));
    h.wait_for("the recovery", |app| app.panes.trigger.report.is_some());
    let saved = checkpoints.join("g/recovery-poisoned.json");
    let on_disk: SavedRecovery = serde_json::from_slice(&std::fs::read(&saved).unwrap()).unwrap();
    let on_disk = on_disk.report;
    let shown = h.app.panes.trigger.report.as_deref().unwrap().clone();
    let brief = |r: &trojanscope::engine::cleanse::RecoveryReport| -> Vec<String> {
        r.labels.iter().map(|t| format!("{} {:.4} {:.4} {}", t.label, t.l1, t.anomaly_index, t.flagged)).collect()
    };
    assert_eq!(brief(&on_disk), brief(&shown));
    let top = shown.most_anomalous().expect("a label stands out");
    assert_eq!(top.label, 8, "{:?}", brief(&shown));
    for size in [(80, 24), (120, 40)] {
        let screen = h.screen(size.0, size.1);
        let status = format!("anomaly index {:.2} · L1 {:.1}", top.anomaly_index, top.l1);
        assert!(line_with(&screen, &status).contains("flagged"), "{screen}");
        // The selected row is the flagged label's, with its L1.
        assert!(line_with(&screen, "▶").contains(&format!("{:6.1}", top.l1)), "{screen}");
    }
    // A second, long recovery stopped by x leaves the saved one as it was.
    let before = std::fs::read(&saved).unwrap();
    h.app.panes.trigger.config.epochs = 500;
    h.type_keys("Ryx");
    h.wait_for("the stopped recovery", |app| !app.jobs.is_running(Job::Recover));
    assert_eq!(h.app.notice.as_deref(), Some("recovery stopped; nothing saved"));
    assert_eq!(std::fs::read(&saved).unwrap(), before);
    // Unlearning asks, then writes the unlearned model; the pane shows its metrics.
    h.type_keys("uy");
    h.wait_for("the unlearned model", |app| app.panes.trigger.unlearned.is_some());
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(checkpoints.join("g/unlearned.trained.json")).unwrap()).unwrap();
    let after: Metrics = serde_json::from_value(record["metrics"].clone()).unwrap();
    let (label, metrics) = h.app.panes.trigger.unlearned.clone().unwrap();
    let headline = |m: &Metrics| format!("{:.6} {:.6} {:.6}", m.clean_acc, m.poison_acc, m.rehab_acc);
    assert_eq!((label, headline(&metrics)), (top.label, headline(&after)));
    // It joins the models `M` studies.
    let base = h.app.study.base.as_ref().unwrap();
    let unlearned = base.get(trojanscope::engine::lab::ModelKind::Unlearned).map(headline);
    assert_eq!(unlearned, Some(headline(&after)));
    let screen = h.screen(120, 40);
    let line = line_with(&screen, "unlearned");
    assert!(line.contains(&format!("poison {:6.2}", after.poison_acc)), "{screen}");
}

/// P on a graph run patches every convolution's and linear layer's units on the
/// sample: the heatmap's selected cell is `graph::patch`'s value for that unit.
/// C searches the selected node for the circuit on the sample as
/// `circuit --nodes NODE` does on those images, and Enter ablates what it found.
#[test]
fn the_circuit_pane_patches_every_node_and_searches_the_selected_one() {
    use trojanscope::engine::lab::ModelKind;
    use trojanscope::engine::patch::Direction;
    use trojanscope::graph::patch::NodePatch;
    use trojanscope::graph::units::parametrised_outputs;
    use trojanscope::tui::protocol::Job;
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut h = graph_harness(graph_run(), (120, 40));
    h.type_keys("8P");
    assert!(h.app.jobs.is_running(Job::Patch));
    h.wait_for("the patching maps", |app| !app.jobs.is_running(Job::Patch));
    let maps = h.app.panes.graph_circuit.patch.clone().expect("the maps");
    let sample = TEST_LIMIT / 5;
    assert_eq!((maps.maps.len(), maps.images), (2, sample));
    // The cursor onto NODE:UNIT.
    let row = maps.sites.iter().position(|s| s.name == NODE).expect("the node is patched");
    for _ in 0..row {
        h.press(KeyCode::Down);
    }
    for _ in 0..UNIT {
        h.press(KeyCode::Right);
    }
    // What graph::patch computes for that unit on the same images.
    let lab = trojanscope::setup::open_graph_lab(&graph_common(graph_run()), &[]).unwrap();
    let exec = trojanscope::graph::run::load(&lab.run, ModelKind::Poisoned, lab.device).unwrap();
    let node = exec.spec.index_of(NODE).unwrap();
    assert!(parametrised_outputs(&exec).len() == maps.sites.len());
    let sample_set = lab.raw.subset(sample);
    let patcher = NodePatch::new(&exec, None, &sample_set, Direction::Denoise).unwrap();
    let expected = patcher.patch(node, |_, _| std::ops::ControlFlow::Continue(())).swap_remove(UNIT);
    let cell = format!(
        "{NODE}:{UNIT} → target {:.1} % (unpatched {:.1}) · logit diff {:+.2}",
        expected.effect.target_rate,
        patcher.baseline().target_rate,
        expected.effect.logit_diff
    );
    for size in [(80, 24), (120, 40)] {
        let screen = h.screen(size.0, size.1);
        assert!(screen.contains(&cell), "{cell}\n{screen}");
        let m = &expected.effect.metrics;
        let metrics = format!("clean {:.1} poison {:.1} rehab {:.1}", m.clean_acc, m.poison_acc, m.rehab_acc);
        assert!(screen.contains(&metrics), "{metrics}\n{screen}");
    }
    // C searches the heatmap's node, on the sample, as the CLI does on those images.
    let index = h.app.study.graph.as_ref().unwrap().info.sites.iter().position(|s| s.name == NODE).unwrap();
    h.app.study.graph.as_mut().unwrap().select_site(index);
    h.type_keys("C");
    h.wait_for("the circuit search", |app| !app.jobs.is_running(Job::Circuit));
    let report = h.app.panes.graph_circuit.report.clone().expect("the search's report");
    let mut command = binary();
    command.args(["--checkpoints", &graph_run().display().to_string(), "--run", "g", "--threads", "1"]);
    command.args(["--test-limit", &sample.to_string(), "circuit", "--nodes", NODE, "--mode", "zero", "--json"]);
    let out = command.output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let cli = json(&out);
    assert_eq!(report.evaluated as u64, cli["evaluated"].as_u64().unwrap());
    let screen = h.screen(120, 40);
    match &report.circuit {
        Some(c) => {
            assert_eq!(serde_json::to_value(&c.set).unwrap(), cli["circuit"]["set"]);
            assert!(line_with(&screen, "circuit:").contains(&format!("{} ({})", c.set, c.size_text())), "{screen}");
            h.press(KeyCode::Enter);
            assert_eq!(h.app.study.graph.as_ref().unwrap().set.to_string(), c.set.to_string());
        }
        None => {
            assert!(cli["circuit"].is_null());
            assert!(screen.contains("no set meets the criteria"), "{screen}");
        }
    }
}

/// v on a graph run visualises the selected node's unit in every model (the
/// pictures and values `graph::visualize` gives); f prunes the CLI's default
/// node on the sample, each ranking's curve `prune --mode zero --json` on those
/// images; e exports both, the curves' table row for row.
#[test]
fn v_visualises_f_prunes_and_e_exports_on_a_graph_run() {
    use trojanscope::engine::featvis::VisConfig;
    use trojanscope::engine::prune::PruneCurve;
    use trojanscope::tui::effect::Popup;
    use trojanscope::tui::protocol::Job;
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut h = graph_harness(graph_run(), (120, 40));
    let g = h.app.study.graph.as_mut().unwrap();
    g.select_site(g.info.sites.iter().position(|s| s.name == NODE).unwrap());
    g.jump_to_unit(UNIT).unwrap();
    h.type_keys("7v");
    assert!(h.app.jobs.is_running(Job::Visualize));
    h.wait_for("the visualisations", |app| !app.jobs.is_running(Job::Visualize));
    let visuals = h.app.panes.trigger.visuals.clone().expect("the visualisations");
    assert_eq!((visuals.site.as_str(), visuals.unit), (NODE, UNIT));
    let lab = trojanscope::setup::open_graph_lab(&graph_common(graph_run()), &[]).unwrap();
    let screen = h.screen(120, 40);
    assert!(screen.contains(&format!("feature visualisation of {NODE}:{UNIT}")), "{screen}");
    assert_eq!(visuals.models.len(), 3, "clean, poisoned and rehab");
    for (kind, shown) in &visuals.models {
        let exec = trojanscope::graph::run::load(&lab.run, *kind, lab.device).unwrap();
        let v = trojanscope::graph::visualize::visualize(&exec, NODE, UNIT as i64, &VisConfig::default()).unwrap();
        assert_eq!((shown.shape, &shown.image, shown.activation), ([1, 28, 28], &v.image, v.activation));
        assert!(screen.contains(&format!("{kind} {:.1}", v.activation)), "{kind}\n{screen}");
    }
    // f with no patching map: the CLI's default node, the last convolution.
    h.type_keys("8f");
    assert!(h.app.jobs.is_running(Job::Prune));
    h.wait_for("the pruning curves", |app| !app.jobs.is_running(Job::Prune));
    let (layer, curves) = h.app.panes.graph_circuit.curves.clone().expect("the curves");
    let sample = (TEST_LIMIT / 5).to_string();
    let mut command = binary();
    command.args(["--checkpoints", &graph_run().display().to_string(), "--run", "g", "--threads", "1"]);
    let out = command.args(["--test-limit", &sample, "prune", "--mode", "zero", "--json"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let cli: Vec<PruneCurve> = serde_json::from_value(json(&out)).unwrap();
    assert_eq!(layer, "layer4.1.conv2");
    assert_eq!(curves, cli);
    let screen = h.screen(120, 40);
    assert!(screen.contains(&format!("{layer} pruned → poison %")), "{screen}");
    let best = &curves[0].points[curves[0].best];
    assert!(screen.contains(&format!("{} DER {:.2}@{}", curves[0].ranking, best.der, best.pruned)), "{screen}");
    // e writes the visualisations and the curves (no run needed: into the export folder).
    h.type_keys("e");
    let dir = match &h.app.popup {
        Some(Popup::Notice(text)) => PathBuf::from(text.strip_prefix("Exported to ").unwrap()),
        other => panic!("no export: {other:?}"),
    };
    // One figure of the visualisations, a titled panel per model, as SVG and PNG.
    assert!(dir.join(format!("visualize-{NODE}-{UNIT}.png")).is_file());
    let svg = std::fs::read_to_string(dir.join(format!("visualize-{NODE}-{UNIT}.svg"))).unwrap();
    for (kind, _) in &visuals.models {
        assert!(svg.contains(&format!("{kind} model")), "{kind}");
    }
    let csv = std::fs::read_to_string(dir.join(format!("prune-{layer}.csv"))).unwrap();
    let points: usize = curves.iter().map(|c| c.points.len()).sum();
    assert_eq!(csv.lines().count(), 1 + points);
    for c in &curves {
        for extension in ["png", "svg"] {
            assert!(dir.join(format!("prune-{layer}-{}.{extension}", c.ranking)).is_file(), "{}", c.ranking);
        }
    }
}
