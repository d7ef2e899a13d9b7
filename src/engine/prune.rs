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
use tch::{Kind, Tensor};

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
    singular_values_of(net.weight(layer))
}

/// `largest_singular_values` of any weight `[units, inputs, kernel…]` (a
/// convolution's) or `[units, inputs]` (a linear layer's).
pub fn singular_values_of(weight: &Tensor) -> Vec<f64> {
    let _guard = tch::no_grad_guard();
    let shape = weight.size();
    let positions: i64 = shape[2..].iter().product();
    let w = weight.detach().to_kind(Kind::Double).reshape([shape[0], shape[1], positions]);
    // σ_max(M)² is the largest eigenvalue of MᵀM (positions × positions: 9×9 for a
    // 3×3 convolution, 1×1 for a linear unit).
    let gram = w.transpose(1, 2).matmul(&w);
    let largest = gram.linalg_eigvalsh("L").amax([1i64].as_slice(), false).clamp_min(0.0).sqrt();
    floats(&largest).into_iter().map(f64::from).collect()
}

/// Each unit's mean over the clean images (the first half) of per-image scores `[2N, units]`.
pub fn clean_means(scores: &Tensor, clean: usize) -> Vec<f64> {
    let mean = scores.narrow(0, 0, clean as i64).mean_dim([0i64].as_slice(), false, Kind::Float);
    floats(&mean).into_iter().map(f64::from).collect()
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
    order_of(ranking, layer.units(), inputs.seed, |ranking| match ranking {
        Ranking::FinePruning => clean_means(&probe::unit_scores(inputs.net, inputs.test, layer), inputs.test.len()),
        Ranking::Clp => largest_singular_values(inputs.net, layer),
        Ranking::Tac => probe::activation_changes(inputs.net, inputs.test)[layer].clone(),
        Ranking::WeightChange => {
            super::diff::diff(inputs.clean, inputs.net)[layer.position()].units.iter().map(|u| u.l2).collect()
        }
        Ranking::Random => unreachable!("the random order has no scores"),
    })
}

/// The order of `units` units under `ranking`, from the ranking's per-unit
/// `scores` (asked for every ranking but the random one): Fine-Pruning prunes
/// the lowest mean clean activation first (Liu et al.), the others the highest
/// score first.
pub fn order_of(ranking: Ranking, units: usize, seed: u64, scores: impl FnOnce(Ranking) -> Vec<f64>) -> Vec<usize> {
    match ranking {
        Ranking::Random => random_order(units, seed),
        Ranking::FinePruning => order_by(&scores(ranking), false),
        _ => order_by(&scores(ranking), true),
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
    /// The layer (a study layer's name, or a graph's node).
    pub layer: String,
    pub ranking: Ranking,
    pub mode: AblationMode,
    pub order: Vec<usize>,
    /// From nothing pruned to every unit pruned.
    pub points: Vec<CurvePoint>,
    /// The point of highest DER (the earliest of equals).
    pub best: usize,
}

impl PruneCurve {
    /// The curve of `order` from each step's metrics: `metrics[k]` with the first
    /// `k` units of the order pruned, from 0 to all of them.
    pub fn of(layer: String, ranking: Ranking, mode: AblationMode, order: Vec<usize>, metrics: Vec<Metrics>) -> Self {
        assert_eq!(metrics.len(), order.len() + 1, "one set of metrics per step, and the unpruned one");
        let base = metrics[0].clone();
        let points: Vec<CurvePoint> = metrics
            .into_iter()
            .enumerate()
            .map(|(k, metrics)| CurvePoint {
                pruned: k,
                unit: k.checked_sub(1).map(|i| order[i]),
                der: der(&base, &metrics),
                metrics,
            })
            .collect();
        let best = (0..points.len()).fold(0, |best, i| if points[i].der > points[best].der { i } else { best });
        PruneCurve { layer, ranking, mode, order, points, best }
    }
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
    let metrics = (0..=order.len()).map(|k| cache.evaluate(test, &AblationSet::of(layer, &order[..k]), mode)).collect();
    PruneCurve::of(layer.to_string(), ranking, mode, order, metrics)
}
