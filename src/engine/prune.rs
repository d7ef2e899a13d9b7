//! Pruning-defence curves: a layer's units ablated cumulatively in the order of a
//! ranking, the metrics after each, and BackdoorBench's defence effectiveness rate
//! at the best point. Rankings: Fine-Pruning (Liu et al. 2018: lowest mean clean
//! activation first), CLP (Zheng et al. 2022, data-free: the largest singular value
//! of each unit's kernel, high first), trigger activation change (TAC, high first),
//! poisoned − clean weight change (high first), and a seeded random order.

use super::ablation::{AblationMode, AblationSet};
use super::cache::ActivationCache;
use super::host::floats;
use super::layer::Layer;
use super::metrics::Metrics;
use super::model::Net;
use super::probe;
use super::testset::TestSet;
use serde::{Deserialize, Serialize};
use tch::Kind;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Ranking {
    FinePruning,
    Clp,
    Tac,
    WeightChange,
    Random,
}

impl Ranking {
    pub const ALL: [Ranking; 5] =
        [Ranking::FinePruning, Ranking::Clp, Ranking::Tac, Ranking::WeightChange, Ranking::Random];

    pub fn name(self) -> &'static str {
        match self {
            Ranking::FinePruning => "fine-pruning",
            Ranking::Clp => "clp",
            Ranking::Tac => "tac",
            Ranking::WeightChange => "weight-change",
            Ranking::Random => "random",
        }
    }
}

crate::named_enum!(Ranking, "ranking", "fine-pruning, clp, tac, weight-change or random");

/// Unit indices sorted by `score`, highest first (ties by index), or lowest first.
pub fn order_by(score: &[f64], highest_first: bool) -> Vec<usize> {
    let mut order: Vec<usize> = (0..score.len()).collect();
    order.sort_by(|&a, &b| {
        let by = if highest_first { score[b].total_cmp(&score[a]) } else { score[a].total_cmp(&score[b]) };
        by.then(a.cmp(&b))
    });
    order
}

/// Per unit, the largest singular value of its incoming weights viewed as
/// `[inputs, kernel positions]` (CLP's channel Lipschitz upper bound; for a linear
/// unit, the norm of its weight row).
pub fn largest_singular_values(net: &Net, layer: Layer) -> Vec<f64> {
    let _guard = tch::no_grad_guard();
    let shape = layer.weight_shape();
    let positions: i64 = shape[2..].iter().product();
    let w = net.weight(layer).detach().to_kind(Kind::Double).reshape([shape[0], shape[1], positions]);
    // σ_max(M)² is the largest eigenvalue of MᵀM (positions × positions: 9×9 for a
    // 3×3 convolution, 1×1 for a linear unit).
    let gram = w.transpose(1, 2).matmul(&w);
    let largest = gram.linalg_eigvalsh("L").amax([1i64].as_slice(), false).clamp_min(0.0).sqrt();
    floats(&largest).into_iter().map(f64::from).collect()
}

/// A seeded permutation of `n` units (SplitMix64-driven Fisher–Yates).
pub fn random_order(n: usize, seed: u64) -> Vec<usize> {
    let mut rng = crate::splitmix::SplitMix64(seed);
    let mut order: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        order.swap(i, rng.below(i + 1));
    }
    order
}

/// What a ranking needs to know about the model and the run.
pub struct RankingInputs<'a> {
    pub net: &'a Net,
    /// The clean model, for the weight-change ranking.
    pub clean: &'a Net,
    pub test: &'a TestSet,
    pub seed: u64,
}

/// The order in which `ranking` prunes `layer`'s units.
pub fn ranking_order(ranking: Ranking, layer: Layer, inputs: &RankingInputs) -> Vec<usize> {
    match ranking {
        Ranking::FinePruning => {
            // Mean activation over the clean images only (the first half of the set).
            let n = inputs.test.len() as i64;
            let scores = probe::unit_scores(inputs.net, inputs.test, layer).narrow(0, 0, n);
            let mean = floats(&scores.mean_dim([0i64].as_slice(), false, Kind::Float));
            order_by(&mean.into_iter().map(f64::from).collect::<Vec<_>>(), false)
        }
        Ranking::Clp => order_by(&largest_singular_values(inputs.net, layer), true),
        Ranking::Tac => order_by(&probe::activation_changes(inputs.net, inputs.test)[layer], true),
        Ranking::WeightChange => {
            let diffs = super::diff::diff(inputs.clean, inputs.net);
            order_by(&diffs[layer.position()].units.iter().map(|u| u.l2).collect::<Vec<_>>(), true)
        }
        Ranking::Random => random_order(layer.units(), inputs.seed),
    }
}

/// BackdoorBench's defence effectiveness rate, from fractions: the attack's drop
/// rewarded, the clean accuracy's drop penalised, [max(0, ΔASR) − max(0, ΔACC) + 1] / 2.
pub fn der(before: &Metrics, after: &Metrics) -> f64 {
    let asr_drop = (before.asr_non_target - after.asr_non_target) / 100.0;
    let acc_drop = (before.clean_acc - after.clean_acc) / 100.0;
    (asr_drop.max(0.0) - acc_drop.max(0.0) + 1.0) / 2.0
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CurvePoint {
    /// Units pruned so far (the first `pruned` of the order).
    pub pruned: usize,
    pub unit: Option<usize>,
    pub metrics: Metrics,
    pub der: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PruneCurve {
    pub layer: Layer,
    pub ranking: Ranking,
    pub mode: AblationMode,
    pub order: Vec<usize>,
    /// From nothing pruned to every unit pruned.
    pub points: Vec<CurvePoint>,
    /// The point of highest DER (the earliest of equals).
    pub best: usize,
}

/// Prunes `order` one unit at a time (each set evaluated by the fast engine).
pub fn curve(
    cache: &ActivationCache,
    test: &TestSet,
    layer: Layer,
    ranking: Ranking,
    order: Vec<usize>,
    mode: AblationMode,
) -> PruneCurve {
    let base = cache.evaluate(test, &AblationSet::default(), mode);
    let mut points = vec![CurvePoint { pruned: 0, unit: None, der: der(&base, &base), metrics: base.clone() }];
    for k in 1..=order.len() {
        let metrics = cache.evaluate(test, &AblationSet::of(layer, &order[..k]), mode);
        points.push(CurvePoint { pruned: k, unit: Some(order[k - 1]), der: der(&base, &metrics), metrics });
    }
    let best = (0..points.len()).fold(0, |best, i| if points[i].der > points[best].der { i } else { best });
    PruneCurve { layer, ranking, mode, order, points, best }
}
