//! What a training-set scan reports, scored against the poison the run
//! recorded (`poisoned-train.json`): per class, which images a method removes,
//! its threshold, and TPR, FPR and AUROC against the truth.

use super::roc::{Side, auroc};
use serde::Serialize;
use tch::Tensor;

/// One class's verdict from a method, before it is scored.
pub struct ClassVerdict {
    /// The class's images (indices into the training set), in order.
    pub members: Vec<usize>,
    /// Per member, larger is more suspicious.
    pub scores: Vec<f64>,
    /// Members the method removes.
    pub removed: Vec<bool>,
    /// The score above which members are removed.
    pub threshold: f64,
    /// Whether the method names this class as poisoned.
    pub flagged: bool,
    /// AC: the clusters' silhouette; spectral: the top singular value over the second.
    pub statistic: f64,
}

impl ClassVerdict {
    /// A class too small to split or decompose (fewer than two images): nothing
    /// removed, nothing flagged.
    pub fn unscored(members: Vec<usize>) -> ClassVerdict {
        let n = members.len();
        ClassVerdict {
            members,
            scores: vec![0.0; n],
            removed: vec![false; n],
            threshold: 0.0,
            flagged: false,
            statistic: 0.0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClassScan {
    pub class: u8,
    pub images: usize,
    /// Images of this class (as trained: after relabelling) the run poisoned.
    pub poisoned: usize,
    pub removed: usize,
    /// Share of the poisoned images removed (null when there are none).
    pub tpr: f64,
    /// Share of the clean images removed.
    pub fpr: f64,
    pub threshold: f64,
    /// How well the score ranks poisoned above clean (null without both).
    pub auroc: f64,
    pub flagged: bool,
    pub statistic: f64,
}

/// Each class's training images: indices of `labels` equal to it.
pub fn members(labels: &[u8], classes: usize) -> Vec<Vec<usize>> {
    let mut out = vec![Vec::new(); classes];
    for (i, &l) in labels.iter().enumerate() {
        out[l as usize].push(i);
    }
    out
}

/// The rows `members` of `features`.
pub fn rows(features: &Tensor, members: &[usize]) -> Tensor {
    let idx: Vec<i64> = members.iter().map(|&i| i as i64).collect();
    features.index_select(0, &Tensor::from_slice(&idx))
}

/// Scores each class's verdict against `poisoned` (sorted indices).
pub fn score(verdicts: &[ClassVerdict], poisoned: &[usize]) -> Vec<ClassScan> {
    verdicts
        .iter()
        .enumerate()
        .map(|(class, v)| {
            let is_poisoned: Vec<bool> = v.members.iter().map(|i| poisoned.binary_search(i).is_ok()).collect();
            let split = |want: bool| -> Vec<f64> {
                v.scores.iter().zip(&is_poisoned).filter(|&(_, &p)| p == want).map(|(&s, _)| s).collect()
            };
            let count = |want: bool| v.removed.iter().zip(&is_poisoned).filter(|&(&r, &p)| r && p == want).count();
            let (n_poisoned, n_clean) = (split(true).len(), split(false).len());
            ClassScan {
                class: class as u8,
                images: v.members.len(),
                poisoned: n_poisoned,
                removed: v.removed.iter().filter(|&&r| r).count(),
                tpr: count(true) as f64 / n_poisoned as f64,
                fpr: count(false) as f64 / n_clean as f64,
                threshold: v.threshold,
                auroc: auroc(&split(false), &split(true), Side::High),
                flagged: v.flagged,
                statistic: v.statistic,
            }
        })
        .collect()
}

/// The training-set indices every verdict removes, ascending.
pub fn removed(verdicts: &[ClassVerdict]) -> Vec<usize> {
    let mut out: Vec<usize> =
        verdicts.iter().flat_map(|v| v.members.iter().zip(&v.removed).filter(|&(_, &r)| r).map(|(&i, _)| i)).collect();
    out.sort_unstable();
    out
}
