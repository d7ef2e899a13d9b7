//! How well a score separates clean from poisoned: AUROC, the threshold at a
//! chosen false-rejection rate (BackdoorBench's rule), the ROC curve and both
//! populations' histograms, as plain numbers a table, JSON or a chart reads.

use serde::Serialize;

/// Which end of the score the poisoned inputs sit at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    /// Poisoned below the threshold (STRIP's entropy).
    Low,
    /// Poisoned above it (SCALE-UP's consistency, spectral scores).
    High,
}

impl Side {
    /// Whether `score` is flagged at `threshold`.
    pub fn flags(self, score: f64, threshold: f64) -> bool {
        match self {
            Side::Low => score < threshold,
            Side::High => score > threshold,
        }
    }

    /// `score` oriented so that larger is more suspicious.
    fn suspicion(self, score: f64) -> f64 {
        match self {
            Side::Low => -score,
            Side::High => score,
        }
    }
}

/// The area under the ROC curve: the chance that a poisoned score is more
/// suspicious than a clean one, ties counting half (Mann–Whitney U).
pub fn auroc(clean: &[f64], poisoned: &[f64], side: Side) -> f64 {
    if clean.is_empty() || poisoned.is_empty() {
        return f64::NAN;
    }
    let mut all: Vec<(f64, bool)> = clean
        .iter()
        .map(|&s| (side.suspicion(s), false))
        .chain(poisoned.iter().map(|&s| (side.suspicion(s), true)))
        .collect();
    all.sort_by(|a, b| a.0.total_cmp(&b.0));
    // Sum of the poisoned scores' mid-ranks (1-based), ties sharing their mean rank.
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < all.len() {
        let j = (i + 1..all.len()).find(|&j| all[j].0.total_cmp(&all[i].0).is_ne()).unwrap_or(all.len());
        let mid = (i + j + 1) as f64 / 2.0;
        rank_sum += mid * all[i..j].iter().filter(|e| e.1).count() as f64;
        i = j;
    }
    let (n_c, n_p) = (clean.len() as f64, poisoned.len() as f64);
    (rank_sum - n_p * (n_p + 1.0) / 2.0) / (n_c * n_p)
}

/// BackdoorBench's threshold (`detection_infer/strip.py`): the clean scores
/// sorted from least to most suspicious... read at `frr · n`, so at most that
/// share of clean inputs is rejected.
pub fn threshold_at_frr(clean: &[f64], frr: f64, side: Side) -> f64 {
    let mut sorted = clean.to_vec();
    sorted.sort_by(|a, b| side.suspicion(*b).total_cmp(&side.suspicion(*a)));
    let at = ((frr * sorted.len() as f64) as usize).min(sorted.len().saturating_sub(1));
    sorted.get(at).copied().unwrap_or(f64::NAN)
}

/// Share of `scores` flagged at `threshold`.
pub fn flagged_share(scores: &[f64], threshold: f64, side: Side) -> f64 {
    scores.iter().filter(|&&s| side.flags(s, threshold)).count() as f64 / scores.len().max(1) as f64
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RocPoint {
    pub threshold: f64,
    pub fpr: f64,
    pub tpr: f64,
}

/// The ROC curve: one point per distinct score, from flagging nothing to flagging all.
pub fn roc_curve(clean: &[f64], poisoned: &[f64], side: Side) -> Vec<RocPoint> {
    let mut thresholds: Vec<f64> = clean.iter().chain(poisoned).copied().collect();
    thresholds.sort_by(|a, b| side.suspicion(*b).total_cmp(&side.suspicion(*a)));
    thresholds.dedup();
    let mut points = vec![RocPoint { threshold: f64::NAN, fpr: 0.0, tpr: 0.0 }];
    // Flag everything at least as suspicious as each score in turn.
    let mut c: Vec<f64> = clean.iter().map(|&s| side.suspicion(s)).collect();
    let mut p: Vec<f64> = poisoned.iter().map(|&s| side.suspicion(s)).collect();
    c.sort_by(|a, b| b.total_cmp(a));
    p.sort_by(|a, b| b.total_cmp(a));
    let (mut ci, mut pi) = (0, 0);
    for t in thresholds {
        let s = side.suspicion(t);
        while ci < c.len() && c[ci] >= s {
            ci += 1;
        }
        while pi < p.len() && p[pi] >= s {
            pi += 1;
        }
        points.push(RocPoint {
            threshold: t,
            fpr: ci as f64 / c.len().max(1) as f64,
            tpr: pi as f64 / p.len().max(1) as f64,
        });
    }
    points
}

/// Both populations counted in the same bins.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Histogram {
    /// `bins + 1` edges, from the smallest score to the largest.
    pub edges: Vec<f64>,
    pub clean: Vec<usize>,
    pub poisoned: Vec<usize>,
}

impl Histogram {
    pub fn of(clean: &[f64], poisoned: &[f64], bins: usize) -> Histogram {
        let all = clean.iter().chain(poisoned);
        let lo = all.clone().copied().fold(f64::INFINITY, f64::min);
        let hi = all.copied().fold(f64::NEG_INFINITY, f64::max);
        let (lo, hi) = if lo.is_finite() { (lo, if hi > lo { hi } else { lo + 1.0 }) } else { (0.0, 1.0) };
        let width = (hi - lo) / bins as f64;
        let count = |scores: &[f64]| {
            let mut counts = vec![0; bins];
            for &s in scores {
                counts[(((s - lo) / width) as usize).min(bins - 1)] += 1;
            }
            counts
        };
        Histogram {
            edges: (0..=bins).map(|i| lo + width * i as f64).collect(),
            clean: count(clean),
            poisoned: count(poisoned),
        }
    }
}

/// Everything said about one score's separation of the two populations.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Separation {
    pub side: Side,
    pub auroc: f64,
    /// Poisoned inputs flagged at the thresholds that reject 1 % and 5 % of clean ones.
    pub tpr_at_1_frr: f64,
    pub tpr_at_5_frr: f64,
    /// The chosen threshold and what it does.
    pub threshold: f64,
    pub tpr: f64,
    pub fpr: f64,
    pub histogram: Histogram,
    pub roc: Vec<RocPoint>,
}

/// Bins of the score histograms.
pub const BINS: usize = 20;

impl Separation {
    /// The separation at `threshold` (a fixed one, or `threshold_at_frr`'s).
    pub fn at(clean: &[f64], poisoned: &[f64], side: Side, threshold: f64) -> Separation {
        let tpr_at = |frr| flagged_share(poisoned, threshold_at_frr(clean, frr, side), side);
        Separation {
            side,
            auroc: auroc(clean, poisoned, side),
            tpr_at_1_frr: tpr_at(0.01),
            tpr_at_5_frr: tpr_at(0.05),
            threshold,
            tpr: flagged_share(poisoned, threshold, side),
            fpr: flagged_share(clean, threshold, side),
            histogram: Histogram::of(clean, poisoned, BINS),
            roc: roc_curve(clean, poisoned, side),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auroc_counts_pairs_and_ties_half() {
        // Pairs (clean, poisoned) with poisoned higher: (1,2),(1,3),(2,3) and a tie (2,2): 3.5 of 4.
        assert_eq!(auroc(&[1.0, 2.0], &[2.0, 3.0], Side::High), 3.5 / 4.0);
        assert_eq!(auroc(&[1.0, 2.0], &[2.0, 3.0], Side::Low), 0.5 / 4.0);
        // NaN scores (a degenerate class) end the count instead of looping.
        assert!(auroc(&[f64::NAN, f64::NAN], &[f64::NAN], Side::High).is_finite());
    }

    #[test]
    fn the_threshold_rejects_at_most_the_asked_share_of_clean_scores() {
        let clean: Vec<f64> = (0..100).map(f64::from).collect();
        // Low side: sorted ascending, index 5 → 5.0, and scores below it (5 of 100) are flagged.
        let t = threshold_at_frr(&clean, 0.05, Side::Low);
        assert_eq!(t, 5.0);
        assert_eq!(flagged_share(&clean, t, Side::Low), 0.05);
        assert_eq!(threshold_at_frr(&clean, 0.05, Side::High), 94.0);
    }

    #[test]
    fn the_roc_curve_runs_from_nothing_to_everything() {
        let roc = roc_curve(&[0.1, 0.2], &[0.3, 0.2], Side::High);
        let pairs: Vec<(f64, f64)> = roc.iter().map(|p| (p.fpr, p.tpr)).collect();
        assert_eq!(pairs, vec![(0.0, 0.0), (0.0, 0.5), (0.5, 1.0), (1.0, 1.0)]);
        let h = Histogram::of(&[0.0, 0.5], &[1.0], 2);
        assert_eq!((h.clean, h.poisoned), (vec![1, 1], vec![0, 1]));
    }
}
