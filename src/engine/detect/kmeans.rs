//! k-means as scikit-learn's `KMeans(init=centres, n_init=1)` runs it: Lloyd's
//! iterations until the labels stop changing or the centres move less than
//! `1e-4` × the data's mean variance (at most 300), then the labels of the
//! final centres. Plain loops over rows of `d` values: on a few thousand
//! 10-dimensional points libtorch's per-op threading cost more than the sums
//! (activation clustering took 84 s over 60,000 images, docs/detect.md).

const TOL: f64 = 1e-4;
const MAX_ITER: usize = 300;

/// The squared Euclidean distance between two rows.
pub fn squared(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum()
}

/// Each row's nearest centre (the first of equals).
fn assign(x: &[f64], d: usize, centres: &[f64]) -> Vec<usize> {
    let nearest = |row: &[f64]| {
        let distances = centres.chunks(d).map(|c| squared(row, c));
        distances.enumerate().fold((0, f64::INFINITY), |best, (c, s)| if s < best.1 { (c, s) } else { best }).0
    };
    x.chunks(d).map(nearest).collect()
}

/// The members' means; a centre left with no members stays where it was.
fn update(x: &[f64], d: usize, labels: &[usize], centres: &[f64]) -> Vec<f64> {
    let mut sums = vec![0.0; centres.len()];
    let mut counts = vec![0usize; centres.len() / d];
    for (row, &l) in x.chunks(d).zip(labels) {
        counts[l] += 1;
        sums[l * d..(l + 1) * d].iter_mut().zip(row).for_each(|(s, v)| *s += v);
    }
    for (c, &count) in counts.iter().enumerate() {
        let (mean, old) = (&mut sums[c * d..(c + 1) * d], &centres[c * d..(c + 1) * d]);
        if count == 0 {
            mean.copy_from_slice(old);
        } else {
            mean.iter_mut().for_each(|s| *s /= count as f64);
        }
    }
    sums
}

/// The columns' population variances, averaged.
fn mean_variance(x: &[f64], d: usize) -> f64 {
    let n = (x.len() / d) as f64;
    let mut mean = vec![0.0; d];
    x.chunks(d).for_each(|row| mean.iter_mut().zip(row).for_each(|(m, v)| *m += v / n));
    let total: f64 = x.chunks(d).map(|row| squared(row, &mean)).sum();
    total / n / d as f64
}

/// Labels and centres (`k × d`, row-major) of the rows of `x` (`n × d`,
/// row-major) from the initial centres `init`.
pub fn lloyd(x: &[f64], d: usize, init: Vec<f64>) -> (Vec<usize>, Vec<f64>) {
    let tol = mean_variance(x, d) * TOL;
    let mut centres = init;
    let mut labels_old: Option<Vec<usize>> = None;
    for _ in 0..MAX_ITER {
        let labels = assign(x, d, &centres);
        let next = update(x, d, &labels, &centres);
        let shift = squared(&next, &centres);
        centres = next;
        if labels_old.as_ref() == Some(&labels) {
            return (labels, centres);
        }
        if shift <= tol {
            break;
        }
        labels_old = Some(labels);
    }
    (assign(x, d, &centres), centres)
}
