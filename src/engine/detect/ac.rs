//! Activation clustering (Chen et al., 2018) as BackdoorBench's
//! `detection_pretrain/ac.py`: per class the features centred, FastICA to 10
//! dimensions (unit variance), 2-means; the smaller cluster is the suspect,
//! removed when it holds under 35 % of the class; the silhouette is reported.
//! The random starts (FastICA's `w_init`, the two initial centres) are drawn
//! here and handed over as data, so a reference started from them agrees.

use super::ica::{components, fast_ica, normal_matrix};
use super::kmeans::{lloyd, squared};
use super::scan::{ClassVerdict, members, rows};
use super::values;
use crate::data::attack::poison::draw;
use crate::engine::omp::sum_over_ranges;
use serde::{Deserialize, Serialize};
use tch::Tensor;

pub const DIMS: usize = 10;
/// A class is flagged when its smaller cluster holds less than this share.
pub const SHARE: f64 = 0.35;

/// One class's random starts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Start {
    /// FastICA's initial unmixing matrix, `k × k` row-major.
    pub w_init: Vec<f64>,
    pub components: usize,
    /// The members (positions in the class) whose sources start the two centres.
    pub centres: [usize; 2],
}

/// A class's starts from `seed`, for its features `x` (`[n, D]` f64, n ≥ 2).
pub fn start(x: &Tensor, class: usize, seed: u64) -> Start {
    let k = components(x, DIMS);
    let seed = seed.wrapping_mul(1_000).wrapping_add(class as u64);
    let picked = draw((0..x.size()[0] as usize).collect(), 2, seed as i64);
    Start { w_init: normal_matrix(k, seed), components: k, centres: [picked[0], picked[1]] }
}

/// The mean silhouette of a two-cluster labelling of the rows of `x` (`n × d`,
/// row-major; Euclidean; a sample alone in its cluster scores 0, as
/// scikit-learn's `silhouette_score`). Each pair's distance is computed once, on
/// libtorch's threads, without the `n × n` matrix (11,923² distances in class 0
/// of a 10 % BadNets run).
pub fn silhouette(x: &[f64], d: usize, labels: &[usize]) -> f64 {
    let n = labels.len();
    let sizes = [labels.iter().filter(|&&l| l == 0).count(), labels.iter().filter(|&&l| l == 1).count()];
    // Rows i and n-1-i together hold n-1 pairs: equal work for every thread.
    let sums = sum_over_ranges(n.div_ceil(2), 2 * n, |range, sums: &mut [f64]| {
        let add_row = |i: usize, sums: &mut [f64]| {
            let row = &x[i * d..(i + 1) * d];
            for j in i + 1..n {
                let distance = squared(row, &x[j * d..(j + 1) * d]).sqrt();
                sums[2 * i + labels[j]] += distance;
                sums[2 * j + labels[i]] += distance;
            }
        };
        for m in range {
            let pair = [m, n - 1 - m];
            for &i in &pair[..if 2 * m + 1 == n { 1 } else { 2 }] {
                add_row(i, sums);
            }
        }
    });
    let total: f64 = (0..n)
        .filter(|&i| sizes[labels[i]] > 1)
        .map(|i| {
            let mine = labels[i];
            let a = sums[2 * i + mine] / (sizes[mine] - 1) as f64;
            let b = sums[2 * i + 1 - mine] / sizes[1 - mine] as f64;
            (b - a) / a.max(b)
        })
        .sum();
    total / n as f64
}

/// One class: its sources, clusters, suspects and silhouette. The score of a
/// member is how much nearer it lies to the suspect centre than to the other.
pub fn class_verdict(x: &Tensor, start: &Start, members: Vec<usize>) -> ClassVerdict {
    let sources = values(&fast_ica(x, start.components, &start.w_init));
    let k = start.components;
    let row = |i: usize| &sources[i * k..(i + 1) * k];
    let (labels, centres) = lloyd(&sources, k, [row(start.centres[0]), row(start.centres[1])].concat());
    let n = members.len();
    let ones = labels.iter().sum::<usize>();
    // BackdoorBench: the clean cluster is 1 when it holds at least half.
    let clean = if ones as f64 >= n as f64 / 2.0 { 1 } else { 0 };
    let suspects = if clean == 1 { n - ones } else { ones };
    let flagged = (suspects as f64) < n as f64 * SHARE;
    let centre = |c: usize| &centres[c * k..(c + 1) * k];
    let scores = (0..n).map(|i| squared(row(i), centre(clean)).sqrt() - squared(row(i), centre(1 - clean)).sqrt());
    ClassVerdict {
        members,
        scores: scores.collect(),
        removed: labels.iter().map(|&l| l != clean && flagged).collect(),
        threshold: 0.0,
        flagged,
        statistic: silhouette(&sources, k, &labels),
    }
}

/// Every class's starts (from `seed`) and verdict.
pub fn scan(features: &Tensor, labels: &[u8], classes: usize, seed: u64) -> (Vec<Start>, Vec<ClassVerdict>) {
    members(labels, classes)
        .into_iter()
        .enumerate()
        .map(|(class, members)| {
            let x = rows(features, &members);
            let n = members.len();
            if n < 2 {
                let start = Start { w_init: Vec::new(), components: 0, centres: [0, 0] };
                return (start, ClassVerdict::unscored(members));
            }
            let start = start(&x, class, seed);
            let verdict = class_verdict(&x, &start, members);
            (start, verdict)
        })
        .unzip()
}
