//! `swap`, `diff` and `features` on an imported graph, with units and layers
//! named by PyTorch's module paths.

use super::args::CommonArgs;
use super::commands::{diff_units_table, features_table};
use super::output::Format;
use super::progress::counter;
use crate::engine::device::parse_device;
use crate::engine::lab::ModelKind;
use crate::engine::run::RunDir;
use crate::graph::diff::{self, ModuleDiff};
use crate::graph::features::{self, single_node};
use crate::graph::run as graph_run;
use crate::graph::swap::{self, Grouping};
use crate::setup::open_graph_lab;
use crate::table::{Table, metrics_row, metrics_table};
use color_eyre::eyre::{Result, eyre};

pub fn swap(
    common: &CommonArgs,
    format: Format,
    layers: Option<&[String]>,
    stages: bool,
    donor: ModelKind,
    recipient: ModelKind,
) -> Result<()> {
    let lab = open_graph_lab(common, &[donor, recipient])?;
    let (donor_exec, recipient_exec) =
        (graph_run::load(&lab.run, donor, lab.device)?, graph_run::load(&lab.run, recipient, lab.device)?);
    let grouping = match (layers, stages) {
        (Some(paths), _) => Grouping::Chosen(paths),
        (None, true) => Grouping::Stages,
        (None, false) => Grouping::Modules,
    };
    let groups = swap::groups(&recipient_exec, grouping).map_err(|e| eyre!(e))?;
    let subsets = swap::subsets(groups.len());
    let bar = counter(&format!("swap {donor} into {recipient}"), subsets.len(), format.is_human());
    let rows = swap::swap(&recipient_exec, &donor_exec, &groups, &subsets, &lab.raw, |done, total| {
        bar.set_position((done * subsets.len() / total.max(1)) as u64)
    })
    .map_err(|e| eyre!(e))?;
    bar.finish_and_clear();
    let mut table = metrics_table(&format!("swapped from {donor}"));
    for r in &rows {
        let name = if r.groups.is_empty() { "none".to_string() } else { r.groups.join(" + ") };
        table.rows.push(metrics_row(&name, &r.metrics));
    }
    format.emit(&rows, &table)
}

pub fn diff(common: &CommonArgs, format: Format, a: ModelKind, b: ModelKind, layer: Option<&str>) -> Result<()> {
    let device = parse_device(&common.device).map_err(|e| eyre!(e))?;
    let run = RunDir::new(&common.checkpoints, &common.run);
    let (a_exec, b_exec) = (graph_run::load(&run, a, device)?, graph_run::load(&run, b, device)?);
    if a_exec.spec != b_exec.spec {
        return Err(eyre!("{a} and {b} are different graphs: a diff needs one graph"));
    }
    let spec = &a_exec.spec;
    match layer {
        None => {
            let diffs = diff::diff(spec, &a_exec.weights, &b_exec.weights);
            format.emit(&diffs, &summary_table(&format!("{b} − {a}"), &diffs))
        }
        Some(site) => {
            let node = single_node(site, &a_exec).map_err(|e| eyre!(e))?;
            let module = spec.nodes[node].module();
            if spec.nodes[node].op.weight_names().is_empty() {
                return Err(eyre!(
                    "{site} is a {} node: it has no weights to compare (nodes with weights: conv2d, linear, batch_norm2d)",
                    crate::graph::spec::op_name(&spec.nodes[node].op)
                ));
            }
            let d = diff::module_diff(spec, &a_exec.weights, &b_exec.weights, module);
            format.emit(&d, &diff_units_table(site, &d.units))
        }
    }
}

fn summary_table(name: &str, diffs: &[ModuleDiff]) -> Table {
    let mut table =
        Table::new(["difference", "module", "op", "L1", "L2", "max |Δ|", "mean |Δ|", "running stats max |Δ|"]);
    for d in diffs {
        let t = &d.total;
        table.push([
            name.to_string(),
            d.module.clone(),
            d.op.clone(),
            format!("{:.4}", t.l1),
            format!("{:.4}", t.l2),
            format!("{:.5}", t.max),
            format!("{:.6}", t.mean_abs),
            d.statistics.map_or_else(|| "–".to_string(), |s| format!("{:.5}", s.max)),
        ]);
    }
    table
}

pub fn features(
    common: &CommonArgs,
    format: Format,
    site: &str,
    unit: usize,
    model: ModelKind,
    k: usize,
) -> Result<()> {
    let lab = open_graph_lab(common, &[model])?;
    let exec = graph_run::load(&lab.run, model, lab.device)?;
    let report = features::features(&exec, &lab.raw, site, unit as i64, k).map_err(|e| eyre!(e))?;
    format.emit(&report, &features_table(&report.top, &report.bottom, lab.dataset))
}
