//! Trigger recovery without being told the trigger: Neural Cleanse (Wang et al.,
//! IEEE S&P 2019) as its reference code defines it. For every label, the smallest
//! mask (with a pattern) that sends clean images to that label; a backdoored label
//! needs a far smaller mask than the others, which the MAD anomaly index shows.
//!
//! Every label is optimised at once: each step stamps the same batch with all the
//! labels' masks and runs one forward of the stacked batch. The labels' losses are
//! summed; since each label's parameters reach only its own term, the gradient of
//! the sum is each label's own gradient, and Adam is element-wise, so the batched
//! problem is the separate problems side by side (a test checks it).

use super::classifier::Classifier;
use super::draw;
use super::host::floats;
use super::inputopt::{squash, stamp_all, unsquash};
use super::optim::Adam;
use crate::data::attack::Footprint;
use crate::data::dataset::Dataset;
use crate::data::loaded::{LoadedData, Split};
use serde::{Deserialize, Serialize};
use std::ops::ControlFlow;
use std::time::Instant;
use tch::{Device, Kind, Reduction, Tensor};

/// Cost multiplied by this after `patience` epochs at or above the success threshold.
const COST_UP: f64 = 2.0;
/// Cost divided by this after `patience` epochs below it (the reference: up^1.5).
const COST_DOWN: f64 = 2.828_427_124_746_190_3;
/// Early stop when the best L1 has not improved by 1 % for 2·patience epochs.
const EARLY_STOP_THRESHOLD: f64 = 0.99;
/// Images per held-out evaluation chunk (times the number of labels per forward).
const EVAL_CHUNK: i64 = 500;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CleanseConfig {
    /// Clean training images optimised over (the first N of the training split).
    pub images: usize,
    pub epochs: usize,
    pub batch_size: usize,
    /// Seeds the random start and the shuffling.
    pub seed: i64,
    /// Adam's learning rate (betas 0.5, 0.9 as in the reference).
    pub lr: f64,
    /// The L1 cost set once the attack first succeeds.
    pub init_cost: f64,
    /// Epochs before the cost is set, raised or lowered.
    pub patience: usize,
    /// Attack success (share of stamped images sent to the label) that counts as success.
    pub success_threshold: f64,
    /// Held-out test images the recovered triggers are scored on (the first N).
    pub test_images: usize,
    /// Labels to optimise (empty: every label).
    pub labels: Vec<u8>,
}

impl Default for CleanseConfig {
    fn default() -> Self {
        CleanseConfig {
            images: 2000,
            epochs: 10,
            batch_size: 32,
            seed: 0,
            lr: 0.1,
            init_cost: 1e-3,
            patience: 5,
            success_threshold: 0.99,
            test_images: 2000,
            labels: Vec::new(),
        }
    }
}

impl CleanseConfig {
    /// The labels optimised, in order, out of `classes`.
    pub fn labels(&self, classes: usize) -> Vec<u8> {
        if self.labels.is_empty() { (0..classes as u8).collect() } else { self.labels.clone() }
    }

    pub fn validate(&self, classes: usize) -> Result<(), String> {
        if self.images == 0 || self.epochs == 0 || self.batch_size == 0 || self.test_images == 0 {
            return Err("images, epochs, batch size and test images must each be at least 1".into());
        }
        if self.lr.is_nan() || self.lr <= 0.0 || self.init_cost < 0.0 || self.patience == 0 {
            return Err("the learning rate must be positive, the cost non-negative and patience ≥ 1".into());
        }
        if !(0.0..=1.0).contains(&self.success_threshold) {
            return Err(format!("success threshold {} is not within 0..=1", self.success_threshold));
        }
        let labels = self.labels(classes);
        if let Some(bad) = labels.iter().find(|&&l| l as usize >= classes) {
            return Err(format!("unknown label {bad}: the model has labels 0..={}", classes - 1));
        }
        let mut unique = labels.clone();
        unique.sort_unstable();
        unique.dedup();
        if unique.len() != labels.len() {
            return Err("a label is listed twice".into());
        }
        Ok(())
    }
}

/// The reference's schedule for one label's L1 cost, its best result and its
/// early stop, driven by each epoch's attack success and mean mask L1.
#[derive(Debug, Clone, PartialEq)]
pub struct CostSchedule {
    pub cost: f64,
    init_cost: f64,
    patience: usize,
    threshold: f64,
    set_counter: usize,
    up_counter: usize,
    down_counter: usize,
    up_flag: bool,
    down_flag: bool,
    /// Smallest mean L1 of an epoch that reached the threshold.
    pub best_l1: f64,
    early_stop_best: f64,
    early_stop_counter: usize,
}

/// What one epoch's end decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochVerdict {
    /// This epoch's mask is the best so far: keep it.
    pub improved: bool,
    /// The label is done (the reference's early stop).
    pub stop: bool,
}

impl CostSchedule {
    pub fn new(init_cost: f64, patience: usize, threshold: f64) -> CostSchedule {
        CostSchedule {
            cost: 0.0,
            init_cost,
            patience,
            threshold,
            set_counter: 0,
            up_counter: 0,
            down_counter: 0,
            up_flag: false,
            down_flag: false,
            best_l1: f64::INFINITY,
            early_stop_best: f64::INFINITY,
            early_stop_counter: 0,
        }
    }

    /// The reference's end-of-epoch bookkeeping, in its order.
    pub fn end_epoch(&mut self, success: f64, mean_l1: f64) -> EpochVerdict {
        let succeeded = success >= self.threshold;
        let improved = succeeded && mean_l1 < self.best_l1;
        if improved {
            self.best_l1 = mean_l1;
        }
        if self.best_l1.is_finite() {
            if self.best_l1 >= EARLY_STOP_THRESHOLD * self.early_stop_best {
                self.early_stop_counter += 1;
            } else {
                self.early_stop_counter = 0;
            }
        }
        self.early_stop_best = self.early_stop_best.min(self.best_l1);
        if self.down_flag && self.up_flag && self.early_stop_counter >= 2 * self.patience {
            return EpochVerdict { improved, stop: true };
        }
        if self.cost == 0.0 && succeeded {
            self.set_counter += 1;
            if self.set_counter >= self.patience {
                self.cost = self.init_cost;
                self.up_counter = 0;
                self.down_counter = 0;
                self.up_flag = false;
                self.down_flag = false;
            }
        } else {
            self.set_counter = 0;
        }
        if succeeded {
            self.up_counter += 1;
            self.down_counter = 0;
        } else {
            self.up_counter = 0;
            self.down_counter += 1;
        }
        if self.up_counter >= self.patience {
            self.up_counter = 0;
            self.cost *= COST_UP;
            self.up_flag = true;
        } else if self.down_counter >= self.patience {
            self.down_counter = 0;
            self.cost /= COST_DOWN;
            self.down_flag = true;
        }
        EpochVerdict { improved, stop: false }
    }
}

/// The MAD anomaly index of each L1 norm, one-sided as the reference flags:
/// (median − l1) / (1.4826 · MAD) for norms below the median, 0 otherwise.
pub fn anomaly_indices(l1: &[f64]) -> Vec<f64> {
    let middle = median(l1.to_vec());
    let mad: f64 = 1.4826 * median(l1.iter().map(|x| (x - middle).abs()).collect());
    l1.iter().map(|&x| if x < middle { (middle - x) / mad.max(f64::MIN_POSITIVE) } else { 0.0 }).collect()
}

/// A label is flagged as backdoored when its anomaly index exceeds this.
pub const FLAG_ABOVE: f64 = 2.0;

/// numpy's median: the mean of the two middle values for an even count.
fn median(mut values: Vec<f64>) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 { values[n / 2] } else { (values[n / 2 - 1] + values[n / 2]) / 2.0 }
}

/// How much of a recovered mask lies on the trigger we planted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TriggerOverlap {
    /// Share of the mask's mass inside the trigger's rows and columns ± 2.
    pub mass_share: f64,
    /// Of the mask's k strongest pixels (k = the trigger's lit pixels), the share
    /// that are lit trigger pixels.
    pub top_pixel_overlap: f64,
}

pub fn trigger_overlap(mask: &[f32], trigger: &Footprint, side: usize) -> TriggerOverlap {
    let lit = &trigger.lit;
    let near = |start: usize, i: usize| i + 2 >= start && i < start + trigger.size + 2;
    let total: f64 = mask.iter().map(|&v| v.abs() as f64).sum();
    let inside: f64 = mask
        .iter()
        .enumerate()
        .filter(|(i, _)| near(trigger.row, i / side) && near(trigger.col, i % side))
        .map(|(_, &v)| v.abs() as f64)
        .sum();
    let mut order: Vec<usize> = (0..mask.len()).collect();
    order.sort_by(|&a, &b| mask[b].total_cmp(&mask[a]).then(a.cmp(&b)));
    let hits = order.iter().take(lit.len()).filter(|i| lit.contains(i)).count();
    TriggerOverlap {
        mass_share: if total > 0.0 { inside / total } else { 0.0 },
        top_pixel_overlap: if lit.is_empty() { 0.0 } else { hits as f64 / lit.len() as f64 },
    }
}

/// One label's recovered trigger.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabelTrigger {
    pub label: u8,
    /// L1 norm of the kept mask (the sum of its H×W values in [0, 1]).
    pub l1: f64,
    /// Attack success of the kept trigger on held-out test images whose true label
    /// is not this one, in percent.
    pub success: f64,
    pub anomaly_index: f64,
    pub flagged: bool,
    /// Whether an epoch reached the success threshold (else the last mask is kept).
    pub reached_threshold: bool,
    /// Attack success on the optimisation images in the kept epoch, in percent.
    pub train_success: f64,
    pub epochs_run: usize,
    /// The mask (H×W) and the pattern (C×H×W; raw pixel values in [0, 1]), row-major.
    pub mask: Vec<f32>,
    pub pattern: Vec<f32>,
    /// Where the mask lies relative to the run's planted trigger (`None` when
    /// the attack is no patch: a blend, a sine or a warp has no place to score).
    #[serde(default)]
    pub on_trigger: Option<TriggerOverlap>,
}

impl LabelTrigger {
    /// `{:.0}`-formatted "62 % <on>", or that the attack leaves no patch to score
    /// the mask against (a blend, a sine or a warp).
    pub fn share_on_trigger(&self, on: &str) -> String {
        match &self.on_trigger {
            Some(o) => format!("{:.0}{on}", 100.0 * o.mass_share),
            None => "no patch trigger to score the mask on".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecoveryReport {
    /// Which model was examined (a model of the run, or a checkpoint path).
    pub model: String,
    /// Whose classes the labels are (saved recoveries before the choice: MNIST).
    #[serde(default)]
    pub dataset: Dataset,
    pub config: CleanseConfig,
    pub side: usize,
    pub labels: Vec<LabelTrigger>,
    /// Labels with an anomaly index above 2, most anomalous first.
    pub flagged: Vec<u8>,
    /// The planted trigger's pixels the overlaps are measured against.
    #[serde(default)]
    pub planted: Option<Footprint>,
    pub device: String,
    /// Wall time of the optimisation (all labels), and of the whole recovery.
    pub optimise_s: f64,
    pub total_s: f64,
}

impl RecoveryReport {
    /// The flagged label with the highest anomaly index.
    pub fn most_anomalous(&self) -> Option<&LabelTrigger> {
        self.flagged.first().and_then(|l| self.labels.iter().find(|t| t.label == *l))
    }
}

/// A snapshot while optimising, for live views.
#[derive(Debug, Clone, PartialEq)]
pub struct RecoveryProgress {
    pub epoch: usize,
    pub step: usize,
    pub total_steps: usize,
    pub labels: Vec<u8>,
    /// Per label: the current mask's L1, its cost, the last finished epoch's
    /// success in percent (None before the first epoch ends), and whether it stopped.
    pub l1: Vec<f64>,
    pub cost: Vec<f64>,
    pub success: Vec<Option<f64>>,
    pub stopped: Vec<bool>,
    /// Per label, the current mask (`side`² values) and pattern (C·`side`²).
    pub masks: Vec<Vec<f32>>,
    pub patterns: Vec<Vec<f32>>,
}

/// The batched optimisation state: every label's masks `[L, 1, H, W]` and
/// patterns `[L, C, H, W]` (tanh space), an Adam over each (element-wise, so
/// two Adams are one over both).
pub struct BatchedCleanse<'a> {
    net: &'a dyn Classifier,
    labels: Tensor,
    mask: Tensor,
    pattern: Tensor,
    adams: [Adam; 2],
}

/// What one batch's loss gave: the summed loss, and per label the images sent
/// to it and the mask L1 (as used in the loss).
struct BatchLoss {
    loss: Tensor,
    hits: Tensor,
    l1: Tensor,
}

impl<'a> BatchedCleanse<'a> {
    /// Starts from masks `[L, 1, H, W]` and patterns `[L, C, H, W]` given in [0, 1].
    pub fn new(net: &'a dyn Classifier, labels: &[u8], (mask0, pattern0): (&Tensor, &Tensor), lr: f64) -> Self {
        let device = net.device();
        let leaf = |v: &Tensor| unsquash(v).to_device(device).set_requires_grad(true);
        let (mask, pattern) = (leaf(mask0), leaf(pattern0));
        let labels = Tensor::from_slice(&labels.iter().map(|&l| l as i64).collect::<Vec<_>>()).to_device(device);
        let adams = [Adam::with_betas(&mask, lr, (0.5, 0.9)), Adam::with_betas(&pattern, lr, (0.5, 0.9))];
        BatchedCleanse { net, labels, mask, pattern, adams }
    }

    /// The current masks and patterns in [0, 1], `[L, 1, H, W]` and `[L, C, H, W]`.
    pub fn mask_and_pattern(&self) -> (Tensor, Tensor) {
        let _guard = tch::no_grad_guard();
        (squash(&self.mask), squash(&self.pattern))
    }

    /// The summed loss of a batch of raw images `[B, C, H, W]` with per-label costs `[L]`.
    fn loss(&self, raw: &Tensor, costs: &Tensor) -> BatchLoss {
        let (labels, batch) = (self.labels.size()[0], raw.size()[0]);
        let mask = squash(&self.mask);
        let logits = self.net.logits(&stamp_all(raw, &mask, &squash(&self.pattern)));
        let targets = self.labels.repeat_interleave_self_int(batch, 0, None);
        let ce = logits
            .cross_entropy_loss(&targets, None::<Tensor>, Reduction::None, -100, 0.0)
            .view([labels, batch])
            .mean_dim(1, false, Kind::Float);
        let l1 = mask.sum_dim_intlist([1i64, 2, 3].as_slice(), false, Kind::Float);
        let loss = (ce + costs * &l1).sum(Kind::Float);
        let _guard = tch::no_grad_guard();
        let hits =
            logits.argmax(1, false).eq_tensor(&targets).view([labels, batch]).sum_dim_intlist(1, false, Kind::Float);
        BatchLoss { loss, hits, l1: l1.detach() }
    }

    /// The loss's gradients with respect to the mask and the pattern parameters
    /// (tanh space) on a batch, without a step.
    pub fn gradients(&self, raw: &Tensor, costs: &Tensor) -> (Tensor, Tensor) {
        let mut grads = Tensor::run_backward(&[self.loss(raw, costs).loss], &[&self.mask, &self.pattern], false, false);
        let pattern = grads.remove(1);
        (grads.remove(0), pattern)
    }

    /// One step on a batch of raw images `[B, C, H, W]` with per-label costs `[L]`.
    /// Returns, per label, the images sent to the label and the mask L1 (both as
    /// used in this step's loss, before the update).
    pub fn step(&mut self, raw: &Tensor, costs: &Tensor) -> (Tensor, Tensor) {
        let BatchLoss { loss, hits, l1 } = self.loss(raw, costs);
        let grads = Tensor::run_backward(&[loss], &[&self.mask, &self.pattern], false, false);
        self.adams[0].step(&self.mask, &grads[0]);
        self.adams[1].step(&self.pattern, &grads[1]);
        (hits, l1)
    }
}

/// Random starts for every label of the model, drawn in label order (mask, then
/// pattern) after seeding: a label's start does not depend on which others run.
/// Masks are `[classes, 1, H, W]`, patterns `[classes, C, H, W]`.
fn random_starts(seed: i64, classes: usize, [channels, h, w]: [i64; 3]) -> (Tensor, Tensor) {
    tch::manual_seed(seed);
    let mut masks = Vec::new();
    let mut patterns = Vec::new();
    for _ in 0..classes {
        masks.push(draw::unit_uniform(&[1, h, w], Device::Cpu));
        patterns.push(draw::unit_uniform(&[channels, h, w], Device::Cpu));
    }
    (Tensor::stack(&masks, 0), Tensor::stack(&patterns, 0))
}

/// What a recovery returns: its report, or nothing when it was stopped.
pub enum RecoveryEnd {
    Done(Box<RecoveryReport>),
    Cancelled,
}

/// Steps between live snapshots (besides one at every epoch's end).
pub const PROGRESS_EVERY: usize = 16;

/// Each label's bookkeeping beside the batched optimisation.
struct Labels {
    labels: Vec<u8>,
    schedules: Vec<CostSchedule>,
    /// The best mask and pattern so far, with its epoch's training success.
    kept: Vec<Option<(Tensor, Tensor, f64)>>,
    stopped: Vec<bool>,
    epochs_run: Vec<usize>,
    last_success: Vec<Option<f64>>,
}

impl Labels {
    fn new(labels: Vec<u8>, cfg: &CleanseConfig) -> Labels {
        let n = labels.len();
        Labels {
            schedules: (0..n).map(|_| CostSchedule::new(cfg.init_cost, cfg.patience, cfg.success_threshold)).collect(),
            kept: (0..n).map(|_| None).collect(),
            stopped: vec![false; n],
            epochs_run: vec![0; n],
            last_success: vec![None; n],
            labels,
        }
    }

    fn costs(&self, device: Device) -> Tensor {
        Tensor::from_slice(&self.schedules.iter().map(|s| s.cost as f32).collect::<Vec<_>>()).to_device(device)
    }

    /// Runs each live label's schedule on its epoch results.
    fn end_epoch(&mut self, success: &[f32], mean_l1: &[f32], mask: &Tensor, pattern: &Tensor) {
        for i in 0..self.labels.len() {
            if self.stopped[i] {
                continue;
            }
            self.epochs_run[i] += 1;
            self.last_success[i] = Some(100.0 * success[i] as f64);
            let verdict = self.schedules[i].end_epoch(success[i] as f64, mean_l1[i] as f64);
            if verdict.improved {
                self.kept[i] = Some((mask.get(i as i64).copy(), pattern.get(i as i64).copy(), success[i] as f64));
            }
            self.stopped[i] = verdict.stop;
        }
    }

    fn snapshot(&self, state: &BatchedCleanse, epoch: usize, step: usize, total_steps: usize) -> RecoveryProgress {
        let (mask, pattern) = state.mask_and_pattern();
        let per_label = |t: &Tensor| (0..self.labels.len() as i64).map(|i| floats(&t.get(i))).collect();
        RecoveryProgress {
            epoch,
            step,
            total_steps,
            labels: self.labels.clone(),
            l1: l1_norms(&mask),
            cost: self.schedules.iter().map(|s| s.cost).collect(),
            success: self.last_success.clone(),
            stopped: self.stopped.clone(),
            masks: per_label(&mask),
            patterns: per_label(&pattern),
        }
    }

    /// The kept masks and patterns (`[L, H, W]` each), the last ones for a label
    /// that never reached the threshold, with each one's training success.
    fn finals(self, state: &BatchedCleanse) -> (Tensor, Tensor, Vec<f64>, Vec<bool>) {
        let (last_mask, last_pattern) = state.mask_and_pattern();
        let reached = self.kept.iter().map(Option::is_some).collect();
        let (mut masks, mut patterns, mut success) = (Vec::new(), Vec::new(), Vec::new());
        for (i, kept) in self.kept.into_iter().enumerate() {
            let (m, p, s) = kept.unwrap_or_else(|| {
                let s = self.last_success[i].unwrap_or(0.0) / 100.0;
                (last_mask.get(i as i64), last_pattern.get(i as i64), s)
            });
            masks.push(m);
            patterns.push(p);
            success.push(100.0 * s);
        }
        (Tensor::stack(&masks, 0), Tensor::stack(&patterns, 0), success, reached)
    }
}

fn l1_norms(masks: &Tensor) -> Vec<f64> {
    floats(&masks.sum_dim_intlist([1i64, 2, 3].as_slice(), false, Kind::Float)).into_iter().map(f64::from).collect()
}

/// Raw images `[N, C, H, W]` of `split`'s first `limit` examples, in the
/// classifier's input shape (one clear error when the dataset's differs).
fn raw_images(net: &dyn Classifier, split: &Split, limit: usize, dataset: Dataset) -> Result<Tensor, String> {
    let shape = net.input_shape();
    let have = split.shape.map(|d| d as i64);
    if have != shape {
        return Err(format!("the model takes {shape:?} images; {dataset} images are {have:?}"));
    }
    Ok(split.head(limit).raw_images(net.device()))
}

/// Runs Neural Cleanse on `net` for the configured labels over the first
/// `cfg.images` training images and scores the kept triggers on the first
/// `cfg.test_images` test images. `on_progress` gets a snapshot every
/// `PROGRESS_EVERY` steps and at each epoch's end; returning `Break` stops the
/// recovery, and nothing is returned.
pub fn recover(
    net: &dyn Classifier,
    model: &str,
    data: &LoadedData,
    planted: Option<&Footprint>,
    cfg: &CleanseConfig,
    on_progress: &mut dyn FnMut(&RecoveryProgress) -> ControlFlow<()>,
) -> Result<RecoveryEnd, String> {
    let classes = net.classes();
    cfg.validate(classes)?;
    let clock = Instant::now();
    let device = net.device();
    let raw = raw_images(net, &data.train, cfg.images, data.dataset)?;
    let shape = net.input_shape();
    let mut labels = Labels::new(cfg.labels(classes), cfg);
    let (mask0, pattern0) = random_starts(cfg.seed, classes, shape);
    let chosen = Tensor::from_slice(&labels.labels.iter().map(|&l| l as i64).collect::<Vec<_>>());
    let mut state = BatchedCleanse::new(
        net,
        &labels.labels,
        (&mask0.index_select(0, &chosen), &pattern0.index_select(0, &chosen)),
        cfg.lr,
    );
    let n = raw.size()[0];
    let batch = cfg.batch_size as i64;
    let steps_per_epoch = ((n + batch - 1) / batch) as usize;
    let total_steps = steps_per_epoch * cfg.epochs;
    let mut step = 0;
    let optimise_clock = Instant::now();
    for epoch in 0..cfg.epochs {
        if labels.stopped.iter().all(|&s| s) {
            break;
        }
        let order = draw::permutation(n, device);
        let costs = labels.costs(device);
        let mut hits = Tensor::zeros([labels.labels.len() as i64], (Kind::Float, device));
        let mut l1_sum = hits.zeros_like();
        for s in 0..steps_per_epoch as i64 {
            let len = batch.min(n - s * batch);
            let x = raw.index_select(0, &order.narrow(0, s * batch, len));
            let (h, l1) = state.step(&x, &costs);
            hits += h;
            l1_sum += l1;
            step += 1;
            if step % PROGRESS_EVERY == 0
                && step % steps_per_epoch != 0
                && on_progress(&labels.snapshot(&state, epoch, step, total_steps)).is_break()
            {
                return Ok(RecoveryEnd::Cancelled);
            }
        }
        let (mask, pattern) = state.mask_and_pattern();
        labels.end_epoch(&floats(&(hits / n as f64)), &floats(&(l1_sum / steps_per_epoch as f64)), &mask, &pattern);
        if on_progress(&labels.snapshot(&state, epoch, step, total_steps)).is_break() {
            return Ok(RecoveryEnd::Cancelled);
        }
    }
    let optimise_s = optimise_clock.elapsed().as_secs_f64();
    let label_list = labels.labels.clone();
    let epochs_run = labels.epochs_run.clone();
    let (masks, patterns, train_success, reached) = labels.finals(&state);
    let held_out = held_out_success(net, data, cfg.test_images, &label_list, &masks, &patterns)?;
    let l1 = l1_norms(&masks);
    let anomaly = anomaly_indices(&l1);
    let side = shape[2] as usize;
    let mut results: Vec<LabelTrigger> = label_list
        .iter()
        .enumerate()
        .map(|(i, &label)| {
            let mask = floats(&masks.get(i as i64));
            LabelTrigger {
                label,
                l1: l1[i],
                success: held_out[i],
                anomaly_index: anomaly[i],
                flagged: anomaly[i] > FLAG_ABOVE,
                reached_threshold: reached[i],
                train_success: train_success[i],
                epochs_run: epochs_run[i],
                on_trigger: planted.map(|p| trigger_overlap(&mask, p, side)),
                mask,
                pattern: floats(&patterns.get(i as i64)),
            }
        })
        .collect();
    let mut flagged: Vec<&LabelTrigger> = results.iter().filter(|t| t.flagged).collect();
    flagged.sort_by(|a, b| b.anomaly_index.total_cmp(&a.anomaly_index));
    let flagged = flagged.iter().map(|t| t.label).collect();
    results.sort_by_key(|t| t.label);
    Ok(RecoveryEnd::Done(Box::new(RecoveryReport {
        model: model.to_string(),
        dataset: data.dataset,
        config: cfg.clone(),
        side,
        labels: results,
        flagged,
        planted: planted.cloned(),
        device: super::device::describe(device),
        optimise_s,
        total_s: clock.elapsed().as_secs_f64(),
    })))
}

/// Per label, the percentage of the first `limit` test images whose true label
/// differs that the label's trigger sends to it.
pub fn held_out_success(
    net: &dyn Classifier,
    data: &LoadedData,
    limit: usize,
    labels: &[u8],
    masks: &Tensor,
    patterns: &Tensor,
) -> Result<Vec<f64>, String> {
    let _guard = tch::no_grad_guard();
    let device = net.device();
    let raw = raw_images(net, &data.test, limit, data.dataset)?;
    let truth = data.test.head(limit).label_tensor(device);
    let (masks, patterns) = (masks.to_device(device), patterns.to_device(device));
    let count = labels.len() as i64;
    let wanted = Tensor::from_slice(&labels.iter().map(|&l| l as i64).collect::<Vec<_>>()).to_device(device);
    let mut hits = Tensor::zeros([count], (Kind::Float, device));
    let mut eligible = Tensor::zeros([count], (Kind::Float, device));
    let n = raw.size()[0];
    let mut start = 0;
    while start < n {
        let len = EVAL_CHUNK.min(n - start);
        let x = stamp_all(&raw.narrow(0, start, len), &masks, &patterns);
        let predicted = net.logits(&x).argmax(1, false).view([count, len]);
        let others = truth.narrow(0, start, len).unsqueeze(0).ne_tensor(&wanted.unsqueeze(1));
        hits += predicted.eq_tensor(&wanted.unsqueeze(1)).logical_and(&others).sum_dim_intlist(1, false, Kind::Float);
        eligible += others.sum_dim_intlist(1, false, Kind::Float);
        start += len;
    }
    let (hits, eligible) = (floats(&hits), floats(&eligible));
    Ok(hits.iter().zip(&eligible).map(|(&h, &e)| if e > 0.0 { 100.0 * h as f64 / e as f64 } else { 0.0 }).collect())
}
