//! The report of a graph run: the three models' metrics, a zero-mode sweep of
//! a middle node of the poisoned model listing the units whose ablation lowers
//! poison accuracy most, the circuit search within that node and its units'
//! denoise patching (`report.md`, `report.json`).

use super::circuit::strongest_first;
use super::graph_train::GraphSession;
use super::output::Format;
use super::progress::counter;
use crate::analysis_tables::{circuit_table, named_patch_table, short_set};
use crate::engine::ablation::AblationMode;
use crate::engine::checkpoint;
use crate::engine::circuit::{CircuitReport, search};
use crate::engine::lab::ModelKind;
use crate::engine::metrics::Metrics;
use crate::engine::patch::{Direction, PatchEffect};
use crate::engine::run::RunLock;
use crate::engine::testset::TestSet;
use crate::graph::circuit::{GraphEvaluator, GraphSite, search_config};
use crate::graph::eval::evaluate;
use crate::graph::exec::Executor;
use crate::graph::patch::{GraphPatchRow, NodePatch};
use crate::graph::run::{self as graph_run, TrainedRecord};
use crate::graph::sweep::{SweepRow, sweep};
use crate::table::{Table, delta, metrics_row, metrics_table, pct};
use color_eyre::eyre::{Result, eyre};
use serde::Serialize;
use std::fmt::Write as _;
use std::ops::ControlFlow;

/// Units listed in the report's sweep.
const TOP: usize = 10;

/// Units listed in the report's patching.
const TOP_PATCHED: usize = 5;

/// Test images per condition the circuit search and the patching run on: each of
/// the search's greedy steps costs a sweep of the node, and on preact8 a sweep of
/// the full test set takes half a minute. The circuit found is measured on all.
const SEARCH_IMAGES: usize = 1000;

/// Units the report's search adds at most (the CLI's `circuit` goes to 12, with
/// every pair and the keep set).
const SEARCH_MAX: usize = 3;

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
    /// The circuit search and the patching within the swept node, on this many
    /// test images per condition.
    pub search_images: usize,
    pub circuit: CircuitReport<GraphSite>,
    /// The circuit found, measured on the full test set.
    pub circuit_on_all: Option<Metrics>,
    pub circuit_seconds: f64,
    pub patch_baseline: PatchEffect,
    /// Denoise patching of the swept node's units: the strongest first.
    pub top_patched: Vec<GraphPatchRow>,
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
            ControlFlow::Continue(())
        },
    )
    .map_err(|e| eyre!(e))?;
    bar.finish_and_clear();
    let sweep_seconds = clock.elapsed().as_secs_f64();
    rows.sort_by(|a, b| a.metrics.poison_acc.total_cmp(&b.metrics.poison_acc));
    rows.truncate(TOP);
    let clean_model_poison = models.iter().find(|m| m.model == ModelKind::Clean).map_or(0.0, |m| m.metrics.poison_acc);
    let searched = session.raw.subset(SEARCH_IMAGES.min(session.raw.len()));
    let found = within(&poisoned, &session.raw, &searched, (index, clean_model_poison), human)?;
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
        search_images: searched.len(),
        circuit: found.report,
        circuit_on_all: found.on_all,
        circuit_seconds: found.seconds,
        patch_baseline: found.patch_baseline,
        top_patched: found.top_patched,
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
        self.circuit_markdown(&mut md);
        md
    }

    fn circuit_markdown(&self, md: &mut String) {
        let c = &self.circuit.criteria;
        let _ = writeln!(
            md,
            "## The circuit within `{}`\n\nThe circuit search ({} mode, greedy up to {} units, then backward \
             pruning) over its units on the first {} test images per condition ({} sets, {:.1} s): poison at most \
             {:.2} %, clean at least {:.2} %.\n",
            self.sweep_node,
            self.circuit.mode,
            c.max_size,
            self.search_images,
            self.circuit.evaluated,
            self.circuit_seconds,
            c.poison_at_most,
            c.clean_baseline - c.clean_margin
        );
        let _ = writeln!(md, "{}", circuit_table(ModelKind::Poisoned.name(), &self.circuit).to_markdown());
        if let (Some(t), Some(m)) = (&self.circuit.circuit, &self.circuit_on_all) {
            let _ = writeln!(
                md,
                "On the full test set, `{}` ablated: clean {}, poison {}, rehab {}.\n",
                short_set(&t.set),
                pct(m.clean_acc),
                pct(m.poison_acc),
                pct(m.rehab_acc)
            );
        }
        let named = self.top_patched.iter().map(|r| (format!("{}:{}", r.node, r.unit), &r.effect));
        let table = named_patch_table(Direction::Denoise, &self.patch_baseline, named, false);
        let _ = writeln!(
            md,
            "## Denoise patching of `{}`: the {} strongest units\n\n{} (same images).\n\n{}",
            self.sweep_node,
            self.top_patched.len(),
            Direction::Denoise.describe(),
            table.to_markdown()
        );
    }
}

/// The circuit search within one node, and its units' denoise patching.
struct Within {
    report: CircuitReport<GraphSite>,
    on_all: Option<Metrics>,
    seconds: f64,
    patch_baseline: PatchEffect,
    top_patched: Vec<GraphPatchRow>,
}

/// The circuit search within `node` of `exec` on `searched` (greedy up to
/// `SEARCH_MAX` units, then pruning), the circuit found measured on `all`, and the
/// node's units patched (denoise) on `searched`.
fn within(
    exec: &Executor,
    all: &TestSet,
    searched: &TestSet,
    (node, clean_model_poison): (usize, f64),
    human: bool,
) -> Result<Within> {
    let clock = std::time::Instant::now();
    let sites = vec![GraphSite::of(exec, node)];
    let mut eval = GraphEvaluator::new(exec, searched, AblationMode::Zero, &sites).map_err(|e| eyre!(e))?;
    let mut config = search_config(exec, searched, sites, clean_model_poison, AblationMode::Zero, false);
    config.criteria.max_size = SEARCH_MAX;
    let bar = counter(&format!("circuit within {}", exec.spec.nodes[node].name), 1, human);
    let report = search(&mut eval, &config, |p| {
        bar.set_message(format!("{} ({} sets)", p.stage, p.evaluated));
        ControlFlow::Continue(())
    });
    bar.finish_and_clear();
    let on_all = report.circuit.as_ref().map(|t| evaluate(exec, all, &eval.interventions(&t.set)));
    let seconds = clock.elapsed().as_secs_f64();
    let patcher = NodePatch::new(exec, None, searched, Direction::Denoise).map_err(|e| eyre!(e))?;
    let mut top_patched = patcher.patch(node, |_, _| ControlFlow::Continue(()));
    let strongest = |r: &GraphPatchRow| strongest_first(Direction::Denoise, &r.effect);
    top_patched.sort_by(|a, b| strongest(a).total_cmp(&strongest(b)));
    top_patched.truncate(TOP_PATCHED);
    Ok(Within { report, on_all, seconds, patch_baseline: patcher.baseline(), top_patched })
}
