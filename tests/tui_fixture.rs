//! The explorer's tests render from a committed tiny run (`tests/fixtures/tiny-run`):
//! fixed weights, so that no pane depends on how this CPU rounds a training run.
//! Regenerate it (after a change to the network, the training or the file formats)
//! with `cargo test --release --test tui_fixture -- --ignored`, then review the
//! snapshots with `INSTA_UPDATE=always cargo test --release --test tui_snapshots`.

mod tui_support;

use trojanscope::engine::lab::{Lab, ModelKind};

use trojanscope::engine::run::RunDir;
use trojanscope::engine::train::TrainConfig;
use tui_support::{FIXTURE_FILES, TEST_LIMIT, TRAIN_LIMIT, fixture, scratch, train_tiny_run};

#[test]
#[ignore = "rewrites tests/fixtures/tiny-run: run by hand, then review the snapshots and commit"]
fn regenerate_the_tiny_run() {
    let folder = scratch("regenerate");
    train_tiny_run(RunDir::new(&folder, "tiny"));
    std::fs::create_dir_all(fixture()).unwrap();
    for file in FIXTURE_FILES {
        let text = std::fs::read(folder.join("tiny").join(file)).unwrap();
        // The sidecars name the data folder; this machine's absolute path means nothing elsewhere.
        let data_dir = tui_support::data_dir().display().to_string();
        let text = if file.ends_with(".json") {
            String::from_utf8(text).unwrap().replace(&data_dir, "data/mnist").into_bytes()
        } else {
            text
        };
        std::fs::write(fixture().join(file), text).unwrap();
    }
}

/// The committed models load, and measured again here they score what their
/// sidecars say (in percent, up to rounding: an image or two of 500 may change its argmax).
#[test]
fn the_committed_tiny_run_loads_and_scores_what_its_sidecars_say() {
    let data = tui_support::mnist_subset();
    assert_eq!((data.train.len(), data.test.len()), (TRAIN_LIMIT, TEST_LIMIT));
    let lab = Lab::new(tch::Device::Cpu, data, TrainConfig::default(), RunDir { root: fixture() }).unwrap();
    for kind in [ModelKind::Clean, ModelKind::Poisoned, ModelKind::Rehab] {
        let sidecar = lab.run.sidecar(kind).unwrap();
        assert_eq!((sidecar.train_images, sidecar.metrics.count), (TRAIN_LIMIT, TEST_LIMIT), "{kind}");
        let measured = lab.test.evaluate(&lab.load(kind).unwrap());
        let saved = sidecar.metrics;
        for (what, a, b) in [
            ("clean", measured.clean_acc, saved.clean_acc),
            ("poison", measured.poison_acc, saved.poison_acc),
            ("rehab", measured.rehab_acc, saved.rehab_acc),
        ] {
            assert!((a - b).abs() <= 100.0 * 2.0 / TEST_LIMIT as f64 + 1e-9, "{kind} {what}: measured {a}, saved {b}");
        }
    }
    // The backdoor is in the poisoned model (the target for most triggered images)
    // and gone from the rehab one (chance: the target's share of the test images).
    let poisoned = lab.run.sidecar(ModelKind::Poisoned).unwrap().metrics;
    let rehab = lab.run.sidecar(ModelKind::Rehab).unwrap().metrics;
    assert!(poisoned.poison_acc > 70.0 && rehab.poison_acc < 15.0, "{poisoned:?} {rehab:?}");
}
