//! The command-line front end: argument parsing, dispatch and output.
pub mod args;
pub mod attack_args;
pub mod attribute;
pub mod bench;
pub mod circuit;
pub mod commands;
pub mod compare;
pub mod defence;
pub mod detect;
mod detect_retrain;
pub mod doctor;
pub mod graph;
pub mod graph_analyses;
pub mod graph_circuit;
pub mod graph_prune;
pub mod graph_report;
pub mod graph_train;
pub mod graph_trigger;
pub mod graph_visualize;
pub mod output;
pub mod progress;
pub mod report;
pub mod report_pictures;
pub mod trigger;

use crate::engine::checkpoint;
use crate::engine::cleanse::CleanseConfig;
use crate::engine::featvis::VisConfig;
use crate::engine::lab::ModelKind;
use crate::engine::run::RunDir;
use crate::engine::train::Phase;
use crate::engine::unlearn::UnlearnConfig;
use crate::setup::{Splits, check_same_config, open_lab_writing};
use args::{Cli, Command};
use color_eyre::eyre::Result;
use output::Format;

/// Runs one subcommand to completion.
pub fn dispatch(cli: &Cli, command: &Command) -> Result<()> {
    let common = &cli.common;
    let format = Format::from_flags(common.json, common.csv);
    crate::setup::set_threads(common, false);
    match command {
        Command::Run { train, retrain } if graph_train::wanted(common, train) => {
            return graph_train::run(common, format, train, *retrain);
        }
        Command::Train { train, phases } if graph_train::wanted(common, train) => {
            return graph_train::train(&graph_train::open(common, train)?, format, phases);
        }
        _ => {}
    }
    match command {
        Command::Run { train, retrain } => run(cli, format, train, *retrain),
        Command::Train { train, phases } => {
            let config = recipe_asked(common, train)?;
            let lab = open_lab_writing(common, Some(config), Splits::TrainAndTest, &[])?;
            commands::train(&lab, format, phases)
        }
        Command::Eval { model, checkpoint, per_class } => {
            if crate::graph::run::is_graph_run(&RunDir::new(&common.checkpoints, &common.run)) && checkpoint.is_none() {
                graph::eval(common, format, model, *per_class)
            } else {
                commands::eval(common, format, model, checkpoint.as_deref(), *per_class)
            }
        }
        Command::Ablate { units, target, reference } => {
            if crate::graph::run::is_graph_run(&RunDir::new(&common.checkpoints, &common.run)) {
                graph::ablate(common, format, units, target, *reference)
            } else {
                let set = units.parse().map_err(|e: String| color_eyre::eyre::eyre!(e))?;
                commands::ablate(common, format, &set, target, *reference)
            }
        }
        Command::Import { source, weights, preset, width, model, state_key, input_norm, trust_pickle, attack } => {
            let (source, weights) = match (preset, weights) {
                (Some(_), None) => (String::new(), std::path::PathBuf::from(source)),
                (None, Some(weights)) => (source.clone(), weights.clone()),
                (Some(name), Some(_)) => color_eyre::eyre::bail!(
                    "with --preset {name} give only WEIGHTS (the graph comes from the preset, not from {source})"
                ),
                (None, None) => color_eyre::eyre::bail!("import needs FILE.py:NAME WEIGHTS, or --preset NAME WEIGHTS"),
            };
            let dataset = crate::graph::run::dataset_of(&RunDir::new(&common.checkpoints, &common.run))
                .map_or_else(|| common.dataset.unwrap_or_default(), |d| common.dataset.unwrap_or(d));
            let request = crate::graph::import::ImportRequest {
                preset: preset.as_ref().map(|p| (p.clone(), *width)),
                source,
                weights,
                model: *model,
                state_key: state_key.clone(),
                input_norm: input_norm.clone(),
                trust_pickle: *trust_pickle,
                dataset,
                format: dataset.format(),
            };
            graph::import(common, format, &request, attack.given().then_some(attack))
        }
        Command::Sweep { layer, target, sorted } => {
            if crate::graph::run::is_graph_run(&RunDir::new(&common.checkpoints, &common.run)) {
                graph::sweep(common, format, layer, target, *sorted)
            } else {
                let layer = layer.parse().map_err(|e: String| color_eyre::eyre::eyre!(e))?;
                commands::sweep_cmd(common, format, layer, target, *sorted)
            }
        }
        Command::Swap { layers, stages, donor, recipient } => {
            if crate::graph::run::is_graph_run(&RunDir::new(&common.checkpoints, &common.run)) {
                graph_analyses::swap(common, format, layers.as_deref(), *stages, *donor, *recipient)
            } else {
                if *stages {
                    color_eyre::eyre::bail!(
                        "--stages groups an imported graph's modules; the study's CNN has one layer per stage (use --layers)"
                    );
                }
                let layers = layers.as_deref().map(parse_layers).transpose()?;
                commands::swap_cmd(common, format, layers.as_deref(), *donor, *recipient)
            }
        }
        Command::Diff { a, b, layer } => {
            if crate::graph::run::is_graph_run(&RunDir::new(&common.checkpoints, &common.run)) {
                graph_analyses::diff(common, format, *a, *b, layer.as_deref())
            } else {
                let layer = layer.as_deref().map(parse_layer).transpose()?;
                commands::diff_cmd(common, format, *a, *b, layer)
            }
        }
        Command::Features { layer, unit, model, k } => {
            if crate::graph::run::is_graph_run(&RunDir::new(&common.checkpoints, &common.run)) {
                graph_analyses::features(common, format, layer, *unit, *model, *k)
            } else {
                commands::features(common, format, parse_layer(layer)?, *unit, *model, *k)
            }
        }
        Command::Recover { model, checkpoint, cleanse } => {
            trigger::recover(common, format, *model, checkpoint.as_deref(), &cleanse.config())
        }
        Command::Unlearn { model, label, images, epochs, fraction, lambda, lr } => {
            let config = UnlearnConfig {
                images: *images,
                epochs: *epochs,
                fraction: *fraction,
                lambda: *lambda,
                lr: *lr,
                label: *label,
                ..UnlearnConfig::default()
            };
            trigger::unlearn(common, format, *model, &config)
        }
        Command::Visualize { layer, unit, model, steps, seed } => {
            let config = VisConfig { steps: *steps, seed: *seed, ..VisConfig::default() };
            if crate::graph::run::is_graph_run(&RunDir::new(&common.checkpoints, &common.run)) {
                graph_visualize::visualize(common, format, layer, *unit, model, &config)
            } else {
                trigger::visualize(common, format, parse_layer(layer)?, *unit, model, &config)
            }
        }
        Command::Prune { layer, ranking, target, seed } => {
            if crate::graph::run::is_graph_run(&RunDir::new(&common.checkpoints, &common.run)) {
                graph_prune::prune(common, format, layer.as_deref(), ranking, target, *seed)
            } else {
                let layer = layer.as_deref().map(parse_layer).transpose()?;
                defence::prune(common, format, layer, ranking, target, *seed)
            }
        }
        Command::Patch { layer, direction, model, checkpoint, donor, to_unit, sorted, reference } => {
            let args = circuit::PatchArgs {
                layer: layer.as_deref(),
                direction: *direction,
                model: *model,
                checkpoint: checkpoint.as_deref(),
                donor: *donor,
                to_unit: *to_unit,
                sorted: *sorted,
                reference: *reference,
            };
            if crate::graph::run::is_graph_run(&RunDir::new(&common.checkpoints, &common.run)) {
                graph_circuit::patch(common, format, &args)
            } else {
                circuit::patch(common, format, &args)
            }
        }
        Command::Circuit { target, poison_target, clean_margin, max_size, survive, no_verify, nodes } => {
            let args = circuit::CircuitArgs {
                model: target.model,
                mode: target.mode,
                poison_target: *poison_target,
                clean_margin: *clean_margin,
                max_size: *max_size,
                survive: *survive,
                no_verify: *no_verify,
                nodes: nodes.clone(),
            };
            if crate::graph::run::is_graph_run(&RunDir::new(&common.checkpoints, &common.run)) {
                graph_circuit::circuit(common, format, &args)
            } else {
                circuit::circuit(common, format, &args)
            }
        }
        Command::DetectInputs { method, model, frr, n, limit, seed, out } => {
            let (model, out) = (*model, out.clone());
            let args = detect::InputArgs { method: *method, model, frr: *frr, n: *n, limit: *limit, seed: *seed, out };
            detect::detect_inputs(common, format, &args)
        }
        Command::Attribute {
            method,
            node,
            model,
            images,
            index,
            steps,
            window,
            stride,
            relu,
            noise_of,
            samples,
            sigma,
            seed,
            target_label,
            out,
        } => {
            let args = attribute::AttributeArgs {
                method: *method,
                node: node.clone(),
                model: *model,
                images: *images,
                index: *index,
                steps: *steps,
                window: *window,
                stride: *stride,
                relu: *relu,
                noise_of: *noise_of,
                samples: *samples,
                sigma: *sigma,
                seed: *seed,
                target: *target_label,
                out: out.clone(),
            };
            attribute::attribute_inputs(common, format, &args)
        }
        Command::ScanData { method, model, node, seed, out, retrain, force } => {
            let (node, out) = (node.clone(), out.clone());
            let args = detect::ScanArgs {
                method: *method,
                model: *model,
                node,
                seed: *seed,
                out,
                retrain: *retrain,
                force: *force,
            };
            detect::scan_data(common, format, &args)
        }
        Command::Doctor => doctor::doctor(common, format),
        Command::Compare { runs, out } => compare::compare(&common.checkpoints, runs, out.as_deref(), format),
        Command::Bench { repeat, sweep_channels, no_pytorch, recover_images, recover_epochs, strip_inputs, node } => {
            if crate::graph::run::is_graph_run(&RunDir::new(&common.checkpoints, &common.run)) {
                return graph::bench(common, format, (*repeat, *no_pytorch, *strip_inputs), node.as_deref());
            }
            let args = bench::BenchArgs {
                repeat: *repeat,
                sweep_channels: *sweep_channels,
                no_pytorch: *no_pytorch,
                cleanse: CleanseConfig { images: *recover_images, epochs: *recover_epochs, ..CleanseConfig::default() },
                strip_inputs: *strip_inputs,
            };
            bench::run(common, format, &args)
        }
    }
}

/// One of the study's layers (conv1, conv2, fc1, fc2).
fn parse_layer(text: &str) -> Result<crate::engine::layer::Layer> {
    text.parse().map_err(|e: String| color_eyre::eyre::eyre!(e))
}

fn parse_layers(texts: &[String]) -> Result<Vec<crate::engine::layer::Layer>> {
    texts.iter().map(|t| parse_layer(t.trim())).collect()
}

/// The recipe `run`/`train` asked for, the run's recorded attack kept when no
/// attack flag is given.
fn recipe_asked(
    common: &crate::setup::CommonArgs,
    train: &args::TrainArgs,
) -> Result<crate::engine::train::TrainConfig> {
    let run = RunDir::new(&common.checkpoints, &common.run);
    let recorded = crate::engine::run::settings::RunSettings::load(&run)?.map(|s| s.config);
    // The study's network reads only its own 28×28 grey images.
    let dataset = crate::setup::dataset(common);
    let shape = dataset.image_shape().map(|d| d as usize);
    train.config(dataset, shape, recorded.as_ref()).map_err(|e| color_eyre::eyre::eyre!(e))
}

/// The main job: train what is missing, then analyse all three models.
fn run(cli: &Cli, format: Format, train: &args::TrainArgs, retrain: bool) -> Result<()> {
    let config = recipe_asked(&cli.common, train)?;
    let lab = open_lab_writing(&cli.common, Some(config), Splits::TrainAndTest, &[])?;
    // Once a model is missing, everything downstream of it is retrained too.
    let first_missing = ModelKind::STUDY.iter().position(|&k| retrain || !lab.run.has(k));
    let phases: Vec<Phase> = match first_missing {
        Some(i) => Phase::ALL[i..].to_vec(),
        None => Vec::new(),
    };
    let kept: Vec<ModelKind> = ModelKind::STUDY.iter().copied().filter(|k| !phases.contains(&k.phase())).collect();
    check_same_config(&lab, &kept)?;
    if !phases.is_empty() {
        commands::train(&lab, format, &phases)?;
    } else if format.is_human() {
        eprintln!("all three models found in {} (pass --retrain to train again)", lab.run.root.display());
    }
    let report = report::build(&lab, format.is_human())?;
    let markdown = report.to_markdown(&lab);
    report.unchanged(&lab)?;
    checkpoint::save_json(&report, &lab.run.root.join("report.json"))?;
    // The pictures first, so that the report never links a missing one.
    report_pictures::write(&report.pictures, &lab.run.root)?;
    checkpoint::write_atomically(&lab.run.root.join("report.md"), |tmp| Ok(std::fs::write(tmp, &markdown)?))?;
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        _ => {
            print!("{markdown}");
            eprintln!("report written to {}", lab.run.root.join("report.md").display());
        }
    }
    Ok(())
}
