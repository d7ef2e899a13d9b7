//! Text made to fit its cells: shortened on purpose after a whole word, with
//! "…", so the terminal's edge never cuts a word (or a number from its unit).

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::Style;
use ratatui::text::{Line, Span};

/// Characters a shortened text does not end on before its "…".
const TRAILING: &[char] = &[' ', '·', ',', ';', ':', '(', '—', '–'];

/// How many of `chars` to keep so that they and a "…" fit `width` cells: up to
/// the last whole word where there is one.
fn kept(chars: &[char], width: usize) -> usize {
    let mut used = 0;
    let mut fits = 0;
    for &c in chars {
        used += Span::raw(c.to_string()).width();
        if used + 1 > width {
            break;
        }
        fits += 1;
    }
    // Back to the end of the last whole word, unless the word is the whole text.
    let whole = match chars.get(fits) {
        Some(' ') => fits,
        _ => chars[..fits].iter().rposition(|&c| c == ' ').unwrap_or(fits),
    };
    let mut end = if whole == 0 { fits } else { whole };
    while end > 0 && TRAILING.contains(&chars[end - 1]) {
        end -= 1;
    }
    end
}

/// `text` as it is when it fits `width` cells, else shortened to fit with "…".
pub fn fit(text: &str, width: usize) -> String {
    fit_line(Line::from(text.to_string()), width).to_string()
}

/// `line` as it is when it fits `width` cells, else shortened to fit with "…"
/// (each kept character keeps its span's style).
pub fn fit_line(line: Line<'_>, width: usize) -> Line<'static> {
    let styled: Vec<(char, Style)> =
        line.spans.iter().flat_map(|s| s.content.chars().map(move |c| (c, line.style.patch(s.style)))).collect();
    let whole = |spans: Vec<(char, Style)>| {
        let mut out: Vec<Span<'static>> = Vec::new();
        for (c, style) in spans {
            match out.last_mut() {
                Some(last) if last.style == style => last.content.to_mut().push(c),
                _ => out.push(Span::styled(c.to_string(), style)),
            }
        }
        let mut fitted = Line::from(out);
        fitted.alignment = line.alignment;
        fitted
    };
    if line.width() <= width {
        return whole(styled);
    }
    if width == 0 {
        return Line::default();
    }
    let chars: Vec<char> = styled.iter().map(|(c, _)| *c).collect();
    let end = kept(&chars, width);
    let last = styled.get(end.saturating_sub(1)).map_or(Style::new(), |(_, s)| *s);
    let mut spans: Vec<(char, Style)> = styled[..end].to_vec();
    spans.push(('…', last));
    whole(spans)
}

/// `text` wrapped at spaces into lines of `width` cells; when it needs more than
/// `height` lines, the last one shown ends with "…".
pub fn wrapped(text: &str, width: usize, height: usize) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    for word in text.split(' ') {
        match lines.last_mut() {
            Some(line) if Line::from(format!("{line} {word}")).width() <= width => {
                line.push(' ');
                line.push_str(word);
            }
            _ => lines.push(word.to_string()),
        }
    }
    if lines.len() > height && height > 0 {
        let rest = lines[height - 1..].join(" ");
        lines.truncate(height);
        lines[height - 1] = fit(&rest, width);
    }
    lines.truncate(height);
    lines.into_iter().map(|line| fit(&line, width)).collect()
}

/// Lines for a paragraph that does not wrap, each shortened to fit `width`.
pub fn fit_lines(lines: Vec<Line<'_>>, width: u16) -> Vec<Line<'static>> {
    lines.into_iter().map(|line| fit_line(line, width as usize)).collect()
}

/// Draws `line` into the first row of `area`, shortened to fit its width.
pub fn draw_line(frame: &mut Frame, line: Line<'_>, area: Rect) {
    frame.render_widget(fit_line(line, area.width as usize), area);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_text_is_shortened_after_a_whole_word() {
        assert_eq!(fit("Pareto front: z zooms this chart", 20), "Pareto front: z…");
        assert_eq!(fit("anomaly index 4.65 · L1 12.3", 22), "anomaly index 4.65…");
        assert_eq!(fit("checkpoints/tiny", 8), "checkpo…");
        assert_eq!(fit("fits", 4), "fits");
        assert_eq!(fit("abc", 0), "");
        let line = Line::from(vec![Span::raw("a "), Span::styled("bold words", Style::new().bold())]);
        let short = fit_line(line, 8);
        assert_eq!(short.to_string(), "a bold…");
        assert_eq!(short.spans[1].style, Style::new().bold());
        assert_eq!(short.width(), 7);
        let text = "C searches for the smallest set whose ablation removes the backdoor";
        assert_eq!(wrapped(text, 20, 2), ["C searches for the", "smallest set whose…"]);
        assert_eq!(wrapped("a b", 20, 2), ["a b"]);
    }
}
