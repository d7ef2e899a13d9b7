//! `compare --runs A,B,C`: runs of one network on one dataset side by side
//! (seeds, usually): each run's saved metrics per model, its circuit and the
//! label Neural Cleanse flagged where they were computed, and each metric's mean
//! ± sd across the runs, as a table, JSON or CSV and a figure per model. Nothing
//! is measured: only what the runs saved is read.

use super::output::Format;
use crate::engine::checkpoint::load_json;
use crate::engine::lab::ModelKind;
use crate::engine::metrics::Metrics;
use crate::engine::recovery_store;
use crate::engine::run::RunDir;
use crate::engine::run::files::file_sha256;
use crate::engine::run::key::FileKey;
use crate::engine::uncertainty::Rate;
use crate::figure::{Chart, Figure, Labels, Mark, Series, style};
use crate::graph::run as graph_run;
use crate::table::{Table, metrics_headers, metrics_row};
use crate::tui::session::{self, Saved};
use color_eyre::eyre::{Result, bail, eyre};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// One run as saved.
#[derive(Debug, Serialize)]
pub struct RunSummary {
    pub run: String,
    /// The study's CNN, or a graph by its `graph.json`'s SHA-256 (runs of one
    /// architecture share it).
    pub network: String,
    pub dataset: String,
    /// Each saved model's metrics on the full test set, as training measured them.
    pub models: BTreeMap<ModelKind, Metrics>,
    /// The smallest set whose ablation removes the backdoor (`NODE:UNITS`), where
    /// a circuit search on the current poisoned model was saved; and where from.
    pub circuit: Option<String>,
    pub circuit_source: Option<String>,
    /// The labels Neural Cleanse flagged on the current poisoned model, if recovered.
    pub flagged: Option<Vec<u8>>,
}

/// One metric of one model across the runs.
#[derive(Debug, Serialize, PartialEq)]
pub struct Spread {
    pub model: ModelKind,
    pub metric: &'static str,
    pub mean: f64,
    /// The sample standard deviation (n − 1); `None` for a single run.
    pub sd: Option<f64>,
    pub values: Vec<f64>,
}

#[derive(Debug, Serialize)]
pub struct Comparison {
    pub runs: Vec<RunSummary>,
    pub spread: Vec<Spread>,
    /// The figures written (`--out`).
    pub figures: Vec<PathBuf>,
}

/// The rates compared, in the tables' order.
const RATES: [Rate; 4] = [Rate::Clean, Rate::Poison, Rate::AsrNonTarget, Rate::Rehab];

pub fn compare(checkpoints: &Path, runs: &[String], out: Option<&Path>, format: Format) -> Result<()> {
    let summaries = runs.iter().map(|r| summary(checkpoints, r)).collect::<Result<Vec<_>>>()?;
    check_one_group(&summaries)?;
    let spread = spread(&summaries);
    let mut figures = Vec::new();
    if let Some(dir) = out {
        std::fs::create_dir_all(dir).map_err(|e| eyre!("cannot create {}: {e}", dir.display()))?;
        for (model, figure) in figures_of(&summaries, &spread) {
            figures.extend(figure.save(dir, &format!("compare-{model}")).map_err(|e| eyre!(e))?);
        }
    }
    let table = table(&summaries, &spread);
    let comparison = Comparison { runs: summaries, spread, figures };
    format.emit(&comparison, &table)?;
    if format.is_human() {
        for path in &comparison.figures {
            eprintln!("wrote {}", path.display());
        }
    }
    Ok(())
}

/// Reads what `run` saved; an error names the run and the file.
pub fn summary(checkpoints: &Path, name: &str) -> Result<RunSummary> {
    RunDir::check_name(name).map_err(|e| eyre!(e))?;
    let run = RunDir::new(checkpoints, name);
    if !run.root.is_dir() {
        bail!("there is no run {name}: {} is not a folder", run.root.display());
    }
    let graph = graph_run::is_graph_run(&run);
    let mut models = BTreeMap::new();
    let mut dataset = None;
    for kind in ModelKind::ALL.into_iter().filter(|&k| run.has(k)) {
        let (metrics, data) = if graph {
            let path = graph_run::trained_path(&run, kind);
            match path.is_file() {
                true => load_json::<graph_run::TrainedRecord>(&path).map(|r| (r.metrics, r.dataset))?,
                // An imported model: its metrics were never measured into the run.
                false => continue,
            }
        } else {
            let sidecar = run.sidecar(kind).map_err(|e| eyre!("run {name}: {e:#}"))?;
            (sidecar.metrics, sidecar.config.dataset)
        };
        models.insert(kind, metrics);
        dataset.get_or_insert(data);
    }
    if models.is_empty() {
        bail!("run {name} ({}) holds no model with saved metrics: train it first", run.root.display());
    }
    let network = if graph {
        format!("graph {}", &file_sha256(&graph_run::graph_path(&run))?[..12])
    } else {
        "the study's CNN".into()
    };
    let (circuit, circuit_source) = match circuit(&run, graph, &models)? {
        Some((set, source)) => (Some(set), Some(source)),
        None => (None, None),
    };
    let flagged = flagged(&run)?;
    let dataset = dataset.map(|d| d.to_string()).unwrap_or_default();
    Ok(RunSummary { run: name.into(), network, dataset, models, circuit, circuit_source, flagged })
}

/// The circuit found on the current poisoned model: the explorer's saved search
/// (kept only beside the checkpoints it was computed on), else the report's.
fn circuit(run: &RunDir, graph: bool, models: &BTreeMap<ModelKind, Metrics>) -> Result<Option<(String, String)>> {
    if !graph && session::path(run).is_file() {
        let checkpoints = ModelKind::ALL
            .into_iter()
            .filter(|&k| run.has(k))
            .map(|k| Ok((k, FileKey::of(&run.model_path(k))?.sha256)))
            .collect::<Result<_>>()?;
        let images = models.get(&ModelKind::Poisoned).map_or(0, |m| m.count);
        let found = session::read(run, &checkpoints, images).results.into_iter().find_map(|r| match r {
            Saved::Circuit { subject: ModelKind::Poisoned, report } => report.circuit.map(|t| t.set.to_string()),
            _ => None,
        });
        if let Some(set) = found {
            return Ok(Some((set, "session.json".into())));
        }
    }
    let report = run.root.join("report.json");
    if !report.is_file() {
        return Ok(None);
    }
    let value: serde_json::Value = load_json(&report)?;
    // Both reports keep the search as `circuit`: the study's top level or a
    // graph's nested report; a set is `{units: {NODE: [units]}}`.
    let units = value.pointer("/circuit/circuit/set/units").and_then(|u| u.as_object());
    Ok(units.map(|u| {
        let set = u.iter().map(|(node, units)| {
            let list = units.as_array().into_iter().flatten().map(|v| v.to_string()).collect::<Vec<_>>();
            format!("{node}:{}", list.join(","))
        });
        (set.collect::<Vec<_>>().join(" "), "report.json".into())
    }))
}

/// The labels Neural Cleanse flagged, if a recovery of the current poisoned model is saved.
fn flagged(run: &RunDir) -> Result<Option<Vec<u8>>> {
    let name = ModelKind::Poisoned.to_string();
    if !run.has(ModelKind::Poisoned) || !run.recovery_path(&name).is_file() {
        return Ok(None);
    }
    let key = FileKey::of(&run.model_path(ModelKind::Poisoned))?;
    Ok(recovery_store::load_current(run, &name, &key)?.map(|r| r.flagged))
}

/// Refuses runs of different networks or datasets, naming each group.
fn check_one_group(runs: &[RunSummary]) -> Result<()> {
    let mut groups: Vec<((&str, &str), Vec<&str>)> = Vec::new();
    for r in runs {
        let key = (r.network.as_str(), r.dataset.as_str());
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, names)) => names.push(&r.run),
            None => groups.push((key, vec![&r.run])),
        }
    }
    if groups.len() > 1 {
        let listed: Vec<String> =
            groups.iter().map(|((net, data), names)| format!("{} ({net} on {data})", names.join(", "))).collect();
        bail!("these runs are not one network on one dataset: {}; compare one group at a time", listed.join("; "));
    }
    Ok(())
}

/// Mean and sample sd of each rate of each model every run holds.
pub fn spread(runs: &[RunSummary]) -> Vec<Spread> {
    let shared = ModelKind::ALL.into_iter().filter(|k| runs.iter().all(|r| r.models.contains_key(k)));
    shared
        .flat_map(|model| {
            RATES.map(|rate| {
                let values: Vec<f64> = runs.iter().map(|r| rate.of(&r.models[&model])).collect();
                let (mean, sd) = mean_sd(&values);
                Spread { model, metric: rate.field(), mean, sd, values }
            })
        })
        .collect()
}

/// The mean and the sample standard deviation (`None` below two values).
pub fn mean_sd(values: &[f64]) -> (f64, Option<f64>) {
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n.max(1.0);
    let sd = (values.len() > 1).then(|| (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt());
    (mean, sd)
}

fn mean_sd_text(s: &Spread) -> String {
    match s.sd {
        Some(sd) => format!("{:.2} ± {sd:.2}", s.mean),
        None => format!("{:.2}", s.mean),
    }
}

/// A row per run and model, then each model's mean ± sd.
fn table(runs: &[RunSummary], spread: &[Spread]) -> Table {
    let mut table = Table::new(["run", "model"]);
    table.headers.extend(metrics_headers());
    table.headers.extend(["circuit".to_string(), "flagged".to_string()]);
    for r in runs {
        let circuit = r.circuit.clone().unwrap_or_else(|| "not computed".into());
        let flagged = match &r.flagged {
            Some(labels) if labels.is_empty() => "none".into(),
            Some(labels) => labels.iter().map(|l| l.to_string()).collect::<Vec<_>>().join(","),
            None => "not computed".into(),
        };
        for (kind, m) in &r.models {
            let mut row = vec![r.run.clone()];
            row.extend(metrics_row(kind.name(), m));
            row.extend([circuit.clone(), flagged.clone()]);
            table.rows.push(row);
        }
    }
    for model in ModelKind::ALL {
        let cells: Vec<String> = spread.iter().filter(|s| s.model == model).map(mean_sd_text).collect();
        if !cells.is_empty() {
            let mut row = vec!["mean ± sd".to_string(), model.name().to_string()];
            row.extend(cells);
            table.rows.push(row);
        }
    }
    table
}

/// Per model: each run's clean, poison and rehab accuracy as points over the run's
/// number, the mean ± sd of each in the legend.
fn figures_of(runs: &[RunSummary], spread: &[Spread]) -> Vec<(ModelKind, Figure)> {
    let names: Vec<String> = runs.iter().enumerate().map(|(i, r)| format!("{} {}", i + 1, r.run)).collect();
    let shown = [
        (Rate::Clean, "clean", style::CLEAN),
        (Rate::Poison, "poison", style::POISON),
        (Rate::Rehab, "rehab", style::REHAB),
    ];
    let models: Vec<ModelKind> =
        spread.iter().map(|s| s.model).collect::<std::collections::BTreeSet<_>>().into_iter().collect();
    models
        .into_iter()
        .map(|model| {
            let series = shown
                .iter()
                .filter_map(|&(rate, name, colour)| {
                    let s = spread.iter().find(|s| s.model == model && s.metric == rate.field())?;
                    let points = s.values.iter().enumerate().map(|(i, &v)| ((i + 1) as f64, v)).collect();
                    Some(Series { name: format!("{name} {}", mean_sd_text(s)), points, colour, mark: Mark::Points })
                })
                .collect();
            let title = format!("{model} model across {} runs (legend: mean ± sd)", runs.len());
            let labels = Labels::new(title, format!("run: {}", names.join(" · ")), "accuracy (% of test images)");
            let mut chart = Chart::new(labels, series);
            // Half a run of room each side: no point sits on the frame.
            (chart.y, chart.x) = (Some((0.0, 100.0)), Some((0.5, runs.len() as f64 + 0.5)));
            (model, Figure::Chart(chart))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_and_sample_sd() {
        let (mean, sd) = mean_sd(&[97.0, 98.0, 99.0]);
        assert_eq!((mean, sd), (98.0, Some(1.0)));
        assert_eq!(mean_sd(&[42.0]), (42.0, None));
    }
}
