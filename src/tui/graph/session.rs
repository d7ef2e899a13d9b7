//! The worker's side of a graph run: the run's models as executors, the test set
//! in raw pixels, and the answers the panes ask for, all through the generic
//! executor and `graph::*` (interventions, sweeps, `logits_and`). Tensors stay
//! here; the replies are plain data.

use super::data::{GraphEvaluation, GraphInfo, SiteActivations, SiteWeights};
use super::sites::sites;
use crate::data::loaded::LoadedData;
use crate::engine::ablation::AblationMode;
use crate::engine::cleanse::RecoveryReport;
use crate::engine::host::floats;
use crate::engine::lab::{ModelKind, PerModel};
use crate::engine::metrics::Metrics;
use crate::engine::run::key::FileKey;
use crate::engine::testset::{self, TestSet};
use crate::graph::circuit::GraphSite;
use crate::graph::eval::{evaluate, evaluate_until};
use crate::graph::exec::Executor;
use crate::graph::features::single_node;
use crate::graph::run::{self as graph_run, TrainedRecord};
use crate::graph::units::UnitSet;
use crate::setup::CommonArgs;
use crate::setup::{GraphLab, open_graph_lab};
use crate::tui::protocol::Checkpoints;
use crate::tui::protocol::GraphRestored;
use color_eyre::eyre::{Result, eyre};
use std::collections::HashMap;
use std::ops::ControlFlow;
use std::time::Instant;
use tch::Tensor;

/// Test images per condition the first answer to an ablation is measured on: a
/// toggle in preact8's first stage (nearly a full forward) answers in well under
/// a second on two cores. A smaller test set is sampled by its first fifth.
pub const SAMPLE: usize = 1000;

/// The sample's size for a test set of `n` images.
pub fn sample_size(n: usize) -> usize {
    SAMPLE.min(n / 5).max(1)
}

pub struct GraphSession {
    pub(crate) lab: GraphLab,
    /// The options the run was opened with (the training split is read with them).
    pub(super) common: CommonArgs,
    pub(super) sample: TestSet,
    pub(super) models: Vec<(ModelKind, Executor)>,
    pub subject: ModelKind,
    /// Mean outputs over the clean test images, per model and node (mean mode).
    means: HashMap<(ModelKind, usize), Tensor>,
    /// Both splits, read on the first job that trains or recovers.
    pub(super) data: Option<LoadedData>,
    /// The poisoned model's current trigger recovery (unlearning uses it).
    pub(super) recovery: Option<RecoveryReport>,
}

impl GraphSession {
    /// Reads the run's graph, every saved model and the test split.
    pub fn open(common: &CommonArgs) -> Result<(GraphSession, GraphInfo)> {
        let lab = open_graph_lab(common, &[])?;
        let mut models = Vec::new();
        for kind in ModelKind::ALL.into_iter().filter(|&k| lab.run.has(k)) {
            models.push((kind, graph_run::load(&lab.run, kind, lab.device)?));
        }
        let (first, exec) =
            models.first().ok_or_else(|| eyre!("{} holds a graph but no model", lab.run.root.display()))?;
        let info = GraphInfo { sites: sites(&exec.spec, &exec.shapes), sample: sample_size(lab.raw.len()) };
        // The poisoned model is the one whose backdoor is studied, where there is one.
        let subject = if lab.run.has(ModelKind::Poisoned) { ModelKind::Poisoned } else { *first };
        let sample = lab.raw.subset(info.sample);
        let (common, means) = (common.clone(), HashMap::new());
        let session = GraphSession { lab, common, sample, models, subject, means, data: None, recovery: None };
        Ok((session, info))
    }

    /// The SHA-256 of each model's checkpoint, as the session file keys its results.
    pub fn checkpoints(&self) -> Result<Checkpoints> {
        let run = &self.lab.run;
        self.models.iter().map(|(k, _)| Ok((*k, FileKey::of(&run.model_path(*k))?.sha256))).collect()
    }

    /// The run's saved session, its nodes resolved against the graph.
    pub fn restore(&self, checkpoints: &Checkpoints) -> GraphRestored {
        let exec = &self.models[0].1;
        let nodes = (0..exec.spec.nodes.len()).map(|n| GraphSite::of(exec, n)).collect();
        super::saved::read(&self.lab.run, checkpoints, self.lab.raw.len(), nodes)
    }

    pub fn exec(&self, model: ModelKind) -> Result<&Executor> {
        self.models
            .iter()
            .find(|(k, _)| *k == model)
            .map(|(_, e)| e)
            .ok_or_else(|| eyre!("the run has no {model} model"))
    }

    /// Every model's metrics on the full test set: what training saved when it
    /// was measured on these very images, else measured now.
    pub fn base_metrics(&self) -> PerModel<Metrics> {
        self.models.iter().map(|(kind, exec)| (*kind, self.metrics_of(*kind, exec))).collect()
    }

    /// `kind`'s metrics on the full test set, saved or measured now.
    fn metrics_of(&self, kind: ModelKind, exec: &Executor) -> Metrics {
        let path = graph_run::trained_path(&self.lab.run, kind);
        let saved = crate::engine::checkpoint::load_json::<TrainedRecord>(&path)
            .ok()
            .map(|r| r.metrics)
            .filter(|m| m.count == self.lab.raw.len());
        saved.unwrap_or_else(|| evaluate(exec, &self.lab.raw, &[]))
    }

    /// `set` ablated in the model under study: on the sample (sent at once), then
    /// on the full test set unless `stale()` says a newer request waits.
    pub fn ablate(
        &mut self,
        set: &UnitSet,
        mode: AblationMode,
        mut send: impl FnMut(GraphEvaluation),
        mut stale: impl FnMut() -> bool,
    ) -> Result<()> {
        let clock = Instant::now();
        let model = self.subject;
        let interventions = {
            let means = self.means_for(set, mode)?;
            set.interventions(self.exec(model)?, mode, |node| means[&node].shallow_clone()).map_err(|e| eyre!(e))?
        };
        let exec = self.exec(model)?;
        let answer = |metrics: Metrics, sample: bool| GraphEvaluation {
            set: set.clone(),
            mode,
            model,
            metrics,
            sample,
            seconds: clock.elapsed().as_secs_f64(),
        };
        if self.sample.len() < self.lab.raw.len() {
            send(answer(evaluate(exec, &self.sample, &interventions), true));
        }
        let full = evaluate_until(exec, &self.lab.raw, &interventions, || {
            if stale() { ControlFlow::Break(()) } else { ControlFlow::Continue(()) }
        });
        if let Some(metrics) = full {
            send(answer(metrics, false));
        }
        Ok(())
    }

    /// Each ablated node's mean output over the clean test images (mean mode only),
    /// computed once per model and node.
    pub(super) fn means_for(&mut self, set: &UnitSet, mode: AblationMode) -> Result<HashMap<usize, Tensor>> {
        if mode != AblationMode::Mean {
            return Ok(HashMap::new());
        }
        let model = self.subject;
        let exec = self.models.iter().find(|(k, _)| *k == model).map(|(_, e)| e).expect("the subject is loaded");
        let mut out = HashMap::new();
        for site in set.sites.keys() {
            for node in crate::graph::units::nodes_named(site, exec).map_err(|e| eyre!(e))? {
                let mean = self.means.entry((model, node)).or_insert_with(|| {
                    let clean = self.lab.raw.clean();
                    exec.mean_outputs(&clean, testset::chunk(exec.device), &[node]).swap_remove(0)
                });
                out.insert(node, mean.shallow_clone());
            }
        }
        Ok(out)
    }

    /// Every unit of `site` ablated alone in the model under study.
    pub fn sweep(
        &mut self,
        site: &str,
        mode: AblationMode,
        progress: impl FnMut(usize, usize) -> ControlFlow<()>,
    ) -> Result<Vec<Metrics>> {
        let set = UnitSet { sites: [(site.to_string(), [0].into())].into() };
        let means = self.means_for(&set, mode)?;
        let exec = self.exec(self.subject)?;
        let rows =
            crate::graph::sweep::sweep(exec, &self.lab.raw, site, mode, &|n| means[&n].shallow_clone(), progress)
                .map_err(|e| eyre!(e))?;
        Ok(rows.into_iter().map(|r| r.metrics).collect())
    }

    /// Every saved model's incoming weights of `site`'s units, if it has any.
    pub fn weights(&self, site: &str) -> Result<Option<SiteWeights>> {
        let first = &self.models[0].1;
        let node = single_node(site, first).map_err(|e| eyre!(e))?;
        let spec_node = &first.spec.nodes[node];
        if !spec_node.op.has_unit_weights() {
            return Ok(None);
        }
        let key = format!("{}.weight", spec_node.module());
        let size = first.weights.get(&key).size();
        let dim = |i: usize| size.get(i).copied().unwrap_or(1) as usize;
        let shape = [dim(0), dim(1), dim(2), dim(3)];
        let models = self.models.iter().map(|(k, exec)| (*k, floats(exec.weights.get(&key)))).collect();
        Ok(Some(SiteWeights { site: site.to_string(), shape, models }))
    }

    /// Test image `index` and `site`'s output on it, clean and triggered, in every model.
    pub fn activations(&self, index: usize, site: &str) -> Result<SiteActivations> {
        let raw = &self.lab.raw;
        if index >= raw.len() {
            return Err(eyre!("there is no test image {index}: the test set has {} images", raw.len()));
        }
        let node = single_node(site, &self.models[0].1).map_err(|e| eyre!(e))?;
        let _guard = tch::no_grad_guard();
        let pair = Tensor::cat(&[raw.clean_images(index as i64, 1), raw.triggered_images(index as i64, 1)], 0);
        let size = pair.size();
        let image_shape = [size[1] as usize, size[2] as usize, size[3] as usize];
        let models = self
            .models
            .iter()
            .map(|(kind, exec)| {
                let (logits, outs) = exec.logits_and(&pair, &[], &[node]);
                let said = Vec::<i64>::try_from(logits.argmax(1, false)).unwrap_or_default();
                let out = &outs[0];
                (*kind, [floats(&out.get(0)), floats(&out.get(1))], [said[0] as usize, said[1] as usize])
            })
            .collect();
        Ok(SiteActivations {
            index,
            label: raw.labels[index],
            site: site.to_string(),
            pixels: [floats(&pair.get(0)), floats(&pair.get(1))],
            image_shape,
            models,
        })
    }
}
