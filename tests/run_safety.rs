//! A run folder under faults: each test reproduces a finding of the fault probe
//! (issue #22) on the real binary and a real small run, and checks that nothing is
//! lost or silently wrong.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

fn trojanscope(args: &[&str]) -> Output {
    common::binary().args(args).output().expect("the binary runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Exit code 1, no panic, and the last line of stderr is the error containing
/// `needle`; returns that line.
fn last_error(o: &Output, needle: &str) -> String {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(1), "stderr: {err}");
    assert!(!err.contains("panicked"), "{err}");
    let last = err.lines().rfind(|l| l.starts_with("error: ")).unwrap_or("").to_string();
    assert!(last.contains(needle), "expected '{needle}' in: {err}");
    last
}

const SMALL: [&str; 4] = ["--train-limit", "3000", "--test-limit", "300"];

/// `args` on run `run` of the checkpoints folder `checkpoints`, on the small subset.
fn on_run<'a>(checkpoints: &'a Path, run: &'a str, args: &[&'a str]) -> Vec<&'a str> {
    let mut all = args.to_vec();
    all.extend(["--checkpoints", checkpoints.to_str().unwrap(), "--run", run]);
    all.extend(SMALL);
    all
}

/// A checkpoints folder holding a copy of a small run trained once per test binary
/// (all three phases), as run `r`.
fn copy_of_trained_run(name: &str) -> PathBuf {
    static TRAINED: OnceLock<PathBuf> = OnceLock::new();
    let source = TRAINED.get_or_init(|| {
        let dir = common::scratch("safety-trained");
        let o = trojanscope(&on_run(&dir, "r", &["train", "--eval-every", "50"]));
        assert!(o.status.success(), "{}", stderr(&o));
        dir.join("r")
    });
    let dir = common::scratch(name);
    let status = Command::new("cp").arg("-a").arg(source).arg(dir.join("r")).status().unwrap();
    assert!(status.success());
    dir
}

/// The lines of a log per phase, in order of appearance.
fn lines_of(log: &str, phase: &str) -> Vec<String> {
    let tag = format!("\"phase\":\"{phase}\"");
    log.lines().filter(|l| l.contains(&tag)).map(str::to_string).collect()
}

fn sha256(path: &Path) -> String {
    trojanscope::engine::run::files::file_sha256(path).unwrap()
}

#[test]
fn an_interrupted_or_diverged_train_keeps_the_history_of_finished_phases() {
    let dir = copy_of_trained_run("safety-log");
    let run = dir.join("r");
    let log = run.join("metrics.jsonl");
    let before = std::fs::read_to_string(&log).unwrap();
    // 3,000 images, batch 32: 94 steps a phase, and in poison and rehab evaluations
    // at the start, every 50 steps and at the end (steps 0, 50 and 94).
    let (clean, poison, rehab) = (lines_of(&before, "clean"), lines_of(&before, "poison"), lines_of(&before, "rehab"));
    assert_eq!((clean.len(), poison.len(), rehab.len()), (94, 94 + 3, 94 + 3));
    let poisoned = sha256(&run.join("poisoned.safetensors"));

    // Diverging in the first phase (it truncated the log to 25 lines).
    let o = trojanscope(&on_run(&dir, "r", &["train", "--lr", "1e6"]));
    last_error(&o, "the clean phase diverged");
    assert_eq!(std::fs::read_to_string(&log).unwrap(), before, "a diverged phase changed the log");

    // Ctrl-C in the middle of a long poison phase (it truncated the log to 225 lines).
    let mut child = common::binary()
        .args(on_run(&dir, "r", &["train", "--phases", "poison", "--epochs", "100"]))
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Until the phase has trained a while (the lock names the process once it is in).
    let lock = run.join(".lock");
    let start = Instant::now();
    while std::fs::read_to_string(&lock).unwrap_or_default().trim() != child.id().to_string() {
        assert!(start.elapsed() < Duration::from_secs(60), "the training never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_secs(2));
    // SAFETY: a signal to the child this test started.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0);
    let status = child.wait().unwrap();
    assert!(!status.success(), "the interrupted training finished anyway: {status}");
    assert_eq!(std::fs::read_to_string(&log).unwrap(), before, "an interrupted phase changed the log");
    assert_eq!(sha256(&run.join("poisoned.safetensors")), poisoned);

    // Retraining poison replaces its lines only, in place: clean and rehab's history stay.
    let o = trojanscope(&on_run(&dir, "r", &["train", "--phases", "poison", "--eval-every", "50"]));
    assert!(o.status.success(), "{}", stderr(&o));
    let after = std::fs::read_to_string(&log).unwrap();
    assert_eq!(lines_of(&after, "clean"), clean);
    assert_eq!(lines_of(&after, "rehab"), rehab);
    assert_eq!(lines_of(&after, "poison").len(), poison.len());
    let order: Vec<&str> = after.lines().map(|l| if l.contains("\"clean\"") { "c" } else { "p/r" }).collect();
    assert!(order[..94].iter().all(|&o| o == "c"), "the clean phase's lines come first");
}

#[test]
fn a_phase_with_other_settings_or_data_is_refused_naming_the_difference() {
    let dir = copy_of_trained_run("safety-settings");
    let run = dir.join("r");
    let poisoned = sha256(&run.join("poisoned.safetensors"));
    let other_trigger = ["train", "--phases", "poison", "--target", "3", "--trigger-row", "0", "--trigger-col", "0"];
    let o = trojanscope(&on_run(&dir, "r", &other_trigger));
    let last =
        last_error(&o, "were trained with other settings (trigger-col 22 → 0, trigger-row 22 → 0, target 8 → 3)");
    assert!(last.contains("or use a new --run"), "{last}");
    assert_eq!(sha256(&run.join("poisoned.safetensors")), poisoned);
    // A run saved before run.json existed: its record is read from the sidecars.
    std::fs::remove_file(run.join("run.json")).unwrap();
    let o = trojanscope(&on_run(&dir, "r", &other_trigger));
    last_error(&o, "(trigger-col 22 → 0, trigger-row 22 → 0, target 8 → 3)");

    // Fashion-MNIST's files under MNIST's names: every command reading data says so
    // (eval printed clean 5.10 % without a word).
    let fashion = common::data_dir().parent().unwrap().join("fashion-mnist");
    if fashion.is_dir() {
        let mut args = on_run(&dir, "r", &["eval"]);
        args.extend(["--data-dir", fashion.to_str().unwrap()]);
        // (Raw files, or gzip ones compared by their decompressed bytes.)
        let last = last_error(&trojanscope(&args), "t10k-images-idx3-ubyte");
        assert!(last.contains(": SHA-256 "), "{last}");
        let recorded = trojanscope::engine::run::files::file_sha256(&common::data_dir().join("t10k-images-idx3-ubyte"));
        assert!(last.contains(&format!("trained on a file with SHA-256 {}", recorded.unwrap())), "{last}");
        let mut args = on_run(&dir, "r", &["train", "--phases", "rehab"]);
        args.extend(["--data-dir", fashion.to_str().unwrap()]);
        last_error(&trojanscope(&args), "but this run's models were trained on a file with SHA-256");
    } else {
        println!("skipped the other-data check: no {}", fashion.display());
    }

    // Retraining every phase from clean is a new start: the new settings become the record.
    let o = trojanscope(&on_run(&dir, "r", &["train", "--target", "3", "--eval-every", "50"]));
    assert!(o.status.success(), "{}", stderr(&o));
    let record: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("run.json")).unwrap()).unwrap();
    assert_eq!(record["config"]["trigger"]["target"], 3);
    assert_eq!(record["data_sha256"].as_object().unwrap().len(), 4);
}

#[test]
fn nothing_is_written_through_a_symbolic_link_in_a_run_folder() {
    let dir = copy_of_trained_run("safety-links");
    let run = dir.join("r");
    let victim = dir.join("victim.txt");
    for name in [".lock", "metrics.jsonl"] {
        std::fs::write(&victim, "precious").unwrap();
        let link = run.join(name);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        let o = trojanscope(&on_run(&dir, "r", &["train", "--phases", "rehab"]));
        let last = last_error(&o, "is a symbolic link: trojanscope never writes through a link");
        assert!(last.contains(&link.display().to_string()), "{last}");
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious", "{name} was written through");
        std::fs::remove_file(&link).unwrap();
    }
    // A run folder that is itself a link elsewhere.
    let elsewhere = common::scratch("safety-links-elsewhere");
    std::os::unix::fs::symlink(&elsewhere, dir.join("linked")).unwrap();
    let o = trojanscope(&on_run(&dir, "linked", &["train", "--phases", "clean"]));
    last_error(&o, &format!("{} is a symbolic link", dir.join("linked").display()));
    assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0);
}

#[test]
fn run_names_stay_inside_the_checkpoints_folder() {
    let dir = common::scratch("safety-names");
    let outside = common::scratch("safety-names-outside");
    let absolute = outside.join("abs");
    // A sibling of the checkpoints folder of this process's own (a `/tmp/x` left by
    // anything else on the machine would fail the check below).
    let escape = format!("../escape-{}", std::process::id());
    for name in [escape.as_str(), absolute.to_str().unwrap(), "", "a/b", "..", ".", "a\\b"] {
        let o = trojanscope(&on_run(&dir, name, &["train", "--phases", "clean"]));
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{name:?}: {err}");
        assert!(err.contains(&format!("'{name}' is not a run name: a run is a folder inside --checkpoints")), "{err}");
        assert!(!err.contains("panicked"), "{err}");
    }
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0, "nothing created in the checkpoints folder");
    assert!(!dir.join(&escape).exists() && !absolute.exists());
}

#[test]
fn a_command_that_writes_waits_for_no_one_and_overwrites_nothing_while_another_writes() {
    let dir = copy_of_trained_run("safety-lock");
    let run = trojanscope::engine::run::RunDir::new(&dir, "r");
    let lock = trojanscope::engine::run::RunLock::acquire(&run).unwrap();
    let holder = format!("is being written by another process (process {})", std::process::id());
    for args in [&["recover"][..], &["unlearn"], &["visualize", "fc2", "8"], &["prune", "fc1"], &["train"], &["run"]] {
        let start = Instant::now();
        let o = trojanscope(&on_run(&dir, "r", args));
        last_error(&o, &holder);
        // Refused before reading the data or computing anything.
        assert!(start.elapsed() < Duration::from_secs(10), "{args:?} took {:?}", start.elapsed());
    }
    drop(lock);
    for left in ["recovery-poisoned.json", "unlearned.safetensors", "visualize", "prune", "report.md"] {
        assert!(!run.root.join(left).exists(), "{left} was written beside the lock's holder");
    }
}

/// Makes a folder unwritable even for root while alive (`chattr +i`), where the
/// file system supports it.
struct Immutable(PathBuf);

impl Immutable {
    fn set(dir: &Path) -> Option<Immutable> {
        let ok = Command::new("chattr").arg("+i").arg(dir).stderr(Stdio::null()).status().is_ok_and(|s| s.success());
        ok.then(|| Immutable(dir.to_path_buf()))
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        let _ = Command::new("chattr").arg("-i").arg(&self.0).status();
    }
}

#[test]
fn a_read_only_run_fails_before_any_work_and_still_reads() {
    let dir = copy_of_trained_run("safety-read-only");
    let run = dir.join("r");
    let Some(_frozen) = Immutable::set(&run) else {
        // The same check, reached through a folder that cannot be created.
        println!("skipped the immutable run: chattr +i is not supported here; checking a run under a file instead");
        let file = dir.join("a-file");
        std::fs::write(&file, "").unwrap();
        let o = trojanscope(&on_run(&file, "r", &["train"]));
        last_error(&o, &format!("{} cannot be written", file.join("r").display()));
        return;
    };
    let refusal = format!("{} cannot be written", run.display());
    for args in [&["recover"][..], &["unlearn"], &["train", "--phases", "rehab"], &["visualize", "fc2", "8"]] {
        let start = Instant::now();
        let o = trojanscope(&on_run(&dir, "r", args));
        let last = last_error(&o, &refusal);
        assert!(last.contains("nothing was started"), "{last}");
        // Recovery computed for 80 s before failing to save.
        assert!(start.elapsed() < Duration::from_secs(10), "{args:?} took {:?}", start.elapsed());
    }
    // Reading commands still work on it.
    let o = trojanscope(&on_run(&dir, "r", &["eval", "--json"]));
    assert!(o.status.success(), "{}", stderr(&o));
}

/// Polls a tmux pane until `done` holds on its screen, calling `poke` before each
/// look; panics with the screen after 60 s.
fn wait_for_screen(socket: &str, what: &str, poke: impl Fn(), done: impl Fn(&str) -> bool) -> String {
    let start = Instant::now();
    loop {
        poke();
        let out = Command::new("tmux").args(["-L", socket, "capture-pane", "-p"]).output().unwrap();
        let screen = String::from_utf8_lossy(&out.stdout).into_owned();
        if done(&screen) {
            return screen;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "waited for {what}; the screen:\n{screen}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A private tmux server, ended when the test ends (passed or not).
struct TmuxServer(String);

impl Drop for TmuxServer {
    fn drop(&mut self) {
        let _ = Command::new("tmux").args(["-L", &self.0, "kill-server"]).output();
    }
}

#[test]
fn a_read_only_run_opens_read_only_in_the_explorer() {
    let dir = copy_of_trained_run("safety-explorer");
    let run = dir.join("r");
    let Some(_frozen) = Immutable::set(&run) else {
        println!("skipped the read-only explorer: chattr +i is not supported here");
        return;
    };
    let socket = format!("trojanscope-safety-{}", std::process::id());
    let _server = TmuxServer(socket.clone());
    let args = on_run(&dir, "r", &[]).join(" ");
    let script = format!("'{}' {args}; echo \"exited with $?\"; sleep 600", env!("CARGO_BIN_EXE_trojanscope"));
    let tmux = |args: &[&str]| Command::new("tmux").args(["-L", &socket]).args(args).output().unwrap();
    let data_root = common::data_dir().parent().unwrap().display().to_string();
    let started = tmux(&[
        "-f",
        "/dev/null",
        "new-session",
        "-d",
        "-x",
        "200",
        "-y",
        "60",
        "-e",
        &format!("TROJANSCOPE_DATA_ROOT={data_root}"),
        "sh",
        "-c",
        &script,
    ]);
    assert!(started.status.success(), "{}", String::from_utf8_lossy(&started.stderr));
    // It used to refuse to start: "cannot open the log …/explorer.log".
    wait_for_screen(&socket, "the header to say read-only", || (), |s| s.contains("read-only") && s.contains("ready"));
    // A key that would write says why it cannot, at once (R again while the
    // models still load: "the models are not ready yet").
    let recover = || drop(tmux(&["send-keys", "R"]));
    wait_for_screen(&socket, "recovery to refuse", recover, |s| s.contains("cannot be written"));
    // R on a read-only run opens no question, so q alone quits. (An Escape sent
    // just before it reached the explorer under load as one read, "\x1bq", which
    // is Alt+q, and the explorer stayed open: CI failed on that.) q is pressed
    // again until the explorer is gone, in case a press lands while it draws.
    let quit = || drop(tmux(&["send-keys", "q"]));
    let screen = wait_for_screen(&socket, "the explorer to exit", quit, |s| s.contains("exited with"));
    assert!(screen.contains("exited with 0"), "{screen}");
    assert!(!run.join("explorer.log").exists() && !run.join("recovery-poisoned.json").exists());
}
