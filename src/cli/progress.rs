//! indicatif progress bars for training and sweeps on the command line.

use crate::engine::train::{Phase, TrainEvent};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::ops::ControlFlow;

/// One bar per training phase showing loss, batch accuracy, images/s and ETA.
pub struct TrainingBars {
    bar: Option<(Phase, ProgressBar)>,
    visible: bool,
}

impl TrainingBars {
    pub fn new(visible: bool) -> TrainingBars {
        TrainingBars { bar: None, visible }
    }

    pub fn on_event(&mut self, event: TrainEvent) -> ControlFlow<()> {
        match event {
            TrainEvent::Step(r) => {
                let bar = self.bar_for(r.phase, r.total_steps);
                bar.set_position(r.step as u64);
                let loss = r.losses.last().copied().unwrap_or(f32::NAN);
                bar.set_message(format!(
                    "loss {loss:.4}  batch acc {:.1}%  {:.0} img/s  ETA {:.0}s",
                    r.batch_acc,
                    r.images_per_sec,
                    r.eta_s()
                ));
                if r.step == r.total_steps {
                    bar.finish();
                }
            }
            TrainEvent::Eval(p) if self.visible => {
                let line = format!(
                    "  {} step {:>5}: clean {:6.2}  poison {:6.2}  rehab {:6.2}",
                    p.phase, p.step, p.clean_acc, p.poison_acc, p.rehab_acc
                );
                // Bars draw only on a terminal; a log file still gets the timeline.
                match &self.bar {
                    Some((_, bar)) if std::io::stderr().is_terminal() => bar.println(line),
                    _ => eprintln!("{line}"),
                }
            }
            TrainEvent::Eval(_) => {}
        }
        ControlFlow::Continue(())
    }

    fn bar_for(&mut self, phase: Phase, total: usize) -> &ProgressBar {
        if self.bar.as_ref().is_none_or(|(p, _)| *p != phase) {
            let bar = ProgressBar::with_draw_target(
                Some(total as u64),
                if self.visible { ProgressDrawTarget::stderr_with_hz(10) } else { ProgressDrawTarget::hidden() },
            );
            bar.set_style(
                ProgressStyle::with_template("{prefix:>7} [{bar:30}] {pos}/{len} {msg}")
                    .expect("a valid template")
                    .progress_chars("=> "),
            );
            bar.set_prefix(phase.name());
            self.bar = Some((phase, bar));
        }
        &self.bar.as_ref().expect("just set").1
    }
}

/// A bar for a sweep or other counted job.
pub fn counter(label: &str, total: usize, visible: bool) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(
        Some(total as u64),
        if visible { ProgressDrawTarget::stderr_with_hz(10) } else { ProgressDrawTarget::hidden() },
    );
    bar.set_style(ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {elapsed}").expect("a valid template"));
    bar.set_prefix(label.to_string());
    bar
}
