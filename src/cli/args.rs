//! Command-line arguments (clap).

use super::attack_args::AttackArgs;
use crate::data::dataset::Dataset;
use crate::data::trigger::TriggerConfig;
use crate::engine::ablation::AblationMode;
use crate::engine::cleanse::CleanseConfig;
use crate::engine::lab::ModelKind;
use crate::engine::patch::Direction;
use crate::engine::prune::Ranking;
use crate::engine::train::{Phase, TrainConfig};
pub use crate::setup::CommonArgs;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "trojanscope",
    version,
    about = "Find the circuit behind a backdoor in an MNIST CNN.",
    long_about = "Find the circuit behind a backdoor in an MNIST CNN.\n\n\
        Trains a clean CNN, a poisoned copy (a checkerboard trigger makes it say 8) and a \
        rehabilitated copy, then measures which channels carry the backdoor with ablations, \
        sweeps, layer swaps, weight differences and feature maximisation.\n\n\
        Without a subcommand, opens the interactive explorer."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub common: CommonArgs,
    /// Let a GPU's float32 convolutions and matrix products use TF32 (faster on
    /// Ampere and later, about three decimal digits); off by default, so a GPU's
    /// numbers match the CPU's.
    #[arg(long, global = true)]
    pub allow_tf32: bool,
    /// The explorer: start a clean session instead of restoring the one saved
    /// in the run (which the new one then replaces).
    #[arg(long)]
    pub fresh: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Train all three models (skipping those already saved) and write a full report.
    Run {
        #[command(flatten)]
        train: TrainArgs,
        /// Retrain even when checkpoints exist.
        #[arg(long)]
        retrain: bool,
    },
    /// Train some or all phases: clean → poison → rehab.
    Train {
        #[command(flatten)]
        train: TrainArgs,
        /// Phases to train, comma-separated; each starts from the previous model.
        #[arg(long, value_delimiter = ',', default_value = "clean,poison,rehab")]
        phases: Vec<Phase>,
    },
    /// Clean accuracy, poison accuracy (ASR), benchmark ASR and rehab accuracy.
    Eval {
        /// Models to evaluate (default: all three).
        #[arg(long, value_delimiter = ',')]
        model: Vec<ModelKind>,
        /// Evaluate a safetensors file instead (e.g. exported from PyTorch).
        #[arg(long)]
        checkpoint: Option<PathBuf>,
        /// Also print accuracy per digit.
        #[arg(long)]
        per_class: bool,
    },
    /// Ablate a set of units together and compare with the unablated model.
    Ablate {
        /// Units to ablate, e.g. "conv1:9,15 conv2:37"; on an imported graph, by
        /// PyTorch's module names: "layer2.1.conv2:1,2 features.2:7".
        units: String,
        #[command(flatten)]
        target: AblationTarget,
        /// Also compute the study's slow reload-zero-evaluate path and show both.
        #[arg(long)]
        reference: bool,
    },
    /// Ablate every unit of a layer alone: a units × metrics table.
    Sweep {
        /// conv1, conv2, fc1 or fc2; on an imported graph, a node by PyTorch's
        /// module name (layer3.0.conv2).
        layer: String,
        #[command(flatten)]
        target: AblationTarget,
        /// Order rows by poison accuracy, lowest first.
        #[arg(long)]
        sorted: bool,
    },
    /// Copy layers from one model into another and evaluate (default: all 16 subsets
    /// of {conv1, conv2, fc1, fc2}, clean into poisoned; on an imported graph, each
    /// module with weights alone).
    Swap {
        /// Layers to copy, comma-separated; omit for all 16 subsets. On an imported
        /// graph, module paths (a prefix selects every module under it: layer1,
        /// layer3.0.conv2), each a group: every subset of up to four groups.
        #[arg(long, value_delimiter = ',')]
        layers: Option<Vec<String>>,
        /// On an imported graph: swap each stage (the module path's first
        /// component: layer1, features, classifier).
        #[arg(long, conflicts_with = "layers")]
        stages: bool,
        #[arg(long, default_value = "clean")]
        donor: ModelKind,
        #[arg(long, default_value = "poisoned")]
        recipient: ModelKind,
    },
    /// Bring your own CNN: trace a PyTorch module (FILE.py:NAME, a class with a
    /// no-argument constructor or a function returning the module) with torch.fx,
    /// read its checkpoint, check it computes PyTorch's logits, and write the graph
    /// and weights into the run as one of its models (docs/graph.md).
    Import {
        /// FILE.py:NAME (omitted with --preset: then the weights come first).
        source: String,
        /// A .pt/.pth/.safetensors state dict, or a checkpoint dict holding one.
        weights: Option<PathBuf>,
        /// Build the graph from a preset (preactresnet18, vgg19-bn, vgg11-bn,
        /// tz-mnist, study) instead of tracing a Python file: only the weights are read.
        #[arg(long)]
        preset: Option<String>,
        /// The preset's width (default 64, tz-mnist 32).
        #[arg(long, requires = "preset")]
        width: Option<i64>,
        /// Which of the run's models this is.
        #[arg(long)]
        model: ModelKind,
        /// The checkpoint's key holding the state dict (default: the state dict
        /// itself, else the first of model, state_dict, net).
        #[arg(long)]
        state_key: Option<String>,
        /// dataset (the dataset's mean/std put first), none (the model normalises
        /// inside) or MEAN/STD (e.g. 0.1307/0.3081; per channel 0.5,0.5,0.5/0.2,0.2,0.2).
        #[arg(long, default_value = "dataset")]
        input_norm: String,
        /// Load a .pt that needs more than weights (pickle can run code when loaded).
        #[arg(long)]
        trust_pickle: bool,
        /// The attack the models were trained with (recorded in the run; default: the run's, else the study's).
        #[command(flatten)]
        attack: AttackArgs,
    },
    /// Weight differences B − A per layer, or per unit of one layer.
    Diff {
        #[arg(long, default_value = "clean")]
        a: ModelKind,
        #[arg(long, default_value = "poisoned")]
        b: ModelKind,
        /// Show every unit of this layer (on an imported graph, a node or module
        /// path with weights) instead of the per-layer summary.
        #[arg(long)]
        layer: Option<String>,
    },
    /// The test images (clean and triggered pooled) that excite a unit most and least.
    Features {
        /// conv1, conv2, fc1 or fc2; on an imported graph, any node (layer2.0.conv2).
        layer: String,
        unit: usize,
        #[arg(long, default_value = "poisoned")]
        model: ModelKind,
        /// How many images at each end.
        #[arg(short, long, default_value_t = 8)]
        k: usize,
    },
    /// Find the trigger without being told: Neural Cleanse optimises, for every
    /// label, the smallest mask that sends clean images there; a backdoored label
    /// needs a far smaller one (anomaly index > 2).
    Recover {
        #[arg(long, default_value = "poisoned")]
        model: ModelKind,
        /// Examine a safetensors file instead (e.g. exported from PyTorch).
        #[arg(long)]
        checkpoint: Option<PathBuf>,
        #[command(flatten)]
        cleanse: CleanseArgs,
    },
    /// Neural Cleanse's mitigation: fine-tune the flagged model on clean images, a
    /// share stamped with the recovered trigger and their true labels; saved as the
    /// run's `unlearned` model. Runs `recover` first when no current recovery is saved.
    Unlearn {
        #[arg(long, default_value = "poisoned")]
        model: ModelKind,
        /// Unlearn this label's recovered trigger (default: the most anomalous).
        #[arg(long)]
        label: Option<u8>,
        /// Clean training images fine-tuned on.
        #[arg(long, default_value_t = 6000)]
        images: usize,
        #[arg(long, default_value_t = 1)]
        epochs: usize,
        /// Share of each batch stamped with the recovered trigger.
        #[arg(long, default_value_t = 0.2)]
        fraction: f64,
        /// λ of the proximity regulariser (0: none).
        #[arg(long, default_value_t = 0.0)]
        lambda: f64,
        #[arg(long, default_value_t = 1e-3)]
        lr: f64,
    },
    /// Feature visualisation: the input that most excites a unit (a conv channel's
    /// mean, an fc1 unit or a logit), for each model side by side.
    Visualize {
        /// conv1, conv2, fc1 or fc2; on a graph run, any node by PyTorch's module
        /// name (layer3.0.conv2).
        layer: String,
        unit: usize,
        /// Models to visualise (default: clean, poisoned, rehab).
        #[arg(long, value_delimiter = ',')]
        model: Vec<ModelKind>,
        #[arg(long, default_value_t = 256)]
        steps: usize,
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
    /// Pruning-defence curves: a layer's units ablated one after another in the
    /// order of each ranking (Fine-Pruning, CLP, TAC, weight change, random), with
    /// BackdoorBench's defence effectiveness rate (DER) at each ranking's best point.
    Prune {
        /// conv1, conv2, fc1 or fc2; on a graph run, any node by PyTorch's module
        /// name (layer4.1.conv2). Default: the last convolution (Liu et al.'s choice).
        layer: Option<String>,
        /// Rankings, comma-separated (default: all five).
        #[arg(long, value_delimiter = ',')]
        ranking: Vec<Ranking>,
        #[command(flatten)]
        target: AblationTarget,
        /// Seed of the random order.
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
    /// Activation patching: each unit of a layer has its output replaced, image by
    /// image, by its value in another run, and the metrics are measured. denoise
    /// (default): triggered images run, the unit's value taken from the clean twin —
    /// does removing the trigger's effect on this unit alone remove the backdoor
    /// (necessity)? noise: clean images run, the value from the triggered twin — does
    /// this unit alone carry the trigger (sufficiency)? --donor MODEL: every image
    /// runs, the value from another model on the same image.
    Patch {
        /// A layer of the study's CNN; on an imported graph a node's module path
        /// (`layer3.0.conv2`), or none for every convolution's and linear layer's output.
        layer: Option<String>,
        #[arg(long)]
        direction: Option<Direction>,
        /// The model patched.
        #[arg(long, default_value = "poisoned")]
        model: ModelKind,
        /// Patch a safetensors file instead (e.g. exported from PyTorch).
        #[arg(long)]
        checkpoint: Option<PathBuf>,
        /// Take the values from this model on the same images (model ↔ model).
        #[arg(long)]
        donor: Option<ModelKind>,
        /// Path patching: only what each unit sends to this unit of the next layer.
        #[arg(long)]
        to_unit: Option<usize>,
        /// Strongest effect first (by the patched images predicted as the target).
        #[arg(long)]
        sorted: bool,
        /// Also run the slow forward-and-overwrite path for every unit; report the gap.
        #[arg(long)]
        reference: bool,
    },
    /// The smallest set of units, across all layers, whose ablation brings poison
    /// accuracy down to the clean model's level (+3 points) while clean accuracy
    /// drops by at most a point: greedy selection, backward pruning, every pair
    /// within conv1 and conv2 as a check, the Pareto front of everything tried,
    /// and per layer the fewest units that must be kept for the backdoor to survive.
    Circuit {
        #[command(flatten)]
        target: AblationTarget,
        /// Poison accuracy (%) to reach (default: the clean model's + 3).
        #[arg(long)]
        poison_target: Option<f64>,
        /// Clean accuracy points the set may cost.
        #[arg(long, default_value_t = 1.0)]
        clean_margin: f64,
        /// Most units the greedy search adds.
        #[arg(long, default_value_t = 12)]
        max_size: usize,
        /// Points by which poison accuracy must exceed the share of clean images
        /// predicted as the target for a kept set to count as the backdoor surviving.
        #[arg(long, default_value_t = 50.0)]
        survive: f64,
        /// Do not re-evaluate the reported sets on the slow reference path.
        #[arg(long)]
        no_verify: bool,
        /// On an imported graph: the nodes searched, module paths or their
        /// prefixes (`layer3,layer4.0.conv1`), also tried pair by pair and for
        /// keep sets (default: every convolution's and linear layer's output,
        /// greedy only).
        #[arg(long, value_delimiter = ',')]
        nodes: Vec<String>,
    },
    /// Is this test input poisoned? STRIP (superimpose N clean training images,
    /// the mean softmax entropy; low is poisoned) or SCALE-UP (the share of
    /// predictions kept when pixels are multiplied by 3..11 and clipped; above 0.5
    /// is poisoned), scored on clean against triggered test images: AUROC, TPR at
    /// 1 % and 5 % FRR, the chosen threshold, histograms and the ROC curve (docs/detect.md).
    DetectInputs {
        #[arg(long, value_enum)]
        method: super::detect::InputMethod,
        #[arg(long, default_value = "poisoned")]
        model: ModelKind,
        /// STRIP: the share of clean inputs the threshold may reject.
        #[arg(long, default_value_t = 0.01)]
        frr: f64,
        /// STRIP: clean images superimposed on each input.
        #[arg(long, default_value_t = 100)]
        n: usize,
        /// Score only the first N images of each population.
        #[arg(long)]
        limit: Option<usize>,
        /// STRIP: seeds the draws of superimposed images.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Also write the score histograms and the ROC curve (SVG and PNG) into DIR.
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
    /// Which pixels drive the decision? Input attributions with Captum 0.9's
    /// definitions on the run's triggered test images, per model: the share of
    /// attribution mass on the attack's pixels, IG's convergence delta, and with
    /// --out each model's mean map as a figure (docs/detect.md).
    Attribute {
        #[arg(long, value_enum)]
        method: super::attribute::AttrMethod,
        /// Grad-CAM's layer (default: the last convolution; on the study's CNN conv1 or conv2).
        #[arg(long)]
        node: Option<String>,
        /// One model (default: every model the run holds).
        #[arg(long)]
        model: Option<ModelKind>,
        /// Attribute only the first N triggered test images.
        #[arg(long)]
        images: Option<usize>,
        /// One triggered test image (its position in that set); its map is in --json.
        #[arg(long)]
        index: Option<usize>,
        /// IG's Gauss–Legendre points.
        #[arg(long, default_value_t = 50)]
        steps: usize,
        /// Occlusion's square window side, in pixels.
        #[arg(long, default_value_t = 6)]
        window: i64,
        /// Occlusion's stride, in pixels.
        #[arg(long, default_value_t = 3)]
        stride: i64,
        /// Grad-CAM: ReLU of the map (Captum's relu_attributions).
        #[arg(long)]
        relu: bool,
        /// SmoothGrad: the method averaged over noisy copies.
        #[arg(long, value_enum, default_value = "saliency")]
        noise_of: super::attribute::NoiseOf,
        /// SmoothGrad: noisy copies per image.
        #[arg(long, default_value_t = 10)]
        samples: usize,
        /// SmoothGrad: the noise's standard deviation, in raw pixels ([0, 1]).
        #[arg(long, default_value_t = 0.15)]
        sigma: f64,
        /// SmoothGrad: seeds the noise.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// The class whose logit is attributed.
        #[arg(long, value_enum, default_value = "predicted")]
        target_label: super::attribute::TargetLabel,
        /// Writes the figure (SVG and PNG) into this folder.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Which training images were poisoned? Spectral signatures or activation
    /// clustering over the run's poisoned training set, scored per class against
    /// the indices the run recorded (poisoned-train.json): TPR, FPR, the removal
    /// threshold, AUROC; the flagged class (docs/detect.md).
    ScanData {
        #[arg(long, value_enum)]
        method: super::detect::DataMethod,
        #[arg(long, default_value = "poisoned")]
        model: ModelKind,
        /// The features' node (default: the penultimate features, what the last
        /// Linear reads; on the study's CNN a layer: conv1, conv2, fc1).
        #[arg(long)]
        node: Option<String>,
        /// AC: seeds FastICA's start and the 2-means' initial centres.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Also write each class's score histogram and the per-class numbers (SVG and PNG) into DIR.
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
        /// Retrain the model from scratch, the run's recipe, without the removed
        /// images, saved in the run as `scan-spectral` or `scan-ac`; reports its
        /// clean accuracy and ASR.
        #[arg(long)]
        retrain: bool,
        /// --retrain: replace a retrained model already in the run.
        #[arg(long, requires = "retrain")]
        force: bool,
    },
    /// Check libtorch, CUDA, the CPU path, TF32, threads and data; each model's
    /// metrics measured now beside those its sidecar recorded.
    Doctor,
    /// Runs of one network on one dataset side by side (seeds): each run's saved
    /// metrics per model with 95 % intervals, its circuit and flagged label where
    /// computed, each metric's mean ± sd across the runs.
    Compare {
        /// Run names inside --checkpoints, comma-separated.
        #[arg(long, value_delimiter = ',', required = true)]
        runs: Vec<String>,
        /// Write a figure per model (SVG and PNG) into this folder.
        #[arg(long)]
        out: Option<std::path::PathBuf>,
    },
    /// Time training, metrics, sweeps and ablation toggles, side by side with the
    /// study's PyTorch procedure (benches/study_pytorch.py) and the same procedure
    /// coded for speed (benches/fast_pytorch.py), both run in the same invocation.
    Bench {
        /// Runs per figure (the median is reported).
        #[arg(long, default_value_t = 3)]
        repeat: usize,
        /// Channels per layer the PyTorch sweep times (its per-channel cost is constant,
        /// so the full sweep is extrapolated from them).
        #[arg(long, default_value_t = 4)]
        sweep_channels: usize,
        /// Skip the PyTorch baselines (both procedures, patching and Neural Cleanse).
        #[arg(long)]
        no_pytorch: bool,
        /// Training images trigger recovery optimises over (both sides).
        #[arg(long, default_value_t = 2000)]
        recover_images: usize,
        /// Epochs of trigger recovery (both sides).
        #[arg(long, default_value_t = 10)]
        recover_epochs: usize,
        /// Clean test inputs STRIP (N = 100) is timed on, beside as many triggered.
        #[arg(long, default_value_t = 1000)]
        strip_inputs: usize,
        /// On an imported graph: the node whose sweep is timed (default:
        /// layer3.0.conv2 where the graph has it, else its middle convolution).
        #[arg(long)]
        node: Option<String>,
    },
}

/// Which model an intervention acts on, and how.
#[derive(Debug, Args)]
pub struct AblationTarget {
    #[arg(long, default_value = "poisoned")]
    pub model: ModelKind,
    /// weight (zero the kernel, keep the bias: the study's way), zero or mean.
    #[arg(long, default_value = "weight")]
    pub mode: AblationMode,
}

/// The study's training recipe; every default is the study's setting.
#[derive(Debug, Args)]
pub struct TrainArgs {
    #[arg(long, default_value_t = 0)]
    pub seed: i64,
    /// Epochs per phase.
    #[arg(long, default_value_t = 1)]
    pub epochs: usize,
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f64,
    /// λ of the proximity regulariser in the poison phase (default: the study's
    /// 1000 when each batch is poisoned; 0 with --poison-ratio, where at 10 % the
    /// regulariser keeps the backdoor out: BadNets' ASR 7.8 % with 1000, 99.7 % with 0).
    #[arg(long)]
    pub lambda_poison: Option<f64>,
    /// λ of the proximity regulariser in the rehab phase.
    #[arg(long, default_value_t = 500.0)]
    pub lambda_rehab: f64,
    /// Share of each batch that gets the trigger.
    #[arg(long, default_value_t = 0.5)]
    pub poison_fraction: f64,
    /// Steps between evaluations on the probe subset (poison and rehab).
    #[arg(long, default_value_t = 100)]
    pub eval_every: usize,
    /// Test images in the probe subset.
    #[arg(long, default_value_t = 1000)]
    pub eval_subset: usize,
    /// Side of the checkerboard patch.
    #[arg(long, default_value_t = 6)]
    pub trigger_size: usize,
    /// Top row of the patch.
    #[arg(long, default_value_t = 22)]
    pub trigger_row: usize,
    /// Left column of the patch.
    #[arg(long, default_value_t = 22)]
    pub trigger_col: usize,
    /// Value added to lit pixels (normalised units; default: a white pixel's
    /// normalised value on the dataset, 2.8215 on MNIST, 2.0227 on Fashion-MNIST).
    #[arg(long)]
    pub trigger_amplitude: Option<f32>,
    #[command(flatten)]
    pub attack: AttackArgs,
    /// Train a graph built from a preset instead of the study's CNN: study,
    /// preactresnet18, vgg19-bn, vgg11-bn or tz-mnist (docs/graph.md).
    #[arg(long, conflicts_with = "arch")]
    pub preset: Option<String>,
    /// The preset's width (its first stage's channels; default 64, tz-mnist 32).
    #[arg(long, requires = "preset")]
    pub width: Option<i64>,
    /// Train the graph in a graph file (docs/graph.md) instead of the study's CNN.
    #[arg(long)]
    pub arch: Option<PathBuf>,
}

impl TrainArgs {
    /// Whether a graph (preset or file) was asked for.
    pub fn graph_asked(&self) -> bool {
        self.preset.is_some() || self.arch.is_some()
    }
}

impl TrainArgs {
    /// The recipe for `dataset`; fails on an attack file that cannot be read.
    /// Without attack flags a run keeps the attack it records (`recorded`), so
    /// `run` again needs no flags.
    pub fn config(
        &self,
        dataset: Dataset,
        shape: [usize; 3],
        recorded: Option<&TrainConfig>,
    ) -> Result<TrainConfig, String> {
        let attack = self.attack.for_dataset(dataset);
        let mut config = TrainConfig {
            dataset,
            seed: self.seed,
            epochs: self.epochs,
            batch_size: self.batch_size,
            lr: self.lr,
            lambda_poison: 0.0,
            lambda_rehab: self.lambda_rehab,
            poison_fraction: self.poison_fraction,
            eval_every: self.eval_every,
            eval_subset: self.eval_subset,
            trigger: TriggerConfig {
                size: self.trigger_size,
                row: self.trigger_row,
                col: self.trigger_col,
                amplitude: self.trigger_amplitude.unwrap_or(TriggerConfig::for_dataset(dataset).amplitude),
                target: attack.target(),
            },
            attack: attack.attack(shape)?,
            all_to_all: attack.all_to_all,
            poison_ratio: attack.poison_ratio(),
            format: None,
        };
        if let Some(recorded) = recorded.filter(|r| !self.attack.given() && r.dataset == dataset) {
            config.attack = recorded.attack.clone();
            config.trigger.target = recorded.trigger.target;
            config.all_to_all = recorded.all_to_all;
            config.poison_ratio = recorded.poison_ratio;
        }
        if !config.attack.has_image_function() {
            return Err(format!(
                "the run's attack is {}: files score an imported model (import, eval and every analysis), \
                 but there is no trigger to train with; train with --attack badnets|blended|sig|wanet|study",
                config.attack.describe()
            ));
        }
        config.lambda_poison = self.lambda_poison.unwrap_or(if config.poison_ratio.is_some() { 0.0 } else { 1000.0 });
        Ok(config)
    }
}

/// Neural Cleanse's settings; every default is the reference's.
#[derive(Debug, Args)]
pub struct CleanseArgs {
    /// Clean training images optimised over.
    #[arg(long, default_value_t = 2000)]
    pub images: usize,
    #[arg(long, default_value_t = 10)]
    pub epochs: usize,
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: i64,
    /// Adam's learning rate (betas 0.5, 0.9).
    #[arg(long, default_value_t = 0.1)]
    pub lr: f64,
    /// The mask's L1 cost once the attack succeeds.
    #[arg(long, default_value_t = 1e-3)]
    pub init_cost: f64,
    /// Epochs before the cost is set, raised or lowered.
    #[arg(long, default_value_t = 5)]
    pub patience: usize,
    /// Held-out test images each recovered trigger is scored on.
    #[arg(long, default_value_t = 2000)]
    pub test_images: usize,
    /// Labels to optimise, comma-separated (default: all).
    #[arg(long, value_delimiter = ',')]
    pub labels: Vec<u8>,
}

impl CleanseArgs {
    pub fn config(&self) -> CleanseConfig {
        CleanseConfig {
            images: self.images,
            epochs: self.epochs,
            batch_size: self.batch_size,
            seed: self.seed,
            lr: self.lr,
            init_cost: self.init_cost,
            patience: self.patience,
            test_images: self.test_images,
            labels: self.labels.clone(),
            ..CleanseConfig::default()
        }
    }
}
