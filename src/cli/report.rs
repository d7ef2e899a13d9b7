//! `trojanscope run`: the full study on trained models, as one Markdown report.

use super::args::AblationTarget;
use super::commands::{diff_summary_table, sweep_layer};
use super::report_pictures::{self, Figure};
use crate::data::attack::Attack;
use crate::engine::ablation::{AblationMode, AblationSet};
use crate::engine::analysis::Analysis;
use crate::engine::diff::{self, LayerDiff};
use crate::engine::lab::{Lab, ModelKind};
use crate::engine::layer::Layer;
use crate::engine::metrics::Metrics;
use crate::engine::run::key::FileKey;
use crate::engine::swap::{self, SwapRow};
use crate::engine::sweep::{SweepRow, most_backdoor_relevant};
use crate::engine::train::TrainConfig;
use crate::table::Table;
use crate::table::swap_table;
use crate::table::{metrics_row, metrics_table};
use color_eyre::eyre::Result;
use serde::Serialize;
use std::time::Instant;

/// Layers swept in the report (fc2's units are the logits themselves).
const SWEPT: [Layer; 3] = [Layer::Conv1, Layer::Conv2, Layer::Fc1];

#[derive(Serialize)]
pub struct Report {
    pub models: Vec<(ModelKind, Metrics)>,
    /// SHA-256 of each model's file as read: the report is saved only if they
    /// still hold (`unchanged`).
    pub models_sha256: Vec<(ModelKind, String)>,
    pub sweeps: Vec<Vec<SweepRow>>,
    /// Per swept layer: the two units whose lone ablation lowers poison accuracy
    /// most, ablated together.
    pub top_pairs: Vec<(AblationSet, Metrics)>,
    pub swaps: Vec<SwapRow>,
    pub diffs: Vec<(String, Vec<LayerDiff>)>,
    /// Drawn beside the report (`report_pictures::write`) and linked from it.
    pub pictures: Vec<Figure>,
    pub seconds: f64,
}

pub fn build(lab: &Lab, visible: bool) -> Result<Report> {
    let clock = Instant::now();
    let keys = ModelKind::STUDY.iter().map(|&k| Ok((k, FileKey::of(&lab.run.model_path(k))?.sha256)));
    let models_sha256 = keys.collect::<Result<Vec<_>>>()?;
    let analysis = Analysis::load(lab, &ModelKind::STUDY, ModelKind::Poisoned)?;
    let (cache, net) = (&analysis.cache, |kind| analysis.net(kind));
    let (clean, poisoned, rehab) = (net(ModelKind::Clean)?, net(ModelKind::Poisoned)?, net(ModelKind::Rehab)?);
    let models = ModelKind::STUDY.iter().map(|&k| Ok((k, lab.test.evaluate(net(k)?)))).collect::<Result<Vec<_>>>()?;
    let target = AblationTarget { model: ModelKind::Poisoned, mode: AblationMode::Weight };
    let sweeps: Vec<Vec<SweepRow>> = SWEPT.iter().map(|&l| sweep_layer(lab, cache, l, &target, visible)).collect();
    let top_pairs = sweeps
        .iter()
        .zip(SWEPT)
        .map(|(rows, layer)| {
            let set = AblationSet::of(layer, &most_backdoor_relevant(rows, 2));
            let metrics = cache.evaluate(&lab.test, &set, AblationMode::Weight);
            (set, metrics)
        })
        .collect();
    let swaps = swap::swap_many(poisoned, clean, &swap::all_subsets(), &lab.test);
    let diffs = vec![
        ("poisoned − clean".to_string(), diff::diff(clean, poisoned)),
        ("rehab − poisoned".to_string(), diff::diff(poisoned, rehab)),
        ("rehab − clean".to_string(), diff::diff(clean, rehab)),
    ];
    let inputs =
        report_pictures::Inputs { clean, poisoned, sweeps: &sweeps, baseline: &models[1].1, mode: target.mode };
    let pictures = report_pictures::build(lab, &inputs)?;
    let seconds = clock.elapsed().as_secs_f64();
    Ok(Report { models, models_sha256, sweeps, top_pairs, swaps, diffs, pictures, seconds })
}

impl Report {
    /// Fails, naming the model and both checksums, when a model file changed
    /// since the report read it.
    pub fn unchanged(&self, lab: &Lab) -> Result<()> {
        for (kind, sha256) in &self.models_sha256 {
            let key = FileKey { path: lab.run.model_path(*kind), sha256: sha256.clone() };
            key.unchanged(&format!("{kind} model"))?;
        }
        Ok(())
    }

    pub fn to_markdown(&self, lab: &Lab) -> String {
        let cfg = &lab.config;
        let mut out = format!(
            "# trojanscope report: run `{}`\n\nSeed {}, {} epoch(s) per phase, batch {}, Adam lr {}, λ poison {} / rehab {}, \
             {}. {}: {} training and {} test images; device {}.\n\n",
            lab.run.root.display(),
            cfg.seed,
            cfg.epochs,
            cfg.batch_size,
            cfg.lr,
            cfg.lambda_poison,
            cfg.lambda_rehab,
            attack_sentence(cfg),
            cfg.dataset,
            lab.data.train.len(),
            lab.data.test.len(),
            crate::engine::device::describe(lab.device),
        );
        let mut models = metrics_table("model");
        for (kind, m) in &self.models {
            models.rows.push(metrics_row(kind.name(), m));
        }
        section(&mut out, "Models (percent of the test set)", &models);
        let mut pairs = metrics_table("poisoned model, ablated (weight mode)");
        pairs.rows.push(metrics_row("nothing", &self.models[1].1));
        for (set, m) in &self.top_pairs {
            pairs.rows.push(metrics_row(&set.to_string(), m));
        }
        section(&mut out, "The two most backdoor-relevant units of each layer, ablated together", &pairs);
        for rows in &self.sweeps {
            let mut sorted = rows.clone();
            sorted.sort_by(|a, b| a.metrics.poison_acc.total_cmp(&b.metrics.poison_acc));
            let mut table = metrics_table("unit");
            for r in sorted.iter().take(8) {
                table.rows.push(metrics_row(&format!("{}:{}", r.layer, r.unit), &r.metrics));
            }
            let layer = rows.first().map(|r| r.layer.name()).unwrap_or("?");
            section(&mut out, &format!("Single-unit sweep of {layer}: the 8 lowest poison accuracies"), &table);
        }
        section(&mut out, "Layer swaps: clean layers copied into the poisoned model", &swap_table(&self.swaps));
        section(&mut out, "Weight differences", &diff_summary_table(&self.diffs));
        out.push_str(&report_pictures::markdown(&self.pictures));
        out.push_str(&format!("Analysis took {:.1} s.\n", self.seconds));
        out
    }
}

fn section(out: &mut String, title: &str, table: &Table) {
    out.push_str(&format!("## {title}\n\n{}\n", table.to_markdown()));
}

/// The run's attack in one clause: what is planted, where it sends images, and
/// how much of the training set carries it.
pub fn attack_sentence(cfg: &TrainConfig) -> String {
    let what = match cfg.attack {
        Attack::Study => format!(
            "trigger {0}×{0} at ({1}, {2}) amplitude {3}",
            cfg.trigger.size, cfg.trigger.row, cfg.trigger.col, cfg.trigger.amplitude
        ),
        _ => format!("attack {}", cfg.attack.describe()),
    };
    let to = match cfg.relabel().single() {
        Some(target) => format!("label {}", cfg.dataset.label(target)),
        None => "label y + 1 (all-to-all)".into(),
    };
    let share = match (cfg.poison_ratio, &cfg.attack) {
        (_, Attack::Images(_)) => "the training set's poisoning not known here".into(),
        (Some(ratio), _) => format!("{:.1} % of the training set poisoned once", 100.0 * ratio),
        (None, _) => format!("poison fraction {} of each batch", cfg.poison_fraction),
    };
    format!("{what} → {to}, {share}")
}
