use std::time::Instant;
use tch::Device;
use trojanscope::engine::ablation::{AblationMode, AblationSet};
use trojanscope::engine::cache::ActivationCache;
use trojanscope::engine::layer::Layer;
use trojanscope::engine::testset::TestSet;

fn main() {
    trojanscope::alloc::keep_freed_memory();
    tch::set_num_threads(std::env::var("T").map(|v| v.parse().unwrap()).unwrap_or(2));
    let net = trojanscope::engine::checkpoint::load_net(
        std::path::Path::new("checkpoints/default/poisoned.safetensors"),
        Device::Cpu,
    )
    .unwrap();
    let data = trojanscope::data::mnist::Mnist::load(std::path::Path::new("data/mnist")).unwrap();
    let test = TestSet::new(&data.test, &Default::default(), Device::Cpu);
    let c = Instant::now();
    let cache = ActivationCache::build(&net, &test);
    println!("cache {:.0} ms", c.elapsed().as_secs_f64() * 1e3);
    for set in ["conv1:9,15", "conv1:31", "conv2:37,4", "fc1:1,5"] {
        let set: AblationSet = set.parse().unwrap();
        let _ = cache.evaluate(&test, &set, AblationMode::Weight);
        let c = Instant::now();
        for _ in 0..5 {
            let _ = cache.evaluate(&test, &set, AblationMode::Weight);
        }
        println!("toggle {set}: {:.1} ms", c.elapsed().as_secs_f64() * 1e3 / 5.0);
    }
    for layer in [Layer::Conv1, Layer::Conv2] {
        let c = Instant::now();
        let _ = trojanscope::engine::sweep::sweep(&cache, &test, layer, AblationMode::Weight, |_, _| {
            std::ops::ControlFlow::Continue(())
        });
        println!("sweep {layer}: {:.0} ms", c.elapsed().as_secs_f64() * 1e3);
    }
}
