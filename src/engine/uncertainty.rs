//! The metrics' uncertainty: each rate's 95 % Wilson interval, a difference of
//! two measurements' interval (paired when both know each image's outcome), and
//! the metrics written with `NAME_ci: [lo, hi]` beside each rate.

use super::metrics::Metrics;
use crate::data::attack::poison::Relabel;
use crate::stats::{self, Bits, Interval};
use serde::ser::{SerializeStruct, Serializer};
use serde::{Deserialize, Deserializer, Serialize};
use std::cell::Cell;
use std::sync::Arc;

/// Each image's outcome behind a set of metrics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outcomes {
    clean: Bits,
    poison: Bits,
    /// Poison hits among images whose label is not their target.
    asr: Bits,
    rehab: Bits,
    clean_as_target: Bits,
    /// Images whose label is not their target (the benchmark ASR's images).
    non_target: usize,
    class_total: Vec<usize>,
}

impl Outcomes {
    pub fn new(labels: &[u8], clean: &[i64], triggered: &[i64], relabel: Relabel, class_total: Vec<usize>) -> Outcomes {
        let n = labels.len();
        let target = |i: usize| relabel.of(labels[i]) as i64;
        let label = |i: usize| labels[i] as i64;
        Outcomes {
            clean: Bits::from_fn(n, |i| clean[i] == label(i)),
            poison: Bits::from_fn(n, |i| triggered[i] == target(i)),
            asr: Bits::from_fn(n, |i| label(i) != target(i) && triggered[i] == target(i)),
            rehab: Bits::from_fn(n, |i| triggered[i] == label(i)),
            clean_as_target: Bits::from_fn(n, |i| clean[i] == target(i)),
            non_target: (0..n).filter(|&i| label(i) != target(i)).count(),
            class_total,
        }
    }

    fn bits(&self, rate: Rate) -> &Bits {
        match rate {
            Rate::Clean => &self.clean,
            Rate::Poison => &self.poison,
            Rate::AsrNonTarget => &self.asr,
            Rate::Rehab => &self.rehab,
            Rate::CleanAsTarget => &self.clean_as_target,
        }
    }
}

/// The outcomes travel with the metrics in memory only, so two metrics with the
/// same numbers are equal whether or not they carry them (one read from a file,
/// one measured now).
#[derive(Debug, Clone, Default)]
pub struct Detail(Option<Arc<Outcomes>>);

impl Detail {
    pub fn of(outcomes: Outcomes) -> Detail {
        Detail(Some(Arc::new(outcomes)))
    }
}

impl PartialEq for Detail {
    fn eq(&self, _: &Detail) -> bool {
        true
    }
}

impl<'de> Deserialize<'de> for Detail {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Detail, D::Error> {
        Ok(Detail(Option::<Outcomes>::deserialize(deserializer)?.map(Arc::new)))
    }
}

thread_local! {
    static KEEP_DETAIL: Cell<bool> = const { Cell::new(false) };
}

/// Runs `write` with every metrics' per-image outcomes written too, as
/// `detail`: the explorer's session, so that a restored result's intervals and
/// paired differences are the ones shown when it was measured. Nowhere else
/// (a sweep's JSON would grow by a kilobyte per unit per thousand images).
pub fn keeping_detail<T>(write: impl FnOnce() -> T) -> T {
    KEEP_DETAIL.with(|k| k.set(true));
    let out = write();
    KEEP_DETAIL.with(|k| k.set(false));
    out
}

/// One of the rates the metrics report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rate {
    Clean,
    Poison,
    AsrNonTarget,
    Rehab,
    CleanAsTarget,
}

impl Rate {
    pub const ALL: [Rate; 5] = [Rate::Clean, Rate::Poison, Rate::AsrNonTarget, Rate::Rehab, Rate::CleanAsTarget];

    /// Its field in the metrics' JSON.
    pub fn field(self) -> &'static str {
        match self {
            Rate::Clean => "clean_acc",
            Rate::Poison => "poison_acc",
            Rate::AsrNonTarget => "asr_non_target",
            Rate::Rehab => "rehab_acc",
            Rate::CleanAsTarget => "clean_as_target",
        }
    }

    pub fn of(self, m: &Metrics) -> f64 {
        match self {
            Rate::Clean => m.clean_acc,
            Rate::Poison => m.poison_acc,
            Rate::AsrNonTarget => m.asr_non_target,
            Rate::Rehab => m.rehab_acc,
            Rate::CleanAsTarget => m.clean_as_target,
        }
    }
}

impl Metrics {
    fn outcomes(&self) -> Option<&Outcomes> {
        self.detail.0.as_deref()
    }

    /// How many images `rate` is a share of; `None` for the benchmark ASR of
    /// metrics read from a file (which images are the target's is not kept).
    pub fn images(&self, rate: Rate) -> Option<usize> {
        match rate {
            Rate::AsrNonTarget => self.outcomes().map(|o| o.non_target),
            _ => Some(self.count),
        }
    }

    /// `rate`'s 95 % Wilson interval, in percent.
    pub fn interval(&self, rate: Rate) -> Option<[f64; 2]> {
        self.images(rate).map(|n| stats::wilson_percent(rate.of(self), n))
    }

    /// Half the width of `rate`'s interval, in points (the "±" of a screen).
    pub fn half_width(&self, rate: Rate) -> Option<f64> {
        self.interval(rate).map(|[lo, hi]| (hi - lo) / 2.0)
    }

    /// Each class's clean accuracy's interval, where the class sizes are known.
    pub fn class_intervals(&self) -> Option<Vec<[f64; 2]>> {
        let totals = &self.outcomes()?.class_total;
        Some(self.per_class_clean.iter().zip(totals).map(|(&p, &n)| stats::wilson_percent(p, n)).collect())
    }

    /// The 95 % interval of `self − base` for `rate`, in points: paired when both
    /// know each image's outcome on the same images (an ablation and its base, two
    /// models on one test set), else as two independent samples, which for the
    /// positively correlated outcomes of the same images is wider: a difference
    /// marked significant then is so all the more.
    pub fn difference(&self, base: &Metrics, rate: Rate) -> Option<Interval> {
        let paired = match (self.outcomes(), base.outcomes()) {
            (Some(a), Some(b)) => a.bits(rate).paired(b.bits(rate)),
            _ => None,
        };
        let interval = match paired {
            Some(mut table) => {
                // The benchmark ASR's bits are 0 on the target's own images:
                // they are not among its images, not "neither".
                table.neither -= self.count - self.images(rate)?;
                stats::difference_paired(table)
            }
            None => {
                let (n1, n2) = (self.images(rate)?, base.images(rate)?);
                let hits = |m: &Metrics, n| stats::hits_of(rate.of(m), n);
                stats::difference_independent(hits(self, n1), n1, hits(base, n2), n2)
            }
        };
        Some(Interval { lo: 100.0 * interval.lo, hi: 100.0 * interval.hi })
    }

    /// Whether `self − base` is significant for `rate` at 95 % (its interval
    /// excludes zero).
    pub fn differs(&self, base: &Metrics, rate: Rate) -> bool {
        self.difference(base, rate).is_some_and(Interval::excludes_zero)
    }
}

/// The stored fields under their names, each rate followed by `NAME_ci`
/// (`[lo, hi]` in percent), left out where its images are not known.
impl Serialize for Metrics {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut s = serializer.serialize_struct("Metrics", 13)?;
        for rate in Rate::ALL {
            s.serialize_field(rate.field(), &rate.of(self))?;
            match self.interval(rate) {
                Some(ci) => s.serialize_field(ci_field(rate), &ci)?,
                None => s.skip_field(ci_field(rate))?,
            }
        }
        s.serialize_field("per_class_clean", &self.per_class_clean)?;
        match self.class_intervals() {
            Some(ci) => s.serialize_field("per_class_clean_ci", &ci)?,
            None => s.skip_field("per_class_clean_ci")?,
        }
        s.serialize_field("count", &self.count)?;
        match self.outcomes().filter(|_| KEEP_DETAIL.with(Cell::get)) {
            Some(outcomes) => s.serialize_field("detail", outcomes)?,
            None => s.skip_field("detail")?,
        }
        s.end()
    }
}

fn ci_field(rate: Rate) -> &'static str {
    match rate {
        Rate::Clean => "clean_acc_ci",
        Rate::Poison => "poison_acc_ci",
        Rate::AsrNonTarget => "asr_non_target_ci",
        Rate::Rehab => "rehab_acc_ci",
        Rate::CleanAsTarget => "clean_as_target_ci",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ten images of classes 0 and 1, target 0: the model is right on 8 clean
    /// images; an "ablated" one breaks two more.
    fn measured(clean: &[i64]) -> Metrics {
        let labels = [0, 1, 0, 1, 0, 1, 0, 1, 0, 1];
        let triggered = [0, 0, 0, 0, 0, 0, 1, 1, 1, 1];
        Metrics::from_predictions(&labels, clean, &triggered, Relabel::To { target: 0 }, 2)
    }

    #[test]
    fn every_rate_carries_its_wilson_interval_in_json() {
        let m = measured(&[0, 1, 0, 1, 0, 1, 0, 1, 1, 0]);
        let json = serde_json::to_value(&m).unwrap();
        let ci = |f: &str| json[f].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect::<Vec<_>>();
        // 8 of 10 clean right: Wilson [49.02, 94.33].
        assert!((ci("clean_acc_ci")[0] - 49.016).abs() < 1e-2 && (ci("clean_acc_ci")[1] - 94.332).abs() < 1e-2);
        // The benchmark ASR is over the 5 images of class 1 (3 sent to 0): [23.07, 88.24].
        assert_eq!(json["asr_non_target"], 60.0);
        assert!((ci("asr_non_target_ci")[0] - 23.072).abs() < 1e-2);
        assert_eq!(json["per_class_clean_ci"].as_array().unwrap().len(), 2);
        // Read back, the numbers are equal and the per-image detail is gone: the
        // benchmark ASR's images are no longer known, the others' still are.
        let back: Metrics = serde_json::from_value(json).unwrap();
        assert_eq!(back, m);
        assert_eq!(back.interval(Rate::AsrNonTarget), None);
        assert_eq!(back.interval(Rate::Clean), m.interval(Rate::Clean));
        // Kept for a session, the detail comes back: the same intervals.
        let kept: Metrics = serde_json::from_str(&keeping_detail(|| serde_json::to_string(&m)).unwrap()).unwrap();
        assert_eq!(kept.interval(Rate::AsrNonTarget), m.interval(Rate::AsrNonTarget));
        assert_eq!(kept.class_intervals(), m.class_intervals());
    }

    #[test]
    fn a_difference_on_the_same_images_is_paired() {
        let base = measured(&[0, 1, 0, 1, 0, 1, 0, 1, 0, 1]);
        let ablated = measured(&[0, 1, 0, 1, 0, 1, 0, 1, 1, 0]);
        // 10 of 10 → 8 of 10, both misses new: the paired table is 8, 0, 2, 0.
        let paired = ablated.difference(&base, Rate::Clean).unwrap();
        let reference = stats::difference_paired(stats::Paired { both: 8, first: 0, second: 2, neither: 0 });
        assert!((paired.lo - 100.0 * reference.lo).abs() < 1e-9 && (paired.hi - 100.0 * reference.hi).abs() < 1e-9);
        // Without the per-image outcomes, the two are independent samples.
        let read: Metrics = serde_json::from_value(serde_json::to_value(&ablated).unwrap()).unwrap();
        let unpaired = read.difference(&base, Rate::Clean).unwrap();
        let reference = stats::difference_independent(8, 10, 10, 10);
        assert!((unpaired.lo - 100.0 * reference.lo).abs() < 1e-9);
        assert_eq!(read.difference(&base, Rate::AsrNonTarget), None);
    }
}
