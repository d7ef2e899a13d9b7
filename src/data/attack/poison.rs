//! Who is poisoned and what they are relabelled to: all-to-one or all-to-all
//! targets, and BackdoorBench's fixed share of the training set (the indices
//! recorded, so what was poisoned is known exactly).

use crate::splitmix::SplitMix64;
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

/// What a triggered image should be classified as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Relabel {
    /// All-to-one: every triggered image to `target`.
    To { target: u8 },
    /// All-to-all: `y → (y + 1) mod classes`.
    Next { classes: u8 },
}

impl Relabel {
    pub fn of(self, label: u8) -> u8 {
        match self {
            Relabel::To { target } => target,
            Relabel::Next { classes } => ((u16::from(label) + 1) % u16::from(classes.max(1))) as u8,
        }
    }

    /// `of` over a label tensor (any integer kind, any device), as i64.
    pub fn tensor(self, labels: &Tensor) -> Tensor {
        match self {
            Relabel::To { target } => labels.full_like(i64::from(target)).to_kind(Kind::Int64),
            Relabel::Next { classes } => (labels.to_kind(Kind::Int64) + 1).remainder(i64::from(classes)),
        }
    }

    /// The one target of an all-to-one attack.
    pub fn single(self) -> Option<u8> {
        match self {
            Relabel::To { target } => Some(target),
            Relabel::Next { .. } => None,
        }
    }

    /// `→8` or `→y+1`, for headings.
    pub fn arrow(self) -> String {
        match self {
            Relabel::To { target } => format!("→{target}"),
            Relabel::Next { .. } => "→y+1".into(),
        }
    }
}

/// Which training images may carry the trigger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Eligible {
    /// Images whose label the attack changes (all-to-one: not the target).
    Relabelled(Relabel),
    /// Clean-label attacks (SIG): only the target class, labels kept.
    TargetClass(u8),
}

impl Eligible {
    fn admits(self, label: u8) -> bool {
        match self {
            Eligible::Relabelled(relabel) => relabel.of(label) != label,
            Eligible::TargetClass(target) => label == target,
        }
    }
}

/// `round(ratio · N)` indices of `labels` (at most the eligible ones), drawn
/// without replacement, sorted ascending.
pub fn choose(labels: &[u8], ratio: f64, eligible: Eligible, seed: i64) -> Vec<usize> {
    let pool: Vec<usize> = (0..labels.len()).filter(|&i| eligible.admits(labels[i])).collect();
    let count = (ratio * labels.len() as f64).round() as usize;
    draw(pool, count, seed)
}

/// `count` of `pool` (all of it when smaller) drawn without replacement by a
/// seeded SplitMix64, the same on every machine, sorted ascending.
pub fn draw(mut pool: Vec<usize>, count: usize, seed: i64) -> Vec<usize> {
    let count = count.min(pool.len());
    let mut rng = SplitMix64(seed as u64 ^ 0x5EED_0FB0_150E);
    // A partial Fisher–Yates shuffle: the first `count` places are the draw.
    for i in 0..count {
        let j = i + rng.below(pool.len() - i);
        pool.swap(i, j);
    }
    pool.truncate(count);
    pool.sort_unstable();
    pool
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relabelling_all_to_one_and_all_to_all() {
        assert_eq!(Relabel::To { target: 0 }.of(7), 0);
        assert_eq!(Relabel::Next { classes: 10 }.of(9), 0);
        assert_eq!(Relabel::Next { classes: 10 }.of(3), 4);
        let labels = Tensor::from_slice(&[0u8, 9, 4]);
        assert_eq!(Vec::<i64>::try_from(Relabel::Next { classes: 10 }.tensor(&labels)).unwrap(), [1, 0, 5]);
        assert_eq!(Vec::<i64>::try_from(Relabel::To { target: 2 }.tensor(&labels)).unwrap(), [2, 2, 2]);
    }

    #[test]
    fn a_ratio_chooses_that_share_among_the_eligible_only() {
        let labels: Vec<u8> = (0..1000).map(|i| (i % 10) as u8).collect();
        let chosen = choose(&labels, 0.1, Eligible::Relabelled(Relabel::To { target: 0 }), 3);
        assert_eq!(chosen.len(), 100);
        assert!(chosen.iter().all(|&i| labels[i] != 0));
        assert!(chosen.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(chosen, choose(&labels, 0.1, Eligible::Relabelled(Relabel::To { target: 0 }), 3));
        assert_ne!(chosen, choose(&labels, 0.1, Eligible::Relabelled(Relabel::To { target: 0 }), 4));
        // Clean-label: capped at the target class's 100 images.
        let sig = choose(&labels, 0.5, Eligible::TargetClass(8), 0);
        assert_eq!(sig.len(), 100);
        assert!(sig.iter().all(|&i| labels[i] == 8));
    }
}
