//! The report of a graph run: the three models' metrics and a zero-mode sweep of
//! a middle node of the poisoned model, listing the units whose ablation lowers
//! poison accuracy most (`report.md`, `report.json`).

use super::graph_train::GraphSession;
use super::output::Format;
use super::progress::counter;
use crate::engine::ablation::AblationMode;
use crate::engine::checkpoint;
use crate::engine::lab::ModelKind;
use crate::engine::metrics::Metrics;
use crate::engine::run::RunLock;
use crate::graph::eval::evaluate;
use crate::graph::run::{self as graph_run, TrainedRecord};
use crate::graph::sweep::{SweepRow, sweep};
use crate::table::{Table, delta, metrics_row, metrics_table, pct};
use color_eyre::eyre::{Result, eyre};
use serde::Serialize;
use std::fmt::Write as _;

/// Units listed in the report's sweep.
const TOP: usize = 10;

#[derive(Serialize)]
pub struct ModelRow {
    pub model: ModelKind,
    pub metrics: Metrics,
    /// Training time, when the run trained it.
    pub seconds: Option<f64>,
}

#[derive(Serialize)]
pub struct GraphReport {
    pub run: String,
    pub graph: String,
    pub dataset: String,
    pub nodes: usize,
    pub parameters: i64,
    pub models: Vec<ModelRow>,
    /// The node swept in the poisoned model, each unit zeroed alone.
    pub sweep_node: String,
    pub sweep_units: usize,
    pub sweep_seconds: f64,
    /// The units whose ablation lowers poison accuracy most, lowest first.
    pub top_units: Vec<SweepRow>,
}

/// Evaluates the three models, sweeps the poisoned one and writes the report.
pub fn write(session: &GraphSession, format: Format) -> Result<()> {
    let run = &session.run;
    let human = format.is_human();
    let mut models = Vec::new();
    let mut parameters = 0;
    let _guard = tch::no_grad_guard();
    for kind in ModelKind::STUDY {
        let exec = graph_run::load(run, kind, session.device)?;
        parameters = exec.weights.parameter_count();
        let seconds =
            checkpoint::load_json::<TrainedRecord>(&graph_run::trained_path(run, kind)).ok().map(|r| r.seconds);
        models.push(ModelRow { model: kind, metrics: evaluate(&exec, &session.raw, &[]), seconds });
    }
    let poisoned = graph_run::load(run, ModelKind::Poisoned, session.device)?;
    let node = crate::graph::preset::middle_node(&session.spec)
        .ok_or_else(|| eyre!("the graph has no convolution to sweep"))?;
    let index = session.spec.index_of(&node).expect("a node of the graph");
    let units = poisoned.shapes[index][0] as usize;
    let bar = counter(&format!("sweep {node}"), units, human);
    let clock = std::time::Instant::now();
    let mut rows = sweep(
        &poisoned,
        &session.raw,
        &node,
        AblationMode::Zero,
        &|_| unreachable!("zero mode needs no means"),
        |done, total| {
            bar.set_position((done * units / total.max(1)) as u64);
            std::ops::ControlFlow::Continue(())
        },
    )
    .map_err(|e| eyre!(e))?;
    bar.finish_and_clear();
    let sweep_seconds = clock.elapsed().as_secs_f64();
    rows.sort_by(|a, b| a.metrics.poison_acc.total_cmp(&b.metrics.poison_acc));
    rows.truncate(TOP);
    let report = GraphReport {
        run: run.root.display().to_string(),
        graph: session.source.clone(),
        dataset: session.dataset.to_string(),
        nodes: session.spec.nodes.len(),
        parameters,
        models,
        sweep_node: node,
        sweep_units: units,
        sweep_seconds,
        top_units: rows,
    };
    let markdown = report.to_markdown();
    let _lock = RunLock::acquire(run)?;
    checkpoint::save_json(&report, &run.root.join("report.json"))?;
    checkpoint::write_atomically(&run.root.join("report.md"), |tmp| Ok(std::fs::write(tmp, &markdown)?))?;
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        _ => {
            print!("{markdown}");
            if human {
                eprintln!("report written to {}", run.root.join("report.md").display());
            }
        }
    }
    Ok(())
}

impl GraphReport {
    pub fn models_table(&self) -> Table {
        let mut table = metrics_table("model");
        table.headers.push("trained in".into());
        for row in &self.models {
            let mut cells = metrics_row(&row.model.to_string(), &row.metrics);
            cells.push(row.seconds.map(|s| format!("{s:.0} s")).unwrap_or_else(|| "—".into()));
            table.rows.push(cells);
        }
        table
    }

    pub fn to_markdown(&self) -> String {
        let mut md = String::new();
        let _ = writeln!(md, "# Backdoor report: {}\n", self.graph);
        let _ = writeln!(
            md,
            "{} nodes, {} parameters, on {} ({} test images per condition); run {}.\n",
            self.nodes,
            self.parameters,
            self.dataset,
            self.models.first().map_or(0, |m| m.metrics.count),
            self.run
        );
        let _ = writeln!(md, "## Models\n\n{}", self.models_table().to_markdown());
        let poisoned = self.models.iter().find(|m| m.model == ModelKind::Poisoned).map(|m| &m.metrics);
        let _ = writeln!(
            md,
            "## Units of `{}` whose ablation lowers poison accuracy most\n\nEach of its {} units zeroed alone \
             in the poisoned model ({:.1} s); the {} lowest poison accuracies:\n",
            self.sweep_node,
            self.sweep_units,
            self.sweep_seconds,
            self.top_units.len()
        );
        let mut table = Table::new(["unit", "clean", "poison (ASR)", "change in poison", "rehab"]);
        for r in &self.top_units {
            table.rows.push(vec![
                format!("{}:{}", r.node, r.unit),
                pct(r.metrics.clean_acc),
                pct(r.metrics.poison_acc),
                poisoned.map(|p| delta(r.metrics.poison_acc - p.poison_acc)).unwrap_or_default(),
                pct(r.metrics.rehab_acc),
            ]);
        }
        let _ = writeln!(md, "{}", table.to_markdown());
        md
    }
}
