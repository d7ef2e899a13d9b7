//! Whole-process figures: what a user waits for, from starting this executable on
//! a saved run to its answer (libtorch's start, loading data and models included).

use crate::engine::lab::ModelKind;

use crate::engine::run::RunDir;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The commands timed, each as `trojanscope <the bench's flags> <command>`.
pub const COMMANDS: [&[&str]; 4] =
    [&["eval", "--model", "poisoned"], &["ablate", "conv1:31"], &["sweep", "conv1"], &["swap"]];

/// The explorer's figure: from its start until its status line says it is ready.
pub const EXPLORER_FIGURE: &str = "whole process: explorer → ready";

/// How long the explorer may take to be ready before its figure is given up.
const READY_LIMIT: Duration = Duration::from_secs(120);

/// One whole-process figure: the median wall time of the runs and their largest
/// peak resident memory, or why it was not measured.
#[derive(Debug, Clone, Serialize)]
pub struct ProcessFigure {
    pub name: String,
    #[serde(flatten)]
    pub measured: Option<Run>,
    pub not_measured: Option<String>,
}

/// A run's wall time and peak resident memory (or the median and the largest of several).
#[derive(Debug, Clone, Serialize)]
pub struct Run {
    pub wall_s: f64,
    pub peak_rss_bytes: usize,
}

pub fn command_figure_name(command: &[&str]) -> String {
    format!("whole process: {}", command.join(" "))
}

/// Times each of [`COMMANDS`] and the explorer, `repeat` runs each, as `exe` with
/// `flags` (which name `run`); `progress` names each as it starts. Without the
/// run's three models every figure is reported as not measured.
pub fn measure(
    exe: &Path,
    flags: &[String],
    run: &RunDir,
    repeat: usize,
    progress: &mut dyn FnMut(&str),
) -> Vec<ProcessFigure> {
    let missing = ModelKind::STUDY.into_iter().find(|&kind| !run.has(kind));
    let mut figure = |name: String, measure: &dyn Fn() -> Result<Run, String>| {
        progress(&name);
        let outcome = match missing {
            Some(kind) => Err(format!("no saved {kind} model in {}: train the run first", run.root.display())),
            None => median_of_runs(repeat, measure),
        };
        ProcessFigure::from_outcome(name, outcome)
    };
    let mut figures: Vec<ProcessFigure> = COMMANDS
        .iter()
        .map(|command| figure(command_figure_name(command), &|| time_command(exe, flags, command)))
        .collect();
    figures.push(figure(EXPLORER_FIGURE.into(), &|| time_explorer_ready(exe, flags)));
    figures
}

impl ProcessFigure {
    fn from_outcome(name: String, outcome: Result<Run, String>) -> ProcessFigure {
        let (measured, not_measured) = match outcome {
            Ok(run) => (Some(run), None),
            Err(why) => (None, Some(why)),
        };
        ProcessFigure { name, measured, not_measured }
    }
}

/// The median wall time and the largest peak memory of `repeat` runs; the first
/// failure ends the figure.
fn median_of_runs(repeat: usize, measure: &dyn Fn() -> Result<Run, String>) -> Result<Run, String> {
    let runs = (0..repeat.max(1)).map(|_| measure()).collect::<Result<Vec<Run>, String>>()?;
    Ok(Run {
        wall_s: super::median(runs.iter().map(|r| r.wall_s).collect()),
        peak_rss_bytes: runs.iter().map(|r| r.peak_rss_bytes).max().unwrap_or(0),
    })
}

/// One run of `exe flags command`, from spawning it to its exit (its output read
/// and dropped, as a terminal would show it); fails with its last error line.
/// Its peak memory is its own VmHWM, sampled from /proc while it runs: wait4's
/// ru_maxrss would start from this (large) process's, which a spawned child
/// inherits until it execs.
fn time_command(exe: &Path, flags: &[String], command: &[&str]) -> Result<Run, String> {
    let what = command.join(" ");
    let clock = Instant::now();
    let child = Command::new(exe)
        .args(flags)
        .args(command)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", exe.display()))?;
    let pid = child.id().to_string();
    let waiter = std::thread::spawn(move || (child.wait_with_output(), clock.elapsed().as_secs_f64()));
    let mut peak_rss_bytes = 0;
    while !waiter.is_finished() {
        peak_rss_bytes = peak_rss_bytes.max(super::peak_rss_bytes_of(&pid));
        std::thread::sleep(Duration::from_millis(10));
    }
    let (output, wall_s) = waiter.join().map_err(|_| format!("{what}: its waiting thread panicked"))?;
    let output = output.map_err(|e| format!("{what}: {e}"))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(format!("{what} failed: {}", stderr.lines().last().unwrap_or("no message")));
    }
    Ok(Run { wall_s, peak_rss_bytes })
}

/// One start of the explorer in a detached 160×48 tmux session on a private
/// server, until the first line of its screen says "● ready"; its peak memory is
/// read from /proc at that moment.
fn time_explorer_ready(exe: &Path, flags: &[String]) -> Result<Run, String> {
    let tmux = Tmux::new()?;
    let clock = Instant::now();
    let mut start = vec!["new-session", "-d", "-s", Tmux::SESSION, "-x", "160", "-y", "48"];
    let exe = exe.to_string_lossy();
    start.push(&exe);
    start.extend(flags.iter().map(String::as_str));
    tmux.run(&start)?;
    loop {
        let screen = tmux.run(&["capture-pane", "-p", "-t", Tmux::SESSION]).map_err(|e| {
            format!("the explorer ended before it was ready ({e}); see its explorer.log in the run's folder")
        })?;
        let first = screen.lines().next().unwrap_or("");
        if first.contains("● ready") {
            break;
        }
        if clock.elapsed() > READY_LIMIT {
            return Err(format!("the explorer was not ready after {READY_LIMIT:?}; its first line: {first}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let wall_s = clock.elapsed().as_secs_f64();
    let pid = tmux.run(&["display-message", "-p", "-t", Tmux::SESSION, "#{pane_pid}"])?;
    Ok(Run { wall_s, peak_rss_bytes: super::peak_rss_bytes_of(pid.trim()) })
}

/// A tmux server of this process's own (so no user's sessions are touched),
/// killed and its socket removed when dropped (tmux leaves the file behind).
struct Tmux {
    socket: PathBuf,
}

impl Tmux {
    const SESSION: &str = "bench";

    fn new() -> Result<Tmux, String> {
        Command::new("tmux").arg("-V").output().map_err(|e| format!("tmux is not available ({e})"))?;
        Ok(Tmux { socket: std::env::temp_dir().join(format!("trojanscope-bench-{}.tmux", std::process::id())) })
    }

    /// `tmux args` on this server; its stdout, or its error message.
    fn run(&self, args: &[&str]) -> Result<String, String> {
        let out = Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .args(["-f", "/dev/null"])
            .args(args)
            .output()
            .map_err(|e| format!("cannot run tmux: {e}"))?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

impl Drop for Tmux {
    /// Quits the explorer as a user would (so it restores its terminal and writes
    /// a clean log), then ends the server whatever state it is in.
    fn drop(&mut self) {
        let _ = self.run(&["send-keys", "-t", Tmux::SESSION, "q"]);
        let quit = Instant::now();
        while self.run(&["has-session", "-t", Tmux::SESSION]).is_ok() && quit.elapsed() < Duration::from_secs(2) {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.run(&["kill-server"]);
        let _ = std::fs::remove_file(&self.socket);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_without_its_models_is_reported_not_measured_without_starting_anything() {
        let run = RunDir::new(&std::env::temp_dir().join("trojanscope-no-such-checkpoints"), "none");
        let mut named = Vec::new();
        let figures = measure(Path::new("/nonexistent/trojanscope"), &[], &run, 1, &mut |n| named.push(n.to_string()));
        assert_eq!(figures.len(), COMMANDS.len() + 1);
        assert_eq!(named.last().map(String::as_str), Some(EXPLORER_FIGURE));
        for f in &figures {
            assert!(f.measured.is_none(), "{f:?}");
            assert!(f.not_measured.as_deref().is_some_and(|why| why.contains("no saved clean model")), "{f:?}");
        }
    }

    #[test]
    fn a_failing_command_reports_its_last_error_line() {
        let sh = Path::new("/bin/sh");
        let flags = ["-c".to_string(), "echo first >&2; echo 'the reason' >&2; exit 3".into()];
        let error = time_command(sh, &flags, &[]).expect_err("exit 3 is a failure");
        assert!(error.ends_with("failed: the reason"), "{error}");
        let run = time_command(sh, &["-c".into(), "sleep 0.3; exit 0".into()], &[]).expect("exit 0 succeeds");
        assert!((0.3..2.0).contains(&run.wall_s), "{run:?}");
        assert!(run.peak_rss_bytes > 0, "the shell's own peak memory was sampled: {run:?}");
    }
}
