//! The test set as every evaluation sees it: clean images followed by the same
//! images with the trigger, in one tensor so one pass serves all three metrics.

use super::metrics::Metrics;
use super::model::Net;
use super::train::TrainConfig;
use crate::data::attack::Attack;
use crate::data::attack::poison::Relabel;
use crate::data::attack::poisoned_test::PoisonedImages;
use crate::data::loaded::Split;
use crate::data::trigger::Stamp;
use tch::{Device, Kind, Tensor};

/// Images per forward chunk on `device`. On the CPU 250: large enough for
/// throughput, small enough that a short command page-faults in little fresh
/// memory (1,000 → 250: `eval` 0.71–0.75 → 0.65–0.71 s whole-process and 430 →
/// 280 MB resident; `swap` 2.2–2.3 → 1.8–2.3 s). On a GPU, where memory comes
/// from libtorch's caching allocator and every op of a chunk is a kernel launch of
/// fixed cost, 4,096: 250 images leave the GPU mostly waiting on launches, while
/// 4,096 keep conv1's output of a chunk (the largest tensor) at 350 MB.
pub fn chunk(device: Device) -> i64 {
    if device == Device::Cpu { 250 } else { 4096 }
}

pub struct TestSet {
    /// `[2N, C, H, W]`: N clean images, then the same N triggered.
    pub inputs: Tensor,
    pub labels: Vec<u8>,
    /// What each triggered image should be classified as.
    pub relabel: Relabel,
    /// The dataset's classes (the per-class accuracies' count).
    pub classes: usize,
}

impl TestSet {
    /// `split` clean and with the run's attack (`cfg`); fails only on an
    /// `images` attack whose files do not fit the split.
    pub fn new(split: &Split, cfg: &TrainConfig, device: Device) -> Result<TestSet, String> {
        let (relabel, classes) = (cfg.relabel(), cfg.image_format().classes);
        if let Attack::Images(files) = &cfg.attack {
            return Self::of_files(split, &files.read(split)?, relabel, classes, device);
        }
        // One allocation, the triggered half stamped in place.
        let inputs = split.images(device).repeat([2, 1, 1, 1]);
        let mut triggered = inputs.narrow(0, split.len() as i64, split.len() as i64);
        match cfg.stamp(device) {
            Stamp::Add(mask) => {
                let _ = triggered.g_add_(&mask);
            }
            stamp => {
                let made = stamp.apply(&triggered);
                triggered.copy_(&made);
            }
        }
        Ok(TestSet { inputs, labels: split.labels.clone(), relabel, classes })
    }

    /// The test images the files cover, each with its file as its triggered twin,
    /// plus those an all-to-one attack never poisons (the target's: they stay their
    /// own twins, outside the ASR). A folder covering every other image keeps the
    /// whole test set; one covering fewer scores only those, so the metrics never
    /// count a clean image as a failed trigger.
    fn of_files(
        split: &Split,
        files: &PoisonedImages,
        relabel: Relabel,
        classes: usize,
        device: Device,
    ) -> Result<TestSet, String> {
        let target = relabel.single();
        let rows: Vec<usize> = (0..split.len())
            .filter(|&i| Some(split.labels[i]) == target || files.rows.binary_search(&i).is_ok())
            .collect();
        let as_index = |values: Vec<i64>| Tensor::from_slice(&values).to_device(device);
        let clean = split.images(device).index_select(0, &as_index(rows.iter().map(|&r| r as i64).collect()));
        let positions = files.rows.iter().map(|r| rows.binary_search(r).expect("every file's row is kept") as i64);
        let triggered = clean.index_copy(0, &as_index(positions.collect()), &files.images.images(device));
        Ok(TestSet {
            inputs: Tensor::cat(&[clean, triggered], 0),
            labels: rows.iter().map(|&r| split.labels[r]).collect(),
            relabel,
            classes,
        })
    }

    /// Test images per condition (N).
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// `[N, 1, 28, 28]`: the clean images.
    pub fn clean(&self) -> Tensor {
        self.clean_images(0, self.len() as i64)
    }

    /// `len` clean images from `start`.
    pub fn clean_images(&self, start: i64, len: i64) -> Tensor {
        self.inputs.narrow(0, start, len)
    }

    /// The triggered twins of `clean_images(start, len)`.
    pub fn triggered_images(&self, start: i64, len: i64) -> Tensor {
        self.inputs.narrow(0, self.len() as i64 + start, len)
    }

    pub fn device(&self) -> Device {
        self.inputs.device()
    }

    /// The first `n` images of each condition, as a smaller test set.
    pub fn subset(&self, n: usize) -> TestSet {
        self.slice(0, n.min(self.len()))
    }

    /// Images `start..start + len` of each condition, as a smaller test set.
    pub fn slice(&self, start: usize, len: usize) -> TestSet {
        let (n, from, count) = (self.len() as i64, start as i64, len as i64);
        let inputs = Tensor::cat(&[self.inputs.narrow(0, from, count), self.inputs.narrow(0, n + from, count)], 0);
        TestSet {
            inputs,
            labels: self.labels[start..start + len].to_vec(),
            relabel: self.relabel,
            classes: self.classes,
        }
    }

    /// Metrics from `[2N]` predicted classes (any device).
    pub fn metrics(&self, predictions: &Tensor) -> Metrics {
        self.metrics_of_many(std::slice::from_ref(predictions)).swap_remove(0)
    }

    /// Metrics of several `[2N]` predictions, read from their device in one copy:
    /// a copy to the host waits for the GPU to finish, and one per set stalled it
    /// 2,500 times in a circuit search.
    pub fn metrics_of_many(&self, predictions: &[Tensor]) -> Vec<Metrics> {
        if predictions.is_empty() {
            return Vec::new();
        }
        let all = Tensor::stack(predictions, 0).to_device(Device::Cpu).to_kind(Kind::Int64).view([-1]);
        let predicted = Vec::<i64>::try_from(all).expect("predictions are 1-D integer tensors");
        let per_set = predicted.len() / predictions.len();
        (0..predictions.len())
            .map(|i| {
                let (clean, triggered) = predicted[i * per_set..(i + 1) * per_set].split_at(self.len());
                Metrics::from_predictions(&self.labels, clean, triggered, self.relabel, self.classes)
            })
            .collect()
    }

    /// Evaluates `net` unchanged (through the lean forward).
    pub fn evaluate(&self, net: &Net) -> Metrics {
        self.metrics(&super::lean::predict(net, self))
    }

    /// Runs `logits_of` over the inputs in chunks and returns the `[2N]` argmax.
    pub fn predict_with(&self, mut logits_of: impl FnMut(&Tensor) -> Tensor) -> Tensor {
        let _guard = tch::no_grad_guard();
        let chunks: Vec<Tensor> =
            self.inputs.split(chunk(self.device()), 0).iter().map(|x| logits_of(x).argmax(1, false)).collect();
        Tensor::cat(&chunks, 0)
    }
}
