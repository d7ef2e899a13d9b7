//! Asking the terminal which image protocol it draws and how large its cells are.
//! ratatui-image's own query reads stdin on a thread that outlives its timeout when
//! the terminal never answers (a detached tmux, a dumb emulator): that thread then
//! eats keys and switches raw mode off under the UI. This query reads with a
//! deadline on the caller's thread instead, and needs raw mode to be on already.

use ratatui_image::FontSize;
use ratatui_image::picker::ProtocolType;
use std::time::{Duration, Instant};

/// What the terminal said.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Answer {
    pub kitty: bool,
    pub sixel: bool,
    /// Cell size in pixels (width, height).
    pub cell: Option<(u16, u16)>,
    /// The status report came back: everything before it has been read.
    pub complete: bool,
}

impl Answer {
    /// Reads the responses in `bytes` (kitty graphics reply, primary device
    /// attributes, cell size, device status).
    pub fn parse(bytes: &[u8]) -> Answer {
        let text = String::from_utf8_lossy(bytes);
        let mut answer = Answer::default();
        for part in text.split('\x1b').filter(|p| !p.is_empty()) {
            if part.starts_with("_G") && part.contains(";OK") {
                answer.kitty = true;
            } else if let Some(attributes) = part.strip_prefix("[?").and_then(|p| p.strip_suffix('c')) {
                answer.sixel |= attributes.split(';').any(|a| a == "4");
            } else if let Some(size) = part.strip_prefix("[6;").and_then(|p| p.strip_suffix('t')) {
                let mut numbers = size.split(';').filter_map(|n| n.parse::<u16>().ok());
                if let (Some(h), Some(w)) = (numbers.next(), numbers.next()) {
                    answer.cell = (h > 0 && w > 0).then_some((w, h));
                }
            } else if part == "[0n" {
                answer.complete = true;
            }
        }
        answer
    }

    /// The best protocol: kitty, then iTerm2 (by its environment), then sixel.
    pub fn protocol(&self, iterm2: bool) -> ProtocolType {
        if self.kitty {
            ProtocolType::Kitty
        } else if iterm2 {
            ProtocolType::Iterm2
        } else if self.sixel {
            ProtocolType::Sixel
        } else {
            ProtocolType::Halfblocks
        }
    }
}

/// Whether the environment names an iTerm2-protocol terminal.
pub fn iterm2_from_env() -> bool {
    let var = |name: &str| std::env::var(name).unwrap_or_default();
    matches!(var("TERM_PROGRAM").as_str(), "iTerm.app" | "WezTerm") || var("LC_TERMINAL") == "iTerm2"
}

/// Sends the queries and reads answers until the status report or `timeout`.
pub fn ask(timeout: Duration) -> std::io::Result<Answer> {
    use std::io::Write;
    // In tmux the kitty query would need passthrough to an outer terminal that may
    // not exist; tmux itself answers the others.
    let in_tmux = std::env::var("TMUX").is_ok_and(|v| !v.is_empty());
    let kitty = if in_tmux { "" } else { "\x1b_Gi=31,s=1,v=1,a=q,t=d,f=24;AAAA\x1b\\" };
    let mut out = std::io::stdout();
    write!(out, "{kitty}\x1b[c\x1b[16t\x1b[5n")?;
    out.flush()?;
    let deadline = Instant::now() + timeout;
    let mut bytes = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        let mut poll = libc::pollfd { fd: 0, events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd for stdin.
        let ready = unsafe { libc::poll(&mut poll, 1, left.as_millis().min(i32::MAX as u128) as i32) };
        if ready <= 0 {
            break;
        }
        let mut buf = [0u8; 256];
        // SAFETY: reads into a buffer this function owns.
        let n = unsafe { libc::read(0, buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            break;
        }
        bytes.extend_from_slice(&buf[..n as usize]);
        if Answer::parse(&bytes).complete {
            break;
        }
    }
    Ok(Answer::parse(&bytes))
}

/// The cell size from the kernel's window size, when the terminal reports pixels.
pub fn cell_from_window() -> Option<FontSize> {
    let size = ratatui::crossterm::terminal::window_size().ok()?;
    (size.width > 0 && size.columns > 0 && size.rows > 0)
        .then(|| FontSize::new(size.width / size.columns, size.height / size.rows))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_read_from_the_raw_responses() {
        let xterm = Answer::parse(b"\x1b[?63;1;2;4;6;9;15;22c\x1b[6;20;10t\x1b[0n");
        assert_eq!(xterm, Answer { kitty: false, sixel: true, cell: Some((10, 20)), complete: true });
        assert_eq!(xterm.protocol(false), ProtocolType::Sixel);
        let kitty = Answer::parse(b"\x1b_Gi=31;OK\x1b\\\x1b[?62;c\x1b[0n");
        assert!(kitty.kitty && !kitty.sixel && kitty.complete);
        assert_eq!(kitty.protocol(true), ProtocolType::Kitty);
        let tmux = Answer::parse(b"\x1b[?1;2c\x1b[0");
        assert!(!tmux.complete && !tmux.sixel && tmux.cell.is_none());
        assert_eq!(tmux.protocol(false), ProtocolType::Halfblocks);
        assert_eq!(tmux.protocol(true), ProtocolType::Iterm2);
    }
}
