//! `patch` and `circuit` on an imported graph: units named by PyTorch's module
//! paths, run by the generic executor.

use super::args::CommonArgs;
use super::circuit::{
    CircuitArgs, CircuitOutput, PatchArgs, direction, effect_gap, say_circuit, search_shown, strongest_first, verify,
};
use super::output::Format;
use super::progress::counter;
use crate::analysis_tables::{circuit_table, named_patch_table};
use crate::engine::lab::ModelKind;
use crate::engine::patch::{Direction, PatchEffect};
use crate::graph::circuit::{GraphEvaluator, search_config, sites};
use crate::graph::eval::evaluate;
use crate::graph::features::single_node;
use crate::graph::patch::{GraphPatchRow, NodePatch};
use crate::graph::run as graph_run;
use crate::graph::units::parametrised_outputs;
use crate::setup::open_graph_lab;
use color_eyre::eyre::{Result, bail, eyre};
use serde::Serialize;
use std::ops::ControlFlow;
use std::time::Instant;

#[derive(Serialize)]
struct GraphPatchReport {
    direction: Direction,
    /// The direction in words: which images ran, where the values came from.
    meaning: &'static str,
    model: String,
    donor: String,
    nodes: Vec<String>,
    baseline: PatchEffect,
    rows: Vec<GraphPatchRow>,
    /// Patching every unit.
    seconds: f64,
    /// Largest |fast − slow| over every unit and metric, in points, with --reference.
    reference_gap: Option<f64>,
}

pub fn patch(common: &CommonArgs, format: Format, args: &PatchArgs) -> Result<()> {
    if let Some(v) = args.to_unit {
        bail!(
            "--to-unit {v} patches the path into one unit of the next layer, which the study's CNN has; a graph's \
             node feeds branches and residual adds: patch the later node itself to see what reaches it"
        );
    }
    let direction = direction(args)?;
    let examined = args.checkpoint.is_none().then_some(args.model);
    let lab = open_graph_lab(common, &examined.into_iter().chain(args.donor).collect::<Vec<_>>())?;
    let (receiver, model) = match args.checkpoint {
        Some(path) => (graph_run::load_weights(&lab.run, path, lab.device)?, path.display().to_string()),
        None => (graph_run::load(&lab.run, args.model, lab.device)?, args.model.to_string()),
    };
    let donor = args.donor.map(|d| graph_run::load(&lab.run, d, lab.device)).transpose()?;
    let nodes = match args.layer {
        Some(site) => vec![single_node(site, &receiver).map_err(|e| eyre!(e))?],
        None => parametrised_outputs(&receiver),
    };
    let patcher = NodePatch::new(&receiver, donor.as_ref(), &lab.raw, direction).map_err(|e| eyre!(e))?;
    // As named (a container's path rather than its output node's name).
    let names: Vec<String> = match args.layer {
        Some(site) => vec![site.to_string()],
        None => nodes.iter().map(|&n| receiver.spec.nodes[n].name.clone()).collect(),
    };
    let units: Vec<usize> = nodes.iter().map(|&n| receiver.shapes[n][0] as usize).collect();
    let bar = counter(&format!("patch {}", names.join(", ")), units.iter().sum(), format.is_human());
    let started = Instant::now();
    let mut rows = Vec::new();
    let mut before = 0;
    for ((&node, &count), name) in nodes.iter().zip(&units).zip(&names) {
        let patched = patcher.patch(node, |done, total| {
            bar.set_position((before + done * count / total.max(1)) as u64);
            ControlFlow::Continue(())
        });
        rows.extend(patched.into_iter().map(|row| (node, GraphPatchRow { node: name.clone(), ..row })));
        before += count;
    }
    bar.finish_and_clear();
    let seconds = started.elapsed().as_secs_f64();
    let reference_gap = args.reference.then(|| {
        let slow = |node: usize, r: &GraphPatchRow| effect_gap(&r.effect, &patcher.reference(node, r.unit).effect);
        rows.iter().map(|(node, r)| slow(*node, r)).fold(0.0, f64::max)
    });
    let mut rows: Vec<GraphPatchRow> = rows.into_iter().map(|(_, r)| r).collect();
    // Without a node, the strongest units of the whole graph come first.
    if args.sorted || args.layer.is_none() {
        let moved = |r: &GraphPatchRow| strongest_first(direction, &r.effect);
        rows.sort_by(|a, b| moved(a).total_cmp(&moved(b)));
    }
    let report = GraphPatchReport {
        direction,
        meaning: direction.describe(),
        model,
        donor: args.donor.map(|d| format!("the {d} model")).unwrap_or_else(|| "the twin image".into()),
        nodes: names,
        baseline: patcher.baseline(),
        rows,
        seconds,
        reference_gap,
    };
    let named = report.rows.iter().map(|r| (format!("{}:{}", r.node, r.unit), &r.effect));
    let table = named_patch_table(direction, &report.baseline, named, format == Format::Csv);
    if format.is_human() {
        println!("{} — {} model, {}", report.meaning, report.model, report.nodes.join(", "));
    }
    format.emit(&report, &table)?;
    if format.is_human() {
        eprintln!("{} units patched in {:.2} s", report.rows.len(), seconds);
        if let Some(gap) = report.reference_gap {
            eprintln!("slow reference path (full forward per unit): largest difference {gap:.4} points");
        }
    }
    Ok(())
}

pub fn circuit(common: &CommonArgs, format: Format, args: &CircuitArgs) -> Result<()> {
    let clean_target = args.poison_target.is_none().then_some(ModelKind::Clean);
    let lab = open_graph_lab(common, &[args.model].into_iter().chain(clean_target).collect::<Vec<_>>())?;
    let exec = graph_run::load(&lab.run, args.model, lab.device)?;
    // The clean model is evaluated only when the default target needs it.
    let clean_model_poison = match args.poison_target {
        Some(_) => 0.0,
        None => evaluate(&graph_run::load(&lab.run, ModelKind::Clean, lab.device)?, &lab.raw, &[]).poison_acc,
    };
    let started = Instant::now();
    let sites = sites(&exec, &args.nodes).map_err(|e| eyre!(e))?;
    let mut eval = GraphEvaluator::new(&exec, &lab.raw, args.mode, &sites).map_err(|e| eyre!(e))?;
    let narrowed = !args.nodes.is_empty();
    let mut config = search_config(&exec, &lab.raw, sites, clean_model_poison, args.mode, narrowed);
    args.configure(&mut config);
    let report = search_shown(&mut eval, &config, format);
    let seconds = started.elapsed().as_secs_f64();
    let (reference_gap, verified_sets) =
        verify(&report, args.no_verify, |set| evaluate(&exec, &lab.raw, &eval.interventions(set)));
    let output = CircuitOutput { model: args.model, report, seconds, reference_gap, verified_sets };
    format.emit(&output, &circuit_table(output.model.name(), &output.report))?;
    if format.is_human() {
        say_circuit(&output);
    }
    Ok(())
}
