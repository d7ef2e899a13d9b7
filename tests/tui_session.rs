//! The explorer keeps its state in the run (`session.json`) and writes nothing
//! else without asking: quit and reopen shows the same screen without
//! recomputing, `--fresh` starts clean, results of other checkpoints are dropped,
//! a corrupt file is kept aside, `M` and `B` change only what they name, `u`
//! asks, and a job stopped with `x` leaves the run folder as it was.

mod tui_support;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;
use trojanscope::engine::cleanse::CleanseConfig;
use trojanscope::engine::lab::ModelKind;
use trojanscope::engine::layer::Layer;
use trojanscope::tui::effect::{Popup, Question};
use trojanscope::tui::protocol::Job;
use trojanscope::tui::session::{self, SessionFile};
use tui_support::tmux::Tmux;
use tui_support::{Harness, TEST_LIMIT, TRAIN_LIMIT, common, copy_of_tiny, data_dir};

/// Every file of the run folder and the SHA-256 of its bytes.
fn folder(run: &Path) -> BTreeMap<String, String> {
    let mut files = BTreeMap::new();
    for entry in walk(run) {
        let name = entry.strip_prefix(run).unwrap().display().to_string();
        files.insert(name, trojanscope::engine::run::files::file_sha256(&entry).unwrap());
    }
    files
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() { out.extend(walk(&path)) } else { out.push(path) }
    }
    out
}

fn explorer(checkpoints: &Path, fresh: bool) -> Vec<String> {
    let mut args = vec![
        format!("--checkpoints={}", checkpoints.display()),
        format!("--data-dir={}", data_dir().display()),
        "--run=tiny".into(),
        "--device=cpu".into(),
        format!("--train-limit={TRAIN_LIMIT}"),
        format!("--test-limit={TEST_LIMIT}"),
    ];
    args.extend(fresh.then(|| "--fresh".to_string()));
    args
}

/// In tmux at 160×48: an ablation, a sweep and the patching maps; quit; reopen:
/// the same screen (header, every pane) as soon as the models are ready, with
/// no sweep or patching run. Then `--fresh` starts clean and says so.
#[test]
fn quit_and_reopen_shows_the_same_screen_without_recomputing_and_fresh_starts_clean() {
    let checkpoints = copy_of_tiny("tmux-session");
    let long = Duration::from_secs(60);
    let tmux = Tmux::start("session-1", (160, 48), &explorer(&checkpoints, false));
    tmux.wait("the models to be ready", long, |s| s.contains("● ready"));
    tmux.keys(&["2", "j", "Space", "w"]);
    tmux.wait("the sweep", long, |s| s.contains("sweep conv1 (weight)") && s.contains("● ready"));
    tmux.keys(&["P"]);
    tmux.wait("the patching maps", long, |s| s.contains("denoise: triggered") && s.contains("● ready"));
    tmux.keys(&["5"]);
    // Focused when the hint line names the pane (the history shows either way).
    let before = tmux.wait("the Ablation pane focused", long, |s| {
        s.contains("history: set") && s.contains("ablating conv1:1") && s.contains("Ablation: the set's accuracies")
    });
    tmux.keys(&["q"]);
    assert!(tmux.wait_for_exit().contains("exited with 0"));
    drop(tmux);
    let saved: SessionFile =
        serde_json::from_str(&std::fs::read_to_string(checkpoints.join("tiny/session.json")).unwrap()).unwrap();
    assert_eq!(saved.results.len(), 3, "the evaluation, the sweep and the maps");

    let tmux = Tmux::start("session-2", (160, 48), &explorer(&checkpoints, false));
    tmux.reopened_as(&before, "session restored: 3 results, nothing recomputed");
    drop(tmux);

    let tmux = Tmux::start("session-3", (160, 48), &explorer(&checkpoints, true));
    let fresh = tmux.wait("a fresh session", long, |s| s.contains("● ready"));
    assert!(fresh.contains("a fresh session (--fresh)"), "{fresh}");
    assert!(fresh.contains("ablating none") && fresh.contains("No sweep of conv1 yet"), "{fresh}");
    tmux.keys(&["q"]);
    assert!(tmux.wait_for_exit().contains("exited with 0"));
    let replaced: SessionFile =
        serde_json::from_str(&std::fs::read_to_string(checkpoints.join("tiny/session.json")).unwrap()).unwrap();
    assert!(replaced.results.is_empty(), "the fresh session replaced the saved one");
}

/// A session whose results were computed on another poisoned checkpoint: each
/// is dropped, and the status line counts them; an unreadable file is kept as
/// `session.json.bad`, byte for byte, and the explorer starts fresh.
#[test]
fn results_of_other_checkpoints_are_dropped_and_a_corrupt_session_is_kept_aside() {
    let checkpoints = copy_of_tiny("session-stale");
    let run = checkpoints.join("tiny");
    let mut h = Harness::open(common(&checkpoints, "tiny"), (120, 40));
    h.wait_for("the models to be ready", |app| app.study.ready);
    h.type_keys("2 w");
    h.wait_for("the sweep", |app| {
        app.study.ablation.sweeps.contains_key(&Layer::Conv1) && app.jobs.stoppable().is_none()
    });
    h.wait_for("the ablation", |app| app.study.ablation.history.len() == 1);
    let (dir, text) = h.app.session().expect("a session to keep");
    session::write(&dir, &text).unwrap();
    drop(h);
    // The same checkpoints: both results come back, nothing is asked of the worker.
    let mut h = Harness::open(common(&checkpoints, "tiny"), (120, 40));
    h.wait_for("the models to be ready", |app| app.study.ready);
    assert_eq!(h.app.notice.as_deref(), Some("session restored: 2 results, nothing recomputed"));
    assert_eq!(h.app.study.ablation.set.to_string(), "conv1:0");
    assert!(h.app.study.ablation.result.is_some() && h.app.study.ablation.sweeps.contains_key(&Layer::Conv1));
    assert!(!h.sent.iter().any(|c| c.starts_with("Sweep") || c.starts_with("Evaluate")), "{:?}", h.sent);
    drop(h);
    // Another poisoned model (the rehab model's bytes): both results dropped.
    std::fs::copy(run.join("rehab.safetensors"), run.join("poisoned.safetensors")).unwrap();
    let mut h = Harness::open(common(&checkpoints, "tiny"), (120, 40));
    h.wait_for("the models to be ready", |app| app.study.ready);
    assert_eq!(
        h.app.notice.as_deref(),
        Some("session restored: 0 results, nothing recomputed; 2 computed on other checkpoints or test images dropped")
    );
    assert!(h.app.study.ablation.sweeps.is_empty());
    drop(h);
    // Unreadable: kept aside, a fresh start.
    std::fs::write(run.join("session.json"), "{ not json").unwrap();
    let mut h = Harness::open(common(&checkpoints, "tiny"), (120, 40));
    h.wait_for("the models to be ready", |app| app.study.ready);
    let notice = h.app.notice.clone().unwrap_or_default();
    assert!(notice.starts_with("the saved session could not be read ("), "{notice}");
    assert!(notice.ends_with("session.json.bad; starting fresh"), "{notice}");
    assert_eq!(std::fs::read_to_string(run.join("session.json.bad")).unwrap(), "{ not json");
    assert!(!run.join("session.json").exists());
}

/// `M` changes only the model under study and `B` only the compared one; a
/// model's sweep comes back with it, without sweeping again; the history names
/// the model each set was ablated in.
#[test]
fn m_and_b_change_only_what_they_name_and_keep_each_models_results() {
    let checkpoints = copy_of_tiny("session-models");
    let mut h = Harness::open(common(&checkpoints, "tiny"), (120, 40));
    h.wait_for("the models to be ready", |app| app.study.ready);
    h.type_keys("2w");
    h.wait_for("the sweep", |app| app.study.ablation.sweeps.contains_key(&Layer::Conv1));
    let sweep = h.app.study.ablation.sweeps[&Layer::Conv1].clone();
    h.type_keys(" ");
    h.wait_for("the poisoned model's ablation", |app| app.study.ablation.history.len() == 1);
    h.type_keys("M");
    h.wait_for("the rehab model", |app| app.study.ready && app.study.subject == ModelKind::Rehab);
    assert_eq!(h.app.study.reference, ModelKind::Clean, "M left the compared model alone");
    assert!(h.app.study.ablation.sweeps.is_empty(), "the poisoned model's sweep is not the rehab model's");
    h.wait_for("the rehab model's ablation", |app| app.study.ablation.history.len() == 2);
    h.type_keys("M");
    h.wait_for("the poisoned model again", |app| app.study.ready && app.study.subject == ModelKind::Poisoned);
    assert_eq!(h.app.study.ablation.sweeps.get(&Layer::Conv1), Some(&sweep));
    assert_eq!(h.sent.iter().filter(|c| c.starts_with("Sweep")).count(), 1, "swept once");
    h.type_keys("B");
    assert_eq!((h.app.study.subject, h.app.study.reference), (ModelKind::Poisoned, ModelKind::Rehab));
    assert_eq!(h.app.study.ablation.sweeps.get(&Layer::Conv1), Some(&sweep), "B keeps the sweep");
    h.type_keys("5");
    let screen = h.screen(120, 40);
    let models: Vec<&str> = screen.lines().filter(|l| l.contains("conv1:0 ")).collect();
    assert!(models.iter().any(|l| l.contains("rehab")) && models.iter().any(|l| l.contains("poisoned")), "{screen}");
}

/// `u` asks, naming what it writes; no leaves the folder alone; yes then `x`
/// stops the unlearning, and a recovery stopped by `x` too: the run folder's
/// files and their bytes are what they were.
#[test]
fn u_asks_and_x_on_a_job_leaves_the_run_folder_as_it_was() {
    let checkpoints = copy_of_tiny("session-stop");
    let run = checkpoints.join("tiny");
    let mut h = Harness::open(common(&checkpoints, "tiny"), (120, 40));
    h.wait_for("the models to be ready", |app| app.study.ready);
    h.app.panes.trigger.config = CleanseConfig { images: 160, test_images: 200, epochs: 3, ..CleanseConfig::default() };
    h.type_keys("Ry");
    h.wait_for("the recovery", |app| app.panes.trigger.report.is_some() && !app.jobs.is_running(Job::Recover));
    let before = folder(&run);
    h.type_keys("u");
    assert_eq!(h.app.popup, Some(Popup::Confirm(Question::Unlearn)));
    assert!(Question::Unlearn.text().contains("unlearned.safetensors"), "{}", Question::Unlearn.text());
    h.type_keys("n");
    assert!(!h.app.jobs.is_running(Job::Unlearn));
    h.type_keys("uy");
    assert!(h.app.jobs.is_running(Job::Unlearn));
    h.wait_within(Duration::from_millis(300), |_| false);
    h.type_keys("x");
    h.wait_for("the stopped unlearning", |app| !app.jobs.is_running(Job::Unlearn));
    assert_eq!(h.app.notice.as_deref(), Some("unlearning stopped; nothing saved"));
    assert_eq!(folder(&run), before, "unlearning stopped by x changed the run folder");
    h.app.panes.trigger.config.epochs = 500;
    h.type_keys("Ry");
    h.wait_within(Duration::from_millis(300), |_| false);
    h.type_keys("x");
    h.wait_for("the stopped recovery", |app| !app.jobs.is_running(Job::Recover));
    assert_eq!(h.app.notice.as_deref(), Some("recovery stopped; nothing saved"));
    assert_eq!(folder(&run), before, "a recovery stopped by x changed the run folder");
}

/// The selected unit is one `layer:unit` everywhere, named in the header: moving
/// on the Circuit pane's map selects its cell. The export's notice does not hold
/// the keys: `5` closes it and focuses the Ablation pane.
#[test]
fn the_selection_is_one_unit_in_the_header_and_the_export_notice_lets_keys_through() {
    use trojanscope::tui::panes::Pane;
    let mut h = Harness::open(common(&copy_of_tiny("session-selection"), "tiny"), (120, 40));
    h.wait_for("the models to be ready", |app| app.study.ready);
    h.type_keys("2jj");
    assert!(h.screen(120, 40).lines().next().unwrap().contains("● ready · conv1:2 · ablating none"));
    h.type_keys("8");
    h.press(ratatui::crossterm::event::KeyCode::Down);
    h.press(ratatui::crossterm::event::KeyCode::Right);
    assert_eq!((h.app.study.layer, h.app.study.selected_unit()), (Layer::Conv2, 1));
    assert!(h.screen(120, 40).lines().next().unwrap().contains("● ready · conv2:1 · ablating none"));
    h.type_keys("e");
    assert!(matches!(&h.app.popup, Some(Popup::Notice(text)) if text.starts_with("Exported to ")));
    h.type_keys("5");
    assert_eq!((h.app.popup.as_ref(), h.app.focus), (None, Pane::Ablation));
}
