//! The Channels table's rows and columns, and its sort order. Shared by the pane
//! (which draws the rows) and `update` (which moves the cursor over them).

use crate::engine::ablation::AblationSet;
use crate::engine::layer::Layer;
use crate::engine::metrics::Metrics;
use crate::engine::sweep::SweepRow;
use crate::engine::uncertainty::Rate;
use serde::{Deserialize, Serialize};
use std::cmp::Ordering;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Column {
    Unit,
    WeightChange,
    ActivationChange,
    Clean,
    Poison,
    Rehab,
}

impl Column {
    pub const ALL: [Column; 6] =
        [Column::Unit, Column::WeightChange, Column::ActivationChange, Column::Clean, Column::Poison, Column::Rehab];

    pub fn title(self) -> &'static str {
        match self {
            Column::Unit => "unit",
            Column::WeightChange => "‖Δw‖",
            Column::ActivationChange => "trigger Δ",
            Column::Clean => "clean",
            Column::Poison => "poison",
            Column::Rehab => "rehab",
        }
    }

    /// Largest first for the changes (the suspects), smallest first for the
    /// metrics left after ablating a unit (the most damaging ablations).
    pub fn descending_by_default(self) -> bool {
        matches!(self, Column::WeightChange | Column::ActivationChange)
    }

    pub fn next(self) -> Column {
        let i = Column::ALL.iter().position(|&c| c == self).unwrap_or(0);
        Column::ALL[(i + 1) % Column::ALL.len()]
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sort {
    pub column: Column,
    pub descending: bool,
    /// Most significant poison change first (swept − unablated, `!`), over `column`.
    #[serde(default)]
    pub significance: bool,
}

impl Default for Sort {
    fn default() -> Self {
        Sort { column: Column::Unit, descending: false, significance: false }
    }
}

/// One unit of a layer with everything known about it.
#[derive(Debug, Clone, PartialEq)]
pub struct ChannelRow {
    pub unit: usize,
    pub weight_change: Option<f64>,
    pub activation_change: Option<f64>,
    /// The metrics with this unit ablated alone.
    pub swept: Option<Metrics>,
    pub ablated: bool,
}

impl ChannelRow {
    pub fn value(&self, column: Column) -> Option<f64> {
        match column {
            Column::Unit => Some(self.unit as f64),
            Column::WeightChange => self.weight_change,
            Column::ActivationChange => self.activation_change,
            Column::Clean => self.swept.as_ref().map(|m| m.clean_acc),
            Column::Poison => self.swept.as_ref().map(|m| m.poison_acc),
            Column::Rehab => self.swept.as_ref().map(|m| m.rehab_acc),
        }
    }
}

/// What is known about a layer's units, from the app's state.
pub struct LayerFacts<'a> {
    pub layer: Layer,
    /// ‖studied − compared‖ per unit.
    pub weight_change: Option<Vec<f64>>,
    pub activation_change: Option<&'a [f64]>,
    pub sweep: Option<&'a [SweepRow]>,
    pub set: &'a AblationSet,
    /// The studied model's metrics with nothing ablated (significance is against it).
    pub base: Option<&'a Metrics>,
}

/// How far the 95 % interval of a unit's poison change lies from zero: positive
/// when it excludes zero (the larger, the surer), else minus how deep zero lies
/// in it; `None` without a sweep or a base.
pub fn significance(swept: Option<&Metrics>, base: Option<&Metrics>) -> Option<f64> {
    let d = swept?.difference(base?, Rate::Poison)?;
    Some(d.lo.max(-d.hi))
}

/// The layer's rows in `sort` order; units without a value in the sort column go
/// last, ties by unit.
pub fn rows(facts: &LayerFacts, sort: Sort) -> Vec<ChannelRow> {
    let mut rows: Vec<ChannelRow> = (0..facts.layer.units())
        .map(|unit| ChannelRow {
            unit,
            weight_change: facts.weight_change.as_ref().and_then(|w| w.get(unit).copied()),
            activation_change: facts.activation_change.and_then(|a| a.get(unit).copied()),
            swept: facts.sweep.and_then(|s| s.iter().find(|r| r.unit == unit)).map(|r| r.metrics.clone()),
            ablated: facts.set.contains(facts.layer, unit),
        })
        .collect();
    let value = |r: &ChannelRow| match sort.significance {
        true => significance(r.swept.as_ref(), facts.base),
        false => r.value(sort.column),
    };
    let descending = sort.descending || sort.significance;
    rows.sort_by(|a, b| {
        let order = match (value(a), value(b)) {
            (Some(x), Some(y)) => {
                let o = x.total_cmp(&y);
                if descending { o.reverse() } else { o }
            }
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (None, None) => Ordering::Equal,
        };
        order.then(a.unit.cmp(&b.unit))
    });
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorting_puts_missing_values_last_and_breaks_ties_by_unit() {
        let change = [0.5, 2.0, 0.5, 1.0];
        let set = AblationSet::single(Layer::Fc2, 1);
        let facts = LayerFacts {
            layer: Layer::Fc2,
            weight_change: None,
            activation_change: Some(&change),
            sweep: None,
            set: &set,
            base: None,
        };
        let units = |sort| rows(&facts, sort).iter().map(|r| r.unit).collect::<Vec<_>>();
        let by_change = Sort { column: Column::ActivationChange, descending: true, significance: false };
        assert_eq!(units(by_change), vec![1, 3, 0, 2, 4, 5, 6, 7, 8, 9]);
        assert_eq!(units(Sort { descending: false, ..by_change })[..4], [0, 2, 3, 1]);
        assert_eq!(units(Sort { column: Column::Poison, ..Sort::default() }), (0..10).collect::<Vec<_>>());
        assert!(rows(&facts, Sort::default())[1].ablated);
        assert_eq!(Column::Rehab.next(), Column::Unit);
    }
}
