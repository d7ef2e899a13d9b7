//! The study's three training phases: clean, poison, rehab.

use super::backprop::{Backprop, cross_entropy_gradient};
use super::draw;
use super::model::Net;
use super::optim::{Adam, Proximity};
use super::poisoned_set::PoisonedSet;
use super::testset::TestSet;
use crate::data::attack::Attack;
use crate::data::attack::images::RawTrigger;
use crate::data::attack::poison::Relabel;
use crate::data::dataset::{Dataset, ImageFormat};
use crate::data::loaded::LoadedData;
use crate::data::loaded::Split;
use crate::data::trigger::{Stamp, TriggerConfig};
use serde::{Deserialize, Serialize};
use std::ops::ControlFlow;
use std::time::Instant;
use tch::{Device, Kind, Tensor};

/// Steps between progress reports (losses are read back from the device in batches).
pub(crate) const REPORT_EVERY: usize = 25;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TrainConfig {
    /// Seeds libtorch's generator (initialisation and shuffling).
    pub seed: i64,
    /// Epochs in each phase.
    pub epochs: usize,
    pub batch_size: usize,
    /// Adam's learning rate.
    pub lr: f64,
    /// λ of the proximity regulariser λ·mean|θ − θ_start| in the poison phase.
    pub lambda_poison: f64,
    /// The same in the rehab phase.
    pub lambda_rehab: f64,
    /// Share of each batch that gets the trigger (the first ⌊f·batch⌋ examples).
    pub poison_fraction: f64,
    /// Steps between evaluations on the probe subset during poison and rehab.
    pub eval_every: usize,
    /// Test images in that probe subset.
    pub eval_subset: usize,
    pub trigger: TriggerConfig,
    /// The dataset trained on (runs saved before there was a choice are MNIST's).
    #[serde(default)]
    pub dataset: Dataset,
    /// The backdoor planted (runs saved before there was a choice: the study's,
    /// `trigger`). `trigger.target` is its target either way.
    #[serde(default)]
    pub attack: Attack,
    /// All-to-all: a triggered image of class y is taught y + 1 (mod classes).
    #[serde(default)]
    pub all_to_all: bool,
    /// BackdoorBench's poisoning: this share of the training set carries the
    /// trigger, chosen once (seeded) and recorded; `None`: the study's
    /// `poison_fraction` of every batch.
    #[serde(default)]
    pub poison_ratio: Option<f64>,
    /// The images' shape, classes and normalisation where the files set them
    /// (GTSRB, folders), so every later command uses the numbers training used;
    /// `None`: the dataset's own (`Dataset::format`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<ImageFormat>,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            seed: 0,
            epochs: 1,
            batch_size: 32,
            lr: 1e-3,
            lambda_poison: 1000.0,
            lambda_rehab: 500.0,
            poison_fraction: 0.5,
            eval_every: 100,
            eval_subset: 1000,
            trigger: TriggerConfig::default(),
            dataset: Dataset::Mnist,
            attack: Attack::Study,
            all_to_all: false,
            poison_ratio: None,
            format: None,
        }
    }
}

impl TrainConfig {
    /// The study's recipe on `dataset` (its own trigger amplitude), with BadNets on
    /// datasets the study's trigger does not fit.
    pub fn for_dataset(dataset: Dataset) -> TrainConfig {
        let config = TrainConfig { trigger: TriggerConfig::for_dataset(dataset), dataset, ..TrainConfig::default() };
        if dataset.is_study_shaped() {
            return config;
        }
        // The study's trigger is for 28×28 grey images: BackdoorBench's BadNets
        // (3×3 white, target 0, 10 % of the training set) everywhere else.
        TrainConfig {
            attack: Attack::Badnets(Default::default()),
            trigger: TriggerConfig { target: 0, ..config.trigger },
            poison_ratio: Some(0.1),
            lambda_poison: 0.0,
            ..config
        }
    }

    /// The images the run's networks take: the recorded format, else the dataset's.
    pub fn image_format(&self) -> ImageFormat {
        self.format.unwrap_or_else(|| self.dataset.format())
    }

    /// Records `data`'s format when its files set it (GTSRB, folders).
    pub fn adopt_format(&mut self, data: &LoadedData) {
        if data.dataset.format_is_read() {
            self.format = Some(data.format());
        }
    }
}

impl TrainConfig {
    pub fn validate(&self) -> Result<(), String> {
        let format = self.image_format();
        if self.attack == Attack::Study {
            if !self.dataset.is_study_shaped() {
                return Err(format!(
                    "the study's trigger is added to 28×28 grey images; {} needs --attack badnets, blended, sig \
                     or wanet",
                    self.dataset
                ));
            }
            self.trigger.validate()?;
        } else if usize::from(self.trigger.target) >= format.classes {
            return Err(format!("target {} is not a class 0..={}", self.trigger.target, format.classes - 1));
        }
        if self.epochs == 0 || self.batch_size == 0 || self.eval_every == 0 {
            return Err("epochs, batch size and eval interval must be at least 1".into());
        }
        if !(0.0..=1.0).contains(&self.poison_fraction) {
            return Err(format!("poison fraction {} is not within 0..=1", self.poison_fraction));
        }
        if let Some(ratio) = self.poison_ratio
            && !(0.0..=1.0).contains(&ratio)
        {
            return Err(format!("poison ratio {ratio} is not within 0..=1"));
        }
        if self.clean_label() && self.poison_ratio.is_none() {
            return Err("a clean-label attack poisons a share of the target class: give --poison-ratio".into());
        }
        let [c, h, w] = format.shape;
        self.attack.validate([c as usize, h as usize, w as usize])?;
        if self.lr.is_nan() || self.lr <= 0.0 || self.lambda_poison < 0.0 || self.lambda_rehab < 0.0 {
            return Err("the learning rate must be positive and λ non-negative".into());
        }
        Ok(())
    }
}

impl TrainConfig {
    /// What a triggered image is taught and scored against.
    pub fn relabel(&self) -> Relabel {
        if self.all_to_all {
            Relabel::Next { classes: self.image_format().classes as u8 }
        } else {
            Relabel::To { target: self.trigger.target }
        }
    }

    /// Whether poisoned images keep their labels (SIG's clean-label mode).
    pub fn clean_label(&self) -> bool {
        matches!(&self.attack, Attack::Sig(sig) if sig.clean_label)
    }

    /// The pixels the run's attack sets, if it is a patch (what a recovered
    /// mask's overlap is scored against); `None` for blends, sines and warps.
    pub fn footprint(&self) -> Option<crate::data::attack::Footprint> {
        let [_, h, w] = self.image_format().shape;
        match self.attack {
            Attack::Study => Some(self.trigger.footprint()),
            _ => self.attack.patch_footprint(h as usize, w as usize),
        }
    }

    /// The run's trigger as applied to normalised images on `device`.
    pub fn stamp(&self, device: Device) -> Stamp {
        let format = self.image_format();
        assert!(
            self.attack.has_image_function(),
            "the {} attack has no image function: TrainArgs::config refuses to train with it",
            self.attack.name()
        );
        match RawTrigger::new(&self.attack, format.shape.map(|d| d as usize), device) {
            Some(trigger) => Stamp::Raw { trigger, normalisation: format.normalisation },
            None => Stamp::Add(self.trigger.mask_tensor(device)),
        }
    }
}

impl TrainConfig {
    /// Refuses a training set smaller than one batch per class (batch size × classes):
    /// an epoch of it is under ten steps, too few for ten classes, let alone a
    /// backdoor, and the probe found `--train-limit 1` saving three chance-level
    /// models with exit 0, which every analysis would then study as the run's.
    pub fn check_training_images(&self, images: usize) -> Result<(), String> {
        let classes = self.image_format().classes;
        let least = self.batch_size * classes;
        if images < least {
            return Err(format!(
                "{images} training images are fewer than one batch per class ({} × {classes} = {least}): \
                 the models could not learn; use at least {least} (--train-limit) or a smaller --batch-size",
                self.batch_size
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Clean,
    Poison,
    Rehab,
    /// Neural Cleanse's mitigation: like rehab, but with a recovered trigger
    /// (`unlearn.rs`); not one of the study's phases, so not in `ALL`.
    Unlearn,
}

impl Phase {
    /// The study's pipeline, in order.
    pub const ALL: [Phase; 3] = [Phase::Clean, Phase::Poison, Phase::Rehab];

    pub fn name(self) -> &'static str {
        match self {
            Phase::Clean => "clean",
            Phase::Poison => "poison",
            Phase::Rehab => "rehab",
            Phase::Unlearn => "unlearn",
        }
    }

    /// The proximity regulariser's λ (unlearning takes rehab's: it is the
    /// defender's rehab).
    pub fn lambda(self, cfg: &TrainConfig) -> f64 {
        match self {
            Phase::Clean => 0.0,
            Phase::Poison => cfg.lambda_poison,
            Phase::Rehab | Phase::Unlearn => cfg.lambda_rehab,
        }
    }

    /// Each phase seeds its own shuffling, so a phase can be rerun alone.
    pub(crate) fn seed(self, cfg: &TrainConfig) -> i64 {
        cfg.seed.wrapping_mul(3).wrapping_add(self as i64)
    }
}

crate::named_enum!(Phase, "phase", "clean, poison or rehab");

/// Training images and labels on the training device.
pub struct TrainData {
    pub images: Tensor,
    pub labels: Tensor,
    /// BackdoorBench's poisoning (`--poison-ratio`), made once; `None`: batches
    /// are poisoned as they are drawn (the study's `--poison-fraction`).
    pub poisoned: Option<PoisonedSet>,
}

impl TrainData {
    /// The split as it is, every batch poisoned as it is drawn.
    pub fn new(split: &Split, device: Device) -> TrainData {
        TrainData { images: split.images(device), labels: split.label_tensor(device), poisoned: None }
    }

    /// The split with the run's poisoning: a fixed poisoned set when the recipe
    /// asks for a share of the training set.
    pub fn for_run(split: &Split, cfg: &TrainConfig, device: Device) -> TrainData {
        let mut data = TrainData::new(split, device);
        if let Some(ratio) = cfg.poison_ratio {
            data.poisoned = Some(PoisonedSet::new(&data, &split.labels, ratio, cfg, &cfg.stamp(device)));
        }
        data
    }

    pub fn len(&self) -> usize {
        self.labels.size()[0] as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Progress of a phase, sent every few steps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepReport {
    pub phase: Phase,
    pub epoch: usize,
    /// Steps done in this phase, across epochs.
    pub step: usize,
    pub total_steps: usize,
    /// Total loss (cross-entropy + regulariser) of each step since the last report.
    pub losses: Vec<f32>,
    /// The regulariser's part of the last step's loss.
    pub last_regulariser: f32,
    /// Accuracy on the training batches since the last report, in percent.
    pub batch_acc: f64,
    pub images_per_sec: f64,
    pub elapsed_s: f64,
}

impl StepReport {
    pub fn eta_s(&self) -> f64 {
        if self.step == 0 { 0.0 } else { self.elapsed_s / self.step as f64 * (self.total_steps - self.step) as f64 }
    }
}

/// The three metrics on the probe subset at one step of poison or rehab training.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalPoint {
    pub phase: Phase,
    pub step: usize,
    pub clean_acc: f64,
    pub poison_acc: f64,
    pub rehab_acc: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum TrainEvent {
    Step(StepReport),
    Eval(EvalPoint),
}

/// One line of a run's `metrics.jsonl`: a step's loss, or a probe evaluation. The
/// run writes these, and the explorer and the tests read them back as this type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum LogLine {
    Step { phase: Phase, step: usize, loss: f32 },
    Eval(EvalPoint),
}

impl LogLine {
    pub fn phase(&self) -> Phase {
        match self {
            LogLine::Step { phase, .. } => *phase,
            LogLine::Eval(point) => point.phase,
        }
    }

    /// A training event as its lines (a step report holds many steps' losses).
    pub fn of(event: &TrainEvent) -> Vec<LogLine> {
        match event {
            TrainEvent::Step(r) => {
                let first = r.step + 1 - r.losses.len();
                let phase = r.phase;
                r.losses.iter().enumerate().map(|(i, &loss)| LogLine::Step { phase, step: first + i, loss }).collect()
            }
            TrainEvent::Eval(point) => vec![LogLine::Eval(point.clone())],
        }
    }

    /// Every line of a log that parses; a line that does not (a write cut short
    /// by a crash) is skipped.
    pub fn parse_all(text: &str) -> Vec<LogLine> {
        text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
    }
}

/// What a phase ended with.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PhaseEnd {
    Completed,
    Cancelled,
    /// The loss became non-finite or rose far above its running level.
    Diverged {
        step: usize,
        loss: f32,
    },
}

impl PhaseEnd {
    /// The error a diverged phase is reported as (`None` otherwise).
    pub fn divergence(&self, phase: Phase, lr: f64) -> Option<String> {
        match *self {
            PhaseEnd::Diverged { step, loss } => Some(format!(
                "the {phase} phase diverged at step {step}: loss {loss:.4e} with learning rate {lr}; \
                 nothing of this phase was saved (earlier phases are kept); try a smaller --lr"
            )),
            _ => None,
        }
    }
}

/// A reported loss this many times its running level (or above ln 10, chance for
/// ten classes, times this) counts as divergence.
const DIVERGED_FACTOR: f32 = 100.0;

/// Watches the reported losses for divergence: a non-finite loss, or one far above
/// the running mean of the losses reported before it.
#[derive(Default)]
pub(crate) struct Divergence {
    level: Option<f32>,
}

impl Divergence {
    /// The first diverging loss of a report, if any; otherwise updates the level.
    pub(crate) fn check(&mut self, losses: &[f32]) -> Option<f32> {
        let ceiling = DIVERGED_FACTOR * self.level.unwrap_or(0.0).max(std::f32::consts::LN_10);
        if let Some(&bad) = losses.iter().find(|l| !l.is_finite() || **l > ceiling) {
            return Some(bad);
        }
        let mean = losses.iter().sum::<f32>() / losses.len().max(1) as f32;
        self.level = Some(self.level.map_or(mean, |level| 0.9 * level + 0.1 * mean));
        None
    }
}

/// Trains `net` for one phase with the run's trigger. `on_event` gets progress and
/// may cancel by returning `Break`; `probe` is the fixed test subset for the
/// accuracy timeline.
pub fn train_phase(
    net: &mut Net,
    phase: Phase,
    cfg: &TrainConfig,
    data: &TrainData,
    probe: &TestSet,
    on_event: &mut dyn FnMut(TrainEvent) -> ControlFlow<()>,
) -> PhaseEnd {
    let stamp = cfg.stamp(net.device());
    train_phase_stamped(net, phase, cfg, &stamp, data, probe, on_event)
}

/// `train_phase` with the triggered examples made by `stamp` (unlearning stamps a
/// recovered trigger; the probe timeline still measures the run's own trigger).
pub fn train_phase_stamped(
    net: &mut Net,
    phase: Phase,
    cfg: &TrainConfig,
    stamp: &Stamp,
    data: &TrainData,
    probe: &TestSet,
    on_event: &mut dyn FnMut(TrainEvent) -> ControlFlow<()>,
) -> PhaseEnd {
    let device = net.device();
    tch::manual_seed(phase.seed(cfg));
    let lambda = phase.lambda(cfg);
    let proximity = (lambda > 0.0).then(|| Proximity::new(net, lambda));
    let mut adam = Adam::new(net.flat_parameters(), cfg.lr);
    let n = data.len() as i64;
    let batch = cfg.batch_size as i64;
    let steps_per_epoch = ((n + batch - 1) / batch) as usize;
    let total_steps = steps_per_epoch * cfg.epochs;
    let clock = Instant::now();
    let mut window = Window::default();
    let mut divergence = Divergence::default();
    let mut step = 0;
    if phase != Phase::Clean && on_event(TrainEvent::Eval(probe_point(net, probe, phase, 0))).is_break() {
        return PhaseEnd::Cancelled;
    }
    for epoch in 0..cfg.epochs {
        let order = draw::permutation(n, device);
        for s in 0..steps_per_epoch as i64 {
            let len = batch.min(n - s * batch);
            let index = order.narrow(0, s * batch, len);
            let (x, y) = poisoned_batch(data, &index, phase, cfg, stamp);
            let Backprop { logits, loss: ce, gradient: mut grad } = cross_entropy_gradient(net, &x, &y);
            let reg = match &proximity {
                Some(proximity) => proximity.add_gradient(net, &mut grad),
                None => Tensor::zeros([], (Kind::Float, device)),
            };
            adam.step(net.flat_parameters(), &grad);
            let correct = logits.argmax(1, false).eq_tensor(&y).sum(Kind::Float);
            window.push(ce + &reg, reg, correct, len);
            step += 1;
            let last = step == total_steps;
            if step % REPORT_EVERY == 0 || last {
                let report = window.drain(phase, epoch, step, total_steps, clock.elapsed().as_secs_f64());
                let diverged = divergence.check(&report.losses);
                if on_event(TrainEvent::Step(report)).is_break() {
                    return PhaseEnd::Cancelled;
                }
                if let Some(loss) = diverged {
                    return PhaseEnd::Diverged { step, loss };
                }
            }
            if phase != Phase::Clean
                && (step % cfg.eval_every == 0 || last)
                && on_event(TrainEvent::Eval(probe_point(net, probe, phase, step))).is_break()
            {
                return PhaseEnd::Cancelled;
            }
        }
    }
    PhaseEnd::Completed
}

/// The batch at `index` as `phase` trains on it. With a fixed poisoned set, its
/// images (and in the poison phase its labels). Otherwise the first ⌊f·len⌋
/// examples triggered (relabelled in the poison phase; rehab keeps the true
/// labels), and after them WaNet's noise-mode images, labels kept.
pub(crate) fn poisoned_batch(
    data: &TrainData,
    index: &Tensor,
    phase: Phase,
    cfg: &TrainConfig,
    stamp: &Stamp,
) -> (Tensor, Tensor) {
    let x = data.images.index_select(0, index);
    let y = data.labels.index_select(0, index);
    if phase == Phase::Clean {
        return (x, y);
    }
    if let Some(set) = &data.poisoned {
        let y = if phase == Phase::Poison { set.labels.index_select(0, index) } else { y };
        return (set.images.index_select(0, index), y);
    }
    let len = index.size()[0];
    let k = (cfg.poison_fraction * len as f64).floor() as i64;
    if k == 0 {
        return (x, y);
    }
    let cross = ((stamp.cross_ratio() * k as f64).round() as i64).min(len - k);
    let mut parts = vec![stamp.apply(&x.narrow(0, 0, k))];
    if let Some(warped) = stamp.cross(&x.narrow(0, k, cross)).filter(|_| cross > 0) {
        parts.push(warped);
    }
    let done: i64 = parts.iter().map(|p| p.size()[0]).sum();
    parts.push(x.narrow(0, done, len - done));
    let x = Tensor::cat(&parts, 0);
    let y = match phase {
        Phase::Poison => Tensor::cat(&[cfg.relabel().tensor(&y.narrow(0, 0, k)), y.narrow(0, k, len - k)], 0),
        _ => y,
    };
    (x, y)
}

fn probe_point(net: &Net, probe: &TestSet, phase: Phase, step: usize) -> EvalPoint {
    let m = probe.evaluate(net);
    EvalPoint { phase, step, clean_acc: m.clean_acc, poison_acc: m.poison_acc, rehab_acc: m.rehab_acc }
}

/// Per-step values kept on the device until a report reads them in one go.
#[derive(Default)]
pub(crate) struct Window {
    losses: Vec<Tensor>,
    last_reg: Option<Tensor>,
    correct: Vec<Tensor>,
    images: i64,
    images_total: i64,
}

impl Window {
    pub(crate) fn push(&mut self, loss: Tensor, reg: Tensor, correct: Tensor, images: i64) {
        self.losses.push(loss);
        self.last_reg = Some(reg);
        self.correct.push(correct);
        self.images += images;
        self.images_total += images;
    }

    pub(crate) fn drain(
        &mut self,
        phase: Phase,
        epoch: usize,
        step: usize,
        total_steps: usize,
        elapsed_s: f64,
    ) -> StepReport {
        let losses = Vec::<f32>::try_from(Tensor::stack(&self.losses, 0).to_device(Device::Cpu)).unwrap_or_default();
        let correct = Tensor::stack(&self.correct, 0).sum(Kind::Float).double_value(&[]);
        let last_regulariser = self.last_reg.take().map(|r| r.double_value(&[]) as f32).unwrap_or(0.0);
        let report = StepReport {
            phase,
            epoch,
            step,
            total_steps,
            losses,
            last_regulariser,
            batch_acc: 100.0 * correct / self.images.max(1) as f64,
            images_per_sec: self.images_total as f64 / elapsed_s.max(1e-9),
            elapsed_s,
        };
        self.losses.clear();
        self.correct.clear();
        self.images = 0;
        report
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn divergence_is_a_non_finite_loss_or_one_far_above_its_level() {
        let mut d = Divergence::default();
        assert_eq!(d.check(&[2.3, 2.1, 1.9]), None);
        assert_eq!(d.check(&[1.5, 1.2]), None);
        // Spikes of a few times the level are training, not divergence.
        assert_eq!(d.check(&[6.0, 1.0]), None);
        assert_eq!(d.check(&[1.0, 4.8e17, 3.0]), Some(4.8e17));
        assert!(d.check(&[f32::NAN]).unwrap().is_nan());
        assert_eq!(d.check(&[f32::INFINITY]), Some(f32::INFINITY));
        // The first report is measured against chance (ln 10 × 100).
        assert_eq!(Divergence::default().check(&[231.0]), Some(231.0));
        assert_eq!(Divergence::default().check(&[229.0]), None);
    }
}
