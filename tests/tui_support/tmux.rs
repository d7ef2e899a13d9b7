//! A private tmux server running the real explorer binary, for the tests that
//! drive it as a person does (send-keys, capture-pane).

use std::process::Command;
use std::time::{Duration, Instant};

/// A private tmux server running the explorer in a shell that reports how it ended.
pub struct Tmux {
    socket: String,
}

impl Tmux {
    pub fn start(name: &str, size: (u16, u16), args: &[String]) -> Tmux {
        let socket = format!("trojanscope-test-{name}-{}", std::process::id());
        let binary = env!("CARGO_BIN_EXE_trojanscope");
        // After the explorer: its exit status and whether the tty is back in
        // cooked mode with echo (stty prints "-icanon"/"-echo" when not).
        let script = format!(
            "'{binary}' {}; echo \"exited with $?\"; stty -a | tr ' ' '\\n' | grep -E '^-?(icanon|echo)$' | tr '\\n' ' '; echo; sleep 600",
            args.join(" ")
        );
        let tmux = Tmux { socket };
        tmux.run(&[
            "-f",
            "/dev/null",
            "new-session",
            "-d",
            "-x",
            &size.0.to_string(),
            "-y",
            &size.1.to_string(),
            "sh",
            "-c",
            &script,
        ]);
        tmux
    }

    pub fn run(&self, args: &[&str]) -> String {
        let out = Command::new("tmux").arg("-L").arg(&self.socket).args(args).output().expect("tmux is installed");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn screen(&self) -> String {
        self.run(&["capture-pane", "-p"])
    }

    pub fn keys(&self, keys: &[&str]) {
        for key in keys {
            self.run(&["send-keys", key]);
        }
    }

    pub fn flag(&self, name: &str) -> String {
        self.run(&["display-message", "-p", &format!("#{{{name}}}")]).trim().to_string()
    }

    /// Waits for the explorer to end and the shell after it to report the tty modes.
    pub fn wait_for_exit(&self) -> String {
        self.wait("the explorer to exit", Duration::from_secs(15), |s| {
            s.lines().skip_while(|l| !l.contains("exited with")).nth(1).is_some_and(|l| l.contains("icanon"))
        })
    }

    /// `q` ends the explorer at once (nothing runs) and the terminal comes back
    /// intact: cooked mode with echo, the alternate screen, mouse modes and the
    /// hidden cursor undone.
    pub fn quit_leaves_the_terminal_restored(&self) {
        self.keys(&["q"]);
        let after = self.wait_for_exit();
        assert!(after.contains("exited with 0"), "{after}");
        assert!(after.contains("icanon echo"), "the tty is back in cooked mode with echo: {after}");
        assert!(!after.contains("trojanscope  ●"), "the alternate screen is gone: {after}");
        for flag in ["alternate_on", "mouse_any_flag", "mouse_button_flag", "mouse_standard_flag", "mouse_sgr_flag"] {
            assert_eq!(self.flag(flag), "0", "{flag} is still set after quitting");
        }
        assert_eq!(self.flag("cursor_flag"), "1", "the cursor is visible again");
    }

    /// Waits until the screen above the footer is `before`'s, then checks the
    /// footer says `notice` and that no sweep or patching ran on the way; quits.
    pub fn reopened_as(&self, before: &str, notice: &str) {
        let seen = std::cell::RefCell::new(Vec::new());
        let clock = Instant::now();
        let after = loop {
            let screen = self.screen();
            seen.borrow_mut().push(screen.clone());
            if above_footer(&screen) == above_footer(before) {
                break screen;
            }
            if clock.elapsed() > Duration::from_secs(60) {
                // The lines that differ, so a failure says what changed.
                let differ: Vec<String> = above_footer(before)
                    .lines()
                    .zip(above_footer(&screen).lines())
                    .filter(|(a, b)| a != b)
                    .map(|(a, b)| format!("before: {a}\nafter:  {b}"))
                    .collect();
                panic!("timed out waiting for the same screen; the lines that differ:\n{}", differ.join("\n"));
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(after.contains(notice), "{after}");
        let recomputed = seen.borrow().iter().any(|s| s.contains("sweeping") || s.contains("patching every"));
        assert!(!recomputed, "the worker swept or patched again");
        self.keys(&["q"]);
        assert!(self.wait_for_exit().contains("exited with 0"));
    }

    /// Polls the screen until `done` holds; panics with the last screen after `limit`.
    pub fn wait(&self, what: &str, limit: Duration, done: impl Fn(&str) -> bool) -> String {
        let clock = Instant::now();
        loop {
            let screen = self.screen();
            if done(&screen) {
                return screen;
            }
            assert!(clock.elapsed() < limit, "timed out waiting for {what}; the screen:\n{screen}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        self.run(&["kill-server"]);
    }
}

/// Every line but the footer (its notice says what happened).
pub fn above_footer(screen: &str) -> String {
    let lines: Vec<&str> = screen.lines().collect();
    lines[..lines.len() - 1].join("\n")
}
