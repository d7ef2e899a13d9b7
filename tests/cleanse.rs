//! Trigger recovery's and feature visualisation's parts on known values: the stamp
//! and its normalisation, the reference's cost schedule, the anomaly index, the
//! batched ten-label step against ten single-label steps, and visualisation.

use tch::{Device, Kind, Tensor};
use trojanscope::data::dataset::Dataset;
use trojanscope::data::trigger::{Stamp, TriggerConfig};
use trojanscope::engine::classifier::FrozenStudy;
use trojanscope::engine::cleanse::{BatchedCleanse, CostSchedule, anomaly_indices, trigger_overlap};
use trojanscope::engine::featvis::{VisConfig, visualize};
use trojanscope::engine::host::floats;
use trojanscope::engine::inputopt::{squash, stamp_all, unsquash};
use trojanscope::engine::layer::Layer;
use trojanscope::engine::model::Net;

fn close(a: &[f32], b: &[f32], tol: f32) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() <= tol)
}

#[test]
fn the_stamp_blends_in_raw_pixels_and_then_normalises() {
    // Two 2×2 images, two labels' masks and patterns.
    let raw = Tensor::from_slice(&[0.0f32, 0.5, 1.0, 0.2, 0.9, 0.1, 0.4, 0.6]).view([2, 1, 2, 2]);
    let mask = Tensor::from_slice(&[1.0f32, 0.0, 0.5, 0.25, 0.0, 0.0, 0.0, 1.0]).view([2, 1, 2, 2]);
    let pattern = Tensor::from_slice(&[0.8f32, 0.3, 0.0, 1.0, 0.5, 0.5, 0.5, 0.0]).view([2, 1, 2, 2]);
    let stamped = floats(&stamp_all(&raw, &mask, &pattern));
    // Label-major: label 0 on image 0, label 0 on image 1, label 1 on image 0, …
    let expected = [
        0.8, 0.5, 0.5, 0.4, // (1−m)x + m·p by hand, label 0, image 0
        0.8, 0.1, 0.2, 0.7, // label 0, image 1
        0.0, 0.5, 1.0, 0.0, // label 1, image 0: only the last pixel masked (p = 0)
        0.9, 0.1, 0.4, 0.0,
    ];
    assert!(close(&stamped, &expected, 1e-6), "{stamped:?}");
    assert_eq!(stamp_all(&raw, &mask, &pattern).size(), [4, 1, 2, 2]);
    // Two channels: one mask for both, a pattern per channel (Neural Cleanse's shapes).
    let rgb = Tensor::cat(&[&raw, &(1.0 - &raw)], 1);
    let two = Tensor::from_slice(&[0.8f32, 0.3, 0.0, 1.0, 0.1, 0.2, 0.3, 0.4]).view([1, 2, 2, 2]);
    let stamped = floats(&stamp_all(&rgb, &mask.narrow(0, 0, 1), &two));
    assert_eq!(stamp_all(&rgb, &mask.narrow(0, 0, 1), &two).size(), [2, 2, 2, 2]);
    // Image 0: channel 0 as above, channel 1 (1 − x) blended with the second pattern.
    assert!(close(&stamped[..8], &[0.8, 0.5, 0.5, 0.4, 0.1, 0.5, 0.15, 0.7], 1e-6), "{stamped:?}");
    let norm = Dataset::Mnist.normalisation();
    let n = floats(&norm.normalise(&Tensor::from_slice(&[0.0f32, 1.0])));
    assert!(close(&n, &[-0.1307 / 0.3081, (1.0 - 0.1307) / 0.3081], 1e-6));
    // The training stamp does the same blend on already-normalised images.
    let m28: Vec<f32> = (0..784).map(|i| (i % 7) as f32 / 6.0).collect();
    let p28: Vec<f32> = (0..784).map(|i| (i % 5) as f32 / 4.0).collect();
    let x_raw = Tensor::rand([3, 1, 28, 28], (Kind::Float, Device::Cpu));
    let blended = Stamp::blend(&m28, &p28, norm, Device::Cpu).apply(&norm.normalise(&x_raw));
    let m = Tensor::from_slice(&m28).view([1, 1, 28, 28]);
    let p = Tensor::from_slice(&p28).view([1, 1, 28, 28]);
    let by_hand = norm.normalise(&stamp_all(&x_raw, &m, &p));
    assert!(close(&floats(&blended), &floats(&by_hand), 1e-5));
}

#[test]
fn squash_keeps_masks_inside_the_unit_interval_and_inverts() {
    let v = Tensor::from_slice(&[0.0f32, 0.1, 0.5, 0.9, 1.0]);
    assert!(close(&floats(&squash(&unsquash(&v))), &floats(&v), 1e-6));
    let far = floats(&squash(&Tensor::from_slice(&[-50.0f32, 50.0])));
    // As in the reference, float rounding can reach one ulp outside [0, 1], never more.
    assert!(far[0] >= -1e-6 && far[1] <= 1.0 + 1e-6, "{far:?}");
}

#[test]
fn the_cost_schedule_follows_the_reference_on_a_scripted_run() {
    let mut s = CostSchedule::new(1e-3, 5, 0.99);
    // Five successful epochs: the cost is set at the fifth; every epoch with a
    // smaller L1 at ≥ 99 % is kept.
    for (epoch, l1) in [50.0, 40.0, 45.0, 30.0, 35.0].into_iter().enumerate() {
        let v = s.end_epoch(1.0, l1);
        assert_eq!(v.improved, [true, true, false, true, false][epoch], "epoch {epoch}");
        assert!(!v.stop);
        assert_eq!(s.cost, if epoch < 4 { 0.0 } else { 1e-3 }, "epoch {epoch}");
    }
    assert_eq!(s.best_l1, 30.0);
    // As in the reference, the epoch that sets the cost also counts towards raising
    // it: four more successful epochs double it.
    for _ in 0..3 {
        s.end_epoch(0.995, 29.0);
        assert_eq!(s.cost, 1e-3);
    }
    assert!(s.end_epoch(0.995, 28.0).improved);
    assert_eq!(s.cost, 2e-3);
    // A failure does not improve even with a smaller L1; five in a row lower the cost.
    for i in 0..5 {
        assert!(!s.end_epoch(0.5, 1.0).improved);
        let expected = if i < 4 { 2e-3 } else { 2e-3 / 2f64.powf(1.5) };
        assert!((s.cost - expected).abs() < 1e-15, "failure {i}: {}", s.cost);
    }
    assert_eq!(s.best_l1, 28.0);
    // Both flags are set: once the best has not improved by 1 % for ten epochs, stop.
    let mut stopped_at = None;
    for i in 0..12 {
        if s.end_epoch(0.5, 100.0).stop {
            stopped_at = Some(i);
            break;
        }
    }
    // The failures above already counted 5 non-improving epochs.
    assert_eq!(stopped_at, Some(4));
}

#[test]
fn a_schedule_that_never_succeeds_keeps_no_mask_and_no_cost() {
    let mut s = CostSchedule::new(1e-3, 5, 0.99);
    for _ in 0..20 {
        let v = s.end_epoch(0.98, 5.0);
        assert!(!v.improved && !v.stop);
    }
    assert_eq!(s.cost, 0.0);
    assert!(s.best_l1.is_infinite());
}

#[test]
fn the_anomaly_index_is_mad_based_and_one_sided() {
    let l1 = [100.0, 90.0, 110.0, 95.0, 105.0, 120.0, 80.0, 100.0, 8.5, 115.0];
    let index = anomaly_indices(&l1);
    // Sorted: 8.5 80 90 95 100 100 105 110 115 120 → median 100; deviations sorted
    // 0 0 5 5 10 10 15 20 20 91.5 → MAD 10, × 1.4826.
    let mad = 14.826;
    assert!((index[8] - 91.5 / mad).abs() < 1e-9, "{}", index[8]);
    assert!((index[6] - 20.0 / mad).abs() < 1e-9);
    // Above or at the median: 0.
    assert_eq!(index[0], 0.0);
    assert_eq!(index[5], 0.0);
    let flagged: Vec<usize> = (0..10).filter(|&i| index[i] > 2.0).collect();
    assert_eq!(flagged, [8]);
}

#[test]
fn the_overlap_with_the_planted_trigger_counts_mass_and_top_pixels() {
    let trigger = TriggerConfig::default();
    let lit: Vec<f32> = trigger.mask().iter().map(|&v| if v != 0.0 { 1.0 } else { 0.0 }).collect();
    let exact = trigger_overlap(&lit, &trigger.footprint(), 28);
    assert_eq!(exact.mass_share, 1.0);
    assert_eq!(exact.top_pixel_overlap, 1.0);
    // Half the mass in the top-left corner, outside rows/columns 20..27.
    let mut split = lit.clone();
    for p in split.iter_mut().take(18) {
        *p = 1.0;
    }
    let o = trigger_overlap(&split, &trigger.footprint(), 28);
    assert!((o.mass_share - 0.5).abs() < 1e-9);
    // A mask on the unlit squares of the checkerboard is on the region but misses
    // every lit pixel.
    let unlit: Vec<f32> = (0..784)
        .map(|i| {
            let (r, c) = (i / 28, i % 28);
            if r >= 22 && c >= 22 && (r + c) % 2 == 1 { 1.0 } else { 0.0 }
        })
        .collect();
    let o = trigger_overlap(&unlit, &trigger.footprint(), 28);
    assert_eq!(o.mass_share, 1.0);
    assert_eq!(o.top_pixel_overlap, 0.0);
}

#[test]
fn ten_labels_batched_step_as_ten_separate_problems() {
    tch::manual_seed(7);
    let net = Net::new(Device::Cpu);
    let labels: Vec<u8> = (0..10).collect();
    let study = FrozenStudy::of(&net, Dataset::Mnist.normalisation());
    let mask0 = Tensor::rand([10, 1, 28, 28], (Kind::Float, Device::Cpu)) * 0.9 + 0.05;
    let pattern0 = Tensor::rand([10, 1, 28, 28], (Kind::Float, Device::Cpu)) * 0.9 + 0.05;
    let costs: Vec<f32> = (0..10).map(|i| if i % 3 == 0 { 0.0 } else { 1e-3 * i as f32 }).collect();
    let batches: Vec<Tensor> = (0..3).map(|_| Tensor::rand([32, 1, 28, 28], (Kind::Float, Device::Cpu))).collect();
    let mut batched = BatchedCleanse::new(&study, &labels, (&mask0, &pattern0), 0.1);
    let mut batched_hits = Vec::new();
    for x in &batches {
        batched_hits.push(floats(&batched.step(x, &Tensor::from_slice(&costs)).0));
    }
    let (masks, patterns) = batched.mask_and_pattern();
    for l in 0..10i64 {
        let mut single =
            BatchedCleanse::new(&study, &[l as u8], (&mask0.narrow(0, l, 1), &pattern0.narrow(0, l, 1)), 0.1);
        for (step, x) in batches.iter().enumerate() {
            let (hits, _) = single.step(x, &Tensor::from_slice(&costs[l as usize..l as usize + 1]));
            assert_eq!(floats(&hits)[0], batched_hits[step][l as usize], "label {l} step {step}");
        }
        let (m, p) = single.mask_and_pattern();
        assert!(close(&floats(&m), &floats(&masks.get(l)), 1e-5), "label {l} mask");
        assert!(close(&floats(&p), &floats(&patterns.get(l)), 1e-5), "label {l} pattern");
        // And the step moved it.
        assert!(!close(&floats(&m), &floats(&mask0.get(l)), 1e-3), "label {l} did not move");
    }
}

#[test]
fn a_visualisation_is_deterministic_and_raises_its_unit() {
    tch::set_num_threads(1);
    tch::manual_seed(3);
    let net = Net::new(Device::Cpu);
    let cfg = VisConfig { steps: 64, ..VisConfig::default() };
    const MNIST: trojanscope::data::dataset::Normalisation =
        trojanscope::data::dataset::Normalisation::scalar(0.1307, 0.3081);
    for (layer, unit) in [(Layer::Conv1, 5), (Layer::Conv2, 11), (Layer::Fc2, 8)] {
        let a = visualize(&net, (layer, unit), (28, MNIST), &cfg).unwrap();
        let b = visualize(&net, (layer, unit), (28, MNIST), &cfg).unwrap();
        assert_eq!(a.image, b.image, "{layer}:{unit} not deterministic");
        assert!(a.activation > a.start_activation + 0.05, "{layer}:{unit}: {} → {}", a.start_activation, a.activation);
        assert!(a.image.iter().all(|v| (0.0..=1.0).contains(v)));
        let other = visualize(&net, (layer, unit), (28, MNIST), &VisConfig { seed: 1, ..cfg.clone() }).unwrap();
        assert_ne!(a.image, other.image, "the seed changes the start");
    }
    assert!(visualize(&net, (Layer::Conv1, 32), (28, MNIST), &cfg).unwrap_err().contains("0..=31"));
}

#[test]
fn the_frozen_forward_computes_the_networks_logits() {
    use trojanscope::engine::inputopt::FrozenNet;
    use trojanscope::engine::lean::used_input_side;
    assert_eq!(used_input_side(28), 26);
    tch::manual_seed(11);
    let net = Net::new(Device::Cpu);
    let x = Tensor::randn([40, 1, 28, 28], (Kind::Float, Device::Cpu));
    let _guard = tch::no_grad_guard();
    let ours = floats(&FrozenNet::of(&net).forward(&x));
    let theirs = floats(&net.forward(&x));
    assert!(close(&ours, &theirs, 1e-5));
    // Rows and columns 26 and 27 really reach nothing.
    let edited = x.copy();
    let _ = edited.narrow(2, 26, 2).fill_(9.0);
    assert!(close(&floats(&net.forward(&edited)), &theirs, 1e-5));
}
