//! Shared by the integration tests: real MNIST (fetched by scripts/setup.sh) and a
//! small real run trained once per test binary.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::OnceLock;
use tch::Device;
use trojanscope::data::loaded::LoadedData;
use trojanscope::engine::lab::Lab;
use trojanscope::engine::run::RunDir;
use trojanscope::engine::train::{Phase, TrainConfig};

/// Training images for the shared run: enough for the backdoor to take (poison
/// accuracy ≥ 90 %) in one epoch per phase, in seconds.
pub const TRAIN_IMAGES: usize = 12_000;
pub const TEST_IMAGES: usize = 1_000;

pub fn data_dir() -> PathBuf {
    std::env::var_os("TROJANSCOPE_DATA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data/mnist"))
}

/// The binary, reading the data setup installed.
pub fn binary() -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_trojanscope"));
    command.env("TROJANSCOPE_DATA_ROOT", data_dir().parent().expect("data/mnist has a parent"));
    command
}

pub fn mnist(train: usize, test: usize) -> LoadedData {
    let mut data = LoadedData::load(&data_dir()).expect("MNIST (scripts/setup.sh fetches it)");
    data.train.truncate(train);
    data.test.truncate(test);
    data
}

pub fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("trojanscope-it-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub fn config() -> TrainConfig {
    TrainConfig { eval_every: 100, eval_subset: 500, ..TrainConfig::default() }
}

/// A run trained once per test binary (all three phases) on the MNIST subset.
fn trained_run() -> &'static RunDir {
    static RUN: OnceLock<RunDir> = OnceLock::new();
    RUN.get_or_init(|| {
        trojanscope::alloc::keep_freed_memory();
        let run = RunDir::new(&scratch("run"), "small");
        let lab = Lab::new(Device::Cpu, mnist(TRAIN_IMAGES, TEST_IMAGES), config(), run.clone()).unwrap();
        lab.train(&Phase::ALL, &mut |_| std::ops::ControlFlow::Continue(())).unwrap();
        run
    })
}

/// A lab over the shared trained run (tensors are not shared between tests).
pub fn trained_lab() -> Lab {
    // cargo runs tests in parallel, one per core: one libtorch thread each.
    tch::set_num_threads(1);
    trojanscope::engine::kernels::set_threads(Some(1));
    let run = trained_run().clone();
    Lab::new(Device::Cpu, mnist(TRAIN_IMAGES, TEST_IMAGES), config(), run).unwrap()
}

/// The binary's stdout as JSON, after checking it succeeded.
pub fn json(o: &std::process::Output) -> serde_json::Value {
    assert!(o.status.success(), "stderr: {}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&o.stdout)))
}

/// Exit code 1, one `error:` line containing `needle`, no panic or Python traceback.
pub fn assert_clean_failure(o: &std::process::Output, needle: &str) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "stderr: {err}");
    let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error: ")).collect();
    assert_eq!(errors.len(), 1, "{err}");
    assert!(err.contains(needle), "expected '{needle}' in: {err}");
    assert!(!err.contains("panicked") && !err.contains("Traceback"), "{err}");
}

/// A model of the small run kept in the repository (tests/fixtures/tiny-run).
pub fn tiny_run_model(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("tests/fixtures/tiny-run/{name}.safetensors"))
}

/// A copy of the tiny run as run `tiny` of a fresh checkpoints folder (returned),
/// for commands that may write into their run.
pub fn tiny_run_copy(name: &str) -> PathBuf {
    let dir = scratch(name);
    let run = dir.join("tiny");
    std::fs::create_dir_all(&run).unwrap();
    for entry in std::fs::read_dir(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-run")).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, run.join(path.file_name().unwrap())).unwrap();
    }
    dir
}

/// That model as the study's CNN written as a graph, on the CPU.
pub fn study_executor(name: &str) -> trojanscope::graph::exec::Executor {
    let spec = trojanscope::graph::preset::study(trojanscope::data::dataset::Dataset::Mnist);
    let weights = trojanscope::graph::weights::Weights::load(&tiny_run_model(name), &spec, Device::Cpu).unwrap();
    trojanscope::graph::exec::Executor::new(spec, weights, Device::Cpu).unwrap()
}

/// A file of tests/fixtures/graph, as a path string.
pub fn graph_fixture(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/graph").join(name).display().to_string()
}

/// Imports the pre-activation ResNet fixture (`preact.py`) with `weights` as
/// `model` of `run`, on `limit` test images; its JSON answer.
pub fn import_preact(
    checkpoints: &std::path::Path,
    run: &str,
    model: &str,
    weights: &str,
    limit: &str,
    extra: &[&str],
) -> serde_json::Value {
    let dir = checkpoints.display().to_string();
    let source = graph_fixture("preact.py:PreActResNetTiny");
    let mut args = vec!["import", &source, weights, "--model", model, "--checkpoints", &dir, "--run", run];
    args.extend(["--json", "--test-limit", limit]);
    args.extend(extra);
    json(&binary().args(&args).output().expect("the binary runs"))
}
