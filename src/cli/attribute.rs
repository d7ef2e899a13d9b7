//! `attribute`: input attributions (docs/detect.md) on the run's triggered test
//! images, per model: the share of attribution mass on the pixels the attack
//! changed, IG's convergence delta, and each model's mean map as a figure.

use super::args::CommonArgs;
use super::detect::{Network, Subject};
use super::output::Format;
use crate::engine::attribute::gradcam::{LayerNet, StudyLayer};
use crate::engine::attribute::{Method, Smoothed, attribute, mass};
use crate::engine::classifier::Classifier;
use crate::engine::detect::{relabelled, values};
use crate::engine::lab::ModelKind;
use crate::engine::lean::last_conv;
use crate::engine::run::RunDir;
use crate::engine::testset::{TestSet, chunk};
use crate::figure::{Figure, ImageGrid, Panel, Scale, Values};
use crate::graph::attribute::{GraphLayer, cam_node};
use crate::graph::eval::raw_test_set;
use crate::picture::Heatmap;
use crate::table::Table;
use color_eyre::eyre::{Result, bail, eyre};
use serde::Serialize;
use std::path::PathBuf;
use std::time::Instant;
use tch::{Device, Kind, Tensor};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AttrMethod {
    Ig,
    Saliency,
    Gradcam,
    Occlusion,
    Smoothgrad,
}

impl AttrMethod {
    fn name(self) -> &'static str {
        match self {
            AttrMethod::Ig => "IG",
            AttrMethod::Saliency => "saliency",
            AttrMethod::Gradcam => "Grad-CAM",
            AttrMethod::Occlusion => "occlusion",
            AttrMethod::Smoothgrad => "SmoothGrad",
        }
    }
}

/// What SmoothGrad averages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NoiseOf {
    Ig,
    Saliency,
}

/// Which class's logit is attributed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TargetLabel {
    /// The model's own answer on the image.
    Predicted,
    /// The image's true label.
    True,
    /// The label the attack wants.
    Attack,
}

pub struct AttributeArgs {
    pub method: AttrMethod,
    pub node: Option<String>,
    pub model: Option<ModelKind>,
    pub images: Option<usize>,
    pub index: Option<usize>,
    pub steps: usize,
    pub window: i64,
    pub stride: i64,
    pub relu: bool,
    pub noise_of: NoiseOf,
    pub samples: usize,
    pub sigma: f64,
    pub seed: u64,
    pub target: TargetLabel,
    pub out: Option<PathBuf>,
}

impl AttributeArgs {
    fn method(&self) -> Method {
        match self.method {
            AttrMethod::Ig => Method::Ig { steps: self.steps },
            AttrMethod::Saliency => Method::Saliency,
            AttrMethod::Gradcam => Method::GradCam { relu: self.relu },
            AttrMethod::Occlusion => Method::Occlusion { window: self.window, stride: self.stride },
            AttrMethod::Smoothgrad => {
                let of = match self.noise_of {
                    NoiseOf::Ig => Smoothed::Ig { steps: self.steps },
                    NoiseOf::Saliency => Smoothed::Saliency,
                };
                Method::SmoothGrad { of, samples: self.samples, sigma: self.sigma, seed: self.seed }
            }
        }
    }

    /// Settings that can never run, refused before anything is read.
    fn check(&self) -> Result<()> {
        if self.steps == 0 || self.samples == 0 || self.images == Some(0) {
            bail!("--steps, --samples and --images must each be at least 1");
        }
        if !(self.sigma.is_finite() && self.sigma >= 0.0) {
            bail!("--sigma {} is not a standard deviation (a number ≥ 0)", self.sigma);
        }
        if self.window < 1 || self.stride < 1 || self.stride > self.window {
            bail!(
                "--window {} --stride {}: both must be at least 1 and the stride at most the window (Captum's rule)",
                self.window,
                self.stride
            );
        }
        if self.node.is_some() && self.method != AttrMethod::Gradcam {
            bail!("--node names Grad-CAM's layer; --method {:?} attributes to the input", self.method);
        }
        Ok(())
    }
}

/// The triggered test images attributed, their clean twins' differences and labels.
struct Inputs {
    triggered: Tensor,
    /// `[N, H, W]`: the pixels the attack changed.
    changed: Tensor,
    labels: Vec<u8>,
    attack_labels: Vec<u8>,
}

impl Inputs {
    fn of(subject: &Subject, args: &AttributeArgs) -> Result<Inputs> {
        let test = TestSet::new(&subject.data.test, &subject.config, subject.device).map_err(|e| eyre!(e))?;
        let raw = raw_test_set(&test, subject.data.test.normalisation);
        let mut rows = relabelled(&raw);
        if let Some(i) = args.index {
            if i >= rows.len() {
                bail!(
                    "--index {i} is outside the triggered test set ({} images, 0 to {})",
                    rows.len(),
                    rows.len().max(1) - 1
                );
            }
            rows = vec![rows[i]];
        } else if let Some(n) = args.images {
            rows.truncate(n);
        }
        if rows.is_empty() {
            bail!("the run's test set has no image the attack relabels: nothing to attribute");
        }
        let [_, height, width] = subject.classifier().input_shape();
        if args.method == AttrMethod::Occlusion && (args.window > height || args.window > width) {
            bail!("--window {} is larger than the {height}×{width} input", args.window);
        }
        let index = Tensor::from_slice(&rows.iter().map(|&r| r as i64).collect::<Vec<_>>()).to_device(raw.device());
        let n = raw.len() as i64;
        let clean = raw.inputs.narrow(0, 0, n).index_select(0, &index);
        let triggered = raw.inputs.narrow(0, n, n).index_select(0, &index);
        let labels: Vec<u8> = rows.iter().map(|&r| raw.labels[r]).collect();
        let attack_labels = labels.iter().map(|&l| raw.relabel.of(l)).collect();
        Ok(Inputs { changed: mass::changed(&clean, &triggered), triggered, labels, attack_labels })
    }

    fn targets(&self, net: &dyn Classifier, label: TargetLabel) -> Tensor {
        let of = |labels: &[u8]| Tensor::from_slice(&labels.iter().map(|&l| l as i64).collect::<Vec<_>>());
        match label {
            TargetLabel::True => of(&self.labels),
            TargetLabel::Attack => of(&self.attack_labels),
            TargetLabel::Predicted => {
                let _guard = tch::no_grad_guard();
                let parts: Vec<Tensor> = self
                    .triggered
                    .split(chunk(net.device()), 0)
                    .iter()
                    .map(|x| net.logits(x).argmax(1, false))
                    .collect();
                Tensor::cat(&parts, 0).to_device(Device::Cpu)
            }
        }
    }
}

/// Grad-CAM's layer of the subject (default the last convolution) and its name.
fn cam_layer<'a>(subject: &'a Subject, node: Option<&str>) -> Result<(Box<dyn LayerNet + 'a>, String)> {
    match &subject.network {
        Network::Study(net, _) => {
            let conv = node.map(super::parse_layer).transpose()?.unwrap_or_else(last_conv);
            if !conv.is_conv() {
                bail!("Grad-CAM needs a convolution's maps; {} is a linear layer (name conv1 or conv2)", conv.name());
            }
            let layer = StudyLayer { net, normalisation: subject.data.test.normalisation, conv };
            Ok((Box::new(layer), conv.name().to_string()))
        }
        Network::Graph(exec) => {
            let node = cam_node(exec, node).map_err(|e| eyre!(e))?;
            Ok((Box::new(GraphLayer { exec, node }), exec.spec.nodes[node].name.clone()))
        }
    }
}

/// Images per forward pass: about 80 million activations on the CPU (autograd
/// keeps each for the backward), 1 billion on a GPU.
fn pass_images(subject: &Subject) -> usize {
    let per_image: i64 = match &subject.network {
        // The study's CNN: conv1 and conv2's maps, pooled and not, and the rest.
        Network::Study(..) => 40_000,
        Network::Graph(exec) => exec.shapes.iter().map(|s| s.iter().product::<i64>()).sum(),
    };
    let budget = if subject.device == Device::Cpu { 8e7 } else { 1e9 };
    (budget / per_image.max(1) as f64).clamp(1.0, 50_000.0) as usize
}

#[derive(Serialize)]
struct Delta {
    mean_abs: f64,
    max_abs: f64,
}

#[derive(Serialize)]
struct ModelAttribution {
    model: String,
    /// The mean share of |attribution| on the attack's changed pixels.
    trigger_mass: f64,
    /// Images whose map is not all zero (those the mean counts).
    scored: usize,
    /// IG (and SmoothGrad over IG): |sum of the map − (F(x) − F(0))|.
    convergence_delta: Option<Delta>,
    /// With --index: the image's map, `[C, H, W]` row-major.
    #[serde(skip_serializing_if = "Option::is_none")]
    map: Option<Vec<f64>>,
    seconds: f64,
}

#[derive(Serialize)]
struct AttributeReport {
    method: AttrMethod,
    target_label: TargetLabel,
    /// Grad-CAM's layer.
    node: Option<String>,
    images: usize,
    index: Option<usize>,
    /// The share of each image's pixels the attack changed: an even map's trigger mass.
    changed_share: f64,
    models: Vec<ModelAttribution>,
    figure: Option<[PathBuf; 2]>,
}

pub fn attribute_inputs(common: &CommonArgs, format: Format, args: &AttributeArgs) -> Result<()> {
    args.check()?;
    let run = RunDir::new(&common.checkpoints, &common.run);
    let models: Vec<ModelKind> = match args.model {
        Some(model) => vec![model],
        None => ModelKind::ALL.into_iter().filter(|&m| run.has(m)).collect(),
    };
    let Some(&first) = models.first() else {
        bail!("no model in {}: train it first (trojanscope train --run …)", run.root.display());
    };
    let subject = Subject::open(common, first)?;
    let inputs = Inputs::of(&subject, args)?;
    let [_, height, width] = subject.classifier().input_shape();
    let (mut results, mut means, mut node) = (Vec::new(), Vec::new(), None);
    let mut subject = Some(subject);
    for &model in &models {
        let subject = match subject.take() {
            Some(s) => s,
            None => Subject::open(common, model)?,
        };
        let net = subject.classifier();
        let layer = match args.method {
            AttrMethod::Gradcam => {
                let (layer, name) = cam_layer(&subject, args.node.as_deref())?;
                node = Some(name);
                Some(layer)
            }
            _ => None,
        };
        let targets = inputs.targets(net, args.target);
        let started = Instant::now();
        let maps = attribute(
            net,
            layer.as_deref(),
            &args.method(),
            &inputs.triggered,
            &targets,
            pass_images(&subject),
            &mut |_| {},
        );
        let (trigger_mass, scored) = mass::mean_finite(&mass::trigger_mass(&maps.maps, &inputs.changed));
        let convergence_delta = maps.deltas.map(|d| {
            let d: Vec<f64> = values(&d).iter().map(|v| v.abs()).collect();
            Delta { mean_abs: d.iter().sum::<f64>() / d.len() as f64, max_abs: d.iter().copied().fold(0.0, f64::max) }
        });
        means.push(mass::mean_map(&maps.maps));
        results.push(ModelAttribution {
            model: model.to_string(),
            trigger_mass,
            scored,
            convergence_delta,
            map: args.index.map(|_| values(&maps.maps)),
            seconds: started.elapsed().as_secs_f64(),
        });
    }
    let mut report = AttributeReport {
        method: args.method,
        target_label: args.target,
        node,
        images: inputs.labels.len(),
        index: args.index,
        changed_share: mass::changed_share(&inputs.changed),
        models: results,
        figure: None,
    };
    if let Some(dir) = &args.out {
        let mean_input = inputs.triggered.mean_dim([0i64, 1].as_slice(), false, Kind::Float);
        let input = values(&mean_input).iter().map(|&v| v as f32).collect();
        let figure = figure(&report, input, &means, [height as usize, width as usize]);
        let name = format!("attribute-{:?}", args.method).to_lowercase();
        report.figure = Some(figure.save(dir, &name).map_err(|e| eyre!(e))?);
    }
    show(format, &report)
}

/// The mean triggered input, then each model's mean |attribution| map, on one scale.
fn figure(report: &AttributeReport, input: Vec<f32>, means: &[Vec<f32>], [height, width]: [usize; 2]) -> Figure {
    let high = means.iter().flatten().fold(0f32, |a, &b| a.max(b)).max(f32::MIN_POSITIVE);
    let scale = Scale::new(Values::Sequential { low: 0.0, high }, "mean |attribution| per pixel");
    let grey = Scale::new(Values::Grey { low: 0.0, high: 1.0 }, "pixel");
    let mut panels =
        vec![Panel { title: "triggered input\n(mean)".into(), image: grey.paint(&Heatmap::new(width, height, input)) }];
    for (m, map) in report.models.iter().zip(means) {
        let title = format!("{}\ntrigger mass {:.1} %", m.model, 100.0 * m.trigger_mass);
        panels.push(Panel { title, image: scale.paint(&Heatmap::new(width, height, map.clone())) });
    }
    let columns = panels.len();
    Figure::Grid(ImageGrid {
        title: format!("{} on {} triggered test images", report.method.name(), report.images),
        panels,
        columns,
        scale: Some(scale),
        note: format!(
            "the attack changes {:.1} % of each image's pixels; trigger mass: the share of |attribution| on them",
            100.0 * report.changed_share
        ),
    })
}

fn show(format: Format, r: &AttributeReport) -> Result<()> {
    let mut table = Table::new(["model", "trigger mass %", "images", "mean |δ|", "max |δ|", "seconds"]);
    for m in &r.models {
        let delta =
            |f: fn(&Delta) -> f64| m.convergence_delta.as_ref().map_or("-".to_string(), |d| format!("{:.2e}", f(d)));
        table.push([
            m.model.clone(),
            format!("{:.2}", 100.0 * m.trigger_mass),
            m.scored.to_string(),
            delta(|d| d.mean_abs),
            delta(|d| d.max_abs),
            format!("{:.1}", m.seconds),
        ]);
    }
    format.emit(r, &table)?;
    if format.is_human() {
        let at = r.node.as_ref().map_or(String::new(), |n| format!(" at {n}"));
        println!(
            "{}{at} on {} triggered test images ({:?} label); the attack changes {:.2} % of each image's pixels",
            r.method.name(),
            r.images,
            r.target_label,
            100.0 * r.changed_share
        );
        if let Some([svg, png]) = &r.figure {
            eprintln!("figure: {} and {}", svg.display(), png.display());
        }
    }
    Ok(())
}
