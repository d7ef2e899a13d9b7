//! A monkey test of the explorer: a seeded stream of thousands of random events
//! (every key of the key table, random characters and special keys with random
//! modifiers, mouse events anywhere, resizes from 1×1 to 300×100) through the real
//! `update` with a real worker on a copy of the tiny run, a frame drawn after every
//! event at the size of the moment. Every long job is started along the way (a burst
//! of its keys every so often) and stopped by `x`. No panic, every frame drawn, no
//! worker panic, nothing written into the run without a question answered, every
//! job the ledger shows ends, and quitting works.

mod tui_support;

use ratatui::crossterm::event::{
    KeyCode, KeyEvent, KeyEventKind, KeyEventState, KeyModifiers, MouseButton, MouseEvent, MouseEventKind,
};
use std::collections::BTreeMap;
use std::io::Write;
use std::time::{Duration, Instant};
use trojanscope::engine::cleanse::CleanseConfig;
use trojanscope::splitmix::SplitMix64;
use trojanscope::tui::app::{App, Msg};
use trojanscope::tui::effect::Popup;
use trojanscope::tui::keymap;
use trojanscope::tui::keys::Context;
use trojanscope::tui::protocol::Job;
use tui_support::{Harness, common, copy_of_tiny};

/// `TROJANSCOPE_MONKEY_SEED` (a number) sends another stream, to explore.
const SEED: u64 = 0x22;
const EVENTS: usize = 6_000;
/// A burst of one long job's keys every this many events.
const BURST_EVERY: usize = 200;
/// The keys that start each long job (`y` answers the question of those that write
/// into the run; `4` focuses the pane whose key `i` is).
const JOB_KEYS: &[(Job, &str)] = &[
    (Job::Sweep, "w"),
    (Job::Recover, "Ry"),
    (Job::Swap, "W"),
    (Job::Patch, "P"),
    (Job::Circuit, "C"),
    (Job::Prune, "f"),
    (Job::Visualize, "v"),
    (Job::Unlearn, "uy"),
    (Job::TopImages, "4i"),
    (Job::Study, "M"),
    (Job::Train, "ry"),
];
/// How long the ledger may take to empty once the stream is over (after `x`).
const END_PATIENCE: Duration = Duration::from_secs(30);

const SPECIAL: &[KeyCode] = &[
    KeyCode::Esc,
    KeyCode::Enter,
    KeyCode::Tab,
    KeyCode::BackTab,
    KeyCode::Backspace,
    KeyCode::Delete,
    KeyCode::Insert,
    KeyCode::Up,
    KeyCode::Down,
    KeyCode::Left,
    KeyCode::Right,
    KeyCode::Home,
    KeyCode::End,
    KeyCode::PageUp,
    KeyCode::PageDown,
    KeyCode::F(1),
    KeyCode::F(12),
    KeyCode::Null,
    KeyCode::CapsLock,
];
const MODIFIERS: &[KeyModifiers] = &[
    KeyModifiers::NONE,
    KeyModifiers::NONE,
    KeyModifiers::NONE,
    KeyModifiers::SHIFT,
    KeyModifiers::ALT,
    KeyModifiers::CONTROL,
];
const BUTTONS: &[MouseButton] = &[MouseButton::Left, MouseButton::Right, MouseButton::Middle];

fn key(code: KeyCode, modifiers: KeyModifiers, kind: KeyEventKind) -> Msg {
    Msg::Key(KeyEvent { code, modifiers, kind, state: KeyEventState::NONE })
}

/// One random event for a terminal of `size`.
fn random_event(rng: &mut SplitMix64, table: &[(KeyCode, KeyModifiers)], size: (u16, u16)) -> Msg {
    let kind = match rng.below(20) {
        0 => KeyEventKind::Release,
        1 => KeyEventKind::Repeat,
        _ => KeyEventKind::Press,
    };
    match rng.below(100) {
        // The key table's keys, Ctrl-C included (it quits; the stream goes on).
        0..=54 => {
            let (code, modifiers) = rng.pick(table);
            key(code, modifiers, kind)
        }
        55..=64 => {
            let c = match rng.below(10) {
                0 => rng.pick(&['é', 'ß', '→', '€', '\u{1F600}', '\0', '\t']),
                _ => char::from(b' ' + rng.below(95) as u8),
            };
            key(KeyCode::Char(c), rng.pick(MODIFIERS), kind)
        }
        65..=79 => key(rng.pick(SPECIAL), rng.pick(MODIFIERS), kind),
        80..=94 => {
            let button = rng.pick(BUTTONS);
            let kinds = [
                MouseEventKind::Down(button),
                MouseEventKind::Up(button),
                MouseEventKind::Drag(button),
                MouseEventKind::Moved,
                MouseEventKind::ScrollUp,
                MouseEventKind::ScrollDown,
                MouseEventKind::ScrollLeft,
                MouseEventKind::ScrollRight,
            ];
            // Mostly on the screen, sometimes just past its edge (a resize racing a click).
            Msg::Mouse(MouseEvent {
                kind: rng.pick(&kinds),
                column: rng.below(size.0 as usize + 2) as u16,
                row: rng.below(size.1 as usize + 2) as u16,
                modifiers: rng.pick(MODIFIERS),
            })
        }
        _ => {
            let (width, height) = match rng.below(3) {
                0 => (1 + rng.below(20), 1 + rng.below(10)),
                _ => (1 + rng.below(300), 1 + rng.below(100)),
            };
            Msg::Resize(width as u16, height as u16)
        }
    }
}

/// Counts by job.
#[derive(Default)]
struct Tally(BTreeMap<String, usize>);

impl Tally {
    fn add(&mut self, job: Job) {
        *self.0.entry(format!("{job:?}")).or_default() += 1;
    }

    fn has(&self, job: Job) -> bool {
        self.0.contains_key(&format!("{job:?}"))
    }
}

/// The monkey's log of what it saw.
#[derive(Default)]
struct Seen {
    events: usize,
    frames: usize,
    started: Tally,
    stopped: Tally,
    quits: usize,
    errors: BTreeMap<String, usize>,
    /// Time spent drawing frames, and waiting for jobs in the bursts.
    drawing: Duration,
    waiting: Duration,
    /// The first recovery, run to its end.
    recovery: Duration,
}

impl Seen {
    /// Records what the ledger and the popup show after an event.
    fn look(&mut self, app: &App, running_before: &[Job], popup_before: &Option<Popup>) {
        for job in app.jobs.running() {
            if !running_before.contains(&job) {
                self.started.add(job);
            }
        }
        if let Some(Popup::Error(text)) = app.popup.as_ref().filter(|&p| Some(p) != popup_before.as_ref()) {
            let kind = text.split(':').next().unwrap_or_default().to_string();
            *self.errors.entry(kind).or_default() += 1;
            assert!(!text.contains("panicked"), "the worker panicked: {text}");
        }
    }
}

/// Sends one event and draws a frame at the size of the moment.
fn send(h: &mut Harness, seen: &mut Seen, msg: Msg) {
    let stop = matches!(&msg, Msg::Key(k) if k.code == KeyCode::Char('x') && k.kind != KeyEventKind::Release
        && k.modifiers & (KeyModifiers::CONTROL | KeyModifiers::ALT) == KeyModifiers::NONE);
    let stoppable = h.app.jobs.stoppable().map(|r| r.job).filter(|_| h.app.context() == Context::Main);
    let before: Vec<Job> = h.app.jobs.running().collect();
    let popup = h.app.popup.clone();
    let sent = h.sent.len();
    h.update(msg);
    // Keys that write into the run (training, a recovery, an unlearned model) ask first.
    let answered = matches!(popup, Some(Popup::Confirm(_)));
    for command in &h.sent[sent..] {
        let writes = ["Train", "Recover", "Unlearn"].iter().any(|w| command.starts_with(w));
        assert!(!writes || answered, "{command} was sent without a question answered");
    }
    h.take_replies();
    if h.quit {
        seen.quits += 1;
        h.quit = false;
    }
    if let (true, Some(job)) = (stop, stoppable) {
        seen.stopped.add(job);
    }
    seen.look(&h.app, &before, &popup);
    seen.events += 1;
    // A frame that fails to draw panics (the test backend has no other error).
    let clock = Instant::now();
    assert_eq!(h.draw(), h.app.area, "the frame covers the terminal");
    seen.drawing += clock.elapsed();
    seen.frames += 1;
}

fn keys(h: &mut Harness, seen: &mut Seen, text: &str) {
    for c in text.chars() {
        send(h, seen, key(KeyCode::Char(c), KeyModifiers::NONE, KeyEventKind::Press));
    }
}

/// Answers no to a question, closes a popup or the help.
fn close_everything(h: &mut Harness, seen: &mut Seen) {
    while h.app.context() != Context::Main {
        let code = if h.app.context() == Context::Confirm { KeyCode::Char('n') } else { KeyCode::Esc };
        send(h, seen, key(code, KeyModifiers::NONE, KeyEventKind::Press));
    }
}

/// The `n`th burst: back to the main view with nothing running, then the keys of
/// the next long job in `JOB_KEYS`. In even rounds of the table the job runs on into
/// the random stream; in odd ones `x` stops it at once. The first recovery runs to
/// its end, and unlearning its flagged label is started and stopped right after.
fn burst(h: &mut Harness, seen: &mut Seen, n: usize) {
    close_everything(h, seen);
    let clock = Instant::now();
    if h.app.jobs.stoppable().is_some() {
        keys(h, seen, "x");
        h.wait_within(Duration::from_secs(5), |app| app.jobs.stoppable().is_none());
    }
    // Long jobs wait for the models (after a retrain or a change of model).
    h.wait_within(Duration::from_secs(10), |app| app.study.ready);
    let (job, start) = JOB_KEYS[n % JOB_KEYS.len()];
    let stop_at_once = (n / JOB_KEYS.len()) % 2 == 1;
    keys(h, seen, start);
    if job == Job::Recover && h.app.panes.trigger.report.is_none() {
        h.wait_within(Duration::from_secs(30), |app| !app.jobs.is_running(Job::Recover));
        seen.recovery = clock.elapsed();
        if h.app.panes.trigger.report.as_ref().is_some_and(|r| !r.flagged.is_empty()) {
            keys(h, seen, "uyx");
        }
    } else if stop_at_once {
        keys(h, seen, "x");
    }
    h.wait_within(Duration::from_millis(150), |app| app.jobs.stoppable().is_none());
    seen.waiting += clock.elapsed();
}

#[test]
fn thousands_of_random_events_never_break_the_explorer_and_every_job_ends() {
    let clock = Instant::now();
    let checkpoints = copy_of_tiny("monkey");
    let mut h = Harness::open(common(&checkpoints, "tiny"), (80, 24));
    h.wait_for("the models to be ready", |app| app.study.ready);
    // Small recoveries (as in tui_update), so that one finishes and unlearning can start.
    h.app.panes.trigger.config = CleanseConfig { images: 320, test_images: 300, ..CleanseConfig::default() };
    let table: Vec<(KeyCode, KeyModifiers)> =
        keymap::table().iter().flat_map(|e| e.binding.keys.iter().copied()).collect();
    let seed = std::env::var("TROJANSCOPE_MONKEY_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(SEED);
    let mut rng = SplitMix64(seed);
    let mut seen = Seen::default();
    let mut bursts = 0;
    for i in 1.. {
        if seen.events >= EVENTS {
            break;
        }
        if i % BURST_EVERY == 0 {
            burst(&mut h, &mut seen, bursts);
            bursts += 1;
        }
        let msg = random_event(&mut rng, &table, (h.app.area.width, h.app.area.height));
        send(&mut h, &mut seen, msg);
    }
    let stream = clock.elapsed();
    // The end: close what is open, stop what runs, and every job ends.
    close_everything(&mut h, &mut seen);
    if h.app.jobs.stoppable().is_some() {
        keys(&mut h, &mut seen, "x");
    }
    let ended = h.wait_within(END_PATIENCE, |app| app.jobs.headline().is_none());
    let pending: Vec<String> = h.app.jobs.running().map(|j| format!("{j:?}")).collect();
    let last_sent = &h.sent[h.sent.len().saturating_sub(12)..];
    assert!(
        ended,
        "jobs still pending {END_PATIENCE:?} after the stream: {pending:?}; the last commands: {last_sent:#?}"
    );
    // Quitting works: q (and yes, should training be asking).
    let quits = seen.quits;
    keys(&mut h, &mut seen, "q");
    assert_eq!(seen.quits, quits + 1, "q did not quit; popup {:?}", h.app.popup);
    let report = format!(
        "monkey: {} events (seed {seed:#x}), {} frames drawn, in {:.1} s ({:.1} s the stream: {:.1} s drawing, \
         {:.1} s waiting for jobs, {:.1} s of it the first recovery); jobs started {:?}, \
         stopped by x {:?}; {} quits by Ctrl-C or q on the way; error popups {:?}; no job left pending\n",
        seen.events,
        seen.frames,
        clock.elapsed().as_secs_f64(),
        stream.as_secs_f64(),
        seen.drawing.as_secs_f64(),
        seen.waiting.as_secs_f64(),
        seen.recovery.as_secs_f64(),
        seen.started.0,
        seen.stopped.0,
        seen.quits,
        seen.errors,
    );
    // Straight to stderr: cargo's capture would hide it on success.
    std::io::stderr().write_all(report.as_bytes()).unwrap();
    assert!(seen.events >= 5_000 && seen.frames == seen.events);
    for (job, _) in JOB_KEYS {
        assert!(seen.started.has(*job), "{job:?} never started: {report}");
        assert!(!job.is_stoppable() || seen.stopped.has(*job), "{job:?} never stopped by x: {report}");
    }
}
