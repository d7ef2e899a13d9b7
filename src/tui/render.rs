//! One frame: header, panes (all or one tab), footer, and the overlays on top.
//! Reads the state only; the image store is a cache of encoded pictures.

use super::app::App;
use super::effect::Popup;
use super::images::ImageStore;
use super::keymap::{self, Entry};
use super::keys::Scope;
use super::layout::{MIN_SIZE, Screen, tab_label};
use super::panes::{Pane, View};
use super::theme::{self, ACCENT, BAD, DIM, GOOD, WARN};
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
    footer(frame, screen.footer, app);
    if app.help {
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

fn header(frame: &mut Frame, area: Rect, app: &App, protocol: &str) {
    let (text, colour) = status(app);
    let study = &app.study;
    let (set, mode, empty) = match study.graph.as_deref() {
        Some(g) if !g.set.sites.is_empty() => (g.set.to_string(), g.mode, false),
        Some(g) => ("none".to_string(), g.mode, true),
        None => (study.ablation.set.to_string(), study.ablation.mode, study.ablation.set.is_empty()),
    };
    let mut spans = vec![
        Span::styled(" trojanscope ", Style::new().bg(ACCENT).fg(Color::Black).bold()),
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
        spans.push(Span::styled(format!("· {attack} "), Style::new().fg(WARN)));
    }
    if let Some(run) = &study.run {
        if run.read_only {
            spans.push(Span::styled("read-only ", Style::new().fg(WARN).bold()));
        }
        spans.push(Span::styled(format!("· {} · {} · {protocol}", run.root, run.device), Style::new().fg(DIM)));
    }
    frame.render_widget(Line::from(spans), area);
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

fn footer(frame: &mut Frame, area: Rect, app: &App) {
    let mut spans = Vec::new();
    if let Some(notice) = &app.notice {
        spans.push(Span::styled(format!(" {notice} "), Style::new().fg(Color::Black).bg(WARN)));
        spans.push(Span::raw(" "));
    }
    for (key, label) in keymap::hints(app.context(), app.focus) {
        spans.push(Span::styled(key, Style::new().fg(ACCENT).bold()));
        spans.push(Span::raw(format!(" {label}  ")));
    }
    frame.render_widget(Line::from(spans), area);
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
        .title_bottom(format!(" {} pane's keys first · ? or Esc closes ", focus.title()))
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
        let rows = part.iter().map(|e| Row::new([e.binding.shown, e.binding.help]).style(style(e)));
        let table = Table::new(rows, [Constraint::Length(9), Constraint::Fill(1)])
            .header(Row::new(["key", "what it does"]).style(bold));
        frame.render_widget(table, column);
    }
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
