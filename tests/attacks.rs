//! Each attack's image function equals the plain PyTorch reference written from
//! BackdoorBench's formulas (benches/attacks_pytorch.py) on real MNIST images,
//! pixel for pixel (≤ 1e-6); and a run records its attack, poisons what it
//! says, and every analysis runs under it.

mod common;

use std::path::PathBuf;
use std::process::Command;
use tch::{Device, Tensor};
use trojanscope::data::attack::images::{RawTrigger, wanet};
use trojanscope::data::attack::{Attack, Blend, BlendImage, Patch, PatchMode, PatchPattern, Sig};

const IMAGES: usize = 300;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The reference's triggered images `[IMAGES, 1, 28, 28]` for `args`.
fn pytorch(name: &str, args: &[&str]) -> Tensor {
    let out = common::scratch(&format!("attack-{name}")).join("triggered.f32");
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    let status = Command::new(root().join(".venv/bin/python"))
        .arg(root().join("benches/attacks_pytorch.py"))
        .args(["--data-dir", &common::data_dir().display().to_string(), "--test-limit", &IMAGES.to_string()])
        .args(["--out", &out.display().to_string()])
        .args(args)
        .output()
        .expect("the project's python runs");
    assert!(status.status.success(), "{}", String::from_utf8_lossy(&status.stderr));
    let bytes = std::fs::read(&out).unwrap();
    let values: Vec<f32> = bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
    Tensor::from_slice(&values).view([IMAGES as i64, 1, 28, 28])
}

fn ours(attack: &Attack) -> (Tensor, Tensor) {
    let raw = common::mnist(0, IMAGES).test.raw_images(Device::Cpu);
    let trigger = RawTrigger::new(attack, [1, 28, 28], Device::Cpu).expect("a raw-pixel attack");
    (trigger.apply(&raw), raw)
}

fn assert_same(name: &str, attack: &Attack, args: &[&str]) {
    let (triggered, raw) = ours(attack);
    let reference = pytorch(name, args);
    let diff = (&triggered - &reference).abs().max().double_value(&[]);
    assert!(diff <= 1e-6, "{name}: ours and PyTorch's differ by {diff}");
    // The attack changed something: the comparison is not of two copies of the input.
    let changed = (&triggered - &raw).abs().gt(1e-3).sum(tch::Kind::Int64).int64_value(&[]);
    assert!(changed > IMAGES as i64, "{name}: only {changed} pixels changed");
}

#[test]
fn badnets_patches_equal_pytorchs() {
    let solid = Attack::Badnets(Patch::default());
    assert_same("badnets", &solid, &["badnets", "--size", "3"]);
    // Exactly the 3×3 bottom-right corner is white, the rest untouched.
    let (triggered, raw) = ours(&solid);
    let corner = triggered.narrow(2, 25, 3).narrow(3, 25, 3);
    assert_eq!(corner.min().double_value(&[]), 1.0);
    let outside = (&triggered - &raw).narrow(2, 0, 25).abs().max().double_value(&[]);
    assert_eq!(outside, 0.0);
    let checker = Attack::Badnets(Patch {
        size: 4,
        row: Some(2),
        col: Some(5),
        pattern: PatchPattern::Checkerboard,
        mode: PatchMode::Add,
        value: 0.6,
    });
    let args =
        ["badnets", "--size", "4", "--pos", "2,5", "--pattern", "checkerboard", "--mode", "add", "--value", "0.6"];
    assert_same("badnets-checker", &checker, &args);
}

#[test]
fn blended_sig_and_wanet_equal_pytorchs() {
    let blended = Attack::Blended(Blend { alpha: 0.2, image: BlendImage::Noise { seed: 7 } });
    assert_same("blended", &blended, &["blended", "--alpha", "0.2", "--noise-seed", "7"]);
    let sig = Attack::Sig(Sig::default());
    assert_same("sig", &sig, &["sig", "--delta", &(40.0f64 / 255.0).to_string(), "--freq", "6"]);
    let warp = Attack::Wanet(wanet(4, 0.5, 3, 2.0, 28, 28));
    assert_same("wanet", &warp, &["wanet", "--k", "4", "--s", "0.5", "--seed", "3"]);
}
