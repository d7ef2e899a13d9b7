//! The study's metrics, computed from predictions so their definitions can be
//! checked on hand-made logits.

use super::uncertainty::{Detail, Outcomes};
use crate::data::attack::poison::Relabel;
use serde::Deserialize;

/// Percentages over a test set evaluated clean and with the trigger. Written
/// with each rate's 95 % interval beside it (`uncertainty.rs`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Metrics {
    /// Clean images, true labels.
    pub clean_acc: f64,
    /// "Poison accuracy" / the study's ASR: share of ALL triggered images predicted
    /// as the target (true targets included, so a healthy model scores ≈9.7 %).
    pub poison_acc: f64,
    /// BackdoorBench's ASR: the same over triggered images whose label is not the target.
    pub asr_non_target: f64,
    /// Robust accuracy ("rehab"): triggered images, true labels.
    pub rehab_acc: f64,
    /// Share of ALL clean images predicted as the target (≈9.7 % for a healthy
    /// model): with it, poison accuracy tells the trigger's effect from a model that
    /// says the target whatever it sees.
    #[serde(default)]
    pub clean_as_target: f64,
    /// Clean accuracy per true class (0..classes).
    pub per_class_clean: Vec<f64>,
    /// Number of test images (each evaluated clean and triggered).
    pub count: usize,
    /// Each image's outcome, where these metrics were measured in this process
    /// (in a file only in the explorer's session, `keeping_detail`): the
    /// intervals and paired differences read it.
    #[serde(default)]
    pub detail: Detail,
}

impl Metrics {
    /// `clean` and `triggered` are the predicted classes for the same images.
    /// `relabel` gives each image's target (one label, or y + 1 for all-to-all);
    /// `classes` how many per-class accuracies there are.
    pub fn from_predictions(
        labels: &[u8],
        clean: &[i64],
        triggered: &[i64],
        relabel: Relabel,
        classes: usize,
    ) -> Metrics {
        assert_eq!(labels.len(), clean.len(), "one clean prediction per label");
        assert_eq!(labels.len(), triggered.len(), "one triggered prediction per label");
        let n = labels.len();
        let mut clean_hits = 0usize;
        let mut poison_hits = 0usize;
        let mut non_target = 0usize;
        let mut non_target_hits = 0usize;
        let mut rehab_hits = 0usize;
        let mut clean_target_hits = 0usize;
        let classes = classes.max(labels.iter().map(|&l| l as usize + 1).max().unwrap_or(0));
        let mut class_total = vec![0usize; classes];
        let mut class_hits = vec![0usize; classes];
        for i in 0..n {
            let label = labels[i] as i64;
            let target = relabel.of(labels[i]) as i64;
            let c = clean[i] == label;
            clean_hits += c as usize;
            class_total[labels[i] as usize] += 1;
            class_hits[labels[i] as usize] += c as usize;
            poison_hits += (triggered[i] == target) as usize;
            rehab_hits += (triggered[i] == label) as usize;
            clean_target_hits += (clean[i] == target) as usize;
            if label != target {
                non_target += 1;
                non_target_hits += (triggered[i] == target) as usize;
            }
        }
        Metrics {
            clean_acc: percent(clean_hits, n),
            poison_acc: percent(poison_hits, n),
            asr_non_target: percent(non_target_hits, non_target),
            rehab_acc: percent(rehab_hits, n),
            clean_as_target: percent(clean_target_hits, n),
            per_class_clean: (0..classes).map(|c| percent(class_hits[c], class_total[c])).collect(),
            count: n,
            detail: Detail::of(Outcomes::new(labels, clean, triggered, relabel, class_total)),
        }
    }

    /// What the trigger adds: poison accuracy less the share of clean images that
    /// already go to the target.
    pub fn trigger_effect(&self) -> f64 {
        self.poison_acc - self.clean_as_target
    }

    /// The study's three headline accuracies by name, for tables and charts that
    /// show each as its own row or line.
    pub const HEADLINE: [(&'static str, Accuracy); 3] =
        [("clean", |m| m.clean_acc), ("poison", |m| m.poison_acc), ("rehab", |m| m.rehab_acc)];

    /// The study's three headline numbers: clean, poison, rehab.
    pub fn triple(&self) -> [f64; 3] {
        [self.clean_acc, self.poison_acc, self.rehab_acc]
    }
}

/// Reads one accuracy out of the metrics.
pub type Accuracy = fn(&Metrics) -> f64;

fn percent(hits: usize, total: usize) -> f64 {
    if total == 0 { 0.0 } else { 100.0 * hits as f64 / total as f64 }
}

/// Row-wise argmax of `[rows, classes]` logits; ties go to the lowest class as in torch.
pub fn argmax_rows(logits: &[f32], classes: usize) -> Vec<i64> {
    logits
        .chunks_exact(classes)
        .map(|row| {
            let mut best = 0;
            for (i, v) in row.iter().enumerate() {
                if *v > row[best] {
                    best = i;
                }
            }
            best as i64
        })
        .collect()
}
