//! Keys on a graph run. The app keeps its own (quitting, help, zoom, focus,
//! stopping a job, the models under study and compared); the rest act on the
//! graph's state here. Keys of the study's own analyses say they run on the
//! study's CNN only.

use super::STUDY_ONLY;
use super::state::GraphState;
use crate::graph::circuit::GraphSite;
use crate::graph::units::UnitSet;
use crate::tui::cursor::moved;
use crate::tui::effect::Effect;
use crate::tui::jobs::Jobs;
use crate::tui::keys::Action;
use crate::tui::panes::circuit::{self, CircuitState};
use crate::tui::panes::common::rows_moved;
use crate::tui::panes::{Cx, Pane, ablation, channels, kernels, layers};
use crate::tui::protocol::{Command, Job};
use crate::tui::study::Study;
use ratatui::crossterm::event::{KeyCode, KeyEvent};

/// What a key does on a graph run; `None` leaves it to the app.
pub fn apply(study: &mut Study, jobs: &Jobs, focus: Pane, owner: Option<Pane>, action: Action) -> Option<Vec<Effect>> {
    let (ready, subject, images) = (study.ready, study.subject, study.run.as_ref().map_or(0, |r| r.test_images));
    let digit = study.digit;
    let g = study.graph.as_deref_mut()?;
    let effects = match (owner, action) {
        (Some(Pane::Layers), Action::Pane(layers::OPEN)) => {
            if g.toggle_fold() {
                Vec::new()
            } else {
                vec![Effect::Focus(Pane::Channels.number())]
            }
        }
        (Some(Pane::Channels), Action::Pane(channels::SORT | channels::REVERSE)) => {
            g.by_effect = !g.by_effect;
            Vec::new()
        }
        (Some(Pane::Channels), Action::Pane(channels::OPEN)) => vec![Effect::Focus(Pane::Kernels.number())],
        (Some(Pane::Channels), Action::Pane(channels::FIND)) => {
            study.find = Some(String::new());
            Vec::new()
        }
        (Some(Pane::Ablation), Action::Pane(ablation::SWEEP)) => sweep(g, jobs, ready),
        (Some(Pane::Ablation), Action::Pane(ablation::RESTORE)) => {
            let row = g.history.iter().rev().nth(g.history_row).cloned()?;
            (g.set, g.mode) = (row.set, row.mode);
            g.evaluate_current(subject, ready)
        }
        (Some(Pane::Kernels), Action::Pane(kernels::PREVIOUS_INPUT | kernels::NEXT_INPUT)) => {
            // Through the inputs in the pane's order: largest change first.
            let models = [study.reference, subject];
            let norms = super::kernels::selected_weights(g)
                .map(|w| super::kernels::input_norms(w, g.selected_unit(), models))
                .unwrap_or_default();
            let at = g.input.and_then(|i| norms.iter().position(|n| n.input == i)).unwrap_or(0);
            let delta = if action == Action::Pane(kernels::NEXT_INPUT) { 1 } else { -1 };
            g.input = norms.get(moved(at, delta, norms.len())).map(|n| n.input);
            Vec::new()
        }
        (Some(_), Action::Pane(key)) => {
            let entry = crate::tui::keymap::table().into_iter().find(|e| e.binding.action == action);
            vec![Effect::Notice(format!("{}: {STUDY_ONLY}", entry.map_or(key.0, |e| e.binding.help)))]
        }
        (Some(pane), _) => vec![Effect::Notice(format!("the {} pane {STUDY_ONLY}", pane.title()))],
        (None, Action::Left | Action::Right) => {
            g.step_site(if action == Action::Right { 1 } else { -1 });
            Vec::new()
        }
        (None, Action::ToggleAblation) => {
            g.toggle_selected();
            g.evaluate_current(subject, ready)
        }
        (None, Action::CycleMode) => {
            g.mode = g.mode.cycle();
            g.evaluate_current(subject, ready)
        }
        (None, Action::ClearSet) => {
            g.set = Default::default();
            g.evaluate_current(subject, ready)
        }
        (None, Action::NextDigit | Action::PrevDigit) if images > 0 => {
            let delta = if action == Action::NextDigit { 1 } else { -1 };
            study.digit = (digit as i64 + delta).rem_euclid(images as i64) as usize;
            Vec::new()
        }
        (None, action) => {
            let delta = rows_moved(action)?;
            match focus {
                Pane::Layers => g.move_layer_row(delta),
                Pane::Channels | Pane::Kernels | Pane::Activations => g.move_unit_row(delta),
                Pane::Ablation => g.history_row = moved(g.history_row, delta, g.history.len()),
                _ => {}
            }
            Vec::new()
        }
    };
    Some(effects)
}

/// The Circuit pane's keys on a graph run: its jobs on the graph's nodes (the
/// search within one node, as `circuit --nodes NODE`), its set into the
/// Ablation pane's; moving about the map as on the study's CNN.
pub fn circuit(state: &mut CircuitState<GraphSite>, action: Action, cx: Cx) -> Option<Vec<Effect>> {
    let (ready, subject) = (cx.study.ready, cx.study.subject);
    let refused = cx.jobs.refuse_long_job(ready);
    let long = |command: Command| match &refused {
        Some(why) => vec![Effect::Notice(why.clone())],
        None => vec![Effect::FocusOwner, Effect::Send(command)],
    };
    let g = cx.study.graph.as_deref_mut()?;
    Some(match action {
        Action::Pane(circuit::PATCH) => long(Command::GraphPatch),
        Action::Pane(circuit::SEARCH) => {
            state.progress = None;
            // The heatmap's node while the pane has the focus, else the one selected in Layers.
            let site = match state.selected_site().filter(|_| cx.focused) {
                Some(site) => site.name.clone(),
                None => g.selected().name.clone(),
            };
            long(Command::GraphCircuit { site, mode: g.mode })
        }
        Action::Pane(circuit::PRUNE) => {
            // The heatmap's node while the pane has the focus, else the CLI's default.
            let site = state.selected_site().filter(|_| cx.focused).map(|s| s.name.clone());
            long(Command::GraphPrune { site, mode: g.mode })
        }
        Action::Pane(circuit::ABLATE) => match circuit::found_circuit(state) {
            Err(why) => why,
            Ok((set, mode)) => {
                (g.set, g.mode) = (UnitSet::from(&set), mode);
                let notice = Effect::Notice(format!("ablating the circuit {}", g.set));
                std::iter::once(notice).chain(g.evaluate_current(subject, ready)).collect()
            }
        },
        Action::ToggleAblation => {
            let Some(site) = state.selected_site() else { return Some(Vec::new()) };
            g.toggle(&site.name, state.selected_unit() as i64);
            g.evaluate_current(subject, ready)
        }
        other => return circuit::moves(state, other),
    })
}

fn sweep(g: &GraphState, jobs: &Jobs, ready: bool) -> Vec<Effect> {
    if let Some(why) = jobs.refuse_long_job(ready) {
        return vec![Effect::Notice(why)];
    }
    vec![Effect::Send(Command::GraphSweep { site: g.selected().name.clone(), mode: g.mode })]
}

/// A key while a unit number is typed after `/`: digits, Backspace, Enter jumps,
/// Esc cancels.
pub fn find_key(study: &mut Study, key: KeyEvent) -> Vec<Effect> {
    let Some(typed) = study.find.as_mut() else { return Vec::new() };
    match key.code {
        KeyCode::Char(c) if c.is_ascii_digit() && typed.len() < 5 => typed.push(c),
        KeyCode::Backspace => drop(typed.pop()),
        KeyCode::Esc => study.find = None,
        KeyCode::Enter => {
            let typed = study.find.take().unwrap_or_default();
            let Ok(unit) = typed.parse::<usize>() else { return vec![Effect::Notice("no unit number typed".into())] };
            if let Err(e) = study.jump_to_unit(unit) {
                return vec![Effect::Notice(e)];
            }
        }
        _ => {}
    }
    Vec::new()
}

/// What the panes need from the worker now: the selected node's weights and its
/// output on the selected image, each when missing and not on its way.
pub fn follow(study: &Study, jobs: &Jobs) -> Vec<Effect> {
    let Some(g) = study.graph.as_deref().filter(|_| study.ready) else { return Vec::new() };
    g.wanted(study.digit, jobs.is_running(Job::Weights), jobs.is_running(Job::Digit))
        .into_iter()
        .map(Effect::Send)
        .collect()
}
