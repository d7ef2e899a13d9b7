//! What handling a message asks for. Panes return these from their key and reply
//! handlers; the app applies the ones about itself (focus, notices, popups) and
//! the event loop carries out the rest (commands to the worker, exports, quitting).

use super::protocol::{Checkpoints, Command};
use crate::figure::Figure;
use crate::table::Table;
use std::path::PathBuf;

#[derive(Debug)]
pub enum Effect {
    Send(Command),
    Export(Box<ExportJob>),
    /// Read the run's saved session (in `root`), keeping what was computed on
    /// these checkpoints and test images; the answer comes back as `Msg::Restored`.
    Restore {
        root: PathBuf,
        checkpoints: Checkpoints,
        test_images: usize,
    },
    Quit,
    /// A short message in the footer.
    Notice(String),
    Popup(Popup),
    /// Focus the pane of this number (1-based).
    Focus(usize),
    /// Focus the pane whose handler asked (panes do not name themselves).
    FocusOwner,
    /// Focus the pane after the one whose handler asked.
    FocusNext,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Question {
    QuitWhileTraining,
    Retrain,
    /// Every key that writes into the run asks first.
    Recover,
    Unlearn,
}

impl Question {
    pub fn text(self) -> &'static str {
        match self {
            Question::QuitWhileTraining => "Training is running. Quit anyway? Finished phases stay saved.",
            Question::Retrain => "Retrain all three models with these settings? The saved checkpoints are replaced.",
            Question::Recover => {
                "Recover the trigger? Writes recovery-poisoned.json and its pictures (recovery-poisoned/) into the run, replacing a saved recovery of the poisoned model."
            }
            Question::Unlearn => {
                "Unlearn the flagged trigger? Writes the unlearned model (unlearned.safetensors and its record) and its log (unlearn.jsonl) into the run, replacing a saved one."
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Popup {
    Error(String),
    Notice(String),
    Confirm(Question),
}

/// Files to write: figures (as SVG and PNG) and tables (as CSV and Markdown), on
/// a helper thread.
#[derive(Debug)]
pub struct ExportJob {
    pub dir: PathBuf,
    pub figures: Vec<(String, Figure)>,
    pub tables: Vec<(String, Table)>,
}

impl ExportJob {
    /// Writes every file; returns the folder.
    pub fn write(self) -> Result<PathBuf, String> {
        let fail = |what: &PathBuf, e: &dyn std::fmt::Display| format!("cannot write {}: {e}", what.display());
        std::fs::create_dir_all(&self.dir).map_err(|e| fail(&self.dir, &e))?;
        for (name, figure) in &self.figures {
            figure.save(&self.dir, name)?;
        }
        for (name, table) in &self.tables {
            for (ext, text) in [("csv", table.to_csv()), ("md", table.to_markdown())] {
                let path = self.dir.join(format!("{name}.{ext}"));
                std::fs::write(&path, text).map_err(|e| fail(&path, &e))?;
            }
        }
        Ok(self.dir)
    }
}
