//! The one place that knows which worker jobs are running (learnt from gitui's
//! `AsyncSingleJob` / `any_work_pending`): an entry is made when a command is sent,
//! updated by the generic progress reply, and removed by the job's result or its
//! failure. Stop, quit-while-busy, error popups and the status line all read it.

use super::protocol::{Command, Job, JobProgress};

/// A running job as the status line shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Running {
    pub job: Job,
    pub label: String,
    pub done: usize,
    pub total: usize,
}

impl Running {
    /// `label done/total (pct %)`, or the label alone while there is no count yet.
    pub fn text(&self) -> String {
        if self.total == 0 {
            return self.label.clone();
        }
        let pct = 100.0 * self.done as f64 / self.total as f64;
        format!("{} {}/{} ({pct:.0}%)", self.label, self.done, self.total)
    }
}

#[derive(Debug, Clone, Default)]
pub struct Jobs {
    /// Oldest first.
    running: Vec<Running>,
}

impl Jobs {
    /// A command was sent: its job is running (a newer command of the same job
    /// replaces the older's entry; the worker skips superseded ones).
    pub fn sent(&mut self, command: &Command) {
        let job = command.job();
        if job == Job::Control {
            return;
        }
        self.finish(job);
        self.running.push(Running { job, label: command.label(), done: 0, total: 0 });
    }

    pub fn progress(&mut self, progress: JobProgress) {
        let JobProgress { job, label, done, total } = progress;
        match self.running.iter_mut().find(|r| r.job == job) {
            Some(r) => {
                r.done = done;
                r.total = total;
                if let Some(label) = label {
                    r.label = label;
                }
            }
            None => self.running.push(Running { job, label: label.unwrap_or_default(), done, total }),
        }
    }

    pub fn finish(&mut self, job: Job) {
        self.running.retain(|r| r.job != job);
    }

    /// The worker is gone: nothing runs any more.
    pub fn clear(&mut self) {
        self.running.clear();
    }

    pub fn get(&self, job: Job) -> Option<&Running> {
        self.running.iter().find(|r| r.job == job)
    }

    /// The jobs running, oldest first.
    pub fn running(&self) -> impl Iterator<Item = Job> + '_ {
        self.running.iter().map(|r| r.job)
    }

    pub fn is_running(&self, job: Job) -> bool {
        self.get(job).is_some()
    }

    /// The running job `x` would stop (the worker runs one long job at a time).
    pub fn stoppable(&self) -> Option<&Running> {
        self.running.iter().find(|r| r.job.is_stoppable())
    }

    /// What the status line names: the stoppable job, else the newest.
    pub fn headline(&self) -> Option<&Running> {
        self.stoppable().or(self.running.last())
    }

    /// Refuses a new long job while the models are not ready or another runs,
    /// saying why.
    pub fn refuse_long_job(&self, ready: bool) -> Option<String> {
        if !ready {
            return Some("the models are not ready yet".into());
        }
        self.stoppable().map(|r| format!("{} is running (x stops it)", r.label))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::ablation::AblationMode;
    use crate::engine::layer::Layer;

    #[test]
    fn entries_follow_commands_progress_and_results() {
        let mut jobs = Jobs::default();
        jobs.sent(&Command::Sweep { layer: Layer::Conv2, mode: AblationMode::Weight });
        jobs.sent(&Command::Digit { index: 3 });
        jobs.sent(&Command::Cancel);
        assert_eq!(jobs.headline().map(|r| r.text()), Some("sweeping conv2".into()));
        jobs.progress(JobProgress { job: Job::Sweep, label: None, done: 16, total: 64 });
        assert_eq!(jobs.headline().unwrap().text(), "sweeping conv2 16/64 (25%)");
        assert_eq!(jobs.refuse_long_job(true), Some("sweeping conv2 is running (x stops it)".into()));
        jobs.finish(Job::Sweep);
        assert_eq!(jobs.stoppable(), None);
        assert_eq!(jobs.headline().map(|r| r.job), Some(Job::Digit));
        assert_eq!(jobs.refuse_long_job(true), None);
        assert_eq!(jobs.refuse_long_job(false), Some("the models are not ready yet".into()));
    }
}
