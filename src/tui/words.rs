//! The words on screen that need explaining, each with one meaning and its unit,
//! in one table: the focused pane's one-line hint under the panes and the
//! help's page of words (`?` twice) are both read from it, as the key table
//! drives the keys' help. A test checks that every abbreviation a pane draws is
//! here.

use super::panes::Pane;

/// One word or abbreviation, what it means, and the panes that show it.
pub struct Term {
    /// As drawn; `{t}` stands for the attack's target label.
    pub word: &'static str,
    pub meaning: &'static str,
    pub panes: &'static [Pane],
}

impl Term {
    /// The word as drawn on a run whose target label is `target` ("" for an
    /// all-to-all attack, whose ASR has no single target).
    pub fn shown(&self, target: &str) -> String {
        if target.is_empty() { self.word.replace("¬{t}", "") } else { self.word.replace("{t}", target) }
    }

    pub fn meaning(&self, target: &str) -> String {
        self.meaning.replace("{t}", if target.is_empty() { "the target" } else { target })
    }
}

use Pane::{Ablation, Activations, Channels, Circuit, Kernels, Layers, Training, Trigger};

pub const TERMS: &[Term] = &[
    Term { word: "mean|Δw|", meaning: "mean absolute weight change, studied − compared model", panes: &[Layers] },
    Term { word: "max|Δw|", meaning: "largest absolute weight change in the layer", panes: &[Layers] },
    Term { word: "abl", meaning: "units of the layer in the ablation set", panes: &[Layers] },
    Term {
        word: "‖Δw‖",
        meaning: "weight change: L2 norm of the unit's weights, studied − compared model",
        panes: &[Channels],
    },
    Term {
        word: "trigger Δ",
        meaning: "mean |activation change| of the studied model with vs without the trigger",
        panes: &[Channels],
    },
    Term {
        word: "ASR¬{t}",
        meaning: "attack success rate: triggered images whose label is not {t} classified as {t}, %",
        panes: &[Ablation],
    },
    Term { word: "✗", meaning: "the unit is in the ablation set", panes: &[Channels] },
    Term { word: "ms", meaning: "milliseconds the ablation's evaluation took", panes: &[Ablation] },
    Term { word: "Δ", meaning: "kernel weights of the studied minus the compared model", panes: &[Kernels] },
    Term { word: "±", meaning: "the colour scale's end: blue −x, red +x", panes: &[Kernels, Activations] },
    Term { word: "+T", meaning: "with the trigger stamped on the test image", panes: &[Activations] },
    Term {
        word: "model Δ",
        meaning: "activation of the studied model with the trigger minus the compared model's without",
        panes: &[Activations],
    },
    Term { word: "λ", meaning: "weight of the regulariser in a phase's loss", panes: &[Training] },
    Term { word: "L1", meaning: "the recovered mask's L1 norm: its pixels' sum, in pixels", panes: &[Trigger] },
    Term {
        word: "anom.",
        meaning: "anomaly index: how far below the median L1, in median absolute deviations; > 2 flags a label",
        panes: &[Trigger],
    },
    Term { word: "succ%", meaning: "share of images the recovered trigger sends to the label, %", panes: &[Trigger] },
    Term {
        word: "logit diff",
        meaning: "logit of the target minus logit of the true label, in logits (mean over images not of the target)",
        panes: &[Circuit],
    },
    Term {
        word: "DER",
        meaning: "defense effectiveness rating, 0–1: higher = backdoor removed while accuracy kept; @ = units pruned",
        panes: &[Circuit],
    },
    Term { word: "TAC", meaning: "trigger activation change: prunes the most changed units first", panes: &[Circuit] },
    Term { word: "CLP", meaning: "channel Lipschitz pruning: largest kernel singular value first", panes: &[Circuit] },
    Term {
        word: "clean",
        meaning: "accuracy on clean test images, % (a model's name in model columns)",
        panes: &[Channels, Ablation, Circuit, Trigger],
    },
    Term {
        word: "poison",
        meaning: "share of triggered test images classified as the target {t}, %",
        panes: &[Channels, Ablation, Circuit, Trigger],
    },
    Term {
        word: "rehab",
        meaning: "accuracy on triggered test images against their true labels, %",
        panes: &[Channels, Ablation, Circuit],
    },
];

/// What the pane shows, in a few words: the start of its hint.
fn shows(pane: Pane) -> &'static str {
    match pane {
        Layers => "weight change per layer",
        Channels => "the layer's units",
        Kernels => "the unit's kernels",
        Activations => "a test image, with and without the trigger",
        Ablation => "the set's accuracies",
        Training => "loss and probe accuracies",
        Trigger => "each label's smallest trigger",
        Circuit => "patching, circuit, pruning",
    }
}

/// The terms `pane` shows.
pub fn of(pane: Pane) -> impl Iterator<Item = &'static Term> {
    TERMS.iter().filter(move |t| t.panes.contains(&pane))
}

/// The focused pane's one-line hint: what it shows, then its words' meanings.
pub fn hint(pane: Pane, target: &str) -> String {
    let terms = of(pane).map(|t| format!("{} = {}", t.shown(target), t.meaning(target)));
    std::iter::once(format!("{}: {}", pane.title(), shows(pane))).chain(terms).collect::<Vec<_>>().join(" · ")
}
