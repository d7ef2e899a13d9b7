//! FastICA as scikit-learn's `FastICA(whiten="unit-variance")` computes it
//! (the parallel algorithm, logcosh, whitening by SVD, tolerance 1e-4, at most
//! 200 iterations), in f64, from a given initial unmixing matrix so that a
//! reference started from the same matrix agrees.

use crate::engine::omp::sum_over_ranges;
use crate::splitmix::SplitMix64;
use tch::{Kind, Tensor};

const TOL: f64 = 1e-4;
const MAX_ITER: usize = 200;

/// `k × k` standard normal draws (Box–Muller on a seeded SplitMix64): `w_init`.
pub fn normal_matrix(k: usize, seed: u64) -> Vec<f64> {
    let mut rng = SplitMix64(seed);
    let mut uniform = || (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
    (0..k * k)
        .map(|_| {
            let (u1, u2) = (1.0 - uniform(), uniform());
            (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
        })
        .collect()
}

/// `(W Wᵀ)^{-1/2} W`: the rows made orthonormal symmetrically.
fn sym_decorrelation(w: &Tensor) -> Tensor {
    let (s, u) = w.matmul(&w.tr()).linalg_eigh("L");
    let s = s.clamp_min(f64::MIN_POSITIVE);
    (&u * s.rsqrt().unsqueeze(0)).matmul(&u.tr()).matmul(w)
}

/// Components `min(k, rank)`: the directions with non-zero variance (dead
/// units make features rank-deficient, where whitening would divide by zero).
pub fn components(x: &Tensor, k: usize) -> usize {
    let centred = x - x.mean_dim(0, true, Kind::Double);
    let s = super::values(&centred.svd(true, false).1);
    let largest = s.first().copied().unwrap_or(0.0);
    k.min(s.iter().filter(|&&v| v > largest * 1e-10).count())
}

/// One iteration's sums over the samples (`n × k` values, row-major) with
/// `g = tanh(w·x)`: `Σ g·xᵀ` (`k × k`, row-major) then `Σ (1 − g²)` (`k`). Plain
/// loops on libtorch's threads: per op, libtorch's threading cost more than
/// these few thousand 10-value rows.
fn sums(samples: &[f64], k: usize, w: &[f64]) -> Vec<f64> {
    sum_over_ranges(samples.len() / k, k * k + k, |range, sum: &mut [f64]| {
        let mut g = vec![0.0; k];
        for x in samples[range.start * k..range.end * k].chunks(k) {
            for (gi, wi) in g.iter_mut().zip(w.chunks(k)) {
                *gi = wi.iter().zip(x).map(|(a, b)| a * b).sum::<f64>().tanh();
            }
            for (i, &gi) in g.iter().enumerate() {
                sum[i * k..(i + 1) * k].iter_mut().zip(x).for_each(|(s, &xl)| *s += gi * xl);
                sum[k * k + i] += 1.0 - gi * gi;
            }
        }
    })
}

/// The unit-variance independent sources of `x` (`[n, D]` f64): `[n, k]`, with
/// `w_init` (`k × k`, row-major) and `k` from `components`.
pub fn fast_ica(x: &Tensor, k: usize, w_init: &[f64]) -> Tensor {
    let n = x.size()[0];
    let xt = (x - x.mean_dim(0, true, Kind::Double)).tr();
    let (u, d, _) = xt.svd(true, true);
    // Each column's largest entry made positive (scikit-learn's `svd_flip`):
    // FastICA's own rule, the first entry's sign, is 0 or a rounding error's
    // sign when the first feature is a dead unit.
    let largest = u.abs().argmax(0, true);
    let sign = u.gather(0, &largest, false).ge(0.0).to_kind(Kind::Double) * 2.0 - 1.0;
    let u = &u * sign;
    let kk = k as i64;
    let whitening = (u / d.unsqueeze(0)).tr().narrow(0, 0, kk);
    let x1 = whitening.matmul(&xt) * (n as f64).sqrt();
    let samples = super::values(&x1.tr());
    let mut w = sym_decorrelation(&Tensor::from_slice(w_init).view([kk, kk]));
    for _ in 0..MAX_ITER {
        let step = sums(&samples, k, &super::values(&w));
        let (gx, g_prime) = (Tensor::from_slice(&step[..k * k]).view([kk, kk]), Tensor::from_slice(&step[k * k..]));
        let w1 = sym_decorrelation(&((gx - g_prime.unsqueeze(1) * &w) / n as f64));
        let lim = ((&w1 * &w).sum_dim_intlist(1, false, Kind::Double).abs() - 1.0).abs().max().double_value(&[]);
        w = w1;
        if lim < TOL {
            break;
        }
    }
    let sources = w.matmul(&whitening).matmul(&xt).tr();
    let std = sources.std_dim(0, false, true);
    sources / std
}
