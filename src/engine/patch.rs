//! Activation patching: one unit's block output (the value the next layer reads)
//! replaced, image by image, by its value in another run — the clean twin
//! (denoise: is the unit necessary for the backdoor?), the triggered twin (noise:
//! is it sufficient?) or another model on the same image — and everything
//! downstream recomputed.
//!
//! As with ablations, the patch changes the next layer's pre-activation linearly,
//! Δpre = W_next[:, u] ⊛ (donor − actual), so the fast path corrects the cached
//! activations instead of running the network again, for every unit of a layer at
//! once. A twin differs from its image only where the trigger reaches, so for
//! denoise and noise conv1's correction is computed on those conv2 cells alone.
//! `reference_effect` is the slow, obvious path (a full forward per unit with the
//! block output overwritten) that tests hold the fast path to.

use super::ablation::unit_index;
use super::cache::ActivationCache;
use super::layer::Layer;
use super::metrics::Metrics;
use super::model::{self, Net};
use super::testset::{TestSet, chunk};
use serde::{Deserialize, Serialize};
use std::ops::{ControlFlow, Range};
use tch::{Kind, Tensor};

/// Where a patched unit's values come from, and which images run patched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Triggered images; the unit's output from the clean twin.
    #[default]
    Denoise,
    /// Clean images; the unit's output from the triggered twin.
    Noise,
    /// Every image; the unit's output from a donor model on the same image.
    Model,
}

impl Direction {
    pub const ALL: [Direction; 3] = [Direction::Denoise, Direction::Noise, Direction::Model];

    pub fn name(self) -> &'static str {
        match self {
            Direction::Denoise => "denoise",
            Direction::Noise => "noise",
            Direction::Model => "model",
        }
    }

    /// Which way the values flow, in words: every output names it, because users of
    /// patching tools keep confusing the two ways.
    pub fn describe(self) -> &'static str {
        match self {
            Direction::Denoise => "denoise: triggered images run, each unit's output taken from the clean twin",
            Direction::Noise => "noise: clean images run, each unit's output taken from the triggered twin",
            Direction::Model => "model: every image runs, each unit's output taken from the donor model",
        }
    }

    /// The patched rows of the `[2N]` test set, and the offset from a patched row
    /// to the row its values come from.
    pub fn rows(self, n: i64) -> (Range<i64>, i64) {
        match self {
            Direction::Denoise => (n..2 * n, -n),
            Direction::Noise => (0..n, n),
            Direction::Model => (0..2 * n, 0),
        }
    }
}

impl Direction {
    /// Where the patched values come from: `donor` for (and only for) `Model`,
    /// the receiver itself (on the twin images) otherwise.
    pub fn donor<'a, T>(self, receiver: &'a T, donor: Option<&'a T>) -> Result<&'a T, String> {
        match (self, donor) {
            (Direction::Model, Some(d)) => Ok(d),
            (Direction::Model, None) => Err("model ↔ model patching needs a donor model".into()),
            (_, Some(_)) => Err(format!("{self} patching takes no donor model")),
            (_, None) => Ok(receiver),
        }
    }
}

crate::named_enum!(Direction, "patching direction", "denoise, noise or model");

/// What is patched: every unit of `layer`, one at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Patch {
    pub layer: Layer,
    pub direction: Direction,
    /// Path patching: only the part of the unit's change that reaches this unit of
    /// the next layer; the rest of the next layer sees the unpatched value.
    pub to_unit: Option<usize>,
}

impl Patch {
    pub fn validate(&self) -> Result<(), String> {
        let Some(v) = self.to_unit else { return Ok(()) };
        let next = self.layer.next().ok_or_else(|| format!("{} has no next layer to patch a path into", self.layer))?;
        if v >= next.units() {
            return Err(format!("{next} has units 0..{}, not {v}", next.units() - 1));
        }
        Ok(())
    }

    /// `conv1 → conv2:47`, or just the layer.
    pub fn path_name(&self) -> String {
        match (self.to_unit, self.layer.next()) {
            (Some(v), Some(next)) => format!("{} → {next}:{v}", self.layer),
            _ => self.layer.to_string(),
        }
    }
}

/// What a patch did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PatchEffect {
    /// The ablation metrics over the whole test set, the patched half (or both
    /// halves, model ↔ model) as patched.
    pub metrics: Metrics,
    /// Mean logit(target) − logit(true label) over the patched images whose label
    /// is not the target.
    pub logit_diff: f64,
    /// Share (%) of those images predicted as the target.
    pub target_rate: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PatchRow {
    pub layer: Layer,
    pub unit: usize,
    pub direction: Direction,
    /// The next layer's unit of a path patch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to_unit: Option<usize>,
    #[serde(flatten)]
    pub effect: PatchEffect,
}

/// Units patched per pass: progress (and cancellation) several times a second.
const UNIT_BATCH: usize = 16;
/// Floats the largest intermediate of one chunk may hold.
const CHUNK_FLOATS: i64 = 16 << 20;

/// Patches every unit of a layer on the fast path.
pub struct Patcher<'a> {
    receiver: &'a ActivationCache,
    /// The receiver itself for denoise and noise.
    donor: &'a ActivationCache,
    test: &'a TestSet,
    patch: Patch,
    rows: Range<i64>,
    offset: i64,
    /// The receiver's unpatched predictions `[2N]`.
    baseline: Tensor,
}

impl<'a> Patcher<'a> {
    /// `donor` is required for (and only for) `Direction::Model`.
    pub fn new(
        receiver: &'a ActivationCache,
        donor: Option<&'a ActivationCache>,
        test: &'a TestSet,
        patch: Patch,
    ) -> Result<Patcher<'a>, String> {
        patch.validate()?;
        let donor = patch.direction.donor(receiver, donor)?;
        let (rows, offset) = patch.direction.rows(test.len() as i64);
        let baseline = receiver.logits.argmax(1, false);
        Ok(Patcher { receiver, donor, test, patch, rows, offset, baseline })
    }

    /// The receivers unpatched.
    pub fn baseline(&self) -> PatchEffect {
        let logits = self.receiver.logits.narrow(0, self.rows.start, self.rows.end - self.rows.start);
        effect(self.test, &self.baseline, self.rows.clone(), &logits)
    }

    /// Every unit of the layer; `progress(done, total)` may stop early with `Break`.
    pub fn run(&self, mut progress: impl FnMut(usize, usize) -> ControlFlow<()>) -> Vec<PatchRow> {
        let _guard = tch::no_grad_guard();
        let layer = self.patch.layer;
        let mut rows = Vec::with_capacity(layer.units());
        for batch in (0..layer.units()).collect::<Vec<_>>().chunks(UNIT_BATCH) {
            let logits = self.patched_logits(batch); // [R, U, 10]
            for (k, &unit) in batch.iter().enumerate() {
                let effect = effect(self.test, &self.baseline, self.rows.clone(), &logits.select(1, k as i64));
                rows.push(PatchRow {
                    layer,
                    unit,
                    direction: self.patch.direction,
                    to_unit: self.patch.to_unit,
                    effect,
                });
            }
            if progress(rows.len(), layer.units()).is_break() {
                break;
            }
        }
        rows
    }

    /// Logits `[R, U, 10]` of the patched rows with each of `units` patched alone.
    fn patched_logits(&self, units: &[usize]) -> Tensor {
        let index = unit_index(units, self.receiver.device());
        let per_image = self.floats_per_image(units.len() as i64);
        let step = (CHUNK_FLOATS / per_image).clamp(1, chunk(self.receiver.device()));
        let chunks: Vec<Tensor> = (self.rows.start..self.rows.end)
            .step_by(step as usize)
            .map(|start| {
                let len = step.min(self.rows.end - start);
                match self.patch.layer {
                    Layer::Conv1 => self.conv1(start, len, &index),
                    Layer::Conv2 => self.conv2(start, len, &index),
                    Layer::Fc1 => self.fc1(start, len, &index),
                    Layer::Fc2 => self.fc2(start, len, &index),
                }
            })
            .collect();
        Tensor::cat(&chunks, 0)
    }

    /// The largest intermediate per image (conv1's corrected conv2 pre-activation).
    fn floats_per_image(&self, units: i64) -> i64 {
        let [rows, cols] = self.conv1_region();
        let next = self.next_units();
        (units * next * 4 * (rows.len() * cols.len()) as i64).max(Layer::Conv2.output_shape().iter().product())
    }

    /// Units of the next layer the change reaches: one for a path patch.
    fn next_units(&self) -> i64 {
        match (self.patch.to_unit, self.patch.layer.next()) {
            (Some(_), _) => 1,
            (None, Some(next)) => next.units() as i64,
            (None, None) => 1,
        }
    }

    /// Keeps only the path's unit along `dim` of a next-layer tensor.
    fn on_path(&self, t: Tensor, dim: i64) -> Tensor {
        match self.patch.to_unit {
            Some(v) => t.narrow(dim, v as i64, 1),
            None => t,
        }
    }

    /// Pooled conv2 cells (rows, columns) a conv1 patch can change: where the twins
    /// differ for denoise and noise, everywhere for model ↔ model.
    fn conv1_region(&self) -> [Range<usize>; 2] {
        match self.patch.direction {
            Direction::Model => {
                let side = Layer::Conv2.output_shape()[1] as usize;
                [0..side, 0..side]
            }
            _ => self.receiver.trigger_cells.clone(),
        }
    }

    /// fc1 pre-activation `[B, U, 16]` → logits `[B, U, 10]`.
    fn logits_from_pre3(&self, pre3: Tensor) -> Tensor {
        self.receiver.net.block(Layer::Fc2, &pre3.relu())
    }

    fn conv1(&self, start: i64, len: i64, index: &Tensor) -> Tensor {
        let (r, d) = (self.receiver, self.donor);
        let u = index.size()[0];
        let [cell_rows, cell_cols] = self.conv1_region();
        if cell_rows.is_empty() || cell_cols.is_empty() {
            return r.logits.narrow(0, start, len).unsqueeze(1).expand([len, u, -1], false);
        }
        let (rs, rl, cs, cl) =
            (cell_rows.start as i64, cell_rows.len() as i64, cell_cols.start as i64, cell_cols.len() as i64);
        // A pooled conv2 cell q reads pooled conv1 rows 2q..2q+4, which read input
        // rows 4q..4q+6.
        let crop =
            |row: i64| self.test.inputs.narrow(0, row, len).narrow(2, 4 * rs, 4 * rl + 6).narrow(3, 4 * cs, 4 * cl + 6);
        let h1 = |net: &Net, x: &Tensor| {
            let (w, b) =
                (net.weight(Layer::Conv1).index_select(0, index), net.bias(Layer::Conv1).index_select(0, index));
            model::block(Layer::Conv1, x, &w, &b)
        };
        let change = h1(&d.net, &crop(start + self.offset)) - h1(&r.net, &crop(start)); // [B, U, 2rl+2, 2cl+2]
        // Each unit's change convolved with its own slice of conv2's kernels, as one
        // batched product over its 3×3 patches (a grouped convolution was slower).
        let taps = self.on_path(r.net.weight(Layer::Conv2).index_select(1, index), 0); // [O, U, 3, 3]
        let o = taps.size()[0];
        let patches = change.contiguous().im2col([3, 3], [1, 1], [0, 0], [1, 1]).view([len, u, 9, -1]);
        let pre2_change = Tensor::einsum("bukl,ouk->buol", &[patches, taps.view([o, u, 9])], None::<i64>);
        let window = |t: &Tensor, side: i64| {
            let t = t.narrow(1, side * rs, side * rl).narrow(2, side * cs, side * cl);
            self.on_path(t.permute([0, 3, 1, 2]), 1).unsqueeze(1) // [B, 1, O, rows, cols]
        };
        let pre2 = pre2_change.view([len, u, o, 2 * rl, 2 * cl]) + window(&r.pre2_rows(start, len), 2);
        let h2_change = pool_relu(&pre2) - window(&r.h2().narrow(0, start, len), 1); // [B, U, O, rl, cl]
        let fc1 = r.fc1_weight.view([16, 5, 5, 64]).narrow(1, rs, rl).narrow(2, cs, cl).permute([0, 3, 1, 2]);
        let fc1 = self.on_path(fc1, 1).reshape([16, o * rl * cl]);
        let pre3 =
            r.pre3.narrow(0, start, len).unsqueeze(1) + h2_change.reshape([len, u, o * rl * cl]).matmul(&fc1.tr());
        self.logits_from_pre3(pre3)
    }

    fn conv2(&self, start: i64, len: i64, index: &Tensor) -> Tensor {
        let (r, d) = (self.receiver, self.donor);
        let h2 = |c: &ActivationCache, row: i64| c.h2().narrow(0, row, len).view([len, 25, 64]).index_select(2, index);
        let change = h2(d, start + self.offset) - h2(r, start); // [B, 25, U]
        let fc1 = r.fc1_weight.view([16, 25, 64]).index_select(2, index); // [16, 25, U]
        let fc1 = match self.patch.to_unit {
            Some(v) => fc1 * one_hot(16, v, r).view([16, 1, 1]),
            None => fc1,
        };
        let pre3 =
            r.pre3.narrow(0, start, len).unsqueeze(1) + Tensor::einsum("bcu,kcu->buk", &[change, fc1], None::<i64>);
        self.logits_from_pre3(pre3)
    }

    fn fc1(&self, start: i64, len: i64, index: &Tensor) -> Tensor {
        let (r, d) = (self.receiver, self.donor);
        let h3 = |c: &ActivationCache, row: i64| c.pre3.narrow(0, row, len).relu().index_select(1, index);
        let change = h3(d, start + self.offset) - h3(r, start); // [B, U]
        let fc2 = r.net.weight(Layer::Fc2).detach().index_select(1, index).tr(); // [U, 10]
        let fc2 = match self.patch.to_unit {
            Some(v) => fc2 * one_hot(10, v, r).view([1, 10]),
            None => fc2,
        };
        r.logits.narrow(0, start, len).unsqueeze(1) + change.unsqueeze(2) * fc2.unsqueeze(0)
    }

    fn fc2(&self, start: i64, len: i64, index: &Tensor) -> Tensor {
        let (r, d) = (self.receiver, self.donor);
        let own = r.logits.narrow(0, start, len);
        let change = d.logits.narrow(0, start + self.offset, len) - &own; // [B, 10]
        let chosen = Tensor::eye(10, (Kind::Float, r.device())).index_select(0, index); // [U, 10]
        own.unsqueeze(1) + change.unsqueeze(1) * chosen.unsqueeze(0)
    }
}

fn one_hot(n: i64, at: usize, on: &ActivationCache) -> Tensor {
    Tensor::eye(n, (Kind::Float, on.device())).get(at as i64)
}

/// 2×2 max pooling then ReLU over the last two dimensions (both even).
fn pool_relu(t: &Tensor) -> Tensor {
    let s = t.size();
    let (h, w) = (s[s.len() - 2], s[s.len() - 1]);
    let mut shape = s[..s.len() - 2].to_vec();
    shape.extend([h / 2, 2, w / 2, 2]);
    let windows = t.contiguous().view(shape.as_slice());
    let corner = |r: i64, c: i64| windows.select(-1, c).select(-2, r);
    corner(0, 0).maximum(&corner(0, 1)).maximum(&corner(1, 0)).maximum(&corner(1, 1)).relu()
}

/// The effect of a patch from the patched rows' logits `[R, 10]`; the other rows
/// keep their `baseline` predictions.
pub fn effect(test: &TestSet, baseline: &Tensor, rows: Range<i64>, logits: &Tensor) -> PatchEffect {
    let len = rows.end - rows.start;
    let predicted = logits.argmax(1, false);
    let all = baseline.copy();
    all.narrow(0, rows.start, len).copy_(&predicted);
    let n = test.len() as i64;
    let labels: Vec<i64> = (rows.start..rows.end).map(|r| test.labels[(r % n) as usize] as i64).collect();
    let labels = Tensor::from_slice(&labels).to_device(logits.device());
    let targets = test.relabel.tensor(&labels);
    let counted = labels.ne_tensor(&targets);
    let count = f64::try_from(counted.sum(Kind::Float)).unwrap_or(0.0).max(1.0);
    let diff = logits.gather(1, &targets.unsqueeze(1), false) - logits.gather(1, &labels.unsqueeze(1), false);
    let diff = diff.squeeze_dim(1);
    let logit_diff = f64::try_from((diff * counted.to_kind(Kind::Float)).sum(Kind::Double)).unwrap_or(0.0) / count;
    let hits = predicted.eq_tensor(&targets).logical_and(&counted).sum(Kind::Float);
    PatchEffect {
        metrics: test.metrics(&all),
        logit_diff,
        target_rate: 100.0 * f64::try_from(hits).unwrap_or(0.0) / count,
    }
}

/// The slow, obvious path: per unit, the receiver's full forward over the patched
/// rows with its block output at the layer overwritten by the donor's (the donor
/// network run on the donor images, once per layer, as a hook-based script caches
/// it), and for a path patch the next layer computed twice and only the path's
/// unit taken from the patched run.
pub struct ReferencePatch<'a> {
    receiver: &'a Net,
    test: &'a TestSet,
    patch: Patch,
    rows: Range<i64>,
    baseline: Tensor,
    /// The donor's block output at the layer for each patched row.
    donor_values: Tensor,
}

impl<'a> ReferencePatch<'a> {
    pub fn new(receiver: &'a Net, donor: &Net, test: &'a TestSet, patch: Patch) -> ReferencePatch<'a> {
        let _guard = tch::no_grad_guard();
        let (rows, offset) = patch.direction.rows(test.len() as i64);
        let donor_images = test.inputs.narrow(0, rows.start + offset, rows.end - rows.start);
        let donor_values = Tensor::cat(
            &donor_images
                .split(chunk(test.device()), 0)
                .iter()
                .map(|x| {
                    Layer::ALL[..=patch.layer.position()].iter().fold(x.shallow_clone(), |h, &l| donor.block(l, &h))
                })
                .collect::<Vec<_>>(),
            0,
        );
        let baseline = test.predict_with(|x| receiver.forward(x));
        ReferencePatch { receiver, test, patch, rows, baseline, donor_values }
    }

    pub fn effect(&self, unit: usize) -> PatchEffect {
        let _guard = tch::no_grad_guard();
        let (receiver, patch) = (self.receiver, &self.patch);
        let index = unit_index(&[unit], receiver.device());
        let mut logits = Vec::new();
        let step = chunk(receiver.device());
        for start in (self.rows.start..self.rows.end).step_by(step as usize) {
            let len = step.min(self.rows.end - start);
            let mut h = self.test.inputs.narrow(0, start, len);
            let mut patched: Option<Tensor> = None;
            for layer in Layer::ALL {
                let mut out = receiver.block(layer, &h);
                if let Some(p) = patched.take() {
                    // The path's unit from the patched input, the others from the unpatched one.
                    let from_patch = receiver.block(layer, &p);
                    let v = patch.to_unit.expect("only a path patch keeps a patched input") as i64;
                    out.narrow(1, v, 1).copy_(&from_patch.narrow(1, v, 1));
                }
                if layer == patch.layer {
                    let donor = self.donor_values.narrow(0, start - self.rows.start, len);
                    let mut replaced = out.copy();
                    let _ = replaced.index_copy_(1, &index, &donor.index_select(1, &index));
                    match patch.to_unit {
                        Some(_) => patched = Some(replaced),
                        None => out = replaced,
                    }
                }
                h = out;
            }
            logits.push(h);
        }
        effect(self.test, &self.baseline, self.rows.clone(), &Tensor::cat(&logits, 0))
    }
}
