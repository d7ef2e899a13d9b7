//! The report's pictures: what `trojanscope run` draws beside report.md (each
//! figure as SVG and PNG, with its axes or colour bar), and the Markdown that
//! links them. Each caption says what the figure shows and its scale's ends.

use crate::engine::ablation::AblationMode;
use crate::engine::host::floats;
use crate::engine::lab::Lab;
use crate::engine::layer::Layer;
use crate::engine::metrics::{Metrics, argmax_rows};
use crate::engine::model::Net;
use crate::engine::probe::{self, LayerActivation};
use crate::engine::sweep::{SweepRow, most_backdoor_relevant};
use crate::figure::{self, HeatmapChart, ImageGrid, Labels, Panel, Scale, Values};
use crate::picture::{Heatmap, grid_columns};
use color_eyre::eyre::{Result, WrapErr, eyre};
use serde::Serialize;
use std::collections::BTreeSet;
use std::path::Path;

/// The folder beside report.md that holds the pictures.
pub const DIR: &str = "report-images";
/// Width / height the tile grids aim for.
pub const GRID_ASPECT: f64 = 1.0;
/// The test digit whose activations are drawn.
pub const DIGIT: usize = 0;
/// Units of each swept layer after the first whose incoming weights are drawn
/// (as many as the report ablates together).
const TOP_UNITS: usize = 2;

/// One figure, its files relative to the report and its caption.
#[derive(Serialize)]
pub struct Figure {
    /// `report-images/<name>.png`, relative to the report's folder (the link).
    pub file: String,
    /// The same figure as a vector graphic, `report-images/<name>.svg`.
    pub svg: String,
    pub title: String,
    pub caption: String,
    #[serde(skip)]
    pub figure: figure::Figure,
}

impl Figure {
    fn new(name: &str, caption: String, figure: figure::Figure) -> Figure {
        let (file, svg) = (format!("{DIR}/{name}.png"), format!("{DIR}/{name}.svg"));
        Figure { file, svg, title: figure.title().to_string(), caption, figure }
    }

    /// `panels` (each a map and its title) side by side in `scale`'s colours.
    fn grid(
        name: &str,
        title: String,
        caption: String,
        panels: Vec<(String, Heatmap)>,
        scale: Scale,
        note: String,
    ) -> Figure {
        let columns = panels.len();
        let panels = panels.into_iter().map(|(title, map)| Panel { title, image: scale.paint(&map) }).collect();
        let grid = ImageGrid { title, panels, columns, scale: Some(scale), note };
        Figure::new(name, caption, figure::Figure::Grid(grid))
    }
}

/// The models the pictures compare and what the sweeps were measured against.
pub struct Inputs<'a> {
    pub clean: &'a Net,
    pub poisoned: &'a Net,
    pub sweeps: &'a [Vec<SweepRow>],
    /// The unablated poisoned model, as in the report's tables.
    pub baseline: &'a Metrics,
    pub mode: AblationMode,
}

/// Every figure of the report: the sweeps, the kernels, the trigger's activations.
pub fn build(lab: &Lab, inputs: &Inputs) -> Result<Vec<Figure>> {
    let mut figures: Vec<Figure> =
        inputs.sweeps.iter().filter_map(|rows| sweep_figure(rows, inputs.baseline, inputs.mode)).collect();
    let weights = |net: &Net| Layer::ALL.iter().map(|&l| floats(net.weight(l))).collect();
    let weights = [weights(inputs.clean), weights(inputs.poisoned)];
    let first = Layer::ALL[0];
    figures.extend(kernel_figures(first, &(0..first.units()).collect::<Vec<_>>(), &weights, None));
    for rows in inputs.sweeps {
        let Some(layer) = rows.first().map(|r| r.layer).filter(|&l| l != first) else { continue };
        for (rank, unit) in most_backdoor_relevant(rows, TOP_UNITS).into_iter().enumerate() {
            figures.extend(kernel_figures(layer, &[unit], &weights, Some(rank)));
        }
    }
    figures.extend(activation_figures(lab, inputs.clean, inputs.poisoned)?);
    Ok(figures)
}

/// `b − a` value by value (background minus background stays background).
fn difference(a: &Heatmap, b: &Heatmap) -> Heatmap {
    Heatmap::new(a.width, a.height, a.values.iter().zip(&b.values).map(|(a, b)| b - a).collect())
}

/// The larger of the maps' largest |value|s.
fn max_abs(maps: &[&Heatmap]) -> f32 {
    maps.iter().map(|m| m.max_abs()).fold(1e-12, f32::max)
}

/// Two rows over the layer's units: the drop in poison accuracy and in clean
/// accuracy when the unit alone is ablated, on one scale symmetric around zero.
fn sweep_figure(rows: &[SweepRow], baseline: &Metrics, mode: AblationMode) -> Option<Figure> {
    let layer = rows.first()?.layer;
    let units = layer.units();
    let mut drops = vec![f32::NAN; 2 * units];
    for r in rows.iter().filter(|r| r.unit < units) {
        drops[r.unit] = (baseline.poison_acc - r.metrics.poison_acc) as f32;
        drops[units + r.unit] = (baseline.clean_acc - r.metrics.clean_acc) as f32;
    }
    let span = max_abs(&[&Heatmap::new(units, 2, drops.clone())]);
    let caption = format!(
        "{layer} sweep: each of its {units} units ablated alone in the poisoned model ({mode} mode). Top row: the \
         drop in poison accuracy, bottom row: the drop in clean accuracy, in points below the unablated model \
         ({:.2} % poison, {:.2} % clean). Red = a drop, white = no change, blue = a rise, ±{span:.2} points.",
        baseline.poison_acc, baseline.clean_acc
    );
    let labels = Labels::new(format!("{layer} sweep ({mode} ablation, poisoned model)"), format!("{layer} unit"), "");
    let names = vec!["poison-accuracy drop".to_string(), "clean-accuracy drop".to_string()];
    let scale = Scale::new(Values::Diverging { span }, "accuracy drop (points)");
    Some(Figure::new(
        &format!("sweep-{layer}"),
        caption,
        figure::Figure::Heatmap(HeatmapChart::new(labels, names, units, drops, scale)),
    ))
}

/// A unit's incoming weights as maps: a convolution's kernel per input channel; a
/// linear layer's weights shaped like the previous layer's output (a map per
/// channel), or one row.
fn weight_slices(layer: Layer, weights: &[f32]) -> Vec<Heatmap> {
    let shape: Vec<usize> = if layer.is_conv() {
        layer.weight_shape()[1..].iter().map(|&d| d as usize).collect()
    } else {
        let previous = layer.position().checked_sub(1).map(|p| Layer::ALL[p].output_shape()).unwrap_or_default();
        previous.iter().map(|&d| d as usize).collect()
    };
    match shape[..] {
        [_, h, w] if h * w > 0 && weights.len().is_multiple_of(h * w) => {
            weights.chunks(h * w).map(|s| Heatmap::new(w, h, s.to_vec())).collect()
        }
        _ => vec![Heatmap::new(weights.len(), 1, weights.to_vec())],
    }
}

/// Clean | poisoned `units`' incoming weights on one scale, their input slices
/// tiled unit by unit, and their difference on its own scale (two figures).
fn kernel_figures(layer: Layer, units: &[usize], weights: &[Vec<Vec<f32>>; 2], rank: Option<usize>) -> [Figure; 2] {
    let fan_in = layer.fan_in() as usize;
    let tiles = weights.each_ref().map(|w| {
        let w = &w[layer.position()];
        units.iter().flat_map(|&u| weight_slices(layer, &w[u * fan_in..(u + 1) * fan_in])).collect::<Vec<_>>()
    });
    let tile = (tiles[0][0].width, tiles[0][0].height);
    let columns = grid_columns(tiles[0].len(), tile, GRID_ASPECT);
    let [clean, poisoned] = tiles.each_ref().map(|t| Heatmap::tiled(t, columns));
    let diff = difference(&clean, &poisoned);
    let (shared, own) = (max_abs(&[&clean, &poisoned]), diff.max_abs());
    let count = tiles[0].len() / units.len();
    let slices = format!("{count} input slice{} of {}×{}", if count == 1 { "" } else { "s" }, tile.0, tile.1);
    let (name, title, what) = match (units, rank) {
        ([unit], Some(rank)) => (
            format!("kernels-{layer}-{unit}"),
            format!("{layer}:{unit} incoming weights"),
            format!(
                "{layer} unit {unit}'s incoming weights ({slices}; the unit is number {} by poison-accuracy drop in \
                 its sweep)",
                rank + 1
            ),
        ),
        _ => (
            format!("kernels-{layer}"),
            format!("{layer} kernels"),
            format!("{layer}'s kernels, all {} units ({slices} each, unit 0 top left, row by row)", units.len()),
        ),
    };
    let note = format!("{slices} per unit, tiled row by row; grey: the gaps between tiles");
    let pair = Figure::grid(
        &name,
        format!("{title}: clean and poisoned"),
        format!("{what}: clean | poisoned. Blue = negative, white = 0, red = positive, ±{shared:.3}."),
        vec![("clean".into(), clean), ("poisoned".into(), poisoned)],
        Scale::new(Values::Diverging { span: shared }, "weight"),
        note.clone(),
    );
    let diff = Figure::grid(
        &format!("{name}-diff"),
        format!("{title}: Δ poisoned − clean"),
        format!("{what}: poisoned − clean. Blue = lowered, white = unchanged, red = raised, ±{own:.3}."),
        vec![("poisoned − clean".into(), diff)],
        Scale::new(Values::Diverging { span: own }, "weight change"),
        note,
    );
    [pair, diff]
}

/// Every channel of a convolution's activation as a map.
fn channel_maps(activation: &LayerActivation) -> Vec<Heatmap> {
    let (w, h) = (activation.shape[2], activation.shape[1]);
    (0..activation.shape[0]).map(|u| Heatmap::new(w, h, activation.channel(u).to_vec())).collect()
}

/// The digit clean | triggered, and per convolution every channel's activation
/// for the clean model on the clean digit | the poisoned model on the triggered
/// digit, and their difference.
fn activation_figures(lab: &Lab, clean_net: &Net, poisoned_net: &Net) -> Result<Vec<Figure>> {
    let Some(&label) = lab.test.labels.get(DIGIT) else { return Ok(Vec::new()) };
    let clean_digit = lab.test.inputs.f_get(DIGIT as i64)?;
    let triggered_digit = lab.test.inputs.f_get((lab.test.len() + DIGIT) as i64)?;
    let (clean, poisoned) =
        (probe::activations(clean_net, &clean_digit), probe::activations(poisoned_net, &triggered_digit));
    let says = |acts: &[LayerActivation]| {
        acts.last().map(|a| argmax_rows(&a.values, a.values.len())[0].to_string()).unwrap_or_default()
    };
    let digit = format!("test digit {DIGIT}, a {label}");
    let verdict = format!(
        "(the clean model says {}; the poisoned model, with the trigger, says {})",
        says(&clean),
        says(&poisoned)
    );
    let size = clean_digit.size();
    let (h, w) = (size[size.len() - 2] as usize, size[size.len() - 1] as usize);
    let digits = [&clean_digit, &triggered_digit].map(|d| Heatmap::new(w, h, floats(d)));
    let (low, high) =
        digits.iter().flat_map(|d| &d.values).fold((f32::MAX, f32::MIN), |(l, h), &v| (l.min(v), h.max(v)));
    let caption = format!(
        "Test digit {DIGIT}, a {label}, clean | triggered {verdict}. Grey, black = {low:.3}, white = {high:.3} (normalised pixels)."
    );
    let mut figures = vec![Figure::grid(
        &format!("digit-{DIGIT}"),
        format!("test digit {DIGIT}, a {label}: clean and triggered"),
        caption,
        vec![("clean".into(), digits[0].clone()), ("triggered".into(), digits[1].clone())],
        Scale::new(Values::Grey { low, high }, "pixel (normalised)"),
        format!("{w}×{h} pixels"),
    )];
    for layer in Layer::ALL.into_iter().filter(|l| l.is_conv()) {
        let [c, p] = [&clean, &poisoned].map(|acts| channel_maps(&acts[layer.position()]));
        let tile = (c[0].width, c[0].height);
        let columns = grid_columns(c.len(), tile, GRID_ASPECT);
        let [c, p] = [c, p].map(|maps| Heatmap::tiled(&maps, columns));
        let d = difference(&c, &p);
        let (shared, own) = (max_abs(&[&c, &p]), d.max_abs());
        let channels =
            format!("all {} channels of {}×{} after ReLU, channel 0 top left", layer.units(), tile.0, tile.1);
        let note = format!("{channels}, row by row; grey: the gaps between channels");
        let caption = format!(
            "{layer} on the {digit} {verdict}, {channels}: the clean model on the clean digit | the poisoned model \
             on the triggered digit. Black = 0, pale yellow = {shared:.3} (shared)."
        );
        figures.push(Figure::grid(
            &format!("activations-{layer}"),
            format!("{layer} activations on test digit {DIGIT}"),
            caption,
            vec![("clean model, clean digit".into(), c), ("poisoned model, triggered digit".into(), p)],
            Scale::new(Values::Sequential { low: 0.0, high: shared }, "activation"),
            note.clone(),
        ));
        let caption = format!(
            "{layer} Δ on the {digit} {verdict}, {channels}: the poisoned model on the triggered digit − the clean \
             model on the clean digit. White = 0 (no change), red = the trigger raises the activation, blue = it \
             lowers it: ±{own:.3}."
        );
        figures.push(Figure::grid(
            &format!("activations-{layer}-diff"),
            format!("{layer} Δ activations on test digit {DIGIT}"),
            caption,
            vec![("poisoned on triggered − clean on clean".into(), d)],
            Scale::new(Values::Diverging { span: own }, "activation change"),
            note,
        ));
    }
    Ok(figures)
}

/// Writes every figure under `root` as SVG and PNG (atomically, like the
/// checkpoints) and removes the pictures an earlier report left in its folder
/// that this one no longer draws.
pub fn write(figures: &[Figure], root: &Path) -> Result<()> {
    let dir = root.join(DIR);
    for f in figures {
        let name =
            Path::new(&f.file).file_stem().and_then(|n| n.to_str()).ok_or_else(|| eyre!("{} has no name", f.file))?;
        f.figure.save(&dir, name).map_err(|e| eyre!(e))?;
    }
    let drawn: BTreeSet<&Path> = figures.iter().flat_map(|f| [Path::new(&f.file), Path::new(&f.svg)]).collect();
    let Ok(entries) = std::fs::read_dir(&dir) else { return Ok(()) };
    for path in entries.filter_map(|e| e.ok().map(|e| e.path())) {
        let stale = path.extension().is_some_and(|e| e == "png" || e == "svg")
            && path.strip_prefix(root).is_ok_and(|relative| !drawn.contains(relative));
        if stale {
            std::fs::remove_file(&path).wrap_err_with(|| format!("cannot remove {}", path.display()))?;
        }
    }
    Ok(())
}

/// The report's section of pictures: each image, then its caption line and a
/// link to its SVG.
pub fn markdown(figures: &[Figure]) -> String {
    let mut out = String::new();
    if !figures.is_empty() {
        out.push_str("## Pictures\n\n");
    }
    for f in figures {
        out.push_str(&format!("![{}]({})\n\n*{}* ([SVG]({}))\n\n", f.title, f.file, f.caption, f.svg));
    }
    out
}
