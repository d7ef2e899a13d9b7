//! What the Training pane shows: live progress, the loss and accuracy timelines,
//! and the editable settings of the next run.

use super::protocol::{Progress, TrainUpdate};
use crate::engine::train::{EvalPoint, Phase, TrainConfig};

/// A setting the Training pane can change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Seed,
    Epochs,
    LambdaPoison,
    LambdaRehab,
    PoisonFraction,
}

impl Field {
    pub const ALL: [Field; 5] =
        [Field::Seed, Field::Epochs, Field::LambdaPoison, Field::LambdaRehab, Field::PoisonFraction];

    pub fn label(self) -> &'static str {
        match self {
            Field::Seed => "seed",
            Field::Epochs => "epochs per phase",
            Field::LambdaPoison => "λ poison",
            Field::LambdaRehab => "λ rehab",
            Field::PoisonFraction => "poison fraction",
        }
    }

    pub fn value(self, config: &TrainConfig) -> String {
        match self {
            Field::Seed => config.seed.to_string(),
            Field::Epochs => config.epochs.to_string(),
            Field::LambdaPoison => format!("{}", config.lambda_poison),
            Field::LambdaRehab => format!("{}", config.lambda_rehab),
            Field::PoisonFraction => format!("{:.2}", config.poison_fraction),
        }
    }

    /// One step up or down: seed and epochs by 1, λ by 100 (by 10 below 100),
    /// the poison fraction by 0.05; never out of the valid range.
    pub fn adjust(self, config: &mut TrainConfig, up: bool) {
        let sign = if up { 1.0 } else { -1.0 };
        let lambda = |v: f64| {
            let step = if v > 100.0 || (up && v >= 100.0) { 100.0 } else { 10.0 };
            (v + sign * step).max(0.0)
        };
        match self {
            Field::Seed => config.seed = if up { config.seed.saturating_add(1) } else { config.seed.saturating_sub(1) },
            Field::Epochs => {
                config.epochs = if up { config.epochs + 1 } else { config.epochs.saturating_sub(1).max(1) }
            }
            Field::LambdaPoison => config.lambda_poison = lambda(config.lambda_poison),
            Field::LambdaRehab => config.lambda_rehab = lambda(config.lambda_rehab),
            Field::PoisonFraction => {
                config.poison_fraction =
                    ((config.poison_fraction + sign * 0.05) * 100.0).round().clamp(0.0, 100.0) / 100.0
            }
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct TrainState {
    pub progress: Option<Progress>,
    /// Every step's loss in order, with its phase.
    pub losses: Vec<(Phase, f32)>,
    /// Where each phase's steps start in `losses`.
    pub phase_starts: Vec<(Phase, usize)>,
    /// Probe accuracies, each at its position on the same step axis as `losses`.
    pub evals: Vec<(f64, EvalPoint)>,
    /// The settings the next run uses.
    pub config: TrainConfig,
    pub field: usize,
    /// How the last run ended, for the status line.
    pub outcome: Option<String>,
}

impl TrainState {
    /// Forgets the timelines (a new run starts).
    pub fn restart(&mut self) {
        self.forget();
        self.outcome = None;
    }

    fn forget(&mut self) {
        self.losses.clear();
        self.phase_starts.clear();
        self.evals.clear();
        self.progress = None;
    }

    /// Shows a saved run's log instead of the current timelines.
    pub fn replace(&mut self, history: TrainUpdate) {
        self.forget();
        self.apply(history);
    }

    fn start_of(&mut self, phase: Phase) -> usize {
        match self.phase_starts.iter().find(|(p, _)| *p == phase) {
            Some((_, start)) => *start,
            None => {
                self.phase_starts.push((phase, self.losses.len()));
                self.losses.len()
            }
        }
    }

    pub fn apply(&mut self, update: TrainUpdate) {
        for (phase, loss) in update.losses {
            self.start_of(phase);
            self.losses.push((phase, loss));
        }
        for point in update.evals {
            let x = (self.start_of(point.phase) + point.step) as f64;
            self.evals.push((x, point));
        }
        if update.progress.is_some() {
            self.progress = update.progress;
        }
    }

    pub fn field(&self) -> Field {
        Field::ALL[self.field.min(Field::ALL.len() - 1)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_step_within_their_ranges() {
        let mut c = TrainConfig::default();
        Field::Epochs.adjust(&mut c, false);
        assert_eq!(c.epochs, 1);
        Field::LambdaPoison.adjust(&mut c, true);
        assert_eq!(c.lambda_poison, 1100.0);
        for _ in 0..20 {
            Field::LambdaRehab.adjust(&mut c, false);
        }
        assert_eq!(c.lambda_rehab, 0.0);
        Field::LambdaRehab.adjust(&mut c, true);
        assert_eq!(c.lambda_rehab, 10.0);
        for _ in 0..15 {
            Field::PoisonFraction.adjust(&mut c, true);
        }
        assert_eq!(c.poison_fraction, 1.0);
        assert!(c.validate().is_ok());
        assert_eq!(Field::PoisonFraction.value(&c), "1.00");
    }

    #[test]
    fn evaluations_line_up_with_the_losses_of_their_phase() {
        let mut state = TrainState::default();
        let point = |phase, step| EvalPoint { phase, step, clean_acc: 0.0, poison_acc: 0.0, rehab_acc: 0.0 };
        state.apply(TrainUpdate { losses: vec![(Phase::Clean, 1.0); 10], evals: vec![], progress: None });
        state.apply(TrainUpdate {
            losses: vec![(Phase::Poison, 1.0); 5],
            evals: vec![point(Phase::Poison, 0), point(Phase::Poison, 5)],
            progress: None,
        });
        assert_eq!(state.phase_starts, vec![(Phase::Clean, 0), (Phase::Poison, 10)]);
        assert_eq!(state.evals.iter().map(|(x, _)| *x).collect::<Vec<_>>(), vec![10.0, 15.0]);
    }
}
