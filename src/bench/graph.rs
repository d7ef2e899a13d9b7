//! `bench` on an imported graph: evaluation of the test set and a sweep of one
//! node, ours beside an expert's PyTorch loops (benches/graph_pytorch.py, in
//! PyTorch's default layout and in channels-last), with the numbers checked equal.

use super::median_time;
use crate::data::dataset::Dataset;
use crate::data::trigger::TriggerConfig;
use crate::engine::ablation::AblationMode;
use crate::engine::metrics::Metrics;
use crate::engine::testset::TestSet;
use crate::graph::eval::evaluate;
use crate::graph::exec::Executor;
use crate::graph::run::ImportRecord;
use serde::{Deserialize, Serialize};
use std::ops::ControlFlow;
use std::path::Path;
use std::process::Command;

/// One figure: our median and, where they ran, the expert loop's in both layouts.
#[derive(Debug, Clone, Serialize)]
pub struct GraphFigure {
    pub name: String,
    pub ours_s: f64,
    pub pytorch_nchw_s: Option<f64>,
    pub pytorch_channels_last_s: Option<f64>,
    /// Whether PyTorch's numbers equal ours (clean and poison accuracy, every unit).
    pub equal: Option<bool>,
}

/// What benches/graph_pytorch.py prints.
#[derive(Debug, Deserialize)]
struct ExpertTimes {
    eval_wall_s: f64,
    sweep_wall_s: f64,
    eval: Accuracies,
    sweep: Vec<Accuracies>,
}

#[derive(Debug, Deserialize, PartialEq)]
struct Accuracies {
    clean_acc: f64,
    poison_acc: f64,
}

impl Accuracies {
    fn of(m: &Metrics) -> Accuracies {
        Accuracies { clean_acc: m.clean_acc, poison_acc: m.poison_acc }
    }

    fn close(&self, other: &Accuracies) -> bool {
        (self.clean_acc - other.clean_acc).abs() < 0.01 && (self.poison_acc - other.poison_acc).abs() < 0.01
    }
}

/// How the PyTorch side builds the model: the Python module it was imported
/// from, or BackdoorBench's PreActResNet-18 for a model trained from that preset.
pub enum ExpertModel {
    Imported(ImportRecord),
    PreActResNet18 { width: i64, weights: String },
}

/// What the PyTorch side needs to rebuild the same model and test set.
pub struct Expert<'a> {
    pub script: &'a Path,
    pub python: String,
    pub model: ExpertModel,
    pub data_dir: &'a Path,
    pub dataset: Dataset,
    pub test_limit: Option<usize>,
    pub threads: i32,
}

/// Measures eval and the sweep of `node` here (`repeat` runs each, medians) and,
/// when `expert` is given, the PyTorch loops once per layout.
pub fn measure(
    exec: &Executor,
    raw: &TestSet,
    node: &str,
    repeat: usize,
    expert: Option<&Expert>,
    say: &mut dyn FnMut(&str),
) -> Result<(Vec<GraphFigure>, Option<String>), String> {
    say(&format!("evaluation of {} test images, clean and triggered", raw.len()));
    let (eval_s, metrics) = median_time(repeat, || evaluate(exec, raw, &[]));
    say(&format!("a sweep of {node} (zero mode)"));
    let no_means = |_: usize| -> tch::Tensor { unreachable!("zero mode reads no means") };
    let (sweep_s, rows) = median_time(repeat, || {
        crate::graph::sweep::sweep(exec, raw, node, AblationMode::Zero, &no_means, |_, _| ControlFlow::Continue(()))
    });
    let rows = rows?;
    let mut figures = vec![
        GraphFigure {
            name: "eval".into(),
            ours_s: eval_s,
            pytorch_nchw_s: None,
            pytorch_channels_last_s: None,
            equal: None,
        },
        GraphFigure {
            name: format!("sweep {node} ({} units)", rows.len()),
            ours_s: sweep_s,
            pytorch_nchw_s: None,
            pytorch_channels_last_s: None,
            equal: None,
        },
    ];
    let Some(expert) = expert else { return Ok((figures, None)) };
    for layout in ["nchw", "channels_last"] {
        say(&format!("the expert's PyTorch loops ({layout}, benches/graph_pytorch.py)"));
        let theirs = match run_expert(expert, node, layout) {
            Ok(t) => t,
            Err(e) => return Ok((figures, Some(e))),
        };
        let eval_equal = theirs.eval.close(&Accuracies::of(&metrics));
        let sweep_equal = theirs.sweep.len() == rows.len()
            && theirs.sweep.iter().zip(&rows).all(|(t, r)| t.close(&Accuracies::of(&r.metrics)));
        let results = [(theirs.eval_wall_s, eval_equal), (theirs.sweep_wall_s, sweep_equal)];
        for (figure, (time, equal)) in figures.iter_mut().zip(results) {
            match layout {
                "nchw" => figure.pytorch_nchw_s = Some(time),
                _ => figure.pytorch_channels_last_s = Some(time),
            }
            figure.equal = Some(figure.equal.unwrap_or(true) && equal);
        }
    }
    Ok((figures, None))
}

fn run_expert(expert: &Expert, node: &str, layout: &str) -> Result<ExpertTimes, String> {
    let trigger = TriggerConfig::for_dataset(expert.dataset);
    let dataset_norm = || expert.dataset.normalisation().argument();
    let mut command = Command::new(&expert.python);
    command.arg(expert.script);
    match &expert.model {
        ExpertModel::Imported(r) => {
            let norm = if r.input_norm == "dataset" { dataset_norm() } else { r.input_norm.clone() };
            command.args(["--source", &r.source, "--weights", &r.weights, "--norm", &norm]);
            if let Some(key) = &r.state_key {
                command.args(["--state-key", key]);
            }
        }
        ExpertModel::PreActResNet18 { width, weights } => {
            command.args(["--preactresnet18", &width.to_string(), "--weights", weights, "--norm", &dataset_norm()]);
        }
    }
    command.args(["--node", node]).arg("--data-dir").arg(expert.data_dir).args([
        "--trigger",
        &format!("{},{},{},{},{}", trigger.size, trigger.row, trigger.col, trigger.amplitude, trigger.target),
        "--std",
        &expert.dataset.normalisation().std()[0].to_string(),
        "--memory-format",
        layout,
        "--threads",
        &expert.threads.to_string(),
    ]);
    if let Some(n) = expert.test_limit {
        command.args(["--test-limit", &n.to_string()]);
    }
    super::pytorch::last_json_line(expert.script, command)
}
