//! Toggle latency and sweep time of the ablation engine on a trained run's poisoned
//! model and the full test set, with the hand-written CPU kernels and with
//! libtorch's ops alone (the GPU path) side by side in one process:
//! `cargo bench --bench ablation` (needs `scripts/run.sh run` first; the run is
//! `TROJANSCOPE_BENCH_RUN`, default `default`; threads `TROJANSCOPE_BENCH_THREADS`,
//! default every core). Each figure is a median; every toggle's metrics are also
//! checked against the study's reference path.

use std::ops::ControlFlow;
use std::path::Path;
use trojanscope::bench::median_time;
use trojanscope::data::loaded::LoadedData;
use trojanscope::engine::ablation::{self, AblationMode, AblationSet};
use trojanscope::engine::cache::ActivationCache;
use trojanscope::engine::lab::ModelKind;
use trojanscope::engine::layer::Layer;
use trojanscope::engine::run::RunDir;
use trojanscope::engine::sweep::sweep;
use trojanscope::engine::testset::TestSet;
use trojanscope::engine::train::TrainConfig;

const REPEAT: usize = 11;

fn main() {
    trojanscope::alloc::keep_freed_memory();
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let threads = std::env::var("TROJANSCOPE_BENCH_THREADS").ok().and_then(|t| t.parse().ok()).unwrap_or(cores);
    tch::set_num_threads(threads as i32);
    trojanscope::engine::kernels::set_threads(Some(threads));
    let data_dir = std::env::var("TROJANSCOPE_DATA_DIR").unwrap_or_else(|_| "data/mnist".into());
    let run_name = std::env::var("TROJANSCOPE_BENCH_RUN").unwrap_or_else(|_| "default".into());
    let run = RunDir::new(Path::new("checkpoints"), &run_name);
    if !run.has(ModelKind::Poisoned) {
        eprintln!("no poisoned model in checkpoints/{run_name}: run `scripts/run.sh run` first");
        std::process::exit(1);
    }
    let data = LoadedData::load(Path::new(&data_dir)).expect("MNIST loads");
    let config = run.sidecar(ModelKind::Poisoned).map(|s| s.config).unwrap_or_else(|_| TrainConfig::default());
    let test = TestSet::new(&data.test, &config, tch::Device::Cpu).unwrap();
    let net = run.load(ModelKind::Poisoned, tch::Device::Cpu).expect("the poisoned model loads");

    let (build_s, kernels) = median_time(3, || ActivationCache::build(&net, &test));
    let torch_ops = ActivationCache::build(&net, &test).with_torch_kernels();
    println!("{threads} threads; cache build {:.3} s, {} MiB per model", build_s, kernels.bytes() >> 20);
    println!("{:<46} {:>12} {:>14} {:>7}", "figure (median)", "CPU kernels", "libtorch ops", "ratio");
    let row = |name: &str, fast: f64, slow: f64| {
        println!("{name:<46} {:>9.1} ms {:>11.1} ms {:>6.2}×", fast * 1e3, slow * 1e3, slow / fast)
    };
    let sets = [
        AblationSet::of(Layer::Conv1, &[9, 15]),
        AblationSet::of(Layer::Conv1, &[24, 31]),
        AblationSet::of(Layer::Conv1, &[0, 5, 9, 15, 22, 31]),
        "conv1:24,31 conv2:45 fc1:3".parse().expect("a valid set"),
        AblationSet::of(Layer::Conv2, &[37, 4]),
        AblationSet::of(Layer::Fc1, &[1, 5]),
    ];
    for set in &sets {
        for mode in AblationMode::ALL {
            let (fast, metrics) = median_time(REPEAT, || kernels.evaluate(&test, set, mode));
            let (slow, _) = median_time(REPEAT, || torch_ops.evaluate(&test, set, mode));
            let reference = test.metrics(&ablation::reference_predictions(&net, kernels.means(), &test, set, mode));
            let worst = metrics.triple().iter().zip(reference.triple()).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
            assert!(worst <= 0.01, "{set} {mode}: {metrics:?} differs from the reference {reference:?}");
            row(&format!("toggle {set} ({mode})"), fast, slow);
        }
    }
    for layer in [Layer::Conv1, Layer::Conv2, Layer::Fc1] {
        let run_sweep = |cache: &ActivationCache| {
            sweep(cache, &test, layer, AblationMode::Weight, |_, _| ControlFlow::Continue(()))
        };
        let (fast, _) = median_time(3, || run_sweep(&kernels));
        let (slow, _) = median_time(3, || run_sweep(&torch_ops));
        row(&format!("{layer} sweep ({} units)", layer.units()), fast, slow);
    }
}
