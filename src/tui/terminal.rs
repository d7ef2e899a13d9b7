//! The terminal while the explorer runs: alternate screen, raw mode and mouse
//! capture on the way in; all of it undone on every way out (normal exit, error,
//! panic on the UI thread). libtorch's stderr goes to a log file meanwhile. A
//! panic on the worker thread leaves the terminal alone: the worker turns it into
//! an error message in the UI.

use super::images::{ImageStore, Renderer};
use super::query;
use super::worker::THREAD_NAME;
use ratatui::Terminal;
use ratatui::backend::CrosstermBackend;
use ratatui::crossterm::cursor::{Hide, Show};
use ratatui::crossterm::event::{DisableMouseCapture, EnableMouseCapture};
use ratatui::crossterm::execute;
use ratatui::crossterm::terminal::{EnterAlternateScreen, LeaveAlternateScreen, disable_raw_mode, enable_raw_mode};
use ratatui_image::FontSize;
use ratatui_image::picker::{Picker, ProtocolType};
use std::io::{IsTerminal, Stdout, stdout};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::time::Duration;

/// How long the terminal gets to answer the image-protocol query.
const QUERY_TIMEOUT: Duration = Duration::from_millis(500);

pub type Tui = Terminal<CrosstermBackend<Stdout>>;

/// Whether the terminal is in the explorer's modes (restoring twice is harmless).
static ACTIVE: AtomicBool = AtomicBool::new(false);
/// The real stderr while it points at the log file (−1: not redirected).
static SAVED_STDERR: AtomicI32 = AtomicI32::new(-1);

/// `--image-protocol`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageChoice {
    Auto,
    Halfblocks,
    Sixel,
    Kitty,
    Iterm2,
    Ascii,
}

impl FromStr for ImageChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s.trim().to_ascii_lowercase().as_str() {
            "auto" => ImageChoice::Auto,
            "halfblocks" => ImageChoice::Halfblocks,
            "sixel" => ImageChoice::Sixel,
            "kitty" => ImageChoice::Kitty,
            "iterm2" => ImageChoice::Iterm2,
            "ascii" | "text" => ImageChoice::Ascii,
            other => {
                return Err(format!(
                    "unknown image protocol '{other}': use auto, halfblocks, sixel, kitty, iterm2 or ascii"
                ));
            }
        })
    }
}

/// How pictures will be drawn. Asks the terminal only when stdin and stdout are
/// a TTY and the choice needs it (auto, or a graphics protocol's cell size);
/// raw mode must be on.
fn renderer(choice: ImageChoice) -> Renderer {
    let tty = stdout().is_terminal() && std::io::stdin().is_terminal();
    let dumb = std::env::var("TERM").is_ok_and(|t| t == "dumb");
    let answer = || if tty { query::ask(QUERY_TIMEOUT).unwrap_or_default() } else { query::Answer::default() };
    let graphics = |protocol: ProtocolType, answer: &query::Answer| {
        let font = answer.cell.map(FontSize::from).or_else(query::cell_from_window).unwrap_or(FontSize::new(10, 20));
        // The only public constructor taking a measured cell size; ours comes from
        // a query that cannot leave a reader thread behind.
        #[allow(deprecated)]
        let mut picker = Picker::from_fontsize(font);
        picker.set_protocol_type(protocol);
        Renderer::Graphics(Box::new(picker))
    };
    match choice {
        ImageChoice::Ascii => Renderer::Text,
        // Halfblock pictures are coloured text; with NO_COLOR, shades instead.
        ImageChoice::Auto if dumb || super::theme::plain() => Renderer::Text,
        ImageChoice::Halfblocks => Renderer::Graphics(Box::new(Picker::halfblocks())),
        ImageChoice::Auto if !tty => Renderer::Graphics(Box::new(Picker::halfblocks())),
        ImageChoice::Auto => {
            let answer = answer();
            match answer.protocol(query::iterm2_from_env()) {
                ProtocolType::Halfblocks => Renderer::Graphics(Box::new(Picker::halfblocks())),
                protocol => graphics(protocol, &answer),
            }
        }
        ImageChoice::Sixel => graphics(ProtocolType::Sixel, &answer()),
        ImageChoice::Kitty => graphics(ProtocolType::Kitty, &answer()),
        ImageChoice::Iterm2 => graphics(ProtocolType::Iterm2, &answer()),
    }
}

/// Takes over the terminal and picks the image protocol.
pub fn enter(choice: ImageChoice) -> std::io::Result<(Tui, ImageStore)> {
    ACTIVE.store(true, Ordering::SeqCst);
    execute!(stdout(), EnterAlternateScreen)?;
    enable_raw_mode()?;
    let images = ImageStore::new(renderer(choice));
    execute!(stdout(), EnableMouseCapture, Hide)?;
    let terminal = Terminal::new(CrosstermBackend::new(stdout()))?;
    Ok((terminal, images))
}

/// Gives the terminal back: mouse capture off, normal screen, cooked mode, cursor.
pub fn restore() {
    if ACTIVE.swap(false, Ordering::SeqCst) {
        let _ = execute!(stdout(), DisableMouseCapture, LeaveAlternateScreen, Show);
        let _ = disable_raw_mode();
    }
    restore_stderr();
}

/// A panic on the UI thread restores the terminal before the report is printed;
/// a panic on the worker only goes to the log (the worker reports it in the UI).
pub fn install_panic_hook() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if std::thread::current().name() != Some(THREAD_NAME) {
            restore();
        }
        previous(info);
    }));
}

/// Points stderr (fd 2) at `log` until `restore_stderr`.
pub fn redirect_stderr(log: &Path) -> std::io::Result<()> {
    if let Some(dir) = log.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let file = std::fs::OpenOptions::new().create(true).append(true).open(log)?;
    // SAFETY: plain POSIX calls on descriptors this process owns.
    unsafe {
        let saved = libc::dup(2);
        if saved < 0 || libc::dup2(file.as_raw_fd(), 2) < 0 {
            return Err(std::io::Error::last_os_error());
        }
        SAVED_STDERR.store(saved, Ordering::SeqCst);
    }
    Ok(())
}

/// Points stderr back at the terminal (nothing when it was not redirected).
pub fn restore_stderr() {
    let saved = SAVED_STDERR.swap(-1, Ordering::SeqCst);
    if saved >= 0 {
        // SAFETY: `saved` is the descriptor `redirect_stderr` duplicated.
        unsafe {
            libc::dup2(saved, 2);
            libc::close(saved);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_panic_leaves_the_terminal_alone_and_any_other_restores_it() {
        install_panic_hook();
        ACTIVE.store(true, Ordering::SeqCst);
        let worker = std::thread::Builder::new().name(THREAD_NAME.into()).spawn(|| panic!("in the worker"));
        assert!(worker.unwrap().join().is_err());
        assert!(ACTIVE.load(Ordering::SeqCst), "a worker panic must not restore the terminal under the UI");
        let ui = std::thread::Builder::new().name("ui".into()).spawn(|| panic!("in the UI"));
        assert!(ui.unwrap().join().is_err());
        assert!(!ACTIVE.load(Ordering::SeqCst), "any other panic restores the terminal first");
    }

    #[test]
    fn image_protocols_parse_and_unknown_ones_say_what_is_allowed() {
        assert_eq!("Sixel".parse::<ImageChoice>(), Ok(ImageChoice::Sixel));
        assert_eq!("ascii".parse::<ImageChoice>(), Ok(ImageChoice::Ascii));
        assert!("png".parse::<ImageChoice>().unwrap_err().contains("auto, halfblocks, sixel, kitty, iterm2 or ascii"));
    }
}
