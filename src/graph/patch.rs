//! Activation patching on a graph: each unit of one node's output replaced,
//! image by image, by its value in another pass — the twin image (denoise,
//! noise) or a donor model on the same image (model) — and every later node
//! rerun. The donor's values are computed once per chunk of images, and each
//! unit runs as a change to the receiver's unpatched pass (exec/delta.rs): only
//! the unit's channel is computed until the first op that mixes channels.
//! `reference` is the slow, obvious path: a full forward per unit with the
//! node's output overwritten (a PyTorch forward hook).

use super::exec::{Executor, Intervention, Replacement};
use crate::engine::patch::{Direction, PatchEffect, effect};
use crate::engine::testset::{self, TestSet};
use serde::Serialize;
use std::ops::{ControlFlow, Range};
use tch::Tensor;

#[derive(Debug, Clone, Serialize)]
pub struct GraphPatchRow {
    pub node: String,
    pub unit: i64,
    #[serde(flatten)]
    pub effect: PatchEffect,
}

/// A receiver, where its patched values come from, and the images.
pub struct NodePatch<'a> {
    receiver: &'a Executor,
    /// The receiver itself for denoise and noise.
    donor: &'a Executor,
    raw: &'a TestSet,
    /// The patched rows of the `[2N]` test set, and the offset to their donor rows.
    rows: Range<i64>,
    offset: i64,
    /// The receiver's unpatched predictions `[2N]`.
    baseline: Tensor,
}

impl<'a> NodePatch<'a> {
    /// `donor` is required for (and only for) `Direction::Model`, and must be the
    /// receiver's graph.
    pub fn new(
        receiver: &'a Executor,
        donor: Option<&'a Executor>,
        raw: &'a TestSet,
        direction: Direction,
    ) -> Result<NodePatch<'a>, String> {
        let donor = direction.donor(receiver, donor)?;
        if donor.spec != receiver.spec {
            return Err("the donor model is another graph: model ↔ model patching needs one graph".into());
        }
        let (rows, offset) = direction.rows(raw.len() as i64);
        let baseline = {
            let _guard = tch::no_grad_guard();
            raw.predict_with(|x| receiver.logits(x, &[]))
        };
        Ok(NodePatch { receiver, donor, raw, rows, offset, baseline })
    }

    /// The patched rows unpatched.
    pub fn baseline(&self) -> PatchEffect {
        self.effect_of(&self.each_chunk(|x, _| self.receiver.logits(x, &[])))
    }

    /// Every unit of `node`, each patched alone; `progress(done, total)` may stop
    /// early, and then only the units that saw every chunk have rows.
    pub fn patch(&self, node: usize, mut progress: impl FnMut(usize, usize) -> ControlFlow<()>) -> Vec<GraphPatchRow> {
        let _guard = tch::no_grad_guard();
        let units = self.receiver.shapes[node][0];
        let chunks = self.chunks();
        let total = chunks.len() * units as usize;
        let mut logits: Vec<Vec<Tensor>> = (0..units).map(|_| Vec::new()).collect();
        'chunks: for (c, (x, donor_x)) in chunks.iter().enumerate() {
            let base = self.receiver.base_pass(x);
            let donor = self.donor.checkpoint(donor_x, node);
            for (u, unit_logits) in logits.iter_mut().enumerate() {
                let values = donor.output().narrow(1, u as i64, 1);
                unit_logits.push(self.receiver.logits_with_unit(&base, node, u as i64, &values));
                if progress(c * units as usize + u + 1, total).is_break() {
                    break 'chunks;
                }
            }
        }
        logits
            .into_iter()
            .take_while(|l| l.len() == chunks.len())
            .enumerate()
            .map(|(u, l)| self.row(node, u as i64, &Tensor::cat(&l, 0)))
            .collect()
    }

    /// The slow, obvious path for one unit: the donor's full forward keeping the
    /// node's output, then the receiver's full forward with the unit overwritten.
    pub fn reference(&self, node: usize, unit: i64) -> GraphPatchRow {
        let _guard = tch::no_grad_guard();
        let logits = self.each_chunk(|x, donor_x| {
            let (_, mut kept) = self.donor.logits_and(donor_x, &[], &[node]);
            let values = kept.swap_remove(0).narrow(1, unit, 1);
            let patched = Intervention { node, units: vec![unit], replace: Replacement::PerImage(values) };
            self.receiver.logits(x, &[patched])
        });
        self.row(node, unit, &logits)
    }

    fn row(&self, node: usize, unit: i64, logits: &Tensor) -> GraphPatchRow {
        GraphPatchRow { node: self.receiver.spec.nodes[node].name.clone(), unit, effect: self.effect_of(logits) }
    }

    fn effect_of(&self, logits: &Tensor) -> PatchEffect {
        effect(self.raw, &self.baseline, self.rows.clone(), logits)
    }

    /// The patched rows in chunks, each with the rows its values come from.
    fn chunks(&self) -> Vec<(Tensor, Tensor)> {
        let step = testset::chunk(self.receiver.device);
        (self.rows.start..self.rows.end)
            .step_by(step as usize)
            .map(|start| {
                let len = step.min(self.rows.end - start);
                (self.raw.inputs.narrow(0, start, len), self.raw.inputs.narrow(0, start + self.offset, len))
            })
            .collect()
    }

    /// `logits(patched images, donor images)` over every chunk, concatenated.
    fn each_chunk(&self, logits: impl Fn(&Tensor, &Tensor) -> Tensor) -> Tensor {
        let _guard = tch::no_grad_guard();
        let parts: Vec<Tensor> = self.chunks().iter().map(|(x, d)| logits(x, d)).collect();
        Tensor::cat(&parts, 0)
    }
}
