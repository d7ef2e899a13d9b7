//! One frame: header, panes (all or one tab), footer, and the overlays on top.
//! Reads the state only; the image store is a cache of encoded pictures.

use super::app::App;
use super::effect::Popup;
use super::fit::{fit, fit_line};
use super::images::ImageStore;
use super::keymap::{self, Entry};
use super::keys::Scope;
use super::layout::{MIN_SIZE, Screen, tab_label};
use super::panes::{Pane, View};
use super::theme::{self, ACCENT, BAD, DIM, GOOD, WARN};
use super::words;
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style, Stylize};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Clear, Paragraph, Row, Table, Wrap};

pub fn draw(frame: &mut Frame, app: &App, images: &mut ImageStore) {
    let area = frame.area();
    let Some(screen) = Screen::new(area, app.focus, app.zoomed) else {
        too_small(frame, area);
        return;
    };
    header(frame, screen.header, app, images.protocol_name());
    if let Some(tabs) = screen.tabs {
        tab_bar(frame, tabs, app.focus);
    }
    let many = screen.panes.len() > 1;
    for &(pane, rect) in &screen.panes {
        let view = View { study: &app.study, jobs: &app.jobs, focused: pane == app.focus };
        app.panes.draw(pane, frame, rect, &view, images, many && pane == app.focus);
    }
    hint(frame, screen.hint, app);
    footer(frame, screen.footer, app);
    if app.help && app.help_words {
        words_help(frame, area, app, &screen);
    } else if app.help {
        help(frame, area, app.focus);
    }
    if let Some(popup) = &app.popup {
        popup_box(frame, area, popup);
    }
    if theme::plain() {
        theme::strip(frame.buffer_mut());
    }
}

fn too_small(frame: &mut Frame, area: Rect) {
    let text = vec![
        Line::from("The terminal is too small.".bold()),
        Line::from(format!(
            "It is {}×{}; trojanscope needs at least {}×{}.",
            area.width, area.height, MIN_SIZE.0, MIN_SIZE.1
        )),
        Line::from("Enlarge the window, or press q to quit."),
    ];
    frame.render_widget(Paragraph::new(text).wrap(Wrap { trim: true }), area);
}

/// What the app is doing, in a few words: the job ledger's headline.
pub fn status(app: &App) -> (String, Color) {
    if !app.worker_alive {
        return ("worker stopped".into(), BAD);
    }
    if let Some(running) = app.jobs.headline() {
        return (format!("{}…", running.text()), WARN);
    }
    if app.study.ready { ("ready".into(), GOOD) } else { ("idle".into(), DIM) }
}

/// The header: the job status, the selected unit, the ablation set, the model
/// pair and the run, then its device and picture protocol where they fit. A
/// narrower terminal drops the protocol, the device, the run's folder (its name
/// stays) and the banner, in that order.
fn header(frame: &mut Frame, area: Rect, app: &App, protocol: &str) {
    let (text, colour) = status(app);
    let study = &app.study;
    let (set, mode, empty) = match study.graph.as_deref() {
        Some(g) if !g.set.sites.is_empty() => (g.set.to_string(), g.mode, false),
        Some(g) => ("none".to_string(), g.mode, true),
        None => (study.ablation.set.to_string(), study.ablation.mode, study.ablation.set.is_empty()),
    };
    let banner = Span::styled(" trojanscope ", Style::new().bg(ACCENT).fg(Color::Black).bold());
    let mut core = vec![
        Span::styled(format!(" ● {text} "), Style::new().fg(colour).bold()),
        Span::raw("· "),
        Span::styled(format!("{} ", study.selection()), Style::new().bold()),
        Span::raw("· ablating "),
        Span::styled(format!("{set} ({mode}) "), Style::new().fg(if empty { DIM } else { WARN })),
        Span::raw("· "),
        Span::styled(study.subject.name(), Style::new().fg(ACCENT).bold()),
        Span::raw(format!(" vs {} ", study.reference)),
    ];
    if let Some(attack) = study.attack_label() {
        core.push(Span::styled(format!("· {attack} "), Style::new().fg(WARN)));
    }
    let Some(run) = &study.run else {
        let line = Line::from(std::iter::once(banner).chain(core).collect::<Vec<_>>());
        return frame.render_widget(fit_line(line, area.width as usize), area);
    };
    if run.read_only {
        core.push(Span::styled("read-only ", Style::new().fg(WARN).bold()));
    }
    let name = run.root.rsplit('/').find(|part| !part.is_empty()).unwrap_or(&run.root);
    let dim = |text: String| Span::styled(text, Style::new().fg(DIM));
    let candidates = [
        (true, dim(format!("· {} · {} · {protocol}", run.root, run.device))),
        (true, dim(format!("· {} · {}", run.root, run.device))),
        (true, dim(format!("· {}", run.root))),
        (true, dim(format!("· run {name}"))),
        (false, dim(format!("· run {name}"))),
    ];
    let lines = candidates.map(|(with_banner, place)| {
        let banner = with_banner.then(|| banner.clone());
        Line::from(banner.into_iter().chain(core.iter().cloned()).chain([place]).collect::<Vec<_>>())
    });
    let width = area.width as usize;
    let [.., narrowest] = &lines;
    let line = lines.iter().find(|l| l.width() <= width).unwrap_or(narrowest).clone();
    frame.render_widget(fit_line(line, width), area);
}

fn tab_bar(frame: &mut Frame, area: Rect, focus: Pane) {
    let spans: Vec<Span> = Pane::ALL
        .iter()
        .flat_map(|&p| {
            let style = if p == focus { Style::new().bg(ACCENT).fg(Color::Black).bold() } else { Style::new() };
            [Span::styled(tab_label(p, focus, area.width), style), Span::styled("│", Style::new().fg(DIM))]
        })
        .collect();
    frame.render_widget(Line::from(spans), area);
}

/// The focused pane's hint: what it shows and what its words mean, shortened
/// with a pointer to the help's page of words where it does not fit.
fn hint(frame: &mut Frame, area: Rect, app: &App) {
    let text = words::hint(app.focus, &app.study.target_label());
    let width = area.width as usize;
    let pointer = "  ?? every word";
    let line = if Line::from(text.as_str()).width() <= width {
        Line::from(text).fg(DIM)
    } else {
        let room = width.saturating_sub(Line::from(pointer).width());
        Line::from(vec![
            Span::styled(fit(&text, room), Style::new().fg(DIM)),
            Span::styled(pointer, Style::new().fg(ACCENT)),
        ])
    };
    frame.render_widget(fit_line(line, width), area);
}

/// The notice, then the focused pane's keys and the explorer's: as many whole
/// `key label` pairs as fit, and a pointer to `?` for the rest.
fn footer(frame: &mut Frame, area: Rect, app: &App) {
    let width = area.width as usize;
    let mut spans = Vec::new();
    if let Some(notice) = &app.notice {
        spans.push(Span::styled(
            format!(" {} ", fit(notice, width.saturating_sub(2))),
            Style::new().fg(Color::Black).bg(WARN),
        ));
        spans.push(Span::raw(" "));
    }
    let pointer = "… ? all keys";
    let pairs = keymap::hints(app.context(), app.focus);
    let mut used = Line::from(spans.clone()).width();
    let mut shown = 0;
    for (i, (key, label)) in pairs.iter().enumerate() {
        let cells = Line::from(format!("{key} {label}")).width();
        // Room for this pair, and for the pointer after it unless it is the last.
        let after = if i + 1 == pairs.len() { 0 } else { 2 + pointer.chars().count() };
        if used + cells + after > width {
            break;
        }
        spans.extend([Span::styled(*key, Style::new().fg(ACCENT).bold()), Span::raw(format!(" {label}  "))]);
        used += cells + 2;
        shown += 1;
    }
    if shown < pairs.len() {
        spans.push(Span::styled(pointer, Style::new().fg(ACCENT)));
    }
    frame.render_widget(fit_line(Line::from(spans), width), area);
}

/// A box of `width`×`height` centred in `area` (clipped to it), cleared.
fn centred(frame: &mut Frame, area: Rect, width: u16, height: u16) -> Rect {
    let rect = area.centered(Constraint::Length(width.min(area.width)), Constraint::Length(height.min(area.height)));
    frame.render_widget(Clear, rect);
    rect
}

/// The key table, the focused pane's keys first and marked; in two columns
/// (without "when") where one does not fit.
fn help(frame: &mut Frame, area: Rect, focus: Pane) {
    let bold = Style::new().add_modifier(Modifier::BOLD);
    let block = Block::bordered()
        .title(" Keys — mouse: click selects panes and rows, the wheel scrolls ")
        .title_bottom(format!(" {} pane's keys first · ? again: words · Esc closes ", focus.title()))
        .border_style(Style::new().fg(ACCENT));
    // What works where the focus is: other panes' own keys are left out.
    let mut entries: Vec<Entry> =
        keymap::table().into_iter().filter(|e| e.binding.scope != Scope::Focused || e.owner == Some(focus)).collect();
    entries.sort_by_key(|e| e.owner != Some(focus));
    let style = |e: &Entry| if e.owner == Some(focus) { Style::new().fg(ACCENT) } else { Style::new() };
    let one_column = entries.len() as u16 + 4 <= area.height;
    if one_column {
        let rows = entries
            .iter()
            .map(|e| Row::new([e.binding.shown.to_string(), e.binding.help.to_string(), e.when()]).style(style(e)));
        let rect = centred(frame, area, 84, entries.len() as u16 + 4);
        let widths = [Constraint::Length(10), Constraint::Fill(1), Constraint::Length(22)];
        let table = Table::new(rows, widths).header(Row::new(["key", "what it does", "when"]).style(bold));
        frame.render_widget(table.block(block), rect);
        return;
    }
    let half = entries.len().div_ceil(2);
    let rect = centred(frame, area, area.width, half as u16 + 3);
    let inner = block.inner(rect);
    frame.render_widget(block, rect);
    let [left, right] = inner.layout(&Layout::horizontal([Constraint::Fill(1), Constraint::Fill(1)]).spacing(2));
    for (part, column) in entries.chunks(half).zip([left, right]) {
        // The key column, a space, then what it does, shortened on purpose.
        let room = column.width.saturating_sub(10) as usize;
        let rows =
            part.iter().map(|e| Row::new([e.binding.shown.to_string(), fit(e.binding.help, room)]).style(style(e)));
        let table = Table::new(rows, [Constraint::Length(9), Constraint::Fill(1)])
            .header(Row::new(["key", "what it does"]).style(bold));
        frame.render_widget(table, column);
    }
}

/// The help's second page: every word the panes on screen show, with its
/// meaning (the focused pane's first), wrapped to the terminal's width.
fn words_help(frame: &mut Frame, area: Rect, app: &App, screen: &Screen) {
    let target = app.study.target_label();
    let mut shown: Vec<Pane> = screen.panes.iter().map(|(p, _)| *p).collect();
    shown.sort_by_key(|&p| p != app.focus);
    let mut terms: Vec<&words::Term> = Vec::new();
    for term in shown.into_iter().flat_map(words::of) {
        if !terms.iter().any(|t| std::ptr::eq(*t, term)) {
            terms.push(term);
        }
    }
    let lines: Vec<Line> = terms
        .iter()
        .map(|t| {
            let word = Span::styled(format!("{:<11}", t.shown(&target)), Style::new().fg(ACCENT).bold());
            Line::from(vec![word, Span::raw(t.meaning(&target))])
        })
        .collect();
    let width = area.width.min(110);
    let inner = width.saturating_sub(2).max(1) as usize;
    let height: usize = lines.iter().map(|l| l.width().div_ceil(inner).max(1)).sum();
    let rect = centred(frame, area, width, height as u16 + 2);
    let block = Block::bordered()
        .title(format!(" Words on screen — {} pane's first ", app.focus.title()))
        .title_bottom(" ? or Esc closes ")
        .border_style(Style::new().fg(ACCENT));
    frame.render_widget(Paragraph::new(lines).wrap(Wrap { trim: false }).block(block), rect);
}

fn popup_box(frame: &mut Frame, area: Rect, popup: &Popup) {
    let (title, text, colour, hint) = match popup {
        Popup::Error(text) => (" Error ", text.as_str(), BAD, " Esc/Enter closes "),
        Popup::Notice(text) => (" Done ", text.as_str(), GOOD, " Esc/Enter closes "),
        Popup::Confirm(q) => (" Confirm ", q.text(), WARN, " y yes · n no "),
    };
    let width = (text.chars().count() as u16 + 4).clamp(30, 70);
    // Word wrapping may need a line more than the characters alone.
    let lines = (text.chars().count() as u16).div_ceil(width - 4);
    let lines = if lines > 1 { lines + 1 } else { lines };
    let rect = centred(frame, area, width, lines + 2);
    let block = Block::bordered().title(title).title_bottom(hint).border_style(Style::new().fg(colour).bold());
    frame.render_widget(Paragraph::new(text).wrap(Wrap { trim: true }).block(block), rect);
}
