//! The explorer end to end, as a person uses it: in tmux (send-keys, capture-pane)
//! at 80×24 and 200×60, from a fresh folder (it trains and shows progress) to an
//! ablation's metrics, then quit with the terminal intact. Also measures how fast
//! keys are answered while full-MNIST training runs.

mod tui_support;

use ratatui::crossterm::event::{KeyCode, KeyModifiers};
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tui_support::tmux::Tmux;
use tui_support::{TEST_LIMIT, TRAIN_LIMIT, data_dir, scratch};

/// One tmux test at a time: they share two cores with the training they watch.
static SERIAL: Mutex<()> = Mutex::new(());

fn explorer_args(checkpoints: &Path, train_limit: usize, test_limit: Option<usize>) -> Vec<String> {
    let mut args = vec![
        format!("--checkpoints={}", checkpoints.display()),
        format!("--data-dir={}", data_dir().display()),
        "--device=cpu".into(),
        format!("--train-limit={train_limit}"),
    ];
    args.extend(test_limit.map(|n| format!("--test-limit={n}")));
    args
}

/// The cells of the pane holding `marker` on each screen row below it (the pane
/// is found by its position among the vertical borders).
fn column_below<'a>(screen: &'a str, marker: &str, rows: usize) -> Vec<&'a str> {
    let lines: Vec<&str> = screen.lines().collect();
    let at = lines.iter().position(|l| l.contains(marker)).expect("the marker is on screen");
    let index = lines[at].split('│').position(|s| s.contains(marker)).unwrap();
    lines[at + 1..=at + rows].iter().map(|l| l.split('│').nth(index).unwrap_or("")).collect()
}

fn the_researcher_flow(size: (u16, u16)) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let checkpoints = scratch(&format!("tmux-{}x{}", size.0, size.1));
    let tmux = Tmux::start(
        &format!("{}x{}", size.0, size.1),
        size,
        &explorer_args(&checkpoints, TRAIN_LIMIT, Some(TEST_LIMIT)),
    );
    // A fresh folder: the explorer trains and shows it live.
    let training = tmux.wait("training progress", Duration::from_secs(60), |s| s.contains("● training"));
    assert!(training.contains("6 Training"), "{training}");
    tmux.wait("the trained models to load", Duration::from_secs(180), |s| s.contains("● ready"));
    // Select conv1 in the Layers pane and open its channels.
    tmux.keys(&["1", "g", "Enter"]);
    tmux.wait("the conv1 channels", Duration::from_secs(5), |s| s.contains("conv1 · 32 units"));
    // Sort by activation change (unit → ‖Δw‖ → trigger Δ), largest first.
    tmux.keys(&["s", "s"]);
    let sorted = tmux.wait("the sort", Duration::from_secs(5), |s| s.contains("trigger Δ↓"));
    let top_two: Vec<usize> = column_below(&sorted, "‖Δw‖", 2)
        .iter()
        .map(|cell| cell.split_whitespace().next().and_then(|u| u.parse().ok()).expect("a unit number"))
        .collect();
    // Toggle the top two into the ablation set.
    tmux.keys(&["Space", "j", "Space"]);
    let mut expected = top_two.clone();
    expected.sort();
    let set = format!("conv1:{},{}", expected[0], expected[1]);
    tmux.wait("the ablation set", Duration::from_secs(5), |s| s.contains(&format!("ablating {set} (weight)")));
    // Read the metrics change in the Ablation pane.
    tmux.keys(&["5"]);
    let ablation = tmux.wait("the ablation's metrics", Duration::from_secs(60), |s| {
        s.lines().any(|l| l.contains("change") && l.matches('.').count() >= 4) && !s.contains("evaluating")
    });
    let change = ablation.lines().find(|l| l.contains("change")).unwrap();
    // A change is marked `*` when its 95 % interval excludes zero.
    let deltas: Vec<f64> = change.split_whitespace().filter_map(|t| t.trim_matches(['│', '*']).parse().ok()).collect();
    assert_eq!(deltas.len(), 4, "clean, poison, ASR excl. target, rehab: {change}");
    assert!(ablation.contains(&format!("set {set}")), "{ablation}");
    assert!(ablation.lines().any(|l| l.contains(&set) && l.contains("weight")), "the history row: {ablation}");
    // Quit: nothing runs, so no question; the terminal comes back intact.
    tmux.quit_leaves_the_terminal_restored();
}

#[test]
fn fresh_clone_to_ablation_metrics_at_80x24() {
    the_researcher_flow((80, 24));
}

#[test]
fn fresh_clone_to_ablation_metrics_at_200x60() {
    the_researcher_flow((200, 60));
}

#[test]
fn ctrl_c_during_training_and_a_too_small_terminal_leave_a_clean_exit() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let checkpoints = scratch("tmux-ctrl-c");
    let tmux = Tmux::start("ctrlc", (60, 20), &explorer_args(&checkpoints, TRAIN_LIMIT, Some(TEST_LIMIT)));
    tmux.wait("the too-small message", Duration::from_secs(30), |s| s.contains("needs at least 80×24"));
    tmux.run(&["resize-window", "-x", "100", "-y", "30"]);
    tmux.wait("the tabbed layout after the resize", Duration::from_secs(30), |s| s.contains("● training"));
    tmux.keys(&["C-c"]);
    let after = tmux.wait_for_exit();
    assert!(after.contains("exited with 0") && after.contains("icanon echo"), "{after}");
    assert!(!after.contains("● training"), "the alternate screen is gone: {after}");
    assert_eq!(tmux.flag("alternate_on"), "0");
}

/// While the clean phase trains on all 60,000 images (libtorch on one core, the UI
/// on the other), each ↓/↑ in the Training pane must show within 100 ms.
#[test]
fn keys_are_answered_within_100_ms_while_training() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let checkpoints = scratch("tmux-latency");
    let tmux = Tmux::start("latency", (120, 40), &explorer_args(&checkpoints, 60_000, Some(1000)));
    tmux.wait("training to run", Duration::from_secs(60), |s| s.contains("● training clean"));
    let marker_on = |screen: &str, field: &str| screen.lines().any(|l| l.contains('›') && l.contains(field));
    let mut samples = Vec::new();
    for i in 0..30 {
        let (key, field) = if i % 2 == 0 { ("Down", "epochs") } else { ("Up", "seed") };
        let clock = Instant::now();
        tmux.keys(&[key]);
        tmux.wait("the field marker to move", Duration::from_secs(5), |s| marker_on(s, field));
        samples.push(clock.elapsed());
        std::thread::sleep(Duration::from_millis(50));
    }
    let still_training = tmux.screen();
    assert!(still_training.contains("● training clean"), "measured while training: {still_training}");
    tmux.keys(&["C-c"]);
    assert!(tmux.wait_for_exit().contains("exited with 0"));
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let (median, worst) = (ms(samples[samples.len() / 2]), ms(samples[samples.len() - 1]));
    let log = std::fs::read_to_string(checkpoints.join("default/explorer.log")).unwrap_or_default();
    let inside = log.lines().find(|l| l.starts_with("key-to-screen latency")).unwrap_or("no in-app measurement");
    println!(
        "key → screen through tmux while training: median {median:.1} ms, max {worst:.1} ms; in the app: {inside}"
    );
    assert!(median < 100.0 && worst < 250.0, "median {median:.1} ms, max {worst:.1} ms");
}

impl Tmux {
    /// Time until the shell reports the explorer's exit, polled every few milliseconds.
    fn time_to_exit(&self, since: Instant) -> Duration {
        while !self.screen().contains("exited with") {
            assert!(since.elapsed() < Duration::from_secs(15), "the explorer did not exit: {}", self.screen());
            std::thread::sleep(Duration::from_millis(5));
        }
        since.elapsed()
    }
}

/// The explorer's flags for the saved tiny run (trained once per test binary);
/// `--fresh`, as the tests share the run and would restore each other's sessions.
fn saved_run_args(test_limit: Option<usize>) -> Vec<String> {
    let mut args = explorer_args(tui_support::tiny_run(), TRAIN_LIMIT, test_limit);
    args.extend(["--run=tiny".into(), "--fresh".into()]);
    args
}

/// Quitting never waits for the worker: within half a second while training (after
/// the question) and while a saved run's activations are still being cached.
#[test]
fn quitting_takes_under_half_a_second_while_training_and_while_loading() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let checkpoints = scratch("tmux-quit-training");
    let tmux = Tmux::start("quit-training", (100, 30), &explorer_args(&checkpoints, TRAIN_LIMIT, Some(TEST_LIMIT)));
    tmux.wait("training to run", Duration::from_secs(60), |s| s.contains("● training"));
    tmux.keys(&["q"]);
    tmux.wait("the question", Duration::from_secs(5), |s| s.contains("Quit anyway?"));
    let clock = Instant::now();
    tmux.keys(&["y"]);
    let while_training = tmux.time_to_exit(clock);
    drop(tmux);
    // A saved run opened on the full test set: 20,000 images to cache before "ready".
    let tmux = Tmux::start("quit-loading", (100, 30), &saved_run_args(None));
    let loading = |s: &str| s.contains("● caching") || s.contains("● measuring") || s.contains("● loading");
    tmux.wait("the run loading", Duration::from_secs(30), loading);
    let clock = Instant::now();
    tmux.keys(&["q"]);
    let while_loading = tmux.time_to_exit(clock);
    println!("q → exit: {while_training:?} while training, {while_loading:?} while loading");
    for (what, took) in [("training", while_training), ("loading", while_loading)] {
        assert!(took < Duration::from_millis(500), "quitting while {what} took {took:?}");
    }
}

/// The explorer's views of every CLI analysis, reached as a person would: each key
/// read from `?` help first, then pressed, at 80×24 (tabs) and 160×48 (every pane).
fn views_reachable_from_the_help(size: (u16, u16)) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let tmux = Tmux::start(&format!("views-{}x{}", size.0, size.1), size, &saved_run_args(Some(TEST_LIMIT)));
    let long = Duration::from_secs(60);
    tmux.wait("the models to be ready", long, |s| s.contains("● ready"));
    let help_lists = |focus: &str, text: &str| {
        tmux.keys(&[focus, "?"]);
        tmux.wait(&format!("{text:?} in the help"), Duration::from_secs(5), |s| s.contains(text));
        tmux.keys(&["Escape"]);
        tmux.wait("the help to close", Duration::from_secs(5), |s| !s.contains("Esc closes"));
    };
    // The unit's top and bottom test images.
    help_lists("4", "unit's top images");
    tmux.keys(&["i"]);
    tmux.wait("the top images", long, |s| s.contains("most") && s.contains("least") && s.contains("mean activation"));
    // The layer swaps.
    help_lists("5", "layer swaps into the model");
    tmux.keys(&["W"]);
    tmux.wait("the swap table", long, |s| s.contains("layers swapped") && s.contains("conv1 (0) + conv2 (3)"));
    // The rehab model under study, and its kernels.
    help_lists("3", "next model under study");
    tmux.keys(&["M"]);
    tmux.wait("the rehab model, ready", long, |s| s.contains("rehab vs clean") && s.contains("● ready"));
    tmux.wait("the rehab model's kernels", Duration::from_secs(5), |s| s.contains("Δ rehab − clean"));
    // A chart legend.
    tmux.keys(&["6"]);
    tmux.wait("the accuracy chart's legend", Duration::from_secs(5), |s| s.contains("━ clean ━ poison ━ rehab"));
    tmux.keys(&["q"]);
    let after = tmux.wait_for_exit();
    assert!(after.contains("exited with 0"), "{after}");
}

#[test]
fn swaps_top_images_the_rehab_model_and_legends_at_80x24() {
    views_reachable_from_the_help((80, 24));
}

#[test]
fn swaps_top_images_the_rehab_model_and_legends_at_160x48() {
    views_reachable_from_the_help((160, 48));
}

/// The name tmux's send-keys gives a key (`None`: a key tmux cannot name here, and
/// Ctrl-C and q, which would end the session before the `q` this test is about).
fn tmux_name(code: KeyCode, modifiers: KeyModifiers) -> Option<String> {
    if modifiers.contains(KeyModifiers::CONTROL) || code == KeyCode::Char('q') {
        return None;
    }
    Some(match code {
        KeyCode::Char(' ') => "Space".into(),
        KeyCode::Char(';') => "\\;".into(),
        KeyCode::Char(c) => c.to_string(),
        KeyCode::Enter => "Enter".into(),
        KeyCode::Esc => "Escape".into(),
        KeyCode::Tab => "Tab".into(),
        KeyCode::BackTab => "BTab".into(),
        KeyCode::Up => "Up".into(),
        KeyCode::Down => "Down".into(),
        KeyCode::Left => "Left".into(),
        KeyCode::Right => "Right".into(),
        KeyCode::PageUp => "PPage".into(),
        KeyCode::PageDown => "NPage".into(),
        KeyCode::Home => "Home".into(),
        KeyCode::End => "End".into(),
        _ => return None,
    })
}

/// A few hundred seeded random keys (the key table's and random characters, but
/// not q or Ctrl-C) into
/// the real binary on a copy of the tiny run, then `q`: it quits (answering a
/// question if one is open) and the terminal is restored.
#[test]
fn random_keys_then_q_quit_and_restore_the_terminal() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // A private copy: random keys may retrain or recover into it.
    let checkpoints = tui_support::copy_of_tiny("tmux-monkey");
    let mut args = explorer_args(&checkpoints, TRAIN_LIMIT, Some(TEST_LIMIT));
    args.push("--run=tiny".into());
    let tmux = Tmux::start("monkey", (100, 30), &args);
    tmux.wait("the models to be ready", Duration::from_secs(60), |s| s.contains("● ready"));
    let table: Vec<String> = trojanscope::tui::keymap::table()
        .iter()
        .flat_map(|e| e.binding.keys.iter().filter_map(|&(code, modifiers)| tmux_name(code, modifiers)))
        .collect();
    // A fixed linear congruential stream: the same keys on every machine.
    let mut state: u64 = 0x22;
    let mut next = |n: usize| {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((state >> 33) % n as u64) as usize
    };
    let mut sent = 0;
    while sent < 300 {
        let batch: Vec<String> = (0..20)
            .filter_map(|_| match next(4) {
                0 => tmux_name(KeyCode::Char(char::from(b'!' + next(94) as u8)), KeyModifiers::NONE),
                _ => Some(table[next(table.len())].clone()),
            })
            .collect();
        let batch: Vec<&str> = batch.iter().map(String::as_str).collect();
        tmux.keys(&batch);
        sent += batch.len();
        std::thread::sleep(Duration::from_millis(30));
    }
    // Still running and drawing after them.
    tmux.wait("the explorer after the keys", Duration::from_secs(10), |s| s.contains(" ● "));
    // Close a popup or the help (Escape answers a question with no), then q; a
    // question about quitting while training gets yes.
    tmux.keys(&["Escape"]);
    std::thread::sleep(Duration::from_millis(300));
    tmux.keys(&["Escape"]);
    std::thread::sleep(Duration::from_millis(300));
    tmux.keys(&["q"]);
    let clock = Instant::now();
    let after = loop {
        let screen = tmux.screen();
        if screen.contains("Quit anyway?") {
            tmux.keys(&["y"]);
        }
        if screen.lines().skip_while(|l| !l.contains("exited with")).nth(1).is_some_and(|l| l.contains("icanon")) {
            break screen;
        }
        assert!(clock.elapsed() < Duration::from_secs(15), "q did not quit after {sent} random keys:\n{screen}");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(after.contains("exited with 0"), "{after}");
    assert!(after.contains("icanon echo"), "the tty is back in cooked mode with echo: {after}");
    for flag in ["alternate_on", "mouse_any_flag", "mouse_button_flag", "mouse_standard_flag", "mouse_sgr_flag"] {
        assert_eq!(tmux.flag(flag), "0", "{flag} is still set after quitting");
    }
    assert_eq!(tmux.flag("cursor_flag"), "1", "the cursor is visible again");
    println!("{sent} random keys through tmux, then q: exited, terminal restored");
}
