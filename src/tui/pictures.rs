//! The explorer's pictures built from plain data, shared by the panes that draw
//! them and the export that saves them: kernels, activation maps and their
//! differences, a unit's top images, and the training charts' points.

use super::protocol::{DigitData, RankedImage};
use super::study::Study;
use super::train_state::TrainState;
use crate::engine::lab::ModelKind;
use crate::engine::layer::Layer;
use crate::engine::probe::LayerActivation;
use crate::engine::train::Phase;
use crate::picture::{Heatmap, Palette, Picture};

/// How a unit's incoming weights are laid out as maps: (slices, width, height).
/// A convolution's kernel is one map per input channel; a linear unit's weights
/// take the shape of the previous layer's output (one map per channel, or one
/// near-square map of a flat input).
pub fn slice_shape(layer: Layer) -> (usize, usize, usize) {
    let shape = layer.weight_shape();
    if layer.is_conv() {
        return (shape[1] as usize, shape[3] as usize, shape[2] as usize);
    }
    let previous = layer.position().checked_sub(1).map(|i| Layer::ALL[i].output_shape());
    match previous.as_deref() {
        Some([c, h, w]) => (*c as usize, *w as usize, *h as usize),
        _ => {
            let n = shape[1] as usize;
            let side = (n as f64).sqrt().ceil() as usize;
            (1, side, n.div_ceil(side))
        }
    }
}

/// A unit's incoming weights as maps: one per input slice.
pub fn slices(layer: Layer, weights: &[f32]) -> Vec<Heatmap> {
    let (count, w, h) = slice_shape(layer);
    weights
        .chunks(w * h)
        .take(count)
        .map(|c| {
            let mut values = c.to_vec();
            // A flat input that does not fill its square: the rest is background.
            values.resize(w * h, f32::NAN);
            Heatmap::new(w, h, values)
        })
        .collect()
}

/// Tiles per row for a layer's slices.
pub fn tile_columns(layer: Layer) -> usize {
    if slice_shape(layer).0 > 1 { 8 } else { 1 }
}

/// The selected unit's weights in the compared model, the model under study, and
/// their difference (subject − reference).
pub fn unit_weights(study: &Study) -> Option<[Vec<f32>; 3]> {
    let (layer, unit) = (study.layer, study.selected_unit());
    let reference = study.weights(study.reference)?[layer].unit(layer, unit).to_vec();
    let subject = study.weights(study.subject)?[layer].unit(layer, unit).to_vec();
    let diff = reference.iter().zip(&subject).map(|(r, s)| s - r).collect();
    Some([reference, subject, diff])
}

/// The three kernel pictures (reference, subject, difference) and the scales they
/// use: the two models share one, the difference has its own.
pub fn kernel_pictures(layer: Layer, weights: &[Vec<f32>; 3]) -> ([Picture; 3], f32, f32) {
    let tiles = weights.clone().map(|w| Heatmap::tiled(&slices(layer, &w), tile_columns(layer)));
    let scale = tiles[0].max_abs().max(tiles[1].max_abs());
    let diff_scale = tiles[2].max_abs();
    let [r, s, d] = tiles;
    (
        [
            Picture::of(&r, Palette::Diverging, scale),
            Picture::of(&s, Palette::Diverging, scale),
            Picture::of(&d, Palette::Diverging, diff_scale),
        ],
        scale,
        diff_scale,
    )
}

/// One node's output on one image: `[channels, height, width]` or `[units]`.
#[derive(Debug, Clone, Copy)]
pub struct Maps<'a> {
    pub shape: &'a [usize],
    pub values: &'a [f32],
}

impl<'a> Maps<'a> {
    pub fn of(activation: &'a LayerActivation) -> Maps<'a> {
        Maps { shape: &activation.shape, values: &activation.values }
    }

    pub fn units(&self) -> usize {
        self.shape[0]
    }

    /// One channel's map (or a flat output's single value as a 1×1 map).
    pub fn map(&self, unit: usize) -> Heatmap {
        let per = self.values.len() / self.shape[0];
        let values = self.values[unit * per..(unit + 1) * per].to_vec();
        match self.shape {
            [_, h, w] => Heatmap::new(*w, *h, values),
            _ => Heatmap::new(1, 1, values),
        }
    }
}

/// The two activations the Activations pane compares: the reference model on the
/// clean digit, and the model under study on the triggered digit.
pub fn compared(
    data: &DigitData,
    reference: ModelKind,
    subject: ModelKind,
) -> Option<(&[LayerActivation], &[LayerActivation])> {
    Some((data.on_clean.get(reference)?.as_slice(), data.on_triggered.get(subject)?.as_slice()))
}

fn layer_maps<'a>(pair: (&'a [LayerActivation], &'a [LayerActivation]), layer: Layer) -> (Maps<'a>, Maps<'a>) {
    (Maps::of(&pair.0[layer.position()]), Maps::of(&pair.1[layer.position()]))
}

/// Subject-on-triggered minus reference-on-clean, per channel.
pub fn difference_maps((reference, subject): (Maps, Maps)) -> Vec<Heatmap> {
    (0..reference.units())
        .map(|u| {
            let (r, s) = (reference.map(u), subject.map(u));
            Heatmap::new(r.width, r.height, r.values.iter().zip(&s.values).map(|(a, b)| b - a).collect())
        })
        .collect()
}

/// The scale every difference map is drawn at (the largest change of any
/// channel), so the single Δ and the grid read the same.
pub fn difference_scale((reference, subject): (Maps, Maps)) -> f32 {
    reference.values.iter().zip(subject.values).map(|(a, b)| (b - a).abs()).fold(1e-12, f32::max)
}

/// The study's `difference_scale` for one layer.
pub fn layer_difference_scale(pair: (&[LayerActivation], &[LayerActivation]), layer: Layer) -> f32 {
    difference_scale(layer_maps(pair, layer))
}

/// An image (`Picture::of_image`), the two activation maps of `unit` and their
/// difference at the node's difference scale.
pub fn unit_pictures(image: Picture, pair: (Maps, Maps), unit: usize) -> [Picture; 4] {
    let (reference, subject) = (pair.0.map(unit), pair.1.map(unit));
    let scale = reference.max_abs().max(subject.max_abs());
    let diff = difference_maps(pair).swap_remove(unit);
    [
        image,
        Picture::of(&reference, Palette::Heat, scale),
        Picture::of(&subject, Palette::Heat, scale),
        Picture::of(&diff, Palette::Signed, difference_scale(pair)),
    ]
}

/// The digit with the trigger, the two activation maps, and their difference at
/// the layer's difference scale.
pub fn channel_pictures(
    data: &DigitData,
    pair: (&[LayerActivation], &[LayerActivation]),
    layer: Layer,
    unit: usize,
) -> [Picture; 4] {
    let side = (data.triggered_pixels.len() as f64).sqrt() as usize;
    let digit = Picture::of_image(&data.triggered_pixels, [1, side, side]);
    unit_pictures(digit, layer_maps(pair, layer), unit)
}

/// Every channel's difference map in a grid at one scale (zero grey, so a quiet
/// channel is neither the terminal's background nor a glare), the selected one framed.
pub fn difference_grid(pair: (Maps, Maps), unit: usize, columns: usize) -> Picture {
    let maps = difference_maps(pair);
    let tile = (maps[0].width, maps[0].height);
    let grid = Heatmap::tiled(&maps, columns);
    let mut picture = Picture::of(&grid, Palette::Signed, difference_scale(pair));
    picture.outline(Heatmap::tile_frame(unit, columns, tile));
    picture
}

/// The study's `difference_grid` for one layer.
pub fn grid_picture(
    pair: (&[LayerActivation], &[LayerActivation]),
    layer: Layer,
    unit: usize,
    columns: usize,
) -> Picture {
    difference_grid(layer_maps(pair, layer), unit, columns)
}

/// A ranked test image as a grey picture.
pub fn ranked_picture(image: &RankedImage, side: usize) -> Picture {
    Picture::of(&Heatmap::new(side, side, image.pixels.clone()), Palette::Grey, 1.0)
}

/// The loss points of each phase separately (at most `width` in all), so each
/// phase's segment can have its colour and its name in the legend.
pub fn loss_points_by_phase(losses: &[(Phase, f32)], width: usize) -> Vec<(Phase, Vec<(f64, f64)>)> {
    let bucket = losses.len().div_ceil(width.max(1)).max(1);
    let mut out: Vec<(Phase, Vec<(f64, f64)>)> = Vec::new();
    let mut start = 0;
    while start < losses.len() {
        let phase = losses[start].0;
        let end = losses[start..].iter().position(|(p, _)| *p != phase).map_or(losses.len(), |i| start + i);
        let points = losses[start..end]
            .chunks(bucket)
            .enumerate()
            .map(|(i, c)| ((start + i * bucket) as f64, c.iter().map(|(_, l)| *l as f64).sum::<f64>() / c.len() as f64))
            .collect();
        out.push((phase, points));
        start = end;
    }
    out
}

/// (x, clean), (x, poison), (x, rehab) series of the probe evaluations.
pub fn accuracy_series(state: &TrainState) -> [Vec<(f64, f64)>; 3] {
    [0, 1, 2].map(|i| state.evals.iter().map(|(x, p)| (*x, [p.clean_acc, p.poison_acc, p.rehab_acc][i])).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_are_laid_out_from_the_layer_shapes() {
        assert_eq!(slice_shape(Layer::Conv1), (1, 3, 3));
        assert_eq!(slice_shape(Layer::Conv2), (32, 3, 3));
        assert_eq!(slice_shape(Layer::Fc1), (64, 5, 5));
        assert_eq!(slice_shape(Layer::Fc2), (1, 4, 4));
        let fc2 = slices(Layer::Fc2, &[1.0; 16]);
        assert_eq!((fc2.len(), fc2[0].values.len()), (1, 16));
    }

    #[test]
    fn the_difference_grid_has_a_grey_zero_and_one_scale() {
        use crate::picture::signed;
        assert_eq!(signed(0.0), image::Rgb([128, 128, 128]));
        assert_eq!(signed(1.0), image::Rgb([255, 50, 30]));
        assert_eq!(signed(-1.0), image::Rgb([30, 100, 255]));
        let activation = |values: Vec<f32>| LayerActivation { layer: Layer::Conv1, shape: vec![2, 1, 1], values };
        let (reference, subject) = (vec![activation(vec![1.0, 0.0])], vec![activation(vec![1.5, -2.0])]);
        assert_eq!(layer_difference_scale((&reference, &subject), Layer::Conv1), 2.0);
    }

    #[test]
    fn each_phase_gets_its_own_loss_segment() {
        let losses: Vec<(Phase, f32)> =
            (0..10).map(|i| (if i < 6 { Phase::Clean } else { Phase::Poison }, i as f32)).collect();
        let by_phase = loss_points_by_phase(&losses, 5);
        assert_eq!(by_phase.len(), 2);
        assert_eq!(by_phase[0], (Phase::Clean, vec![(0.0, 0.5), (2.0, 2.5), (4.0, 4.5)]));
        assert_eq!(by_phase[1], (Phase::Poison, vec![(6.0, 6.5), (8.0, 8.5)]));
    }
}
