//! 95 % intervals for the accuracies and rates the explorer and the CLI report:
//! Wilson's score interval for one proportion, and Newcombe's hybrid score
//! intervals (his method 10) for a difference of two, paired when both were
//! measured on the same images and each image's outcome is known.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The normal quantile of a two-sided 95 % interval.
const Z: f64 = 1.959_963_984_540_054;

/// An interval of proportions (0..1) or of their differences (−1..1).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Interval {
    pub lo: f64,
    pub hi: f64,
}

impl Interval {
    /// The same interval in percent (points for a difference), as the metrics are.
    pub fn percent(self) -> [f64; 2] {
        [100.0 * self.lo, 100.0 * self.hi]
    }

    /// Whether zero lies outside: a difference the images can tell from none.
    pub fn excludes_zero(self) -> bool {
        self.lo > 0.0 || self.hi < 0.0
    }
}

/// Wilson's score interval for `hits` successes out of `n` (the whole range
/// when `n` is 0). Unlike the normal approximation it stays inside 0..1 and
/// does not shrink to a point at 0 % or 100 %, where backdoor rates often are.
pub fn wilson(hits: usize, n: usize) -> Interval {
    if n == 0 {
        return Interval { lo: 0.0, hi: 1.0 };
    }
    let (n, p) = (n as f64, hits as f64 / n as f64);
    let z2 = Z * Z;
    let denominator = 1.0 + z2 / n;
    let centre = (p + z2 / (2.0 * n)) / denominator;
    let half = Z * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt() / denominator;
    Interval { lo: (centre - half).max(0.0), hi: (centre + half).min(1.0) }
}

/// Hits behind a percentage of `n` (the metrics keep percentages and counts).
pub fn hits_of(percent: f64, n: usize) -> usize {
    (percent / 100.0 * n as f64).round().clamp(0.0, n as f64) as usize
}

/// Wilson's interval of a percentage measured on `n` images, in percent.
pub fn wilson_percent(percent: f64, n: usize) -> [f64; 2] {
    wilson(hits_of(percent, n), n).percent()
}

/// Newcombe's interval for p₁ − p₂ from each proportion's Wilson interval,
/// with `phi` the correlation of the two outcomes (0 for independent samples).
fn newcombe(p1: f64, w1: Interval, p2: f64, w2: Interval, phi: f64) -> Interval {
    let spread = |a: f64, b: f64| (a * a - 2.0 * phi * a * b + b * b).max(0.0).sqrt();
    let theta = p1 - p2;
    Interval { lo: theta - spread(p1 - w1.lo, w2.hi - p2), hi: theta + spread(w1.hi - p1, p2 - w2.lo) }
}

/// p₁ − p₂ for `x1` of `n1` and `x2` of `n2` measured on different images
/// (Newcombe 1998, Statistics in Medicine 17:873, method 10).
pub fn difference_independent(x1: usize, n1: usize, x2: usize, n2: usize) -> Interval {
    let p = |x: usize, n: usize| if n == 0 { 0.0 } else { x as f64 / n as f64 };
    newcombe(p(x1, n1), wilson(x1, n1), p(x2, n2), wilson(x2, n2), 0.0)
}

/// The paired 2×2 table of two outcomes on the same images.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Paired {
    /// Both right (or both hits).
    pub both: usize,
    /// Only the first.
    pub first: usize,
    /// Only the second.
    pub second: usize,
    pub neither: usize,
}

/// p₁ − p₂ on the same images (Newcombe 1998, Statistics in Medicine 17:2635,
/// method 10). An ablation changes the predictions of few images, so the two
/// outcomes are strongly correlated: treating them as independent samples
/// would give an interval several times too wide, and a 0.3-point change on
/// 10,000 images that moved 30 images one way and none back is real. Newcombe's
/// method keeps Wilson's behaviour at 0 % and 100 % (where a Wald interval on
/// the discordant pairs collapses) and needs only the four counts.
pub fn difference_paired(t: Paired) -> Interval {
    let n = t.both + t.first + t.second + t.neither;
    if n == 0 {
        return Interval { lo: -1.0, hi: 1.0 };
    }
    let (x1, x2) = (t.both + t.first, t.both + t.second);
    let margins = [x1, n - x1, x2, n - x2].iter().map(|&m| m as f64).product::<f64>();
    let cross = t.both as f64 * t.neither as f64 - t.first as f64 * t.second as f64;
    // Any empty margin leaves the correlation undefined; Newcombe takes it as 0.
    let phi = if margins == 0.0 { 0.0 } else { cross / margins.sqrt() };
    let nf = n as f64;
    newcombe(x1 as f64 / nf, wilson(x1, n), x2 as f64 / nf, wilson(x2, n), phi)
}

/// Each image's outcome (hit or not) as bits, to pair two measurements.
/// Written as `LEN:BASE64` (the words' little-endian bytes).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Bits {
    words: Vec<u64>,
    len: usize,
}

impl Serialize for Bits {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let bytes: Vec<u8> = self.words.iter().flat_map(|w| w.to_le_bytes()).collect();
        serializer.serialize_str(&format!("{}:{}", self.len, STANDARD.encode(bytes)))
    }
}

impl<'de> Deserialize<'de> for Bits {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Bits, D::Error> {
        let text = String::deserialize(deserializer)?;
        let bad = || serde::de::Error::custom(format!("'{text}' is not LEN:BASE64 outcome bits"));
        let (len, data) = text.split_once(':').ok_or_else(bad)?;
        let len: usize = len.parse().map_err(|_| bad())?;
        let bytes = STANDARD.decode(data).map_err(|_| bad())?;
        if bytes.len() != len.div_ceil(64) * 8 {
            return Err(bad());
        }
        let words = bytes.chunks_exact(8).map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes"))).collect();
        Ok(Bits { words, len })
    }
}

impl Bits {
    pub fn from_fn(len: usize, hit: impl Fn(usize) -> bool) -> Bits {
        let mut words = vec![0u64; len.div_ceil(64)];
        for i in (0..len).filter(|&i| hit(i)) {
            words[i / 64] |= 1 << (i % 64);
        }
        Bits { words, len }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The paired table of `self` (first) and `other` (second); `None` when they
    /// are not the same number of images.
    pub fn paired(&self, other: &Bits) -> Option<Paired> {
        if self.len != other.len {
            return None;
        }
        let count = |f: fn(u64, u64) -> u64| {
            self.words.iter().zip(&other.words).map(|(&a, &b)| f(a, b).count_ones() as usize).sum::<usize>()
        };
        let (both, first, second) = (count(|a, b| a & b), count(|a, b| a & !b), count(|a, b| !a & b));
        Some(Paired { both, first, second, neither: self.len - both - first - second })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(i: Interval, lo: f64, hi: f64) {
        assert!((i.lo - lo).abs() < 5e-5 && (i.hi - hi).abs() < 5e-5, "{i:?} is not [{lo}, {hi}]");
    }

    /// References from the formulas in Python (`math` only) and Newcombe's papers.
    #[test]
    fn wilson_matches_known_values() {
        close(wilson(5, 10), 0.236_593, 0.763_407);
        close(wilson(0, 10), 0.0, 0.277_533);
        close(wilson(10, 10), 0.722_467, 1.0);
        close(wilson(9_700, 10_000), 0.966_472, 0.973_167);
        close(wilson(1, 3), 0.061_492, 0.792_340);
        assert_eq!(wilson(0, 0), Interval { lo: 0.0, hi: 1.0 });
        assert_eq!(wilson_percent(50.0, 10), [100.0 * wilson(5, 10).lo, 100.0 * wilson(5, 10).hi]);
    }

    /// Newcombe's worked examples: 56/70 − 48/80 is [0.0524, 0.3339] (1998a, method
    /// 10); the paired table 36, 12, 2, 0 is [0.0569, 0.3404] (1998b, method 10).
    #[test]
    fn newcombe_matches_his_examples() {
        close(difference_independent(56, 70, 48, 80), 0.052_431, 0.333_873);
        let paired = Paired { both: 36, first: 12, second: 2, neither: 0 };
        close(difference_paired(paired), 0.056_930, 0.340_428);
        // 30 images moved one way and 10 the other, of 10,000: a 0.2-point change
        // the pairing tells from none, and the unpaired interval does not.
        let small = Paired { both: 9_000, first: 30, second: 10, neither: 960 };
        close(difference_paired(small), 0.000_736, 0.003_289);
        assert!(difference_paired(small).excludes_zero());
        assert!(!difference_independent(9_030, 10_000, 9_010, 10_000).excludes_zero());
    }

    #[test]
    fn bits_pair_two_outcomes() {
        let a = Bits::from_fn(130, |i| i % 2 == 0);
        let b = Bits::from_fn(130, |i| i % 3 == 0);
        // Even and multiple of 3: multiples of 6 in 0..130 (22); even only: 65 − 22.
        assert_eq!(a.paired(&b), Some(Paired { both: 22, first: 43, second: 22, neither: 43 }));
        assert_eq!(a.paired(&Bits::from_fn(3, |_| true)), None);
        let text = serde_json::to_string(&a).unwrap();
        assert_eq!(serde_json::from_str::<Bits>(&text).unwrap(), a);
        assert!(serde_json::from_str::<Bits>("\"131:AAAA\"").is_err(), "a length its bytes do not hold");
    }
}
