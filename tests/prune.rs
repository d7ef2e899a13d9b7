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
        detail: Default::default(),
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

/// conv1 with hand-set units on blank images: unit u has bias (32 − u)/100 and no
/// kernel except units 5 (centre tap 1) and 9 (centre tap 2), which see the trigger.
fn hand_made_conv1() -> (Net, trojanscope::engine::testset::TestSet) {
    use trojanscope::data::trigger::TriggerConfig;
    let net = Net::new(Device::Cpu);
    let _guard = tch::no_grad_guard();
    let _ = net.flat_parameters().shallow_clone().zero_();
    let bias = Tensor::from_slice(&(0..32).map(|u| (32 - u) as f32 / 100.0).collect::<Vec<_>>());
    net.bias(Layer::Conv1).shallow_clone().copy_(&bias);
    for (unit, tap) in [(5, 1.0), (9, 2.0)] {
        let _ = net.weight(Layer::Conv1).get(unit).get(0).get(1).get(1).fill_(tap);
    }
    let clean = Tensor::zeros([2, 1, 28, 28], (tch::Kind::Float, Device::Cpu));
    let triggered = &clean + TriggerConfig::default().mask_tensor(Device::Cpu);
    let test = trojanscope::engine::testset::TestSet {
        inputs: Tensor::cat(&[clean, triggered], 0),
        labels: vec![3, 3],
        relabel: trojanscope::data::attack::poison::Relabel::To { target: 8 },
        classes: 10,
    };
    (net, test)
}

#[test]
fn each_data_ranking_orders_hand_made_units_by_its_definition() {
    use trojanscope::engine::prune::{Ranking, RankingInputs, ranking_order};
    let (net, test) = hand_made_conv1();
    // The clean model differs in unit 7's kernel by 3 and unit 2's by 1.
    let clean = net.duplicate();
    {
        let _guard = tch::no_grad_guard();
        let _ = clean.weight(Layer::Conv1).get(7).fill_(1.0);
        let _ = clean.weight(Layer::Conv1).get(2).get(0).get(0).get(0).fill_(1.0);
    }
    let inputs = RankingInputs { net: &net, clean: &clean, test: &test, seed: 0 };
    let order = |r| ranking_order(r, Layer::Conv1, &inputs);
    // Fine-Pruning: lowest mean clean activation (here the bias) first.
    assert_eq!(order(Ranking::FinePruning), (0..32).rev().collect::<Vec<_>>());
    // TAC: only the units that see the trigger change, the stronger first; ties by unit.
    let tac = order(Ranking::Tac);
    assert_eq!(tac[..3], [9, 5, 0]);
    // Weight change: unit 7 (nine taps by 1, L2 3) before unit 2 (one tap by 1).
    assert_eq!(order(Ranking::WeightChange)[..3], [7, 2, 0]);
}
