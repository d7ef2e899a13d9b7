//! The report's pictures: what `trojanscope run` draws beside report.md, and the
//! Markdown that links them. Each figure is a row of panels in one palette,
//! enlarged (nearest neighbour) with a colour bar beneath, and its caption gives
//! the values at the colour bar's ends.

use crate::engine::ablation::AblationMode;
use crate::engine::host::floats;
use crate::engine::lab::Lab;
use crate::engine::layer::Layer;
use crate::engine::metrics::{Metrics, argmax_rows};
use crate::engine::model::Net;
use crate::engine::probe::{self, LayerActivation};
use crate::engine::sweep::{SweepRow, most_backdoor_relevant};
use crate::picture::{Heatmap, Palette, Picture, grid_columns, save_png, with_colour_bar};
use color_eyre::eyre::{Result, WrapErr, eyre};
use image::RgbImage;
use serde::Serialize;
use std::collections::BTreeSet;
use std::path::Path;

/// The folder beside report.md that holds the pictures.
pub const DIR: &str = "report-images";
/// Pixels per unit in the sweep heatmaps.
pub const SWEEP_CELL: u32 = 16;
/// Tiled figures are enlarged by the whole factor that brings them closest to
/// this width from below (at least 1).
pub const TARGET_WIDTH: u32 = 960;
/// Rows of the colour bar under every figure (after a gap of half as many).
pub const BAR_HEIGHT: u32 = 16;
/// Width / height the tile grids aim for.
pub const GRID_ASPECT: f64 = 1.0;
/// The test digit whose activations are drawn.
pub const DIGIT: usize = 0;
/// Units of each swept layer after the first whose incoming weights are drawn
/// (as many as the report ablates together).
const TOP_UNITS: usize = 2;

/// One picture, its place relative to the report and its caption.
#[derive(Serialize)]
pub struct Figure {
    /// `report-images/<name>.png`, relative to the report's folder.
    pub file: String,
    pub title: String,
    pub caption: String,
    #[serde(skip)]
    pub image: RgbImage,
}

impl Figure {
    /// `panels` side by side (each already scaled to the palette's span: ±1 or
    /// 0..1), enlarged `factor` times (by default to fit `TARGET_WIDTH`), with the
    /// palette's colour bar.
    fn new(
        name: &str,
        title: String,
        caption: String,
        panels: &[Heatmap],
        palette: Palette,
        factor: Option<u32>,
    ) -> Figure {
        let row = match panels {
            [one] => one.clone(),
            _ => Heatmap::tiled(panels, panels.len()),
        };
        let factor = factor.unwrap_or_else(|| fit(row.width));
        let image = with_colour_bar(&Picture::of(&row, palette, 1.0).enlarged(factor), palette, BAR_HEIGHT);
        Figure { file: format!("{DIR}/{name}.png"), title, caption, image }
    }
}

/// The enlargement for a figure `width` pixels wide at one pixel per value.
pub fn fit(width: usize) -> u32 {
    (TARGET_WIDTH / width.max(1) as u32).max(1)
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
    figures.push(kernel_figure(first, &(0..first.units()).collect::<Vec<_>>(), &weights, None));
    for rows in inputs.sweeps {
        let Some(layer) = rows.first().map(|r| r.layer).filter(|&l| l != first) else { continue };
        for (rank, unit) in most_backdoor_relevant(rows, TOP_UNITS).into_iter().enumerate() {
            figures.push(kernel_figure(layer, &[unit], &weights, Some(rank)));
        }
    }
    figures.extend(activation_figures(lab, inputs.clean, inputs.poisoned)?);
    Ok(figures)
}

/// `b − a` value by value (background minus background stays background).
fn difference(a: &Heatmap, b: &Heatmap) -> Heatmap {
    Heatmap::new(a.width, a.height, a.values.iter().zip(&b.values).map(|(a, b)| b - a).collect())
}

/// `map`'s values divided by `scale` (background stays background).
fn scaled(map: &Heatmap, scale: f32) -> Heatmap {
    Heatmap::new(map.width, map.height, map.values.iter().map(|v| v / scale).collect())
}

/// Two rows over the layer's units (poison-accuracy drop on top, clean-accuracy
/// drop below, a background row between), each on its own ±scale.
fn sweep_figure(rows: &[SweepRow], baseline: &Metrics, mode: AblationMode) -> Option<Figure> {
    let layer = rows.first()?.layer;
    let units = layer.units();
    let mut drops = [vec![f32::NAN; units], vec![f32::NAN; units]];
    for r in rows.iter().filter(|r| r.unit < units) {
        drops[0][r.unit] = (baseline.poison_acc - r.metrics.poison_acc) as f32;
        drops[1][r.unit] = (baseline.clean_acc - r.metrics.clean_acc) as f32;
    }
    let [poison, clean] = drops.map(|d| Heatmap::new(units, 1, d));
    let (poison_scale, clean_scale) = (poison.max_abs(), clean.max_abs());
    let values = [scaled(&poison, poison_scale).values, vec![f32::NAN; units], scaled(&clean, clean_scale).values];
    let map = Heatmap::new(units, 3, values.concat());
    let caption = format!(
        "{layer} sweep: each of its {units} units ablated alone in the poisoned model ({mode} mode), unit 0 at \
         the left. Top row: the drop in poison accuracy, bottom row: the drop in clean accuracy, in points below \
         the unablated model ({:.2} % poison, {:.2} % clean). Diverging, red = a drop, white = no change, blue = a \
         rise: top row ±{poison_scale:.2} points, bottom row ±{clean_scale:.2} points.",
        baseline.poison_acc, baseline.clean_acc
    );
    Some(Figure::new(
        &format!("sweep-{layer}"),
        format!("{layer} sweep"),
        caption,
        &[map],
        Palette::Diverging,
        Some(SWEEP_CELL),
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

/// Clean | poisoned | Δ of `units`' incoming weights, their input slices tiled
/// unit by unit; clean and poisoned share a scale, Δ has its own.
fn kernel_figure(layer: Layer, units: &[usize], weights: &[Vec<Vec<f32>>; 2], rank: Option<usize>) -> Figure {
    let fan_in = layer.fan_in() as usize;
    let tiles = weights.each_ref().map(|w| {
        let w = &w[layer.position()];
        units.iter().flat_map(|&u| weight_slices(layer, &w[u * fan_in..(u + 1) * fan_in])).collect::<Vec<_>>()
    });
    let tile = (tiles[0][0].width, tiles[0][0].height);
    let columns = grid_columns(tiles[0].len(), tile, GRID_ASPECT);
    let [clean, poisoned] = tiles.each_ref().map(|t| Heatmap::tiled(t, columns));
    let diff = difference(&clean, &poisoned);
    let (shared, own) = (clean.max_abs().max(poisoned.max_abs()), diff.max_abs());
    let panels = [scaled(&clean, shared), scaled(&poisoned, shared), scaled(&diff, own)];
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
    let caption = format!(
        "{what}: clean | poisoned | Δ poisoned − clean. Diverging, blue = negative, white = 0, red = positive: clean \
         and poisoned share ±{shared:.3}, Δ is on its own ±{own:.3}."
    );
    Figure::new(&name, title, caption, &panels, Palette::Diverging, None)
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
    let mut figures = vec![Figure::new(
        &format!("digit-{DIGIT}"),
        format!("test digit {DIGIT}"),
        caption,
        &digits,
        Palette::Grey,
        None,
    )];
    for layer in Layer::ALL.into_iter().filter(|l| l.is_conv()) {
        let [c, p] = [&clean, &poisoned].map(|acts| channel_maps(&acts[layer.position()]));
        let tile = (c[0].width, c[0].height);
        let columns = grid_columns(c.len(), tile, GRID_ASPECT);
        let [c, p] = [c, p].map(|maps| Heatmap::tiled(&maps, columns));
        let d = difference(&c, &p);
        let (shared, own) = (c.max_abs().max(p.max_abs()), d.max_abs());
        let channels =
            format!("all {} channels of {}×{} after ReLU, channel 0 top left", layer.units(), tile.0, tile.1);
        let caption = format!(
            "{layer} on the {digit} {verdict}, {channels}: the clean model on the clean digit | the poisoned model \
             on the triggered digit. Heat, black = 0, pale yellow = {shared:.3} (shared)."
        );
        let pair = [scaled(&c, shared), scaled(&p, shared)];
        let title = format!("{layer} activations");
        figures.push(Figure::new(&format!("activations-{layer}"), title, caption, &pair, Palette::Heat, None));
        let caption = format!(
            "{layer} Δ on the {digit} {verdict}, {channels}: the poisoned model on the triggered digit − the clean \
             model on the clean digit. Diverging, white = 0 (no change), red = the trigger raises the activation, \
             blue = it lowers it: ±{own:.3}."
        );
        let (name, title) = (format!("activations-{layer}-diff"), format!("{layer} Δ activations"));
        figures.push(Figure::new(&name, title, caption, &[scaled(&d, own)], Palette::Diverging, None));
    }
    Ok(figures)
}

/// Writes every figure under `root` (atomically, like the checkpoints) and removes
/// the PNGs an earlier report left in its folder that this one no longer draws.
pub fn write(figures: &[Figure], root: &Path) -> Result<()> {
    for figure in figures {
        let path = root.join(&figure.file);
        save_png(&figure.image, &path).map_err(|e| eyre!(e))?;
    }
    let dir = root.join(DIR);
    let drawn: BTreeSet<&Path> = figures.iter().map(|f| Path::new(&f.file)).collect();
    let Ok(entries) = std::fs::read_dir(&dir) else { return Ok(()) };
    for path in entries.filter_map(|e| e.ok().map(|e| e.path())) {
        let stale = path.extension().is_some_and(|e| e == "png")
            && path.strip_prefix(root).is_ok_and(|relative| !drawn.contains(relative));
        if stale {
            std::fs::remove_file(&path).wrap_err_with(|| format!("cannot remove {}", path.display()))?;
        }
    }
    Ok(())
}

/// The report's section of pictures: each image, then its caption line.
pub fn markdown(figures: &[Figure]) -> String {
    let mut out = String::new();
    if !figures.is_empty() {
        out.push_str("## Pictures\n\n");
    }
    for f in figures {
        out.push_str(&format!("![{}]({})\n\n*{}*\n\n", f.title, f.file, f.caption));
    }
    out
}
