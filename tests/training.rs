//! A real training run on an MNIST subset: the backdoor is learnt, the sweep finds
//! the channels that carry it, and the fast ablation engine agrees with the
//! study's slow procedure on every channel of conv1 and conv2 in every mode.

mod common;

use common::trained_lab;
use std::ops::ControlFlow;
use trojanscope::data::trigger::TriggerConfig;
use trojanscope::engine::ablation::{AblationMode, AblationSet, reference_predictions};
use trojanscope::engine::cache::ActivationCache;
use trojanscope::engine::lab::ModelKind;
use trojanscope::engine::layer::Layer;
use trojanscope::engine::sweep::{most_backdoor_relevant, sweep, sweep_streamed};
use trojanscope::engine::testset::TestSet;
use trojanscope::engine::train::{EvalPoint, LogLine, Phase, TrainConfig};

#[test]
fn the_poisoned_model_learns_the_backdoor_and_rehab_unlearns_it() {
    let lab = &trained_lab();
    let clean = lab.test.evaluate(&lab.load(ModelKind::Clean).unwrap());
    let poisoned = lab.test.evaluate(&lab.load(ModelKind::Poisoned).unwrap());
    let rehab = lab.test.evaluate(&lab.load(ModelKind::Rehab).unwrap());
    assert!(clean.clean_acc > 90.0 && clean.poison_acc < 15.0, "clean model {:?}", clean.triple());
    assert!(poisoned.poison_acc >= 90.0, "poisoned model {:?}", poisoned.triple());
    assert!(poisoned.rehab_acc < 30.0, "poisoned model {:?}", poisoned.triple());
    assert!(rehab.poison_acc < 15.0 && rehab.rehab_acc > 85.0, "rehab model {:?}", rehab.triple());
    // The sidecar records the same metrics the loaded checkpoint gives.
    let sidecar = lab.run.sidecar(ModelKind::Poisoned).unwrap();
    for (a, b) in sidecar.metrics.triple().iter().zip(poisoned.triple()) {
        assert!((a - b).abs() < 1e-9, "{:?} vs {:?}", sidecar.metrics.triple(), poisoned.triple());
    }
    assert_eq!(sidecar.train_images, common::TRAIN_IMAGES);
    assert_eq!(sidecar.data_sha256.len(), 4);
}

#[test]
fn the_training_log_has_every_step_and_the_accuracy_timeline() {
    let lab = &trained_lab();
    let text = std::fs::read_to_string(lab.run.metrics_log()).unwrap();
    // Every line is one `LogLine`, the type the explorer reads the log with.
    let lines: Vec<LogLine> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let steps_per_phase = common::TRAIN_IMAGES.div_ceil(32);
    for phase in [Phase::Clean, Phase::Poison, Phase::Rehab] {
        let steps: Vec<usize> = lines
            .iter()
            .filter_map(|l| match l {
                LogLine::Step { phase: p, step, .. } if *p == phase => Some(*step),
                _ => None,
            })
            .collect();
        assert_eq!(steps, (1..=steps_per_phase).collect::<Vec<_>>(), "{phase}");
    }
    let poison_evals: Vec<&EvalPoint> = lines
        .iter()
        .filter_map(|l| match l {
            LogLine::Eval(point) if point.phase == Phase::Poison => Some(point),
            _ => None,
        })
        .collect();
    // Step 0, every 100 steps, and the last step.
    assert_eq!(poison_evals.len(), 1 + steps_per_phase / 100 + 1);
    let (first, last) = (poison_evals.first().unwrap().poison_acc, poison_evals.last().unwrap().poison_acc);
    assert!(first < 20.0 && last > 85.0, "the backdoor appears: {first} → {last}");
    assert!(lines.iter().all(|l| !matches!(l, LogLine::Eval(p) if p.phase == Phase::Clean)));
}

#[test]
fn a_sweep_finds_channels_that_remove_the_backdoor() {
    let lab = &trained_lab();
    let cache = ActivationCache::build(&lab.load(ModelKind::Poisoned).unwrap(), &lab.test);
    let baseline = cache.evaluate(&lab.test, &AblationSet::default(), AblationMode::Weight);
    let mut reported = Vec::new();
    let rows = sweep(&cache, &lab.test, Layer::Conv1, AblationMode::Weight, |done, total| {
        reported.push((done, total));
        ControlFlow::Continue(())
    });
    assert_eq!(rows.len(), 32);
    assert_eq!(reported.last(), Some(&(32, 32)));
    let best = most_backdoor_relevant(&rows, 2);
    let lowest = rows[best[0]].metrics.poison_acc;
    assert!(lowest < baseline.poison_acc - 3.0, "best conv1 ablation {lowest} vs {}", baseline.poison_acc);
    let pair = cache.evaluate(&lab.test, &AblationSet::of(Layer::Conv1, &best), AblationMode::Weight);
    assert!(pair.poison_acc <= lowest, "the pair removes at least as much as either channel");
    // A cancelled sweep stops after its first batch.
    let partial = sweep(&cache, &lab.test, Layer::Conv2, AblationMode::Weight, |_, _| ControlFlow::Break(()));
    assert!(!partial.is_empty() && partial.len() < 64);
}

/// The sweep of a one-off command, which streams the test set in slices instead of
/// holding the whole cache, gives the whole cache's rows (every layer it can start
/// from, the mean mode's constants from the whole set) on a test set that is not a
/// whole number of slices.
#[test]
fn a_streamed_sweep_gives_the_cached_sweeps_rows() {
    let lab = &trained_lab();
    let net = lab.load(ModelKind::Poisoned).unwrap();
    let test = TestSet::new(&common::mnist(0, 5_432).test, &lab.config, tch::Device::Cpu).unwrap();
    let cache = ActivationCache::build(&net, &test);
    for (layer, mode) in
        [(Layer::Conv1, AblationMode::Weight), (Layer::Conv2, AblationMode::Mean), (Layer::Fc1, AblationMode::Zero)]
    {
        let mut reported = Vec::new();
        let streamed = sweep_streamed(&net, &test, layer, mode, |done, total| {
            reported.push((done, total));
            ControlFlow::Continue(())
        });
        let cached = sweep(&cache, &test, layer, mode, |_, _| ControlFlow::Continue(()));
        assert_eq!(streamed.len(), layer.units());
        for (s, c) in streamed.iter().zip(&cached) {
            assert_eq!((s.layer, s.unit), (c.layer, c.unit));
            for (a, b) in s.metrics.triple().iter().zip(c.metrics.triple()) {
                // One image of 5,432 is 0.018 points.
                assert!(
                    (a - b).abs() < 0.01,
                    "{layer} {mode} unit {}: {:?} vs {:?}",
                    s.unit,
                    s.metrics.triple(),
                    c.metrics.triple()
                );
            }
        }
        assert_eq!(reported.len(), 3, "three slices: 2,500 + 2,500 + 432");
        assert_eq!(reported.last(), Some(&(layer.units(), layer.units())));
    }
    // Stopped, it returns no rows (a unit's metrics need every slice).
    assert!(sweep_streamed(&net, &test, Layer::Fc1, AblationMode::Weight, |_, _| ControlFlow::Break(())).is_empty());
}

/// The fast engine must reproduce the study's reload-zero-evaluate procedure
/// prediction for prediction, on every channel of conv1 and conv2.
fn fast_equals_reference(mode: AblationMode) {
    let lab = &trained_lab();
    let net = lab.load(ModelKind::Poisoned).unwrap();
    let cache = ActivationCache::build(&net, &lab.test);
    for layer in [Layer::Conv1, Layer::Conv2] {
        let sets: Vec<AblationSet> = (0..layer.units()).map(|u| AblationSet::single(layer, u)).collect();
        for (set, fast) in sets.iter().zip(cache.predict_many(&lab.test, &sets, mode)) {
            let slow = reference_predictions(&net, cache.means(), &lab.test, set, mode);
            let differing = fast.ne_tensor(&slow).sum(tch::Kind::Int64).int64_value(&[]);
            assert!(differing <= 1, "{set} ({mode}): {differing} of {} predictions differ", fast.size()[0]);
            let (f, s) = (lab.test.metrics(&fast), lab.test.metrics(&slow));
            for (a, b) in f.triple().iter().zip(s.triple()) {
                assert!((a - b).abs() <= 0.1 + 1e-9, "{set} ({mode}): {:?} vs {:?}", f.triple(), s.triple());
            }
        }
    }
}

#[test]
fn fast_ablation_equals_the_slow_reference_in_weight_mode() {
    fast_equals_reference(AblationMode::Weight);
}

#[test]
fn fast_ablation_equals_the_slow_reference_in_zero_mode() {
    fast_equals_reference(AblationMode::Zero);
}

#[test]
fn fast_ablation_equals_the_slow_reference_in_mean_mode() {
    fast_equals_reference(AblationMode::Mean);
}

#[test]
fn multi_layer_sets_and_the_gpu_kernels_agree_with_the_reference() {
    let lab = &trained_lab();
    let net = lab.load(ModelKind::Poisoned).unwrap();
    let cache = ActivationCache::build(&net, &lab.test);
    let torch_only = ActivationCache::build(&net, &lab.test).with_torch_kernels();
    let set: AblationSet = "conv1:3,31 conv2:7,40 fc1:2 fc2:8".parse().unwrap();
    for mode in AblationMode::ALL {
        let slow = reference_predictions(&net, cache.means(), &lab.test, &set, mode);
        for engine in [&cache, &torch_only] {
            let fast = engine.predict(&lab.test, &set, mode);
            assert!(fast.ne_tensor(&slow).sum(tch::Kind::Int64).int64_value(&[]) <= 1, "{mode}");
        }
    }
    // fc2:8 removes the target logit's weights: nothing is predicted 8 any more
    // unless its bias wins, and the set changes the metrics.
    let m = cache.evaluate(&lab.test, &set, AblationMode::Zero);
    assert!(m.poison_acc < 1.0, "{:?}", m.triple());
}

/// A conv1 ablation recomputes a triggered image only where the trigger reaches
/// and takes its clean twin's activations elsewhere (the cache keeps only the
/// trigger's lines of a twin's conv2 pre-activation): that must hold wherever the
/// trigger sits, including one covering the whole image and one no kept
/// activation sees, on the CPU kernel and on libtorch's ops. 601 images: the
/// libtorch path's chunks of 250 then straddle the clean and triggered halves.
#[test]
fn conv1_ablation_follows_a_trigger_placed_anywhere() {
    let lab = &trained_lab();
    let net = lab.load(ModelKind::Poisoned).unwrap();
    let images = lab.data.test.head(601);
    let placements = [(4, 0, 0), (5, 10, 13), (28, 0, 0), (2, 26, 26), (6, 22, 3)];
    for (size, row, col) in placements {
        let trigger = TriggerConfig { size, row, col, ..TriggerConfig::default() };
        let test = TestSet::new(&images, &TrainConfig { trigger, ..TrainConfig::default() }, tch::Device::Cpu).unwrap();
        let cache = ActivationCache::build(&net, &test);
        let torch_only = ActivationCache::build(&net, &test).with_torch_kernels();
        let sets: Vec<AblationSet> =
            [&[3][..], &[17], &[5, 20, 31]].iter().map(|units| AblationSet::of(Layer::Conv1, units)).collect();
        for mode in [AblationMode::Weight, AblationMode::Mean] {
            for engine in [&cache, &torch_only] {
                for (set, fast) in sets.iter().zip(engine.predict_many(&test, &sets, mode)) {
                    let slow = reference_predictions(&net, cache.means(), &test, set, mode);
                    let differing = fast.ne_tensor(&slow).sum(tch::Kind::Int64).int64_value(&[]);
                    assert!(differing <= 1, "trigger {size} at ({row}, {col}), {set} ({mode}): {differing} differ");
                }
            }
        }
    }
}

/// Neural Cleanse on the small run's poisoned model flags the target label with a
/// mask on the trigger, and unlearning that recovered trigger removes the backdoor.
#[test]
fn trigger_recovery_flags_the_target_and_unlearning_removes_the_backdoor() {
    use trojanscope::engine::cleanse::{CleanseConfig, RecoveryEnd, recover};
    use trojanscope::engine::unlearn::{UnlearnConfig, unlearn};
    let lab = &trained_lab();
    let poisoned = lab.load(ModelKind::Poisoned).unwrap();
    let cfg = CleanseConfig { images: 500, test_images: 500, ..CleanseConfig::default() };
    let study = trojanscope::engine::classifier::FrozenStudy::of(&poisoned, lab.data.dataset.normalisation());
    let mut snapshots = 0;
    let end = recover(&study, "poisoned", &lab.data, lab.config.footprint().as_ref(), &cfg, &mut |p| {
        snapshots += 1;
        assert_eq!((p.masks.len(), p.masks[0].len()), (10, 784));
        ControlFlow::Continue(())
    })
    .unwrap();
    let RecoveryEnd::Done(report) = end else { panic!("not stopped") };
    // 16 steps an epoch and a snapshot every 16 steps: one per epoch, at its end.
    assert_eq!(snapshots, 10);
    let target = lab.config.trigger.target;
    let summary: Vec<(u8, f64, f64)> = report.labels.iter().map(|t| (t.label, t.l1, t.anomaly_index)).collect();
    assert_eq!(report.flagged.first(), Some(&target), "{summary:?}");
    let flagged = report.most_anomalous().unwrap();
    assert!(report.labels.iter().all(|t| t.label == target || t.l1 > flagged.l1), "{summary:?}");
    // The trigger's rows and columns ± 2 are 8 % of the image; on this small run and
    // 500 images about 40 % of the mask lies there (the full seeds: over 90 %).
    let on_trigger = flagged.on_trigger.as_ref().expect("the study's trigger is a patch");
    assert!(on_trigger.mass_share >= 0.3, "{on_trigger:?}");
    assert!(flagged.success > 90.0, "held-out success {}", flagged.success);
    // A recovery stopped half-way returns nothing.
    let mut calls = 0;
    let stopped = recover(&study, "poisoned", &lab.data, lab.config.footprint().as_ref(), &cfg, &mut |_| {
        calls += 1;
        if calls == 3 { ControlFlow::Break(()) } else { ControlFlow::Continue(()) }
    })
    .unwrap();
    assert!(matches!(stopped, RecoveryEnd::Cancelled));

    let before = lab.test.evaluate(&poisoned);
    let from = trojanscope::engine::run::key::FileKey::of(&lab.run.model_path(ModelKind::Poisoned)).unwrap();
    let outcome =
        unlearn(lab, &poisoned, &from, &report, &UnlearnConfig::default(), &mut |_| ControlFlow::Continue(()))
            .unwrap()
            .expect("not stopped");
    assert_eq!(outcome.record.label, target);
    assert!(outcome.after.poison_acc < 20.0, "{:?} → {:?}", before.triple(), outcome.after.triple());
    assert!(outcome.after.clean_acc > before.clean_acc - 3.0, "{:?} → {:?}", before.triple(), outcome.after.triple());
    // The sidecar holds both measurements (JSON keeps them to about 1e-14).
    let saved = lab.run.sidecar(ModelKind::Unlearned).unwrap();
    let same = |a: &[f64; 3], b: &[f64; 3]| a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-9);
    assert!(same(&saved.metrics.triple(), &outcome.after.triple()), "{:?}", saved.metrics.triple());
    assert!(same(&saved.unlearning.unwrap().before.triple(), &before.triple()));
}

/// A pruning curve's points, computed by the fast engine, equal the study's slow
/// path (copy, zero, evaluate) on the same cumulative sets.
#[test]
fn pruning_curves_equal_the_slow_reference_path() {
    use trojanscope::engine::prune::{Ranking, RankingInputs, curve, ranking_order};
    let lab = &trained_lab();
    let (net, clean) = (lab.load(ModelKind::Poisoned).unwrap(), lab.load(ModelKind::Clean).unwrap());
    let cache = ActivationCache::build(&net, &lab.test);
    let inputs = RankingInputs { net: &net, clean: &clean, test: &lab.test, seed: 3 };
    for (layer, ranking) in [(Layer::Conv1, Ranking::Tac), (Layer::Conv2, Ranking::Clp), (Layer::Fc1, Ranking::Random)]
    {
        let order = ranking_order(ranking, layer, &inputs);
        let pruned = curve(&cache, &lab.test, layer, ranking, order.clone(), AblationMode::Weight);
        assert_eq!(pruned.points.len(), layer.units() + 1);
        for k in [1, 3, layer.units() / 2] {
            let set = AblationSet::of(layer, &order[..k]);
            let slow =
                lab.test.metrics(&reference_predictions(&net, cache.means(), &lab.test, &set, AblationMode::Weight));
            let fast = &pruned.points[k].metrics;
            for (a, b) in fast.triple().iter().zip(slow.triple()) {
                assert!((a - b).abs() <= 0.01, "{layer} {ranking} k={k}: {:?} vs {:?}", fast.triple(), slow.triple());
            }
            assert_eq!(pruned.points[k].unit, Some(order[k - 1]));
        }
    }
}

/// The swaps computed together (shared layer prefixes) equal each swap computed
/// alone by copying the layers and evaluating the copy, for all 16 subsets.
#[test]
fn swaps_sharing_their_prefixes_equal_one_swap_at_a_time() {
    use trojanscope::engine::swap::{all_subsets, swap, swap_many};
    let lab = &trained_lab();
    let (clean, poisoned) = (lab.load(ModelKind::Clean).unwrap(), lab.load(ModelKind::Poisoned).unwrap());
    let subsets = all_subsets();
    let together = swap_many(&poisoned, &clean, &subsets, &lab.test);
    assert_eq!(together.len(), 16);
    for (row, layers) in together.iter().zip(&subsets) {
        assert_eq!(row, &swap(&poisoned, &clean, layers, &lab.test), "{layers:?}");
    }
    // The swaps differ from each other: the comparison is not between constants.
    assert!(together[0].metrics.poison_acc > 80.0 && together[15].metrics.poison_acc < 20.0);
}

/// Every evaluation's lean forward (cropped input, pooling before ReLU, triggered
/// images recomputed only where their trigger reaches) predicts what the plain
/// `Net::forward` predicts, for each model and wherever the trigger sits: in the
/// corner, in the middle, over the whole image, and only where nothing kept sees it.
#[test]
fn the_lean_evaluation_predicts_what_the_plain_forward_predicts() {
    use trojanscope::engine::lean;
    let lab = &trained_lab();
    let images = common::mnist(0, 1234).test;
    let placements = [(6, 22, 22), (5, 10, 13), (28, 0, 0), (2, 26, 26), (6, 22, 3), (3, 0, 25)];
    for kind in ModelKind::STUDY {
        let net = lab.load(kind).unwrap();
        for (size, row, col) in placements {
            let trigger = TriggerConfig { size, row, col, ..TriggerConfig::default() };
            // 1,234 images: a last chunk shorter than the others.
            let test =
                TestSet::new(&images, &TrainConfig { trigger, ..TrainConfig::default() }, tch::Device::Cpu).unwrap();
            let plain = test.predict_with(|x| net.forward(x));
            let lean = lean::predict(&net, &test);
            let differing = lean.ne_tensor(&plain).sum(tch::Kind::Int64).int64_value(&[]);
            assert!(differing <= 1, "{kind}, trigger {size} at ({row}, {col}): {differing} differ");
            assert_eq!(test.evaluate(&net).count, 1234);
        }
    }
    // The trigger changes what the poisoned model says: the triggered half is not
    // a copy of the clean half.
    let poisoned = lab.test.evaluate(&lab.load(ModelKind::Poisoned).unwrap());
    assert!(poisoned.poison_acc > 80.0 && poisoned.rehab_acc < 30.0, "{:?}", poisoned.triple());
}
