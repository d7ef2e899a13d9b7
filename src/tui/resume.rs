//! The session and the screen: what `session.json` keeps is taken from the
//! explorer's state as it is (`snapshot`) and put back when the run opens again
//! (`apply`), each result beside the model it was computed on.

use super::panes::{Pane, Panes};
use super::session::{Restored, Saved, SavedView, SessionFile};
use super::shelf::{Shelf, SubjectResults};
use super::study::Study;
use crate::engine::lab::ModelKind;
use crate::engine::layer::{Layer, PerLayer};
use std::collections::BTreeMap;

/// The session as the explorer shows it now, keyed by `study.checkpoints`.
pub fn snapshot(focus: Pane, study: &Study, panes: &Panes, shelf: &Shelf) -> SessionFile {
    let circuit = &panes.circuit;
    let view = SavedView {
        focus: focus.number(),
        subject: study.subject,
        reference: study.reference,
        layer: study.layer,
        rows: Layer::ALL.iter().map(|&l| study.rows[l]).collect(),
        sort: study.sort,
        digit: study.digit,
        set: study.ablation.set.clone(),
        mode: study.ablation.mode,
        history_row: study.ablation.history_row,
        direction: circuit.direction,
        map: (circuit.layer, circuit.unit),
    };
    let shown = SubjectResults {
        sweeps: study.ablation.sweeps.clone(),
        patch: circuit.patch.clone(),
        report: circuit.report.clone(),
        curves: circuit.curves.clone(),
    };
    let subjects = std::iter::once((study.subject, &shown)).chain(shelf.subjects.iter().map(|(k, r)| (*k, r)));
    let mut results: Vec<Saved> = study.ablation.history.iter().cloned().map(Saved::Evaluation).collect();
    for (subject, r) in subjects {
        results.extend(r.sweeps.iter().map(|(&layer, sweep)| Saved::Sweep { subject, layer, sweep: sweep.clone() }));
        results.extend(r.patch.clone().map(|maps| Saved::Patch { subject, maps }));
        results.extend(r.report.clone().map(|report| Saved::Circuit { subject, report }));
        results.extend(r.curves.clone().map(|(layer, curves)| Saved::Prune { subject, layer, curves }));
    }
    results.extend(panes.ablation.swaps.iter().chain(&shelf.swaps).cloned().map(Saved::Swaps));
    let test_images = study.run.as_ref().map_or(0, |r| r.test_images);
    SessionFile {
        test_images,
        view,
        results: results.into_iter().filter_map(|r| r.keyed(&study.checkpoints)).collect(),
    }
}

/// Puts a restored session on screen; returns the pane to focus.
pub fn apply(restored: Restored, study: &mut Study, panes: &mut Panes, shelf: &mut Shelf) -> Option<Pane> {
    let view = restored.view?;
    study.subject = view.subject;
    study.reference = view.reference;
    study.layer = view.layer;
    study.rows = PerLayer::from_fn(|l| view.rows.get(l.position()).copied().unwrap_or(0));
    study.sort = view.sort;
    study.digit = view.digit;
    study.ablation.set = view.set;
    study.ablation.mode = view.mode;
    study.ablation.history_row = view.history_row;
    panes.circuit.direction = view.direction;
    let mut subjects: BTreeMap<ModelKind, SubjectResults> = BTreeMap::new();
    for result in restored.results {
        match result {
            Saved::Evaluation(e) => study.ablation.history.push(e),
            Saved::Sweep { subject, layer, sweep } => {
                drop(subjects.entry(subject).or_default().sweeps.insert(layer, sweep))
            }
            Saved::Patch { subject, maps } => subjects.entry(subject).or_default().patch = Some(maps),
            Saved::Circuit { subject, report } => subjects.entry(subject).or_default().report = Some(report),
            Saved::Prune { subject, layer, curves } => {
                subjects.entry(subject).or_default().curves = Some((layer, curves))
            }
            Saved::Swaps(swaps) => shelf.swaps.push(swaps),
        }
    }
    let shown = subjects.remove(&study.subject).unwrap_or_default();
    shelf.subjects = subjects;
    Shelf::show(shown, study, panes);
    shelf.switch_pair(study, panes);
    (panes.circuit.layer, panes.circuit.unit) = view.map;
    Pane::of_number(view.focus)
}
