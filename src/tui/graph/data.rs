//! What crosses between the UI and the worker on a graph run: the graph's sites
//! (nodes with units) by module path, and plain numbers for the panes.

use crate::engine::ablation::AblationMode;
use crate::engine::lab::ModelKind;
use crate::engine::metrics::Metrics;
use crate::graph::units::UnitSet;

/// One node the panes show: its name (a PyTorch module path, or torch.fx's name
/// for a function call), what it computes and the shape of one image's output.
#[derive(Debug, Clone, PartialEq)]
pub struct Site {
    pub name: String,
    pub op: String,
    /// `[channels, height, width]`, or `[features]`.
    pub shape: Vec<i64>,
    /// The containers (stage, block…) it sits in, outermost first: `layer2`, `layer2.0`.
    pub containers: Vec<String>,
}

impl Site {
    /// Output channels (features of a flat output): what `NODE:UNITS` numbers.
    pub fn units(&self) -> usize {
        self.shape[0] as usize
    }

    /// `8×28×28`
    pub fn shape_text(&self) -> String {
        self.shape.iter().map(|d| d.to_string()).collect::<Vec<_>>().join("×")
    }
}

/// The graph as the worker opened it.
#[derive(Debug, Clone, PartialEq)]
pub struct GraphInfo {
    pub sites: Vec<Site>,
    /// Test images (per condition) the first answer to an ablation is measured on.
    pub sample: usize,
}

/// An ablation's metrics on the model under study: on the sample first, then on
/// the full test set.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct GraphEvaluation {
    pub set: UnitSet,
    pub mode: AblationMode,
    pub model: ModelKind,
    pub metrics: Metrics,
    /// Measured on the first `metrics.count` test images only.
    pub sample: bool,
    pub seconds: f64,
}

/// One unit's incoming weights in every saved model: `[inputs, kh, kw]` for a
/// convolution (`kh = kw = 1` for a linear layer's inputs).
#[derive(Debug, Clone, PartialEq)]
pub struct SiteWeights {
    pub site: String,
    /// `[units, inputs, kh, kw]`
    pub shape: [usize; 4],
    pub models: Vec<(ModelKind, Vec<f32>)>,
}

impl SiteWeights {
    /// One unit's weights in `model`, `inputs × kh × kw` values.
    pub fn unit(&self, model: ModelKind, unit: usize) -> Option<&[f32]> {
        let per = self.shape[1] * self.shape[2] * self.shape[3];
        let (_, w) = self.models.iter().find(|(k, _)| *k == model)?;
        w.get(unit * per..(unit + 1) * per)
    }
}

/// One test image and one site's output on it, clean and triggered, in every
/// saved model, with each model's prediction.
#[derive(Debug, Clone, PartialEq)]
pub struct SiteActivations {
    pub index: usize,
    pub label: u8,
    pub site: String,
    /// Raw pixels `[C, H, W]` of the clean and the triggered image.
    pub pixels: [Vec<f32>; 2],
    pub image_shape: [usize; 3],
    /// Per model: the site's output on the clean and the triggered image, and the
    /// class each is given.
    pub models: Vec<(ModelKind, [Vec<f32>; 2], [usize; 2])>,
}

impl SiteActivations {
    /// `model`'s outputs (clean, triggered) and the classes it gives them.
    pub fn of(&self, model: ModelKind) -> Option<(&[Vec<f32>; 2], [usize; 2])> {
        self.models.iter().find(|(k, ..)| *k == model).map(|(_, values, said)| (values, *said))
    }
}

/// A sweep of one site: each unit's metrics alone.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct GraphSweep {
    pub mode: AblationMode,
    pub rows: Vec<Metrics>,
}
