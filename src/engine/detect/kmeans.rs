//! k-means as scikit-learn's `KMeans(init=centres, n_init=1)` runs it: Lloyd's
//! iterations until the labels stop changing or the centres move less than
//! `1e-4` × the data's mean variance (at most 300), then the labels of the
//! final centres.

use tch::{Kind, Tensor};

const TOL: f64 = 1e-4;
const MAX_ITER: usize = 300;

/// Each row's nearest centre.
fn assign(x: &Tensor, centres: &Tensor) -> Tensor {
    (x.unsqueeze(1) - centres.unsqueeze(0)).square().sum_dim_intlist(2, false, Kind::Double).argmin(1, false)
}

/// The members' means; a centre left with no members stays where it was.
fn update(x: &Tensor, labels: &Tensor, centres: &Tensor) -> Tensor {
    let k = centres.size()[0];
    let moved: Vec<Tensor> = (0..k)
        .map(|c| {
            let mine = labels.eq(c);
            if mine.any().int64_value(&[]) == 0 {
                centres.get(c)
            } else {
                x.index(&[Some(mine)]).mean_dim(0, false, Kind::Double)
            }
        })
        .collect();
    Tensor::stack(&moved, 0)
}

/// Labels (`[n]` i64) and centres of `x` (`[n, d]` f64) from `init` (`[k, d]`).
pub fn lloyd(x: &Tensor, init: &Tensor) -> (Tensor, Tensor) {
    let tol = x.var_dim(0, false, false).mean(Kind::Double).double_value(&[]) * TOL;
    let mut centres = init.shallow_clone();
    let mut labels_old: Option<Tensor> = None;
    for _ in 0..MAX_ITER {
        let labels = assign(x, &centres);
        let next = update(x, &labels, &centres);
        let shift = (&next - &centres).square().sum(Kind::Double).double_value(&[]);
        centres = next;
        if labels_old.as_ref().is_some_and(|old| old.equal(&labels)) {
            return (labels, centres);
        }
        if shift <= tol {
            break;
        }
        labels_old = Some(labels);
    }
    (assign(x, &centres), centres)
}
