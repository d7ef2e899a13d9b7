//! The explorer's one set of colours, and `NO_COLOR` (https://no-color.org): with
//! it set, every frame is drawn in plain styles (no foreground or background
//! colours; what a background marked becomes reversed video).

use ratatui::buffer::Buffer;
use ratatui::style::{Color, Modifier};
use std::sync::OnceLock;

pub const ACCENT: Color = Color::Cyan;
pub const WARN: Color = Color::Yellow;
pub const BAD: Color = Color::LightRed;
pub const GOOD: Color = Color::Green;
pub const DIM: Color = Color::DarkGray;
/// The clean, poison and rehab accuracy lines of every chart, in that order.
pub const ACCURACY: [Color; 3] = [Color::Green, Color::LightRed, Color::LightBlue];
pub const ACCURACY_NAMES: [&str; 3] = ["clean", "poison", "rehab"];
/// Series of charts with more lines than three (one per pruning ranking).
pub const SERIES: [Color; 5] = [Color::LightRed, Color::Green, Color::LightBlue, Color::Yellow, Color::Gray];
/// The training phases' loss segments: clean, poison, rehab, unlearn.
pub const PHASES: [Color; 4] = [Color::Green, Color::LightRed, Color::LightBlue, Color::Magenta];

/// Whether `NO_COLOR` asks for plain styles (set and not empty, as the convention says).
pub fn plain() -> bool {
    static PLAIN: OnceLock<bool> = OnceLock::new();
    *PLAIN.get_or_init(|| std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty()))
}

/// Takes every colour out of a drawn frame; cells that stood out by their
/// background (the selected row, the focused tab) are reversed instead. Halfblock
/// picture cells (asked for with `--image-protocol halfblocks`) are pictures, not
/// styled text, and keep their colours.
pub fn strip(buffer: &mut Buffer) {
    for cell in buffer.content.iter_mut().filter(|c| !matches!(c.symbol(), "▀" | "▄")) {
        if cell.bg != Color::Reset {
            cell.modifier.insert(Modifier::REVERSED);
        }
        cell.fg = Color::Reset;
        cell.bg = Color::Reset;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ratatui::layout::Rect;
    use ratatui::style::Style;

    #[test]
    fn stripping_keeps_text_and_marks_backgrounds_reversed() {
        let mut buffer = Buffer::empty(Rect::new(0, 0, 6, 1));
        buffer.set_string(0, 0, "ab", Style::new().fg(WARN));
        buffer.set_string(2, 0, "cd", Style::new().fg(Color::Black).bg(ACCENT).bold());
        buffer.set_string(4, 0, "▀", Style::new().fg(WARN).bg(BAD));
        strip(&mut buffer);
        let cells = &buffer.content;
        assert_eq!(cells[0].symbol(), "a");
        assert!(cells[..4].iter().all(|c| c.fg == Color::Reset && c.bg == Color::Reset));
        assert_eq!((cells[4].fg, cells[4].bg), (WARN, BAD), "a picture cell keeps its colours");
        assert!(!cells[0].modifier.contains(Modifier::REVERSED));
        assert!(cells[2].modifier.contains(Modifier::REVERSED | Modifier::BOLD));
    }
}
