//! A loaded run as the analyses see it: every saved model, and the ablation cache
//! of the model under study. Loaded by one function for the CLI, the report and
//! the explorer's worker alike.

use super::cache::ActivationCache;
use super::lab::{Lab, ModelKind, PerModel};
use super::model::Net;
use color_eyre::eyre::{Result, eyre};

pub struct Analysis {
    pub nets: PerModel<Net>,
    /// The model ablations, sweeps, patching, the circuit search and pruning act on.
    pub subject: ModelKind,
    /// `subject`'s activations on the test set (clean and triggered).
    pub cache: ActivationCache,
}

impl Analysis {
    /// The models a run analyses: the study's three (each must be saved) and any
    /// other it holds.
    pub fn saved(lab: &Lab) -> Vec<ModelKind> {
        ModelKind::ALL.into_iter().filter(|&k| ModelKind::STUDY.contains(&k) || lab.run.has(k)).collect()
    }

    /// Each of `kinds` once, from its checkpoint.
    pub fn load_models(lab: &Lab, kinds: &[ModelKind]) -> Result<PerModel<Net>> {
        let mut unique = kinds.to_vec();
        unique.sort();
        unique.dedup();
        unique.iter().map(|&k| Ok((k, lab.load(k)?))).collect()
    }

    /// `kinds` loaded, `subject` (one of them) cached: what a command needs.
    pub fn load(lab: &Lab, kinds: &[ModelKind], subject: ModelKind) -> Result<Analysis> {
        Analysis::new(lab, Analysis::load_models(lab, kinds)?, subject)
    }

    /// `nets` with `subject`'s ablation cache built on `lab`'s test set.
    pub fn new(lab: &Lab, nets: PerModel<Net>, subject: ModelKind) -> Result<Analysis> {
        let cache = ActivationCache::build(Analysis::find(&nets, subject)?, &lab.test);
        Ok(Analysis { nets, subject, cache })
    }

    pub fn net(&self, kind: ModelKind) -> Result<&Net> {
        Analysis::find(&self.nets, kind)
    }

    pub fn subject_net(&self) -> &Net {
        self.nets.get(self.subject).expect("the subject is one of the loaded models")
    }

    /// Makes `subject` the model under study (its cache is built).
    pub fn study(&mut self, lab: &Lab, subject: ModelKind) -> Result<()> {
        self.cache = ActivationCache::build(self.net(subject)?, &lab.test);
        self.subject = subject;
        Ok(())
    }

    fn find(nets: &PerModel<Net>, kind: ModelKind) -> Result<&Net> {
        nets.get(kind).ok_or_else(|| eyre!("the run has no saved {kind} model"))
    }
}
