//! The commands on an imported graph: `import` itself, and `eval` and `ablate`
//! through the generic executor.

use super::args::{AblationTarget, CommonArgs};
use super::attack_args::AttackArgs;
use super::commands::{EvalResult, ablate_table, eval_table};
use super::output::Format;
use super::progress::counter;
use crate::data::dataset::Dataset;
use crate::engine::ablation::AblationMode;
use crate::engine::device::parse_device;
use crate::engine::lab::ModelKind;
use crate::engine::metrics::Metrics;
use crate::engine::run::RunDir;
use crate::engine::run::settings::RunSettings;
use crate::engine::testset::{self, TestSet};
use crate::engine::train::TrainConfig;
use crate::graph::eval::{evaluate, raw_test_set};
use crate::graph::exec::Executor;
use crate::graph::import::{self, ImportRequest};
use crate::graph::run::{self as graph_run, ImportRecord};
use crate::graph::units::{UnitSet, nodes_named};
use crate::setup::{Splits, load_data, open_graph_lab};
use crate::table::{metrics_row, metrics_table};
use color_eyre::eyre::{Result, bail, eyre};
use serde::Serialize;
use std::collections::HashMap;

#[derive(Serialize)]
struct ImportResult {
    model: ModelKind,
    run: String,
    replaced: bool,
    record: ImportRecord,
    metrics: Metrics,
}

/// Imports one model; `asked` is the recipe the attack flags describe, if any
/// were given (otherwise the run's recorded attack stays, else the study's).
pub fn import(common: &CommonArgs, format: Format, request: &ImportRequest, asked: Option<&AttackArgs>) -> Result<()> {
    let device = parse_device(&common.device).map_err(|e| eyre!(e))?;
    let run = RunDir::new(&common.checkpoints, &common.run);
    graph_run::check_same_dataset(&run, request.dataset)?;
    // The test set before anything is written: a dataset that cannot be read leaves
    // the run untouched, and GTSRB's and a folder's format comes from their files.
    let data = load_data(common, request.dataset, Splits::Test)?;
    let request = &ImportRequest { format: data.format(), ..request.clone() };
    let asked = asked.map(|a| a.recipe(request.dataset, data.test.shape)).transpose().map_err(|e| eyre!(e))?;
    let mut config = attack_to_record(&run, request.dataset, asked)?;
    config.adopt_format(&data);
    config.validate().map_err(|e| eyre!("invalid configuration: {e}"))?;
    if format.is_human() {
        match &request.preset {
            Some((name, _)) => eprintln!("building the preset {name} and reading {} …", request.weights.display()),
            None => eprintln!("tracing {} with torch.fx and reading {} …", request.source, request.weights.display()),
        }
    }
    let imported = import::prepare(request, device)?;
    for warning in &imported.warnings {
        eprintln!("{warning}");
    }
    let raw = raw_test_set(&TestSet::new(&data.test, &config, device).map_err(|e| eyre!(e))?, data.test.normalisation);
    let metrics = evaluate(&imported.exec, &raw, &[]);
    let replaced = import::write(&imported, request.model, &run)?;
    RunSettings::of(&config, &data).save(&run)?;
    let r = &imported.record;
    let result = ImportResult {
        model: request.model,
        run: run.root.display().to_string(),
        replaced,
        record: r.clone(),
        metrics,
    };
    if format.is_human() {
        let key = match (&r.state_key, &r.stripped_prefix) {
            (Some(k), _) => format!("the state dict under '{k}'"),
            (None, _) => "a plain state dict".to_string(),
        };
        let prefix = r.stripped_prefix.as_ref().map(|p| format!(", '{p}' removed from every key")).unwrap_or_default();
        eprintln!(
            "{} {}: {} nodes, {} parameters, from {key}{prefix}",
            if replaced { "replaced" } else { "imported" },
            request.model,
            r.nodes,
            r.parameters
        );
        if r.probe_images > 0 {
            eprintln!(
                "probe: {} random inputs, logits within {:.1e} of PyTorch's (at most {:.0e} allowed)",
                r.probe_images,
                r.probe_max_diff,
                import::PROBE_TOLERANCE
            );
        }
        eprintln!(
            "{}: clean {:.2} % on {} {} test images → {}",
            request.model,
            result.metrics.clean_acc,
            result.metrics.count,
            request.dataset,
            run.model_path(request.model).display()
        );
    }
    let mut table = metrics_table("model");
    table.rows.push(metrics_row(&request.model.to_string(), &result.metrics));
    format.emit(&result, &table)
}

pub fn eval(common: &CommonArgs, format: Format, models: &[ModelKind], per_class: bool) -> Result<()> {
    let run = RunDir::new(&common.checkpoints, &common.run);
    let models: Vec<ModelKind> = if models.is_empty() {
        ModelKind::ALL.iter().copied().filter(|&k| run.has(k)).collect()
    } else {
        models.to_vec()
    };
    let lab = open_graph_lab(common, &models)?;
    let mut results = Vec::new();
    for kind in models {
        let exec = graph_run::load(&lab.run, kind, lab.device)?;
        results.push(EvalResult::new(kind.to_string(), evaluate(&exec, &lab.raw, &[])));
    }
    let table = eval_table(&results, lab.dataset, per_class);
    format.emit(&results, &table)
}

#[derive(Serialize)]
struct AblateResult {
    model: ModelKind,
    mode: String,
    set: String,
    baseline: Metrics,
    ablated: Metrics,
}

pub fn ablate(
    common: &CommonArgs,
    format: Format,
    units: &str,
    target: &AblationTarget,
    reference: bool,
) -> Result<()> {
    if reference {
        bail!("--reference is the study's slow path for its own CNN; an imported graph has PyTorch as its reference");
    }
    let lab = open_graph_lab(common, &[target.model])?;
    let exec = graph_run::load(&lab.run, target.model, lab.device)?;
    let set = UnitSet::parse(units, &exec).map_err(|e| eyre!(e))?;
    let means = mean_outputs(&exec, &lab.raw, &set, target.mode)?;
    let interventions =
        set.interventions(&exec, target.mode, |node| means[&node].shallow_clone()).map_err(|e| eyre!(e))?;
    let result = AblateResult {
        model: target.model,
        mode: target.mode.to_string(),
        set: set.to_string(),
        baseline: evaluate(&exec, &lab.raw, &[]),
        ablated: evaluate(&exec, &lab.raw, &interventions),
    };
    let (set, mode) = (result.set.as_str(), result.mode.as_str());
    let table = ablate_table(target.model, set, mode, &result.baseline, &result.ablated, None);
    format.emit(&result, &table)
}

/// In mean mode, each ablated node's mean output over the clean test images (one
/// pass for all of them); nothing otherwise.
fn mean_outputs(
    exec: &Executor,
    raw: &TestSet,
    set: &UnitSet,
    mode: AblationMode,
) -> Result<HashMap<usize, tch::Tensor>> {
    if mode != AblationMode::Mean {
        return Ok(HashMap::new());
    }
    let mut nodes = Vec::new();
    for site in set.sites.keys() {
        nodes.extend(nodes_named(site, exec).map_err(|e| eyre!(e))?);
    }
    nodes.sort_unstable();
    nodes.dedup();
    let means = exec.mean_outputs(&raw.clean(), testset::chunk(exec.device), &nodes);
    Ok(nodes.into_iter().zip(means).collect())
}

pub fn sweep(common: &CommonArgs, format: Format, site: &str, target: &AblationTarget, sorted: bool) -> Result<()> {
    let lab = open_graph_lab(common, &[target.model])?;
    let exec = graph_run::load(&lab.run, target.model, lab.device)?;
    let nodes = nodes_named(site, &exec).map_err(|e| eyre!(e))?;
    let set = UnitSet { sites: [(site.to_string(), [0].into())].into() };
    let means = mean_outputs(&exec, &lab.raw, &set, target.mode)?;
    let bar = counter(&format!("sweep {site}"), exec.shapes[nodes[0]][0] as usize, format.is_human());
    let units = exec.shapes[nodes[0]][0] as u64;
    let mut rows = crate::graph::sweep::sweep(
        &exec,
        &lab.raw,
        site,
        target.mode,
        &|node| means[&node].shallow_clone(),
        |done, total| {
            bar.set_position(done as u64 * units / total.max(1) as u64);
            std::ops::ControlFlow::Continue(())
        },
    )
    .map_err(|e| eyre!(e))?;
    bar.finish_and_clear();
    if sorted {
        rows.sort_by(|a, b| a.metrics.poison_acc.total_cmp(&b.metrics.poison_acc));
    }
    let mut table = metrics_table("unit");
    for r in &rows {
        table.rows.push(metrics_row(&format!("{}:{}", r.node, r.unit), &r.metrics));
    }
    format.emit(&rows, &table)
}

/// `bench` on an imported graph: eval and a sweep, ours beside an expert's
/// PyTorch loops (benches/graph_pytorch.py) in both memory layouts.
pub fn bench(
    common: &CommonArgs,
    format: Format,
    (repeat, no_pytorch, strip_inputs): (usize, bool, usize),
    node: Option<&str>,
) -> Result<()> {
    let lab = open_graph_lab(common, &[])?;
    // The poisoned model where there is one: the one whose backdoor is studied.
    let order = [ModelKind::Poisoned, ModelKind::Clean, ModelKind::Rehab, ModelKind::Unlearned];
    let kind = order.into_iter().find(|&k| lab.run.has(k)).ok_or_else(|| eyre!("the run holds no model"))?;
    let exec = graph_run::load(&lab.run, kind, lab.device)?;
    let node = match node {
        Some(node) => node.to_string(),
        None => crate::graph::preset::middle_node(&exec.spec)
            .ok_or_else(|| eyre!("the graph has no convolution to sweep: name one with --node"))?,
    };
    nodes_named(&node, &exec).map_err(|e| eyre!(e))?;
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/graph_pytorch.py");
    let data_dir = crate::setup::data_dir(common, lab.dataset);
    let model = expert_model(&lab.run, kind);
    let no_expert = model.is_none();
    let expert = model.filter(|_| !no_pytorch).map(|model| crate::bench::graph::Expert {
        script: &script,
        python: crate::bench::pytorch::python(),
        model,
        data_dir: &data_dir,
        dataset: lab.dataset,
        test_limit: common.test_limit,
        threads: tch::get_num_threads(),
    });
    let mut say = |what: &str| {
        if format.is_human() {
            eprintln!("bench: {what}");
        }
    };
    if no_expert && !no_pytorch {
        say("the model comes from neither a Python file nor the preactresnet18 preset: no PyTorch side to time");
    }
    let (mut figures, error) = crate::bench::graph::measure(&exec, &lab.raw, &node, repeat, expert.as_ref(), &mut say)
        .map_err(|e| eyre!(e))?;
    say("STRIP, then spectral signatures and activation clustering over the training set");
    let train = load_data(common, lab.dataset, Splits::TrainAndTest)?.train;
    let rows = crate::bench::detect::graph_rows(&exec, &lab.raw, &train, strip_inputs, repeat).map_err(|e| eyre!(e))?;
    figures.extend(rows);
    let ratio = |theirs: Option<f64>, ours: f64| theirs.map_or("—".to_string(), |t| format!("{:.2}×", t / ours));
    let secs = |s: Option<f64>| s.map_or("—".to_string(), |s| format!("{s:.2} s"));
    let mut table = crate::table::Table::new([
        "figure",
        "ours",
        "PyTorch (NCHW)",
        "speed-up",
        "PyTorch (channels-last)",
        "speed-up",
        "equal numbers",
    ]);
    for f in &figures {
        table.push([
            f.name.clone(),
            format!("{:.2} s", f.ours_s),
            secs(f.pytorch_nchw_s),
            ratio(f.pytorch_nchw_s, f.ours_s),
            secs(f.pytorch_channels_last_s),
            ratio(f.pytorch_channels_last_s, f.ours_s),
            f.equal.map_or("—".into(), |e| if e { "yes" } else { "NO" }.to_string()),
        ]);
    }
    format.emit(&figures, &table)?;
    if format.is_human() {
        eprintln!(
            "{} model of {} on {}, {} threads; medians of {repeat} runs here, one run per PyTorch layout",
            kind,
            lab.run.root.display(),
            crate::bench::machine(),
            tch::get_num_threads()
        );
    }
    if let Some(e) = error {
        eprintln!("PyTorch side failed: {e}");
    }
    Ok(())
}

/// How the bench's PyTorch side rebuilds the run's model, where it can.
fn expert_model(run: &RunDir, kind: ModelKind) -> Option<crate::bench::graph::ExpertModel> {
    use crate::bench::graph::ExpertModel;
    if let Ok(record) = crate::engine::checkpoint::load_json::<ImportRecord>(&graph_run::record_path(run, kind)) {
        return Some(ExpertModel::Imported(record));
    }
    let trained: graph_run::TrainedRecord =
        crate::engine::checkpoint::load_json(&graph_run::trained_path(run, kind)).ok()?;
    let width = trained.source.strip_prefix("preset preactresnet18 width ")?.parse().ok()?;
    let weights = std::fs::canonicalize(run.model_path(kind)).ok()?.display().to_string();
    Some(ExpertModel::PreActResNet18 { width, weights })
}

/// The recipe `import` records: the flags' attack, which must be the run's if it
/// records one (a run's models share one attack and one test set), else the run's.
fn attack_to_record(run: &RunDir, dataset: Dataset, asked: Option<TrainConfig>) -> Result<TrainConfig> {
    let recorded = RunSettings::load(run)?.map(|s| s.config);
    match (asked, recorded) {
        (Some(asked), Some(recorded))
            if (&asked.attack, asked.trigger.target, asked.all_to_all)
                != (&recorded.attack, recorded.trigger.target, recorded.all_to_all) =>
        {
            bail!(
                "{} records the attack {} with target {}; a run's models share one attack: give the same attack \
                 flags, none, or import into another --run",
                run.root.display(),
                recorded.attack.describe(),
                recorded.relabel().arrow()
            )
        }
        (Some(asked), _) => Ok(asked),
        (None, _) => graph_run::recipe(run, dataset),
    }
}
