//! The study's key picture: a test digit with the trigger, the compared model's
//! map on the clean digit, the model under study's map on the triggered digit,
//! their difference, and the difference for every channel of the layer at one
//! colour scale (the backdoor's channel lights up). `i` switches to the test
//! images on which the selected unit is most and least active.

use super::common::{Cx, Titled, View, number, placeholder, row, scroll_offset, titled_pictures};
use crate::picture::grid_columns;
use crate::tui::effect::Effect;
use crate::tui::fit::draw_line;
use crate::tui::images::{ImageStore, key_of};
use crate::tui::jobs::Jobs;
use crate::tui::keys::{Action, Binding, PaneKey, Scope, ch};
use crate::tui::pictures::{channel_pictures, compared, grid_picture, layer_difference_scale, ranked_picture};
use crate::tui::protocol::{Command, DigitData, Job, TopImages};
use crate::tui::study::Study;
use crate::tui::theme::{DIM, WARN};
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Style, Stylize};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Table, TableState};

const TOP: PaneKey = PaneKey("activations.top");

pub const KEYS: &[Binding] = &[crate::bind!(
    &[ch('i')],
    "i",
    Action::Pane(TOP),
    Scope::Focused,
    "unit's top images ↔ digit",
    Some("top images")
)];

#[derive(Debug, Clone, Default)]
pub struct ActivationsState {
    /// The top images are shown instead of the digit's maps.
    pub showing_top: bool,
    /// The last ranking received.
    pub top: Option<Box<TopImages>>,
}

pub fn handle(state: &mut ActivationsState, action: Action, cx: Cx) -> Option<Vec<Effect>> {
    match action {
        Action::Pane(TOP) => {
            state.showing_top = !state.showing_top;
            Some(Vec::new())
        }
        other => super::channels::step(other, cx.study).map(|()| Vec::new()),
    }
}

/// While the top images are shown, asks for the selected unit's when the shown
/// ones are of another unit or model (and none is on its way).
pub fn follow(state: &ActivationsState, study: &Study, jobs: &Jobs) -> Vec<Effect> {
    if !state.showing_top || !study.ready || jobs.is_running(Job::TopImages) {
        return Vec::new();
    }
    let (layer, unit) = (study.layer, study.selected_unit());
    let current = state.top.as_ref().is_some_and(|t| (t.model, t.layer, t.unit) == (study.subject, layer, unit));
    if current { Vec::new() } else { vec![Effect::Send(Command::TopImages { layer, unit })] }
}

pub fn draw(frame: &mut Frame, area: Rect, view: &View, state: &ActivationsState, images: &mut ImageStore) {
    if state.showing_top {
        return draw_top(frame, area, view, state, images);
    }
    let study = view.study;
    let Some((data, pair)) =
        study.digit_data.as_deref().and_then(|d| Some((d, compared(d, study.reference, study.subject)?)))
    else {
        placeholder(
            frame,
            area,
            "The activations appear once the models are loaded (n / p step through the test digits).",
        );
        return;
    };
    let (reference, subject) = (study.reference.name(), study.subject.name());
    let (layer, unit) = (study.layer, study.selected_unit());
    let dataset = study.dataset();
    let [caption, body] = area.layout(&Layout::vertical([Constraint::Length(1), Constraint::Fill(1)]));
    let (said_reference, said_subject) = (DigitData::prediction(pair.0), DigitData::prediction(pair.1));
    let loading = if study.digit != data.index { format!(" · loading #{}…", study.digit) } else { String::new() };
    draw_line(
        frame,
        Line::from(vec![
            format!("{} #{} ({})", dataset.noun(), data.index, dataset.label(data.label)).bold(),
            Span::raw(format!(
                " · {reference} says {} · {subject} + trigger says ",
                dataset.label(said_reference as u8)
            )),
            Span::styled(
                dataset.label(said_subject as u8),
                Style::new().fg(if said_subject == data.label as usize { DIM } else { WARN }).bold(),
            ),
            format!(" · {layer} unit {unit}{loading}").fg(DIM),
        ]),
        caption,
    );
    let key = key_of((layer, unit, study.generation));
    if !layer.is_conv() {
        let [digit_area, table_area] =
            body.layout(&Layout::horizontal([Constraint::Percentage(30), Constraint::Fill(1)]));
        let [digit, ..] = channel_pictures(data, pair, layer, unit);
        titled_pictures(
            frame,
            digit_area,
            images,
            vec![Titled { title: dataset.noun().into(), slot: "act.digit", key, make: Box::new(move || digit) }],
        );
        let values = (pair.0[layer.position()].values.as_slice(), pair.1[layer.position()].values.as_slice());
        units_table(frame, table_area, values, unit, [reference, subject]);
        return;
    }
    let [singles, grid_area] =
        body.layout(&Layout::horizontal([Constraint::Percentage(62), Constraint::Fill(1)]).spacing(1));
    let scale = layer_difference_scale(pair, layer);
    let titles = [dataset.noun().to_string(), reference.to_string(), format!("{subject} +T"), "model Δ".to_string()];
    let slots = ["act.digit", "act.reference", "act.subject", "act.diff"];
    let items = channel_pictures(data, pair, layer, unit)
        .into_iter()
        .zip(titles.into_iter().zip(slots))
        .map(|(picture, (title, slot))| Titled { title, slot, key, make: Box::new(move || picture) })
        .collect();
    titled_pictures(frame, singles, images, items);
    let tile = pair.0[layer.position()].shape[1..].to_vec();
    let aspect = grid_area.width as f64 / (2.0 * grid_area.height.saturating_sub(1).max(1) as f64);
    let columns = grid_columns(layer.units(), (tile[1], tile[0]), aspect);
    let grid = Titled {
        title: format!("±{scale:.2}: blue − red +, all {}", layer.units()),
        slot: "act.grid",
        key: key_of((key, columns)),
        make: Box::new(move || grid_picture(pair, layer, unit, columns)),
    };
    titled_pictures(frame, grid_area, images, vec![grid]);
}

/// The selected unit's most and least activating test images (clean and
/// triggered pooled), each under its label and the unit's mean activation.
fn draw_top(frame: &mut Frame, area: Rect, view: &View, state: &ActivationsState, images: &mut ImageStore) {
    let study = view.study;
    let (layer, unit) = (study.layer, study.selected_unit());
    let Some(top) = state.top.as_deref() else {
        let text = if view.jobs.is_running(Job::TopImages) || study.ready {
            format!("Ranking the test images by {layer}:{unit}…")
        } else {
            "The top images appear once the models are ready.".into()
        };
        placeholder(frame, area, &text);
        return;
    };
    let stale = (top.model, top.layer, top.unit) != (study.subject, layer, unit);
    let [caption, most, least] =
        area.layout(&Layout::vertical([Constraint::Length(1), Constraint::Fill(1), Constraint::Fill(1)]));
    draw_line(
        frame,
        Line::from(vec![
            format!(
                "{} {}:{} on {} test images",
                top.model,
                top.layer,
                top.unit,
                2 * study.run.as_ref().map_or(0, |r| r.test_images)
            )
            .bold(),
            " · label, T = triggered, mean activation · i: the digit".fg(DIM),
            if stale { " · updating…".fg(WARN) } else { "".into() },
        ]),
        caption,
    );
    let key = key_of((top.model, top.layer, top.unit, study.generation));
    for (end, hits, area) in [("most", &top.top, most), ("least", &top.bottom, least)] {
        let [label, row] = area.layout(&Layout::horizontal([Constraint::Length(6), Constraint::Fill(1)]));
        draw_line(frame, Line::from(end).bold(), label);
        let slots: &[&'static str] = if end == "most" { &TOP_SLOTS } else { &BOTTOM_SLOTS };
        let pictures = hits
            .iter()
            .zip(slots)
            .map(|(hit, &slot)| {
                let h = &hit.hit;
                let title = format!("{}{} {:.2}", h.label, if h.triggered { "T" } else { "" }, h.score);
                let picture = ranked_picture(hit, top.side);
                Titled { title, slot, key, make: Box::new(move || picture) }
            })
            .collect();
        titled_pictures(frame, row, images, pictures);
    }
}

/// Image-store slots of the ranked pictures (as many as the worker sends).
const TOP_SLOTS: [&str; crate::tui::worker::TOP_IMAGES] =
    ["top.0", "top.1", "top.2", "top.3", "top.4", "top.5", "top.6", "top.7"];
const BOTTOM_SLOTS: [&str; crate::tui::worker::TOP_IMAGES] =
    ["bottom.0", "bottom.1", "bottom.2", "bottom.3", "bottom.4", "bottom.5", "bottom.6", "bottom.7"];

/// A flat layer's units on the digit: the compared model (clean digit), the model
/// under study (triggered), and the difference.
pub fn units_table(frame: &mut Frame, area: Rect, (clean, poisoned): (&[f32], &[f32]), unit: usize, names: [&str; 2]) {
    let rows = (0..clean.len()).map(|u| {
        row(
            [
                u.to_string(),
                number(Some(clean[u] as f64), 3),
                number(Some(poisoned[u] as f64), 3),
                format!("{:+.3}", poisoned[u] - clean[u]),
            ],
            0,
        )
    });
    let header = row(["unit", names[0], names[1], "model Δ"].map(String::from), 0).style(Style::new().bold());
    let table = Table::new(rows, [4, 9, 9, 9].map(Constraint::Length))
        .header(header)
        .row_highlight_style(Style::new().reversed());
    let visible = area.height.saturating_sub(1) as usize;
    let mut state = TableState::new().with_offset(scroll_offset(unit, clean.len(), visible)).with_selected(Some(unit));
    frame.render_stateful_widget(table, area, &mut state);
}
