//! Activation clustering (Chen et al., 2018) as BackdoorBench's
//! `detection_pretrain/ac.py`: per class the features centred, FastICA to 10
//! dimensions (unit variance), 2-means; the smaller cluster is the suspect,
//! removed when it holds under 35 % of the class; the silhouette is reported.
//! The random starts (FastICA's `w_init`, the two initial centres) are drawn
//! here and handed over as data, so a reference started from them agrees.

use super::ica::{components, fast_ica, normal_matrix};
use super::kmeans::lloyd;
use super::scan::{ClassVerdict, members, rows};
use super::values;
use crate::data::attack::poison::draw;
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

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

/// The mean silhouette of a two-cluster labelling (Euclidean; a sample alone
/// in its cluster scores 0, as scikit-learn's `silhouette_score`).
pub fn silhouette(x: &Tensor, labels: &Tensor) -> f64 {
    let n = x.size()[0];
    let sizes = [labels.eq(0).sum(Kind::Int64).int64_value(&[]), labels.eq(1).sum(Kind::Int64).int64_value(&[])];
    let one_hot = Tensor::stack(&[labels.eq(0), labels.eq(1)], 1).to_kind(Kind::Double);
    let own: Vec<i64> = Vec::try_from(labels).expect("i64 labels");
    let mut total = 0.0;
    for (start, chunk) in x.split(1024, 0).iter().enumerate() {
        // Summed distances from each row of the chunk to each cluster.
        let sums = values(&Tensor::cdist(chunk, x, 2.0, None).matmul(&one_hot));
        for (r, pair) in sums.chunks(2).enumerate() {
            let mine = own[start * 1024 + r] as usize;
            if sizes[mine] <= 1 {
                continue;
            }
            let a = pair[mine] / (sizes[mine] - 1) as f64;
            let b = pair[1 - mine] / sizes[1 - mine] as f64;
            total += (b - a) / a.max(b);
        }
    }
    total / n as f64
}

/// One class: its sources, clusters, suspects and silhouette. The score of a
/// member is how much nearer it lies to the suspect centre than to the other.
pub fn class_verdict(x: &Tensor, start: &Start, members: Vec<usize>) -> ClassVerdict {
    let sources = fast_ica(x, start.components, &start.w_init);
    let init = Tensor::stack(&[sources.get(start.centres[0] as i64), sources.get(start.centres[1] as i64)], 0);
    let (labels, centres) = lloyd(&sources, &init);
    let n = members.len();
    let ones = labels.sum(Kind::Int64).int64_value(&[]) as usize;
    // BackdoorBench: the clean cluster is 1 when it holds at least half.
    let clean = if ones as f64 >= n as f64 / 2.0 { 1 } else { 0 };
    let suspects = if clean == 1 { n - ones } else { ones };
    let flagged = (suspects as f64) < n as f64 * SHARE;
    let distance =
        |c: i64| (&sources - centres.get(c).unsqueeze(0)).square().sum_dim_intlist(1, false, Kind::Double).sqrt();
    let scores = values(&(distance(clean) - distance(1 - clean)));
    let is_suspect: Vec<bool> = values(&labels).iter().map(|&l| l as i64 != clean).collect();
    ClassVerdict {
        members,
        scores,
        removed: is_suspect.iter().map(|&s| s && flagged).collect(),
        threshold: 0.0,
        flagged,
        statistic: silhouette(&sources, &labels),
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
