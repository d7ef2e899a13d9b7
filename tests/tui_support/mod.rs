//! Shared by the explorer's tests: a tiny real run trained by the engine (once per
//! test binary), the explorer driven with a real worker, and screens as text.
#![allow(dead_code)] // each test binary uses its own part of this module

use ratatui::Terminal;
use ratatui::backend::TestBackend;
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};
use trojanscope::cli::args::{Cli, CommonArgs};
use trojanscope::engine::lab::{Lab, RunDir};
use trojanscope::engine::train::{Phase, TrainConfig};
use trojanscope::tui::app::{App, Msg};
use trojanscope::tui::effect::Effect;
use trojanscope::tui::images::ImageStore;
use trojanscope::tui::protocol::Reply;
use trojanscope::tui::render;
use trojanscope::tui::worker::WorkerHandle;

pub const TRAIN_LIMIT: usize = 3000;
pub const TEST_LIMIT: usize = 500;
/// Generous: the engine is slow on two busy cores.
pub const PATIENCE: Duration = Duration::from_secs(120);

#[path = "../common/mod.rs"]
mod shared;
pub use shared::{data_dir, scratch};

/// The study's recipe on the first 3000 training and 500 test images, checkpoints
/// in `<folder>/tiny`: trained once per test binary, on one thread (reproducible).
pub fn tiny_run() -> &'static Path {
    static RUN: OnceLock<PathBuf> = OnceLock::new();
    RUN.get_or_init(|| {
        let checkpoints = scratch("fixture");
        let data = shared::mnist(TRAIN_LIMIT, TEST_LIMIT);
        let config = TrainConfig { eval_every: 25, eval_subset: 200, ..TrainConfig::default() };
        tch::set_num_threads(1);
        let lab = Lab::new(tch::Device::Cpu, data, config, RunDir::new(&checkpoints, "tiny")).unwrap();
        lab.train(&Phase::ALL, &mut |_| ControlFlow::Continue(())).unwrap();
        checkpoints
    })
}

/// The explorer's flags for a run in `checkpoints` (small data, CPU, one thread).
pub fn common(checkpoints: &Path, run: &str) -> CommonArgs {
    let args = [
        "trojanscope".to_string(),
        format!("--checkpoints={}", checkpoints.display()),
        format!("--run={run}"),
        format!("--data-dir={}", data_dir().display()),
        "--device=cpu".into(),
        "--threads=1".into(),
        format!("--train-limit={TRAIN_LIMIT}"),
        format!("--test-limit={TEST_LIMIT}"),
    ];
    use clap::Parser;
    Cli::parse_from(args).common
}

/// The explorer without a terminal: a real worker, replies fed to `update`, effects
/// carried out as the event loop does.
pub struct Harness {
    pub app: App,
    pub images: ImageStore,
    worker: Option<WorkerHandle>,
    replies: Receiver<Reply>,
    pub quit: bool,
    pub sent: Vec<String>,
    /// The folder a test's exports go into.
    pub exports: PathBuf,
}

impl Harness {
    pub fn open(common: CommonArgs, size: (u16, u16)) -> Harness {
        // libtorch has one random generator per process: a worker that trains or
        // recovers a trigger while the tiny run trains would reorder its batches and
        // change its numbers. So the tiny run is trained before any worker starts.
        tiny_run();
        let (tx, rx) = channel();
        let worker = WorkerHandle::spawn(common, Box::new(move |r| drop(tx.send(r)))).unwrap();
        let exports = scratch("exports");
        let mut app = App::new(ratatui::layout::Rect::new(0, 0, size.0, size.1), exports.clone());
        let effects = app.start();
        let mut h = Harness {
            app,
            images: ImageStore::halfblocks(),
            worker: Some(worker),
            replies: rx,
            quit: false,
            sent: Vec::new(),
            exports,
        };
        h.perform(effects);
        h
    }

    /// The tiny run, loaded and ready.
    pub fn ready(size: (u16, u16)) -> Harness {
        let mut h = Harness::open(common(tiny_run(), "tiny"), size);
        h.wait_for("the models to be ready", |app| {
            app.study.ready && app.study.base.is_some() && app.study.digit_data.is_some()
        });
        h
    }

    pub fn perform(&mut self, effects: Vec<Effect>) {
        for effect in effects {
            match effect {
                Effect::Quit => self.quit = true,
                Effect::Send(command) => {
                    self.sent.push(format!("{command:?}"));
                    let alive = self.worker.as_ref().is_some_and(|w| w.send(command));
                    if !alive {
                        let more = self.app.update(Msg::WorkerGone);
                        self.perform(more);
                    }
                }
                Effect::Export(job) => {
                    let result = job.write();
                    let more = self.app.update(Msg::Exported(result));
                    self.perform(more);
                }
                // The app applies these itself before returning.
                Effect::Notice(_) | Effect::Popup(_) | Effect::Focus(_) | Effect::FocusOwner | Effect::FocusNext => {}
            }
        }
    }

    /// Sends a command straight to the worker (what no key sends, e.g. the test panic).
    pub fn send(&mut self, command: trojanscope::tui::protocol::Command) {
        self.perform(vec![Effect::Send(command)]);
    }

    pub fn update(&mut self, msg: Msg) {
        let effects = self.app.update(msg);
        self.perform(effects);
    }

    pub fn press(&mut self, code: KeyCode) {
        self.update(Msg::Key(KeyEvent::new(code, KeyModifiers::NONE)));
    }

    pub fn ctrl(&mut self, c: char) {
        self.update(Msg::Key(KeyEvent::new(KeyCode::Char(c), KeyModifiers::CONTROL)));
    }

    /// Presses each character as a key (space included).
    pub fn type_keys(&mut self, keys: &str) {
        for c in keys.chars() {
            self.press(KeyCode::Char(c));
        }
    }

    /// Feeds worker replies into `update` until `done` holds.
    pub fn wait_for(&mut self, what: &str, done: impl Fn(&App) -> bool) {
        let clock = Instant::now();
        while !done(&self.app) {
            let left = PATIENCE.saturating_sub(clock.elapsed());
            assert!(!left.is_zero(), "timed out waiting for {what}; popup: {:?}", self.app.popup);
            match self.replies.recv_timeout(left.min(Duration::from_millis(200))) {
                Ok(reply) => self.update(Msg::Worker(reply)),
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => self.update(Msg::WorkerGone),
            }
        }
    }

    /// The screen at `width`×`height` as text.
    pub fn screen(&mut self, width: u16, height: u16) -> String {
        self.update(Msg::Resize(width, height));
        let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
        let frame = terminal.draw(|f| render::draw(f, &self.app, &mut self.images)).unwrap();
        let buffer = frame.buffer;
        (0..height)
            .map(|y| (0..width).map(|x| buffer[(x, y)].symbol().to_string()).collect::<String>().trim_end().to_string())
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        if let Some(worker) = self.worker.take() {
            worker.shutdown(Duration::from_secs(5));
        }
    }
}

/// A screen with what differs between machines hidden: digits of decimal numbers
/// (floating-point results vary with the CPU's kernels), chart dots and half-block
/// orientation.
pub fn masked(screen: &str) -> String {
    let chars: Vec<char> = screen.chars().collect();
    let mut out = chars.clone();
    let mut i = 0;
    while i < chars.len() {
        if chars[i].is_ascii_digit() {
            let start = i;
            while i < chars.len() && chars[i].is_ascii_digit() {
                i += 1;
            }
            if i + 1 < chars.len() && chars[i] == '.' && chars[i + 1].is_ascii_digit() {
                i += 1;
                while i < chars.len() && chars[i].is_ascii_digit() {
                    i += 1;
                }
                for c in &mut out[start..i] {
                    if c.is_ascii_digit() {
                        *c = '#';
                    }
                }
            }
            continue;
        }
        out[i] = match chars[i] {
            '\u{2801}'..='\u{28ff}' => '•',
            '▄' => '▀',
            c => c,
        };
        i += 1;
    }
    out.into_iter().collect()
}
