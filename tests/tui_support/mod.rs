//! Shared by the explorer's tests: a tiny real run (committed fixed weights, copied
//! into a temporary folder once per test binary), the explorer driven with a real
//! worker, and screens as text.
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
use trojanscope::engine::lab::Lab;
use trojanscope::engine::run::RunDir;
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

pub mod tmux;

#[path = "../common/mod.rs"]
pub mod shared;
pub use shared::{data_dir, scratch};

/// The committed tiny run's clean and poisoned models imported as a graph run
/// `g` (`import --preset study`) into `checkpoints`, measured on `test_limit` images.
pub fn tiny_as_graph(checkpoints: &Path, test_limit: usize) {
    for model in ["clean", "poisoned"] {
        let weights = fixture().join(format!("{model}.safetensors")).display().to_string();
        let mut import = shared::binary();
        import.args(["--checkpoints", &checkpoints.display().to_string(), "--run", "g"]);
        import.args(["--test-limit", &test_limit.to_string()]);
        let out = import.args(["import", "--preset", "study", &weights, "--model", model]).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
}

/// The committed tiny run: the study's recipe trained by the engine on the first
/// 3000 training and 500 test images. Fixed weights, so that what the explorer shows
/// does not depend on how this CPU rounds a training run. `train_tiny_run`
/// regenerates it (`tests/tui_fixture.rs`).
pub fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-run")
}

/// The files of the fixture: the three models, their sidecars and the training log.
pub const FIXTURE_FILES: [&str; 7] = [
    "clean.safetensors",
    "clean.json",
    "poisoned.safetensors",
    "poisoned.json",
    "rehab.safetensors",
    "rehab.json",
    "metrics.jsonl",
];

/// A copy of the committed tiny run in `<folder>/tiny` (once per test binary; tests
/// that change or break it take their own copy).
pub fn tiny_run() -> &'static Path {
    static RUN: OnceLock<PathBuf> = OnceLock::new();
    RUN.get_or_init(|| copy_of_tiny("fixture"))
}

/// A private copy of the committed tiny run in `<scratch folder name>/tiny`.
pub fn copy_of_tiny(name: &str) -> PathBuf {
    let checkpoints = scratch(name);
    let run = checkpoints.join("tiny");
    std::fs::create_dir_all(&run).unwrap();
    for file in FIXTURE_FILES {
        let from = fixture().join(file);
        std::fs::copy(&from, run.join(file)).unwrap_or_else(|e| panic!("cannot copy {}: {e}", from.display()));
    }
    checkpoints
}

/// The tiny run's data: the first 3000 training and 500 test images of MNIST.
pub fn mnist_subset() -> trojanscope::data::loaded::LoadedData {
    shared::mnist(TRAIN_LIMIT, TEST_LIMIT)
}

/// Trains the tiny run into `run`, on one thread (the fixture's regeneration path).
pub fn train_tiny_run(run: RunDir) {
    let data = mnist_subset();
    let config = TrainConfig { eval_every: 25, eval_subset: 200, ..TrainConfig::default() };
    tch::set_num_threads(1);
    let lab = Lab::new(tch::Device::Cpu, data, config, run).unwrap();
    lab.train(&Phase::ALL, &mut |_| ControlFlow::Continue(())).unwrap();
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
        let (tx, rx) = channel();
        let worker = WorkerHandle::spawn(common, Box::new(move |r| drop(tx.send(r)))).unwrap();
        // A folder per harness: tests run side by side in one process, `scratch`
        // empties a folder it hands out, and two exports in one second share a name.
        static HARNESSES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let exports = scratch(&format!("exports-{}", HARNESSES.fetch_add(1, std::sync::atomic::Ordering::Relaxed)));
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
                Effect::Restore { root, checkpoints, test_images } => {
                    let run = trojanscope::engine::run::RunDir { root };
                    let restored = trojanscope::tui::session::read(&run, &checkpoints, test_images);
                    let more = self.app.update(Msg::Restored(Box::new(restored)));
                    self.perform(more);
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
        assert!(self.wait_within(PATIENCE, done), "timed out waiting for {what}; popup: {:?}", self.app.popup);
    }

    /// Feeds worker replies into `update` until `done` holds or `limit` passes;
    /// whether it held.
    pub fn wait_within(&mut self, limit: Duration, done: impl Fn(&App) -> bool) -> bool {
        let clock = Instant::now();
        while !done(&self.app) {
            let left = limit.saturating_sub(clock.elapsed());
            if left.is_zero() {
                return false;
            }
            match self.replies.recv_timeout(left.min(Duration::from_millis(200))) {
                Ok(reply) => self.update(Msg::Worker(reply)),
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => self.update(Msg::WorkerGone),
            }
        }
        true
    }

    /// Feeds the worker replies already waiting into `update`, without waiting.
    pub fn take_replies(&mut self) {
        while let Ok(reply) = self.replies.try_recv() {
            self.update(Msg::Worker(reply));
        }
    }

    /// Draws a frame at the app's size, as the event loop does after every event;
    /// the area the frame covered (the test backend cannot fail, only panic).
    pub fn draw(&mut self) -> ratatui::layout::Rect {
        let (width, height) = (self.app.area.width, self.app.area.height);
        let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap_or_else(|never| match never {});
        let frame =
            terminal.draw(|f| render::draw(f, &self.app, &mut self.images)).unwrap_or_else(|never| match never {});
        frame.area
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

/// A screen with chart dots and half-block orientation made uniform. Numbers are
/// kept: the panes render from the committed tiny run, and every figure they show
/// was checked the same on the AVX-512, AVX2 and libtorch-only paths (only the
/// optimisations' results move: see `masked_numbers_in`).
pub fn masked(screen: &str) -> String {
    screen
        .chars()
        .map(|c| match c {
            '\u{2801}'..='\u{28ff}' => '•',
            '▄' => '▀',
            c => c,
        })
        .collect()
}

/// `masked`, and inside `area` the digits of every decimal number and percentage
/// hidden (`#`), except on rows whose text in `area` starts with one of `exact`:
/// for what an optimisation computed, whose last digit moves with the CPU's
/// rounding (a recovered L1 read 318.4 with libtorch's AVX-512 kernels and 318.3
/// with its AVX2 ones).
pub fn masked_numbers_in(screen: &str, area: ratatui::layout::Rect, exact: &[&str]) -> String {
    let columns = area.x as usize + 1..(area.x + area.width) as usize;
    let rows = area.y as usize..(area.y + area.height) as usize;
    let exact_row = |line: &[char]| {
        let text: String = line.iter().skip(columns.start).take(columns.len()).collect();
        exact.iter().any(|e| text.starts_with(e))
    };
    let inside = |x: usize, y: usize, line: &[char]| columns.contains(&x) && rows.contains(&y) && !exact_row(line);
    let lines: Vec<String> = masked(screen)
        .lines()
        .enumerate()
        .map(|(y, line)| {
            let chars: Vec<char> = line.chars().collect();
            let mut out = chars.clone();
            let mut x = 0;
            while x < chars.len() {
                if !chars[x].is_ascii_digit() {
                    x += 1;
                    continue;
                }
                let start = x;
                while x < chars.len()
                    && (chars[x].is_ascii_digit()
                        || (chars[x] == '.' && x + 1 < chars.len() && chars[x + 1].is_ascii_digit()))
                {
                    x += 1;
                }
                let number = &chars[start..x];
                if number.contains(&'.') || chars.get(x) == Some(&'%') {
                    for i in (start..x).filter(|&i| chars[i].is_ascii_digit() && inside(i, y, &chars)) {
                        out[i] = '#';
                    }
                }
            }
            out.into_iter().collect()
        })
        .collect();
    lines.join("\n")
}
