//! Results set aside while another model is studied or compared with: `M` and
//! `B` change only the model they name, and each model's sweeps, patching maps,
//! circuit search and pruning curves (each pair's layer swaps) come back with it.

use super::panes::Panes;
use super::protocol::{PatchMaps, Swaps};
use super::study::{Study, SweepResult};
use crate::engine::circuit::CircuitReport;
use crate::engine::lab::ModelKind;
use crate::engine::layer::Layer;
use crate::engine::prune::PruneCurve;
use std::collections::BTreeMap;

/// What was computed on one model under study.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SubjectResults {
    pub sweeps: BTreeMap<Layer, SweepResult>,
    pub patch: Option<Box<PatchMaps>>,
    pub report: Option<Box<CircuitReport>>,
    pub curves: Option<(String, Vec<PruneCurve>)>,
}

impl SubjectResults {
    pub fn is_empty(&self) -> bool {
        *self == SubjectResults::default()
    }
}

/// Every result not shown now: per model under study, and every pair's swaps.
#[derive(Debug, Clone, Default)]
pub struct Shelf {
    pub subjects: BTreeMap<ModelKind, SubjectResults>,
    /// Layer swaps, each naming its pair (donor into recipient).
    pub swaps: Vec<Box<Swaps>>,
}

impl Shelf {
    /// The results shown now, taken out of the panes (which then show none).
    pub fn take_shown(study: &mut Study, panes: &mut Panes) -> SubjectResults {
        let circuit = &mut panes.circuit;
        circuit.progress = None;
        SubjectResults {
            sweeps: std::mem::take(&mut study.ablation.sweeps),
            patch: circuit.patch.take(),
            report: circuit.report.take(),
            curves: circuit.curves.take(),
        }
    }

    /// Shows `results` in the panes.
    pub fn show(results: SubjectResults, study: &mut Study, panes: &mut Panes) {
        study.ablation.sweeps = results.sweeps;
        let circuit = &mut panes.circuit;
        circuit.sites = results.patch.as_ref().map_or_else(|| Layer::ALL.to_vec(), |p| p.sites.clone());
        (circuit.patch, circuit.report, circuit.curves) = (results.patch, results.report, results.curves);
    }

    /// The model under study changes from `from` to `to`: `from`'s results are
    /// set aside and `to`'s come back.
    pub fn switch_subject(&mut self, from: ModelKind, to: ModelKind, study: &mut Study, panes: &mut Panes) {
        let shown = Shelf::take_shown(study, panes);
        if !shown.is_empty() {
            self.subjects.insert(from, shown);
        }
        Shelf::show(self.subjects.remove(&to).unwrap_or_default(), study, panes);
        self.switch_pair(study, panes);
    }

    /// The pair changed: the swaps shown are the new pair's (the compared model's
    /// layers into the studied one), if computed.
    pub fn switch_pair(&mut self, study: &Study, panes: &mut Panes) {
        self.swaps.extend(panes.ablation.swaps.take());
        let pair = |s: &Swaps| s.donor == study.reference && s.recipient == study.subject;
        panes.ablation.swaps = self.swaps.iter().position(|s| pair(s)).map(|i| self.swaps.remove(i));
        panes.ablation.swap_row = 0;
    }
}
