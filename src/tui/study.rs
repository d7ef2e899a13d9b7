//! What every pane reads: the open run, its models, the model under study and the
//! one it is compared with, the selected layer and unit, the test digit, and the
//! ablation set with its results. Panes draw from this and their own state.

use super::columns::{self, ChannelRow, LayerFacts, Sort};
use super::effect::Effect;
use super::protocol::{Checkpoints, Command, DigitData, LayerWeights, ModelsData, RunInfo};
use crate::data::dataset::Dataset;
use crate::engine::ablation::{AblationMode, AblationSet};
use crate::engine::lab::{ModelKind, PerModel};
use crate::engine::layer::{Layer, PerLayer};
use crate::engine::metrics::Metrics;
use crate::engine::sweep::SweepRow;
use crate::tui::graph::state::GraphState;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One evaluated ablation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    pub set: AblationSet,
    pub mode: AblationMode,
    /// The model it was evaluated on.
    pub model: ModelKind,
    pub metrics: Metrics,
    /// The worker's time for it (shown, so the engine's speed is visible).
    pub seconds: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SweepResult {
    pub mode: AblationMode,
    pub rows: Vec<SweepRow>,
    pub complete: bool,
}

#[derive(Debug, Clone, Default)]
pub struct AblationState {
    pub set: AblationSet,
    pub mode: AblationMode,
    /// The result for the current set and mode, once computed.
    pub result: Option<Evaluation>,
    /// Every evaluation, oldest first.
    pub history: Vec<Evaluation>,
    /// Cursor in the history, counted from the newest.
    pub history_row: usize,
    pub sweeps: BTreeMap<Layer, SweepResult>,
    /// The last set and mode sent to the worker and not answered yet: the worker
    /// always answers the last one (it may skip older ones), so the ledger's
    /// evaluation ends with its answer and no other.
    pub awaited: Option<(AblationSet, AblationMode)>,
}

#[derive(Debug, Clone)]
pub struct Study {
    pub run: Option<RunInfo>,
    pub models: Option<Box<ModelsData>>,
    /// Full-test-set metrics of every saved model.
    pub base: Option<PerModel<Metrics>>,
    /// The subject's per-unit activation change under the trigger.
    pub activation_change: Option<PerLayer<Vec<f64>>>,
    /// The subject's ablation cache is built: ablations and sweeps can run.
    pub ready: bool,
    /// The model under study (ablations, sweeps, patching, circuits, pruning act on
    /// it) and the model it is compared with (kernels, activations, weight change).
    pub subject: ModelKind,
    pub reference: ModelKind,
    pub layer: Layer,
    /// Cursor row in the Channels table, per layer.
    pub rows: PerLayer<usize>,
    pub sort: Sort,
    pub digit: usize,
    pub digit_data: Option<Box<DigitData>>,
    pub ablation: AblationState,
    /// Bumped whenever models, the digit or the compared pair change, so cached
    /// pictures are rebuilt.
    pub generation: u64,
    /// The unit number being typed after `/` in the Channels pane.
    pub find: Option<String>,
    /// A graph run's state: the panes draw from it instead of the study's layers.
    pub graph: Option<Box<GraphState>>,
    /// The SHA-256 of each saved model's checkpoint as loaded: results are kept
    /// keyed by them.
    pub checkpoints: Checkpoints,
}

impl Study {
    /// The ASR column's heading: BackdoorBench's ASR excludes images already of
    /// the target (`ASR¬8`); all-to-all has no such images.
    pub fn asr_heading(&self) -> String {
        match self.run.as_ref().and_then(|r| r.config.relabel().single()) {
            Some(target) => format!("ASR¬{target}"),
            None if self.run.is_some() => "ASR".into(),
            None => "ASR¬8".into(),
        }
    }

    /// The attack's target label as the ASR heading names it ("" for an
    /// all-to-all attack).
    pub fn target_label(&self) -> String {
        self.asr_heading().trim_start_matches("ASR").trim_start_matches('¬').to_string()
    }

    /// The run's attack for the header when it is not the study's: `badnets→0`.
    pub fn attack_label(&self) -> Option<String> {
        let config = &self.run.as_ref()?.config;
        (config.attack != crate::data::attack::Attack::Study)
            .then(|| format!("{}{}", config.attack.name(), config.relabel().arrow()))
    }
}

impl Default for Study {
    fn default() -> Study {
        Study {
            run: None,
            models: None,
            base: None,
            activation_change: None,
            ready: false,
            subject: ModelKind::Poisoned,
            reference: ModelKind::Clean,
            layer: Layer::Conv1,
            rows: PerLayer::from_fn(|_| 0),
            sort: Sort::default(),
            digit: 0,
            digit_data: None,
            ablation: AblationState::default(),
            generation: 0,
            find: None,
            graph: None,
            checkpoints: Checkpoints::new(),
        }
    }
}

impl Study {
    /// Whose classes the labels are (MNIST until the run is known).
    pub fn dataset(&self) -> Dataset {
        self.run.as_ref().map(|r| r.config.dataset).unwrap_or_default()
    }

    /// The facts the Channels table is built from, for `layer`.
    pub fn layer_facts(&self, layer: Layer) -> LayerFacts<'_> {
        let diff = self.models.as_ref().and_then(|m| m.diff(self.reference, self.subject));
        LayerFacts {
            layer,
            weight_change: diff.map(|d| d[layer.position()].units.iter().map(|u| u.l2).collect()),
            activation_change: self.activation_change.as_ref().map(|a| a[layer].as_slice()),
            sweep: self.ablation.sweeps.get(&layer).map(|s| s.rows.as_slice()),
            set: &self.ablation.set,
            base: self.base.as_ref().and_then(|b| b.get(self.subject)),
        }
    }

    /// The selected layer's rows in table order.
    pub fn channel_rows(&self) -> Vec<ChannelRow> {
        columns::rows(&self.layer_facts(self.layer), self.sort)
    }

    pub fn cursor(&self) -> usize {
        self.rows[self.layer].min(self.layer.units() - 1)
    }

    /// The unit under the Channels cursor.
    pub fn selected_unit(&self) -> usize {
        self.channel_rows().get(self.cursor()).map(|r| r.unit).unwrap_or(0)
    }

    /// The selected unit's identity, `layer:unit` (a graph's `node:unit`): the
    /// one selection every pane acts on, shown in the header.
    pub fn selection(&self) -> String {
        match self.graph.as_deref() {
            Some(g) => format!("{}:{}", g.selected().name, g.selected_unit()),
            None => format!("{}:{}", self.layer, self.selected_unit()),
        }
    }

    /// Moves the Channels cursor by `delta` rows, clamped.
    pub fn step_row(&mut self, delta: i64) {
        let units = self.layer.units() as i64;
        self.rows[self.layer] = (self.rows[self.layer] as i64 + delta).clamp(0, units - 1) as usize;
    }

    pub fn change_layer(&mut self, delta: i64) {
        let i = (self.layer.position() as i64 + delta).clamp(0, Layer::ALL.len() as i64 - 1) as usize;
        self.layer = Layer::ALL[i];
    }

    /// A model's parameters, per layer.
    pub fn weights(&self, kind: ModelKind) -> Option<&PerLayer<LayerWeights>> {
        self.models.as_ref()?.weights.get(kind)
    }

    /// The saved models, in order (on a graph run, those with metrics).
    pub fn saved_models(&self) -> Vec<ModelKind> {
        match (&self.models, &self.base) {
            (Some(m), _) => m.weights.kinds().collect(),
            (None, Some(base)) if self.graph.is_some() => base.kinds().collect(),
            _ => Vec::new(),
        }
    }

    /// Puts the Channels cursor on `unit` of the selected layer (or graph node).
    pub fn jump_to_unit(&mut self, unit: usize) -> Result<(), String> {
        if let Some(graph) = self.graph.as_deref_mut() {
            return graph.jump_to_unit(unit);
        }
        let row = self.channel_rows().iter().position(|r| r.unit == unit);
        let layer = self.layer;
        self.rows[layer] = row.ok_or_else(|| format!("{layer} has units 0..{}, not {unit}", layer.units() - 1))?;
        Ok(())
    }

    /// The saved model after `current` (wrapping), skipping `skip`.
    pub fn next_model(&self, current: ModelKind, skip: Option<ModelKind>) -> Option<ModelKind> {
        let saved: Vec<ModelKind> = self.saved_models().into_iter().filter(|&k| Some(k) != skip).collect();
        let i = saved.iter().position(|&k| k == current).map(|i| i + 1).unwrap_or(0);
        saved.get(i % saved.len().max(1)).copied()
    }

    /// Asks for the current set's metrics (nothing to ask for an empty set, or one
    /// already measured on this model).
    pub fn evaluate_current(&mut self) -> Vec<Effect> {
        let (set, mode, model) = (self.ablation.set.clone(), self.ablation.mode, self.subject);
        self.ablation.result =
            self.ablation.history.iter().rev().find(|e| e.set == set && e.mode == mode && e.model == model).cloned();
        if set.is_empty() || self.ablation.result.is_some() || !self.ready {
            return Vec::new();
        }
        self.ablation.awaited = Some((set.clone(), mode));
        vec![Effect::Send(Command::Evaluate { set, mode })]
    }

    /// Loads the models, the current digit's activations first, the model under
    /// study's cache built.
    pub fn load(&self) -> Effect {
        Effect::Send(Command::Load { digit: self.digit, subject: self.subject })
    }

    /// Toggles a unit in the ablation set and evaluates the new set.
    pub fn toggle(&mut self, layer: Layer, unit: usize) -> Vec<Effect> {
        self.ablation.set.toggle(layer, unit);
        self.evaluate_current()
    }
}
