//! The explorer's key flows through `update`, with a real worker on a tiny real
//! run trained by the engine (no mocks).

mod svg;
mod tui_support;

use ratatui::crossterm::event::{KeyCode, KeyModifiers, MouseButton, MouseEvent, MouseEventKind};
use std::path::{Path, PathBuf};
use trojanscope::engine::ablation::AblationMode;
use trojanscope::engine::lab::ModelKind;
use trojanscope::engine::layer::Layer;
use trojanscope::engine::train::Phase;
use trojanscope::tui::app::Msg;
use trojanscope::tui::columns::Column;
use trojanscope::tui::effect::{Popup, Question};
use trojanscope::tui::panes::Pane;
use trojanscope::tui::protocol::{Command, Job};
use tui_support::{Harness, common, copy_of_tiny, scratch, tiny_run};

const SMALL: (u16, u16) = (80, 24);
const WIDE: (u16, u16) = (160, 48);

fn error_text(h: &Harness) -> String {
    match &h.app.popup {
        Some(Popup::Error(text)) => text.clone(),
        other => panic!("expected an error popup, found {other:?}"),
    }
}

#[test]
fn a_saved_run_loads_into_every_pane() {
    let h = Harness::ready(SMALL);
    let app = &h.app;
    assert_eq!(app.study.base.as_ref().unwrap().len(), 3);
    let change = app.study.activation_change.as_ref().unwrap();
    assert_eq!(change.iter().map(|(_, units)| units.len()).collect::<Vec<_>>(), vec![32, 64, 16, 10]);
    let models = app.study.models.as_ref().unwrap();
    assert_eq!(models.weights.len(), 3);
    assert_eq!(models.weights.get(ModelKind::Poisoned).unwrap()[Layer::Conv2].weight.len(), 64 * 32 * 9);
    assert_eq!(app.study.digit_data.as_ref().unwrap().index, 0);
    // The training history comes from the run's metrics.jsonl: 94 steps per phase.
    assert_eq!(app.panes.training.losses.len(), 3 * 94);
    assert!(!app.panes.training.evals.is_empty() && !app.jobs.is_running(Job::Train));
    assert!(h.sent.iter().any(|s| s.starts_with("Load")));
    // Measured on the same 500 test images when the models were saved: shown as saved.
    let sidecar: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(tiny_run().join("tiny/poisoned.json")).unwrap()).unwrap();
    assert_eq!(
        app.study.base.as_ref().unwrap().get(ModelKind::Poisoned).unwrap().poison_acc,
        sidecar["metrics"]["poison_acc"].as_f64().unwrap()
    );
}

#[test]
fn metrics_are_measured_when_the_saved_ones_are_for_other_test_images() {
    let mut args = common(tiny_run(), "tiny");
    args.test_limit = Some(400);
    let mut h = Harness::open(args, SMALL);
    h.wait_for("the models to be ready", |app| app.study.ready);
    assert!(h.app.jobs.headline().is_none());
    let base = h.app.study.base.as_ref().expect("metrics before ready");
    assert!(base.iter().all(|(_, m)| m.count == 400));
}

#[test]
fn select_conv1_sort_by_activation_change_ablate_the_top_two_and_read_the_change() {
    let mut h = Harness::ready(SMALL);
    h.press(KeyCode::Char('1'));
    h.press(KeyCode::Right);
    h.press(KeyCode::Left);
    assert_eq!(h.app.study.layer, Layer::Conv1);
    h.press(KeyCode::Enter);
    assert_eq!(h.app.focus, Pane::Channels);
    h.type_keys("ss");
    assert_eq!(h.app.study.sort.column, Column::ActivationChange);
    assert!(h.app.study.sort.descending);
    let rows = h.app.study.channel_rows();
    let change = |i: usize| rows[i].activation_change.unwrap();
    assert!(change(0) >= change(1) && change(1) >= change(2));
    let top_two = [rows[0].unit, rows[1].unit];
    h.type_keys(" j ");
    assert!(top_two.iter().all(|&u| h.app.study.ablation.set.contains(Layer::Conv1, u)));
    assert_eq!(h.app.study.ablation.set.len(), 2);
    assert!(h.app.jobs.is_running(Job::Evaluate));
    h.wait_for("the ablation's metrics", |app| app.study.ablation.result.is_some());
    let ablated = h.app.study.ablation.result.as_ref().unwrap();
    let poisoned = h.app.study.base.as_ref().unwrap().get(ModelKind::Poisoned).unwrap();
    assert_eq!(ablated.set, h.app.study.ablation.set);
    assert_eq!(ablated.mode, AblationMode::Weight);
    assert_ne!(ablated.metrics.triple(), poisoned.triple());
    assert_eq!(h.app.study.ablation.history.last(), Some(ablated));
    // The worker timed the engine; the pane (all panes show at 200×60) shows it.
    let seconds = ablated.seconds;
    assert!(seconds > 0.0 && seconds < 60.0, "{seconds}");
    let screen = h.screen(200, 60);
    assert!(screen.contains(&format!("· {:.0} ms", seconds * 1e3)), "{screen}");
    // The Channels table marks the two ablated units.
    assert_eq!(h.app.study.channel_rows().iter().filter(|r| r.ablated).count(), 2);
}

#[test]
fn mode_changes_reevaluate_and_clear_empties_the_set() {
    let mut h = Harness::ready(SMALL);
    h.type_keys("2 ");
    h.wait_for("the first ablation", |app| app.study.ablation.result.is_some());
    h.press(KeyCode::Char('m'));
    assert_eq!(h.app.study.ablation.mode, AblationMode::Zero);
    assert!(h.app.study.ablation.result.is_none() && h.app.jobs.is_running(Job::Evaluate));
    h.wait_for("the zero-mode ablation", |app| app.study.ablation.result.is_some());
    assert_eq!(h.app.study.ablation.history.len(), 2);
    // Back to a mode already evaluated: the history answers, no new request.
    let sent = h.sent.len();
    h.type_keys("mm");
    assert_eq!(h.app.study.ablation.mode, AblationMode::Weight);
    assert!(h.app.study.ablation.result.is_some());
    assert_eq!(h.sent.len(), sent + 1, "only the mean mode was asked for: {:?}", &h.sent[sent..]);
    h.press(KeyCode::Char('c'));
    assert!(h.app.study.ablation.set.is_empty() && h.app.study.ablation.result.is_none());
    // Enter on a history row (the newest first) restores its set and mode.
    h.press(KeyCode::Char('5'));
    h.wait_for("the mean-mode ablation", |app| app.study.ablation.history.len() == 3);
    h.press(KeyCode::Char('G'));
    h.press(KeyCode::Enter);
    assert_eq!(h.app.study.ablation.set.len(), 1);
    assert_eq!(h.app.study.ablation.mode, AblationMode::Weight);
}

/// Found by the monkey: a set evaluated, then changed back to one already evaluated
/// before the answer came, left "evaluating" in the ledger for ever.
#[test]
fn an_answer_for_a_set_left_behind_ends_the_evaluation() {
    let mut h = Harness::ready(SMALL);
    h.type_keys("2 ");
    h.wait_for("conv1:0's metrics", |app| app.study.ablation.result.is_some());
    // conv1:0,1 is asked for; conv1:0 again is answered from the history at once.
    h.type_keys("j ");
    assert!(h.app.jobs.is_running(Job::Evaluate));
    h.type_keys(" ");
    assert_eq!(h.app.study.ablation.set.to_string(), "conv1:0");
    assert!(h.app.study.ablation.result.is_some());
    h.wait_for("conv1:0,1's metrics", |app| app.study.ablation.history.len() == 2);
    assert_eq!(h.app.study.ablation.history[1].set.to_string(), "conv1:0,1");
    assert!(!h.app.jobs.is_running(Job::Evaluate), "{:?}", h.app.jobs.headline());
    // Two sets in a row: the entry ends with the last one's answer.
    h.type_keys("j j ");
    assert_eq!(h.app.study.ablation.set.to_string(), "conv1:0,2,3");
    h.wait_for("conv1:0,2,3's metrics", |app| app.study.ablation.result.is_some());
    assert!(!h.app.jobs.is_running(Job::Evaluate));
}

#[test]
fn a_sweep_fills_the_channel_columns_and_x_stops_one() {
    let mut h = Harness::ready(SMALL);
    h.press(KeyCode::Char('w'));
    assert_eq!(h.app.jobs.get(Job::Sweep).map(|r| r.text()), Some("sweeping conv1".to_string()));
    h.wait_for("the conv1 sweep", |app| app.study.ablation.sweeps.contains_key(&Layer::Conv1));
    let sweep = &h.app.study.ablation.sweeps[&Layer::Conv1];
    assert!(sweep.complete && sweep.rows.len() == 32);
    assert!(h.app.study.channel_rows().iter().all(|r| r.swept.is_some()));
    // Sorting by poison accuracy after ablation puts the most backdoor-relevant first.
    h.press(KeyCode::Char('2'));
    h.type_keys("ssss");
    assert_eq!(h.app.study.sort.column, Column::Poison);
    let rows = h.app.study.channel_rows();
    let poison = |i: usize| rows[i].swept.as_ref().unwrap().poison_acc;
    assert!(poison(0) <= poison(1));
    h.press(KeyCode::Char('l'));
    h.type_keys("wx");
    h.wait_for("the stopped conv2 sweep", |app| app.study.ablation.sweeps.contains_key(&Layer::Conv2));
    let stopped = &h.app.study.ablation.sweeps[&Layer::Conv2];
    assert!(!stopped.complete && stopped.rows.len() < 64);
    assert!(!h.app.jobs.is_running(Job::Sweep));
}

#[test]
fn digits_step_forward_and_wrap_backward() {
    let mut h = Harness::ready(SMALL);
    h.press(KeyCode::Char('n'));
    h.wait_for("digit 1", |app| app.study.digit_data.as_ref().is_some_and(|d| d.index == 1));
    h.type_keys("pp");
    h.wait_for("the last digit", |app| app.study.digit_data.as_ref().is_some_and(|d| d.index == 499));
    let data = h.app.study.digit_data.as_ref().unwrap();
    assert_eq!(data.clean_pixels.len(), 784);
    assert_eq!(data.on_clean.get(ModelKind::Clean).unwrap()[0].shape, vec![32, 26, 26]);
    // Every saved model, on the clean and on the triggered digit.
    assert_eq!((data.on_clean.len(), data.on_triggered.len()), (3, 3));
}

#[test]
fn a_fresh_run_trains_live_then_loads_and_quitting_during_training_asks_first() {
    let checkpoints = scratch("fresh");
    let mut h = Harness::open(common(&checkpoints, "fresh"), SMALL);
    h.wait_for("training to start", |app| app.jobs.is_running(Job::Train) && app.panes.training.progress.is_some());
    assert!(h.sent.iter().any(|s| s.contains("phases: [Clean, Poison, Rehab]")));
    assert_eq!(h.app.focus, Pane::Training);
    h.press(KeyCode::Char('q'));
    assert_eq!(h.app.popup, Some(Popup::Confirm(Question::QuitWhileTraining)));
    h.press(KeyCode::Char('n'));
    assert!(h.app.popup.is_none() && !h.quit);
    h.wait_for("the poison phase's accuracies", |app| {
        app.panes.training.evals.iter().any(|(_, p)| p.phase == Phase::Poison && p.step > 0)
    });
    h.wait_for("training to finish and the models to load", |app| !app.jobs.is_running(Job::Train) && app.study.ready);
    assert_eq!(h.app.panes.training.losses.len(), 3 * 94);
    assert!(
        ["clean", "poisoned", "rehab"].iter().all(|m| checkpoints.join(format!("fresh/{m}.safetensors")).is_file())
    );
    // Quitting when nothing runs does not ask.
    h.press(KeyCode::Char('q'));
    assert!(h.quit);
}

#[test]
fn ctrl_c_quits_at_once_and_stops_training() {
    let mut h = Harness::open(common(&scratch("ctrlc"), "run"), SMALL);
    h.wait_for("training to start", |app| app.jobs.is_running(Job::Train));
    h.ctrl('c');
    assert!(h.quit);
    assert_eq!(h.sent.last().map(String::as_str), Some("Cancel"));
}

#[test]
fn retrain_asks_then_trains_with_the_edited_settings() {
    let checkpoints = copy_of_tiny("retrain");
    let mut h = Harness::open(common(&checkpoints, "tiny"), SMALL);
    h.wait_for("the copy to load", |app| app.study.ready);
    h.press(KeyCode::Char('t'));
    assert_eq!(h.app.focus, Pane::Training);
    // Field 0 is the seed; → raises it.
    h.press(KeyCode::Right);
    assert_eq!(h.app.panes.training.config.seed, 1);
    // r works from any pane; yes brings the Training pane to the front.
    h.press(KeyCode::Char('1'));
    h.press(KeyCode::Char('r'));
    assert_eq!(h.app.popup, Some(Popup::Confirm(Question::Retrain)));
    h.press(KeyCode::Char('y'));
    assert!(h.app.jobs.is_running(Job::Train) && h.app.panes.training.losses.is_empty());
    assert_eq!(h.app.focus, Pane::Training);
    assert!(h.sent.last().unwrap().contains("seed: 1"));
    h.wait_for("the retrained models", |app| !app.jobs.is_running(Job::Train) && app.study.ready);
    let sidecar = std::fs::read_to_string(checkpoints.join("tiny/rehab.json")).unwrap();
    assert!(sidecar.contains("\"seed\": 1"), "{sidecar}");
}

#[test]
fn a_missing_checkpoint_trains_only_what_is_missing() {
    let checkpoints = copy_of_tiny("missing");
    std::fs::remove_file(checkpoints.join("tiny/rehab.safetensors")).unwrap();
    let mut h = Harness::open(common(&checkpoints, "tiny"), SMALL);
    h.wait_for("the rehab model to be trained and everything loaded", |app| {
        !app.jobs.is_running(Job::Train) && app.study.ready
    });
    assert!(h.sent.iter().any(|s| s.contains("phases: [Rehab]")), "{:?}", h.sent);
    assert!(checkpoints.join("tiny/rehab.safetensors").is_file());
}

#[test]
fn a_failing_command_shows_one_clear_error_and_the_ui_goes_on() {
    let checkpoints = copy_of_tiny("broken");
    std::fs::write(checkpoints.join("tiny/poisoned.safetensors"), b"not a checkpoint").unwrap();
    let mut h = Harness::open(common(&checkpoints, "tiny"), SMALL);
    h.wait_for("the load to fail", |app| app.popup.is_some());
    let text = error_text(&h);
    assert!(
        text.starts_with("Loading the models failed:") && text.contains("not a readable safetensors file"),
        "{text}"
    );
    assert!(h.screen(80, 24).contains("Error"));
    h.press(KeyCode::Esc);
    assert!(h.app.popup.is_none());
    h.press(KeyCode::Char('3'));
    assert_eq!(h.app.focus, Pane::Kernels);
    // Ablations need loaded models: a notice, not a crash.
    h.press(KeyCode::Char('w'));
    assert_eq!(h.app.notice.as_deref(), Some("the models are not ready yet"));
}

/// Checkpoints deleted or replaced while the explorer runs: the models it holds
/// keep answering, a reload names the broken file in one popup, and what was
/// loaded still works after it.
#[test]
fn checkpoints_deleted_or_replaced_under_the_explorer_fail_the_reload_only() {
    let checkpoints = copy_of_tiny("replaced");
    let mut h = Harness::open(common(&checkpoints, "tiny"), SMALL);
    h.wait_for("the models", |app| app.study.ready);
    std::fs::write(checkpoints.join("tiny/clean.safetensors"), b"replaced by something else").unwrap();
    std::fs::remove_file(checkpoints.join("tiny/rehab.safetensors")).unwrap();
    h.type_keys("2 ");
    h.wait_for("an ablation from the models in memory", |app| app.study.ablation.result.is_some());
    h.send(trojanscope::tui::protocol::Command::Load {
        digit: 0,
        subject: trojanscope::engine::lab::ModelKind::Poisoned,
    });
    h.wait_for("the reload to fail", |app| app.popup.is_some());
    let text = error_text(&h);
    assert!(
        text.starts_with("Loading the models failed:")
            && text.contains("clean.safetensors")
            && text.contains("not a readable safetensors file"),
        "{text}"
    );
    h.press(KeyCode::Esc);
    assert!(h.app.popup.is_none() && h.app.study.ready);
    // The models read before still serve a new ablation.
    h.type_keys("c4 ");
    h.wait_for("an ablation after the failed reload", |app| app.study.ablation.result.is_some());
    assert_eq!(h.app.study.ablation.set.len(), 1);
}

#[test]
fn a_worker_panic_becomes_an_error_and_the_worker_keeps_serving() {
    let mut h = Harness::ready(SMALL);
    h.send(Command::Panic);
    h.wait_for("the panic report", |app| app.popup.is_some());
    let text = error_text(&h);
    assert!(text.contains("the worker panicked: deliberate panic requested by a test"), "{text}");
    h.press(KeyCode::Enter);
    h.press(KeyCode::Char('n'));
    h.wait_for("the next digit after the panic", |app| app.study.digit_data.as_ref().is_some_and(|d| d.index == 1));
    assert!(h.app.popup.is_none());
}

#[test]
fn a_vanished_worker_is_reported_once() {
    let mut h = Harness::ready(SMALL);
    h.send(Command::Shutdown);
    h.wait_for("the worker to be gone", |app| !app.worker_alive);
    assert!(error_text(&h).contains("worker thread has stopped"));
    h.press(KeyCode::Esc);
    h.press(KeyCode::Char('n'));
    assert!(h.app.popup.is_none(), "a second report: {:?}", h.app.popup);
    assert!(h.screen(80, 24).contains("worker stopped"));
}

#[test]
fn mouse_clicks_select_panes_and_rows_and_the_wheel_scrolls() {
    let mut h = Harness::ready(WIDE);
    let screen = h.app.screen().unwrap();
    let channels = screen.area_of(Pane::Channels).unwrap();
    let click = |x, y| {
        Msg::Mouse(MouseEvent {
            kind: MouseEventKind::Down(MouseButton::Left),
            column: x,
            row: y,
            modifiers: KeyModifiers::NONE,
        })
    };
    // The fourth data row (border, caption, the set's result and header come first).
    h.update(click(channels.x + 3, channels.y + 4 + 3));
    assert_eq!(h.app.focus, Pane::Channels);
    assert_eq!(h.app.study.cursor(), 3);
    let layers = screen.area_of(Pane::Layers).unwrap();
    h.update(click(layers.x + 2, layers.y + 2 + 1));
    assert_eq!((h.app.focus, h.app.study.layer), (Pane::Layers, Layer::Conv2));
    let wheel = Msg::Mouse(MouseEvent {
        kind: MouseEventKind::ScrollDown,
        column: channels.x + 5,
        row: channels.y + 5,
        modifiers: KeyModifiers::NONE,
    });
    h.update(wheel);
    assert_eq!((h.app.focus, h.app.study.cursor()), (Pane::Channels, 1));
    // In the tabbed layout a click on a tab switches panes.
    h.update(Msg::Resize(80, 24));
    let focus = h.app.focus;
    let label = |p: Pane| trojanscope::tui::layout::tab_label(p, focus, 80).chars().count() as u16 + 1;
    let last_tab: u16 = Pane::ALL[..Pane::ALL.len() - 1].iter().map(|&p| label(p)).sum();
    h.update(click(last_tab, 1));
    assert_eq!(h.app.focus, Pane::Circuit);
}

#[test]
fn export_writes_figures_as_svg_and_png_csv_and_markdown_into_the_folder_it_names() {
    let mut h = Harness::ready(SMALL);
    h.type_keys(" w");
    h.wait_for("the ablation and the sweep", |app| {
        app.study.ablation.result.is_some() && !app.jobs.is_running(Job::Sweep)
    });
    h.press(KeyCode::Char('e'));
    let dir = match &h.app.popup {
        Some(Popup::Notice(text)) => PathBuf::from(text.strip_prefix("Exported to ").unwrap()),
        other => panic!("expected the export notice, found {other:?}"),
    };
    // exports/2026-12-07T21-03-05: the UTC date and time.
    assert!(dir.starts_with(&h.exports));
    let stamp = dir.file_name().unwrap().to_str().unwrap();
    assert!(stamp.len() == 19 && stamp.as_bytes()[10] == b'T' && stamp.starts_with("20"), "{stamp}");
    let names: Vec<String> =
        std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    for expected in ["sweep-conv1-weight.csv", "ablation-history.csv", "ablation-history.md"] {
        assert!(names.iter().any(|n| n == expected), "{expected} missing from {names:?}");
    }
    let figures = [
        ("kernel-conv1-0", "conv1:0 incoming weights"),
        ("kernel-conv1-0-diff", "conv1:0 incoming weights: poisoned − clean"),
        ("activations-digit0-conv1-0", "conv1:0 on test digit 0"),
        ("activations-digit0-conv1-all-diff", "conv1 model Δ, every unit: poisoned on triggered − clean on clean"),
        ("sweep-conv1-weight", "conv1 sweep: each unit ablated alone (weight mode)"),
        ("training-loss", "training loss"),
        ("training-accuracy", "probe accuracy during training"),
    ];
    for (name, title) in figures {
        let texts = svg::svg_texts(&svg::figure_svg(&dir, name));
        assert!(texts.iter().any(|t| t == title), "{name}: no title {title} in {texts:?}");
    }
    // Every figure is there twice, and nothing else is a picture.
    let stems = |ext: &str| {
        let mut s: Vec<String> = names.iter().filter_map(|n| n.strip_suffix(ext).map(String::from)).collect();
        s.sort();
        s
    };
    assert_eq!(stems(".svg"), stems(".png"));
    assert!(stems(".svg").len() >= figures.len());
    // The sweep's heatmap names its three rows and its colour bar's values.
    let sweep = svg::svg_texts(&svg::figure_svg(&dir, "sweep-conv1-weight"));
    for text in ["clean", "poison", "rehab", "accuracy (%)", "conv1 unit ablated", "0", "100", "30"] {
        assert!(sweep.iter().any(|t| t == text), "{text} missing from {sweep:?}");
    }
    let md = std::fs::read_to_string(Path::new(&dir).join("ablation-history.md")).unwrap();
    assert!(md.starts_with("| set | mode | clean |") && md.contains("| conv1:0 | weight |"), "{md}");
}

#[test]
fn trigger_recovery_forms_live_flags_the_target_and_x_stops_a_second_one() {
    use trojanscope::engine::cleanse::CleanseConfig;
    let mut h = Harness::ready(SMALL);
    // Keys that need a recovery first say so.
    h.press(KeyCode::Char('u'));
    assert_eq!(h.app.notice.as_deref(), Some("recover the trigger first (R)"));
    h.app.panes.trigger.config = CleanseConfig { images: 320, test_images: 300, ..CleanseConfig::default() };
    // A recovery is saved into the run: R asks first, and no declines.
    let sent = h.sent.len();
    h.press(KeyCode::Char('R'));
    assert_eq!(h.app.popup, Some(Popup::Confirm(Question::Recover)));
    h.press(KeyCode::Char('n'));
    assert!(h.app.popup.is_none() && h.sent.len() == sent && !h.app.jobs.is_running(Job::Recover));
    h.type_keys("Ry");
    assert!(h.app.jobs.is_running(Job::Recover) && h.app.focus == Pane::Trigger);
    assert!(h.sent.last().unwrap().starts_with("Recover"));
    h.wait_for("a live snapshot", |app| app.panes.trigger.progress.is_some() || app.panes.trigger.report.is_some());
    if h.app.jobs.is_running(Job::Recover) {
        // While it runs the rows are the snapshot's: ten labels with their masks.
        assert_eq!(h.app.panes.trigger.rows(true).len(), 10);
        assert!(h.screen(80, 24).contains("recovering"));
    }
    h.wait_for("the recovery", |app| app.panes.trigger.report.is_some());
    let report = h.app.panes.trigger.report.clone().unwrap();
    assert_eq!(report.labels.len(), 10);
    assert_eq!(report.flagged.first(), Some(&8), "{:?}", report.labels.iter().map(|t| t.l1).collect::<Vec<_>>());
    // The cursor starts on the flagged label; the pane says so.
    assert_eq!(h.app.panes.trigger.rows(true)[h.app.panes.trigger.row].label, 8);
    assert!(h.screen(80, 24).contains("label 8 flagged"));
    let saved = tiny_run().join("tiny/recovery-poisoned.json");
    assert!(saved.is_file());
    // A second, long recovery is stopped by x: nothing replaces the first.
    let before = std::fs::read(&saved).unwrap();
    h.app.panes.trigger.config.epochs = 500;
    h.type_keys("Ryx");
    h.wait_for("the stopped recovery", |app| !app.jobs.is_running(Job::Recover));
    assert_eq!(h.app.notice.as_deref(), Some("recovery stopped; nothing saved"));
    assert_eq!(h.app.panes.trigger.report.as_ref().unwrap().labels, report.labels);
    assert_eq!(std::fs::read(&saved).unwrap(), before);
    // Unlearning writes a model into the run: u asks first, and no declines.
    let sent = h.sent.len();
    h.press(KeyCode::Char('u'));
    assert_eq!(h.app.popup, Some(Popup::Confirm(Question::Unlearn)));
    h.press(KeyCode::Esc);
    assert!(h.app.popup.is_none() && h.sent.len() == sent);
    // v visualises the selected unit for the three models.
    h.press(KeyCode::Char('v'));
    h.wait_for("the visualisations", |app| app.panes.trigger.visuals.is_some());
    let visuals = h.app.panes.trigger.visuals.as_ref().unwrap();
    assert_eq!((visuals.site.as_str(), visuals.models.len()), ("conv1", 3));
    assert!(visuals.models.iter().all(|(_, v)| v.image.len() == 784));
}

#[test]
fn the_circuit_pane_patches_searches_ablates_the_circuit_and_prunes() {
    use trojanscope::engine::patch::Direction;
    let mut h = Harness::ready(SMALL);
    // Enter on an empty Circuit pane says what to do first.
    h.type_keys("8");
    h.press(KeyCode::Enter);
    assert_eq!(h.app.notice.as_deref(), Some("no circuit yet (C searches for one)"));
    h.type_keys("P");
    assert!(h.app.jobs.is_running(Job::Patch) && h.sent.last().unwrap().starts_with("Patch"));
    // A second long job waits for the first: refused with a notice.
    h.type_keys("C");
    assert_eq!(h.app.notice.as_deref(), Some("patching every unit is running (x stops it)"));
    h.wait_for("the patching maps", |app| !app.jobs.is_running(Job::Patch));
    let maps = h.app.panes.circuit.patch.clone().unwrap();
    assert_eq!(maps.maps.iter().map(|m| m.direction).collect::<Vec<_>>(), [Direction::Denoise, Direction::Noise]);
    let units: usize = Layer::ALL.iter().map(|l| l.units()).sum();
    assert!(maps.maps.iter().all(|m| m.rows.len() == units));
    // In each direction the target's logit carries the backdoor more than any other output.
    for map in &maps.maps {
        let logits: Vec<f64> = map.rows.iter().filter(|r| r.site == Layer::Fc2).map(|r| map.effect(r)).collect();
        let strongest = (0..logits.len()).max_by(|&a, &b| logits[a].total_cmp(&logits[b])).unwrap();
        assert!(strongest == 8 && logits[8] > 10.0, "{:?}: {logits:?}", map.direction);
    }
    assert!(h.screen(80, 24).contains("denoise: triggered images run"));
    h.type_keys("d");
    assert!(h.screen(80, 24).contains("noise: clean images run"));
    // The search: its circuit goes into the ablation set with Enter.
    h.type_keys("C");
    h.wait_for("the circuit search", |app| !app.jobs.is_running(Job::Circuit));
    let report = h.app.panes.circuit.report.clone().unwrap();
    assert!(!report.stopped && report.front.len() >= 2 && report.keep.len() == 3);
    if let Some(circuit) = &report.circuit {
        h.press(KeyCode::Enter);
        assert_eq!(h.app.study.ablation.set, circuit.set);
        h.wait_for("the circuit's metrics", |app| app.study.ablation.result.is_some());
        assert_eq!(h.app.study.ablation.result.as_ref().unwrap().metrics, circuit.metrics);
    }
    // x stops a search; the pane keeps what it had tried.
    h.type_keys("Cx");
    h.wait_for("the stopped search", |app| !app.jobs.is_running(Job::Circuit));
    assert!(h.app.panes.circuit.report.as_ref().unwrap().stopped);
    // Space toggles the heatmap's unit; f draws the selected layer's curves.
    h.type_keys("c");
    h.press(KeyCode::Down);
    h.press(KeyCode::Right);
    h.type_keys(" ");
    assert_eq!(h.app.study.ablation.set.to_string(), "conv2:1");
    h.type_keys("f");
    h.wait_for("the pruning curves", |app| !app.jobs.is_running(Job::Prune));
    let (layer, curves) = h.app.panes.circuit.curves.clone().unwrap();
    assert_eq!((layer.as_str(), curves.len()), ("conv2", 5));
    assert!(curves.iter().all(|c| c.points.len() == 65));
    // Export writes all of it.
    h.press(KeyCode::Char('e'));
    let dir = match &h.app.popup {
        Some(Popup::Notice(text)) => PathBuf::from(text.strip_prefix("Exported to ").unwrap()),
        other => panic!("expected the export notice, found {other:?}"),
    };
    for name in [
        "patching-denoise.csv",
        "patching-noise.md",
        "circuit-search.csv",
        "prune-conv2.csv",
        "prune-conv2-tac.png",
        "prune-conv2-tac.svg",
    ] {
        assert!(dir.join(name).is_file(), "{name} missing");
    }
    let csv = std::fs::read_to_string(dir.join("patching-noise.csv")).unwrap();
    assert_eq!(csv.lines().count(), 2 + units, "a header, the unpatched row and one per unit");
    // The patching map names every layer, numbers units up to conv2's last, and
    // gives its colour bar's ends; the search's front and the pruning curve their axes.
    let map = svg::svg_texts(&svg::figure_svg(&dir, "patching-denoise"));
    for text in
        ["activation patching: denoise", "conv1", "conv2", "fc1", "fc2", "unit", "layer", "backdoor carried (points)"]
    {
        assert!(map.iter().any(|t| t == text), "{text} missing from {map:?}");
    }
    assert!(map.iter().any(|t| t.starts_with('−')), "no negative end on the colour bar: {map:?}");
    let front = svg::svg_texts(&svg::figure_svg(&dir, "circuit-search"));
    assert!(
        ["units ablated together", "poison accuracy (%)", "Pareto front"].iter().all(|t| front.iter().any(|f| f == t))
    );
    let prune = svg::svg_texts(&svg::figure_svg(&dir, "prune-conv2-tac"));
    let best = &curves.iter().find(|c| c.ranking.to_string() == "tac").unwrap();
    let der = format!("best DER {:.3} at {}", best.points[best.best].der, best.points[best.best].pruned);
    assert!(prune.contains(&der) && prune.iter().any(|t| t == "conv2 units pruned"), "{der} not in {prune:?}");
}
