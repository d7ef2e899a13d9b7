//! Pruning-defence rankings and the DER on hand-made weights and metrics.

use tch::{Device, Tensor};
use trojanscope::engine::layer::Layer;
use trojanscope::engine::metrics::Metrics;
use trojanscope::engine::model::Net;
use trojanscope::engine::prune::{der, largest_singular_values, order_by, random_order};

fn metrics(clean: f64, asr: f64) -> Metrics {
    Metrics {
        clean_acc: clean,
        poison_acc: asr,
        asr_non_target: asr,
        rehab_acc: 0.0,
        clean_as_target: 0.0,
        per_class_clean: vec![0.0; 10],
        count: 1,
    }
}

#[test]
fn orders_sort_by_score_with_ties_by_unit() {
    assert_eq!(order_by(&[0.5, 2.0, 0.5, 1.0], true), [1, 3, 0, 2]);
    assert_eq!(order_by(&[0.5, 2.0, 0.5, 1.0], false), [0, 2, 3, 1]);
    let a = random_order(64, 7);
    let mut sorted = a.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (0..64).collect::<Vec<_>>(), "a permutation");
    assert_eq!(a, random_order(64, 7));
    assert_ne!(a, random_order(64, 8));
    assert_ne!(a, (0..64).collect::<Vec<_>>());
}

#[test]
fn der_rewards_the_attacks_drop_and_charges_the_clean_drop() {
    let before = metrics(98.0, 99.0);
    assert!((der(&before, &metrics(98.0, 9.0)) - 0.95).abs() < 1e-12);
    assert!((der(&before, &metrics(88.0, 9.0)) - 0.90).abs() < 1e-12);
    // Neither a rise in clean accuracy nor a rise in the attack counts.
    assert!((der(&before, &metrics(99.0, 99.5)) - 0.5).abs() < 1e-12);
    assert!((der(&before, &before) - 0.5).abs() < 1e-12);
}

#[test]
fn clp_takes_each_kernels_largest_singular_value() {
    let net = Net::new(Device::Cpu);
    let _guard = tch::no_grad_guard();
    // conv2 unit 3: a rank-one kernel u vᵀ over (32 inputs × 9 positions): σ = |u|·|v|.
    let u: Vec<f32> = (0..32).map(|i| if i < 4 { 1.0 } else { 0.0 }).collect();
    let v: Vec<f32> = (0..9).map(|j| if j == 4 { 3.0 } else { 0.0 }).collect();
    let kernel: Vec<f32> = u.iter().flat_map(|a| v.iter().map(move |b| a * b)).collect();
    let mut w = net.weight(Layer::Conv2).get(3);
    w.copy_(&Tensor::from_slice(&kernel).view([32, 3, 3]));
    // fc1 unit 5: a row of norm 5 (σ of a 1 × n matrix).
    let mut row = net.weight(Layer::Fc1).get(5);
    let _ = row.zero_();
    row.narrow(0, 0, 2).copy_(&Tensor::from_slice(&[3.0f32, 4.0]));
    let conv2 = largest_singular_values(&net, Layer::Conv2);
    assert_eq!(conv2.len(), 64);
    assert!((conv2[3] - 6.0).abs() < 1e-5, "{}", conv2[3]);
    let fc1 = largest_singular_values(&net, Layer::Fc1);
    assert!((fc1[5] - 5.0).abs() < 1e-5, "{}", fc1[5]);
}
