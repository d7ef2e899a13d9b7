//! The explorer: a ratatui terminal UI over a background tch worker.
//!
//! One `App` holds the state and `update(msg) -> effects` changes it; `render`
//! draws a frame from it without blocking or touching tensors; the `worker` thread
//! owns every tch object and answers commands with plain data. The event loop here
//! ties them together on a single-threaded tokio runtime.

pub mod app;
pub mod columns;
pub mod cursor;
pub mod effect;
pub mod export;
pub mod fit;
pub mod graph;
pub mod images;
pub mod jobs;
pub mod keymap;
pub mod keys;
pub mod layout;
pub mod panes;
pub mod pictures;
pub mod protocol;
pub mod query;
pub mod render;
pub mod resume;
pub mod session;
pub mod shelf;
pub mod study;
pub mod terminal;
pub mod theme;
pub mod train_state;
pub mod words;
pub mod worker;

use crate::engine::run::RunDir;
use crate::setup::CommonArgs;
use app::{App, Msg};
use color_eyre::eyre::{Result, WrapErr, eyre};
use effect::Effect;
use futures::StreamExt;
use images::ImageStore;
use ratatui::crossterm::event::{Event, EventStream};
use ratatui::layout::Rect;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use terminal::{ImageChoice, Tui};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc::{UnboundedSender, unbounded_channel};
use worker::WorkerHandle;

/// Redraws at least this often (progress, resizes).
const TICK: Duration = Duration::from_millis(100);
/// How long quitting waits for the worker: the explorer exits within half a second
/// in every state.
const QUIT_PATIENCE: Duration = Duration::from_millis(100);

/// Opens the explorer on the run named by the flags and runs it until quit;
/// `fresh`: without restoring the run's saved session.
pub fn run(common: &CommonArgs, fresh: bool) -> Result<()> {
    let choice: ImageChoice = common.image_protocol.parse().map_err(|e: String| eyre!(e))?;
    // Checked first, so that nothing (not even a restore sequence) is written to a
    // pipe or a file.
    if !(std::io::stdin().is_terminal() && std::io::stdout().is_terminal()) {
        return Err(eyre!(
            "the explorer needs an interactive terminal (stdin and stdout are not both a TTY); see --help for the commands"
        ));
    }
    let log = log_path(&RunDir::new(&common.checkpoints, &common.run))?;
    terminal::install_panic_hook();
    terminal::redirect_stderr(&log).wrap_err_with(|| format!("cannot open the log {}", log.display()))?;
    let outcome = terminal::enter(choice)
        .map_err(|e| {
            eyre!("cannot set up the terminal ({e}): the explorer needs an interactive terminal; see --help for the commands")
        })
        .and_then(|(mut tui, mut images)| {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            runtime.block_on(event_loop(&mut tui, &mut images, common, fresh))
        });
    terminal::restore();
    outcome.map_err(|e| {
        let causes: Vec<String> = e.chain().map(|c| c.to_string()).collect();
        eyre!("{} (the explorer's log: {})", causes.join(": "), log.display())
    })
}

/// The explorer's log: `explorer.log` in the run, or, when the run cannot be
/// written (the explorer then only reads it), a file in the temporary folder.
fn log_path(run: &RunDir) -> Result<PathBuf> {
    use crate::engine::run::files::{ensure_writable, refuse_link};
    let log = run.root.join("explorer.log");
    refuse_link(&log)?;
    Ok(match ensure_writable(&run.root) {
        Ok(()) => log,
        Err(_) => std::env::temp_dir().join(format!("trojanscope-explorer-{}.log", std::process::id())),
    })
}

/// Key-to-screen times: from a key's arrival to the end of the frame showing it.
#[derive(Default)]
struct Latency {
    waiting: Option<Instant>,
    samples: Vec<Duration>,
}

impl Latency {
    fn summary(&mut self) -> Option<String> {
        if self.samples.is_empty() {
            return None;
        }
        self.samples.sort();
        let at = |q: f64| self.samples[((self.samples.len() - 1) as f64 * q) as usize].as_secs_f64() * 1e3;
        Some(format!(
            "key-to-screen latency over {} keys: median {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            self.samples.len(),
            at(0.5),
            at(0.99),
            at(1.0)
        ))
    }
}

async fn event_loop(tui: &mut Tui, images: &mut ImageStore, common: &CommonArgs, fresh: bool) -> Result<()> {
    let (reply_tx, mut replies) = unbounded_channel();
    let worker = WorkerHandle::spawn(common.clone(), Box::new(move |reply| drop(reply_tx.send(reply))))?;
    let (export_tx, mut exports) = unbounded_channel();
    let size = tui.size()?;
    let mut app = App::new(Rect::new(0, 0, size.width, size.height), PathBuf::from("exports"));
    app.fresh = fresh;
    let mut events = EventStream::new();
    let mut tick = tokio::time::interval(TICK);
    let (mut term, mut hangup) = (signal(SignalKind::terminate())?, signal(SignalKind::hangup())?);
    let mut latency = Latency::default();
    let mut pending = app.start();
    let mut worker_alive = true;
    let mut saver = session::Saver::default();
    'run: loop {
        // Before the commands go out: a job about to take the run's lock finds it free.
        saver.save(app.session(), false);
        while !pending.is_empty() {
            let mut next = Vec::new();
            for effect in pending {
                match effect {
                    Effect::Quit => break 'run,
                    Effect::Send(command) => {
                        if !worker.send(command) {
                            next.extend(app.update(Msg::WorkerGone));
                        }
                    }
                    Effect::Export(job) => spawn_export(*job, export_tx.clone()),
                    Effect::Restore { root, checkpoints, test_images } => {
                        let restored = session::read(&RunDir { root }, &checkpoints, test_images);
                        next.extend(app.update(Msg::Restored(Box::new(restored))));
                    }
                    // The app applies these itself before returning.
                    Effect::Notice(_)
                    | Effect::Popup(_)
                    | Effect::Focus(_)
                    | Effect::FocusOwner
                    | Effect::FocusNext => {}
                }
            }
            pending = next;
        }
        tui.draw(|frame| render::draw(frame, &app, images))?;
        if let Some(start) = latency.waiting.take() {
            latency.samples.push(start.elapsed());
        }
        let msg = tokio::select! {
            event = events.next() => match event {
                Some(Ok(Event::Key(key))) => {
                    latency.waiting.get_or_insert_with(Instant::now);
                    Msg::Key(key)
                }
                Some(Ok(Event::Mouse(mouse))) => Msg::Mouse(mouse),
                Some(Ok(Event::Resize(width, height))) => Msg::Resize(width, height),
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(eyre!("cannot read the terminal: {e}")),
                None => break,
            },
            reply = replies.recv(), if worker_alive => match reply {
                Some(reply) => Msg::Worker(reply),
                None => {
                    worker_alive = false;
                    Msg::WorkerGone
                }
            },
            Some(result) = exports.recv() => Msg::Exported(result),
            _ = tick.tick() => continue,
            _ = term.recv() => break,
            _ = hangup.recv() => break,
        };
        pending = app.update(msg);
        // Take every reply already waiting before drawing again.
        while let Ok(reply) = replies.try_recv() {
            pending.extend(app.update(Msg::Worker(reply)));
        }
    }
    saver.save(app.session(), true);
    if let Some(summary) = latency.summary() {
        eprintln!("{summary}");
    }
    // A moment for the worker to stop at its next check; a job with none (a cache
    // being built, a checkpoint being written) is left to the process's exit, which
    // is safe: every save is a temporary file renamed into place, and the run's lock
    // is released with the process.
    worker.shutdown(QUIT_PATIENCE);
    Ok(())
}

fn spawn_export(job: effect::ExportJob, done: UnboundedSender<std::result::Result<PathBuf, String>>) {
    let spawned = std::thread::Builder::new().name("trojanscope-export".into()).spawn({
        let done = done.clone();
        move || drop(done.send(job.write()))
    });
    if let Err(e) = spawned {
        let _ = done.send(Err(format!("cannot start the export thread: {e}")));
    }
}
