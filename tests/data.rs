//! The IDX reader (each corrupt case), MNIST loading and the trigger's pixels.

mod common;

use common::scratch;
use std::io::Write;
use std::path::Path;
use trojanscope::data::idx::{self, IdxArray, IdxError, encode_idx, parse_idx};
use trojanscope::data::loaded::LoadedData;
use trojanscope::data::mnist::{self, PIXELS};
use trojanscope::data::trigger::TriggerConfig;

fn images(n: usize) -> IdxArray {
    IdxArray { dims: vec![n, 28, 28], data: (0..n * PIXELS).map(|i| (i % 256) as u8).collect() }
}

fn labels(n: usize) -> IdxArray {
    IdxArray { dims: vec![n], data: (0..n).map(|i| (i % 10) as u8).collect() }
}

/// Writes a complete small MNIST folder; `gz` compresses every file.
fn write_mnist(dir: &Path, train: usize, test: usize, gz: bool) {
    let files = [
        (mnist::TRAIN_IMAGES, images(train)),
        (mnist::TRAIN_LABELS, labels(train)),
        (mnist::TEST_IMAGES, images(test)),
        (mnist::TEST_LABELS, labels(test)),
    ];
    for (name, array) in files {
        let bytes = encode_idx(&array);
        if gz {
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            enc.write_all(&bytes).unwrap();
            std::fs::write(dir.join(format!("{name}.gz")), enc.finish().unwrap()).unwrap();
        } else {
            std::fs::write(dir.join(name), bytes).unwrap();
        }
    }
}

#[test]
fn idx_round_trips_and_reads_gzip() {
    let dir = scratch("gz");
    write_mnist(&dir, 5, 3, true);
    let data = LoadedData::load(&dir).unwrap();
    assert_eq!(data.train.len(), 5);
    assert_eq!(data.test.len(), 3);
    assert_eq!(data.train.labels, vec![0, 1, 2, 3, 4]);
    assert_eq!(data.train.pixels[..3], [0, 1, 2]);
    assert_eq!(data.checksums.len(), 4);
    assert!(data.checksums.keys().all(|k| k.ends_with(".gz")));
}

#[test]
fn missing_file_names_the_file() {
    let dir = scratch("missing");
    write_mnist(&dir, 5, 3, false);
    std::fs::remove_file(dir.join(mnist::TEST_LABELS)).unwrap();
    let err = LoadedData::load(&dir).unwrap_err();
    assert!(matches!(err, IdxError::Missing(_)));
    let msg = err.to_string();
    assert!(msg.contains("t10k-labels-idx1-ubyte") && msg.contains("not found"), "{msg}");
}

#[test]
fn wrong_magic_is_rejected() {
    let mut bytes = encode_idx(&labels(4));
    bytes[2] = 0x0D; // float data, not unsigned bytes
    let err = parse_idx(Path::new("x-labels"), &bytes).unwrap_err();
    assert!(matches!(err, IdxError::BadMagic { found: [0, 0, 0x0D, 1], .. }), "{err}");
    assert!(err.to_string().contains("x-labels"));
    assert!(matches!(parse_idx(Path::new("short"), &[0, 0]).unwrap_err(), IdxError::BadMagic { .. }));
}

#[test]
fn truncated_and_padded_files_are_rejected() {
    let bytes = encode_idx(&images(2));
    let err = parse_idx(Path::new("imgs"), &bytes[..bytes.len() - 10]).unwrap_err();
    match err {
        IdxError::Truncated { expected, found, .. } => assert_eq!((expected, found), (2 * PIXELS, 2 * PIXELS - 10)),
        other => panic!("expected Truncated, got {other}"),
    }
    let mut long = bytes.clone();
    long.push(7);
    assert!(
        matches!(parse_idx(Path::new("imgs"), &long).unwrap_err(), IdxError::TrailingBytes { found, .. } if found == 2 * PIXELS + 1)
    );
    // A header cut inside its dimension list is truncated too.
    assert!(matches!(
        parse_idx(Path::new("imgs"), &bytes[..9]).unwrap_err(),
        IdxError::Truncated { expected: 16, found: 9, .. }
    ));
}

#[test]
fn wrong_dimensions_are_rejected() {
    let dir = scratch("dims");
    write_mnist(&dir, 4, 3, false);
    let wrong = IdxArray { dims: vec![4, 32, 32], data: vec![0; 4 * 32 * 32] };
    std::fs::write(dir.join(mnist::TRAIN_IMAGES), encode_idx(&wrong)).unwrap();
    let err = LoadedData::load(&dir).unwrap_err();
    assert!(matches!(&err, IdxError::WrongDims { found, .. } if found == &vec![4, 32, 32]), "{err}");
    assert!(err.to_string().contains("[N, 28, 28]"));
}

#[test]
fn label_and_image_counts_must_match() {
    let dir = scratch("count");
    write_mnist(&dir, 4, 3, false);
    std::fs::write(dir.join(mnist::TEST_LABELS), encode_idx(&labels(2))).unwrap();
    let err = LoadedData::load(&dir).unwrap_err();
    match &err {
        IdxError::CountMismatch { image_count, label_count, .. } => assert_eq!((*image_count, *label_count), (3, 2)),
        other => panic!("expected CountMismatch, got {other}"),
    }
    assert!(err.to_string().contains("3 images but"));
}

#[test]
fn labels_must_be_digits() {
    let dir = scratch("label");
    write_mnist(&dir, 4, 3, false);
    let bad = IdxArray { dims: vec![3], data: vec![1, 12, 3] };
    std::fs::write(dir.join(mnist::TEST_LABELS), encode_idx(&bad)).unwrap();
    assert!(LoadedData::load(&dir).unwrap_err().to_string().contains("labels 0..=9"));
}

#[test]
fn corrupt_gzip_is_an_io_error_naming_the_file() {
    let dir = scratch("badgz");
    std::fs::write(dir.join("f.gz"), [0x1f, 0x8b, 8, 0, 1, 2, 3]).unwrap();
    let err = idx::read_idx(&dir.join("f.gz")).unwrap_err();
    assert!(matches!(err, IdxError::Io(..)));
    assert!(err.to_string().contains("f.gz"));
}

#[test]
fn normalisation_matches_the_study() {
    let dir = scratch("norm");
    write_mnist(&dir, 2, 1, false);
    let data = LoadedData::load(&dir).unwrap();
    let x = Vec::<f32>::try_from(data.test.images(tch::Device::Cpu).flatten(0, -1)).unwrap();
    // Pixel 0 is 0, pixel 255 is 255.
    assert!((x[0] - (-0.1307 / 0.3081) as f32).abs() < 1e-6);
    assert!((x[255] - ((1.0 - 0.1307) / 0.3081) as f32).abs() < 1e-5);
}

#[test]
fn trigger_lights_exactly_the_study_pixels() {
    let mask = TriggerConfig::default().mask();
    let lit: Vec<(usize, usize)> = (0..PIXELS).filter(|&i| mask[i] != 0.0).map(|i| (i / 28, i % 28)).collect();
    assert_eq!(lit.len(), 18);
    assert!(lit.iter().all(|&(r, c)| (22..28).contains(&r) && (22..28).contains(&c) && (r + c) % 2 == 0));
    assert!(lit.contains(&(22, 22)) && lit.contains(&(27, 27)) && !lit.contains(&(22, 23)));
    assert!(mask.iter().all(|&v| v == 0.0 || v == 2.8215f32));
    // The value a white pixel has after normalisation.
    assert!((2.8215 - (1.0 - 0.1307) / 0.3081f64).abs() < 1e-4);
}

#[test]
fn trigger_is_configurable_and_validated() {
    let t = TriggerConfig { size: 3, row: 0, col: 1, amplitude: 1.5, target: 3 };
    let lit: Vec<usize> = t.mask().iter().enumerate().filter(|(_, v)| **v == 1.5).map(|(i, _)| i).collect();
    // Rows 0..3, columns 1..4, lit where row+column is even.
    assert_eq!(lit, vec![2, 28 + 1, 28 + 3, 56 + 2]);
    assert!(TriggerConfig { size: 7, ..TriggerConfig::default() }.validate().unwrap_err().contains("does not fit"));
    assert!(TriggerConfig { target: 10, ..TriggerConfig::default() }.validate().is_err());
}
