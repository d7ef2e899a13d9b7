//! The readers of image datasets from disk on small files made here in each layout:
//! CIFAR-10 binary and pickle, GTSRB (both layouts) and image folders; exact pixels in
//! planes order, labels, class names, the resize, the statistics, and every refusal
//! naming its file.

mod common;

use image::{GrayImage, Luma, Rgb, RgbImage};
use std::path::{Path, PathBuf};
use std::process::Command;
use trojanscope::data::checksum::sha256_hex;
use trojanscope::data::images::{DatasetError, LoadedImages};
use trojanscope::data::{cifar, folder, gtsrb};

const CIFAR_NAMES: [&str; 10] =
    ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"];

/// CIFAR-10 record `n` of the test files: label `n % 10`, pixel `k` = `(7k + n) % 256`,
/// except a marker `200 + n` at channel 2 (blue), row 5, column 7.
fn cifar_record(n: usize) -> Vec<u8> {
    let mut record = vec![(n % 10) as u8];
    record.extend((0..cifar::IMAGE_BYTES).map(|k| ((7 * k + n) % 256) as u8));
    record[1 + 2 * 1024 + 5 * 32 + 7] = (200 + n) as u8;
    record
}

/// `cifar-10-batches-bin/` under `root`: five training batches of two records (0..10)
/// and a test batch of one (record 10).
fn write_cifar_binary(root: &Path) -> PathBuf {
    let dir = root.join("cifar-10-batches-bin");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("batches.meta.txt"), CIFAR_NAMES.join("\n") + "\n\n").unwrap();
    for batch in 1..=5 {
        let bytes = [cifar_record(2 * batch - 2), cifar_record(2 * batch - 1)].concat();
        std::fs::write(dir.join(format!("data_batch_{batch}.bin")), bytes).unwrap();
    }
    std::fs::write(dir.join("test_batch.bin"), cifar_record(10)).unwrap();
    dir
}

/// The project's Python pickles the binary batches in `bin_dir` as CIFAR-10's Python
/// layout into `py_dir`. The venv has no numpy, so stand-ins named as numpy's reduce
/// exactly as its ndarray and dtype do under protocol 2 (`_reconstruct(ndarray, (0,),
/// b'b')` then the state (1, shape, dtype, False, bytes); `dtype('u1', False, True)`):
/// the same opcodes numpy's own pickle holds.
fn pickle_cifar(bin_dir: &Path, py_dir: &Path) {
    std::fs::create_dir_all(py_dir).unwrap();
    let script = r#"
import os, pickle, sys, types
src, dst = sys.argv[1], sys.argv[2]
numpy, multiarray = types.ModuleType('numpy'), types.ModuleType('numpy.core.multiarray')
def _reconstruct(*args):
    raise RuntimeError('never called: pickling only')
_reconstruct.__module__ = 'numpy.core.multiarray'
class dtype:
    def __reduce__(self):
        return (dtype, ('u1', False, True), (3, '|', None, None, None, -1, -1, 0))
class ndarray:
    def __init__(self, shape, data):
        self.shape, self.data = shape, data
    def __reduce__(self):
        return (_reconstruct, (ndarray, (0,), b'b'), (1, self.shape, dtype(), False, self.data))
dtype.__module__ = ndarray.__module__ = 'numpy'
numpy.dtype, numpy.ndarray, multiarray._reconstruct = dtype, ndarray, _reconstruct
sys.modules.update({'numpy': numpy, 'numpy.core': types.ModuleType('numpy.core'), 'numpy.core.multiarray': multiarray})
def dump(obj, name):
    with open(os.path.join(dst, name), 'wb') as f:
        pickle.dump(obj, f, protocol=2)
names = [l for l in open(os.path.join(src, 'batches.meta.txt')).read().split('\n') if l]
dump({b'num_cases_per_batch': 2, b'label_names': [n.encode() for n in names], b'num_vis': 3072}, 'batches.meta')
for name in ['data_batch_%d' % i for i in range(1, 6)] + ['test_batch']:
    raw = open(os.path.join(src, name + '.bin'), 'rb').read()
    records = [raw[i:i + 3073] for i in range(0, len(raw), 3073)]
    data = ndarray((len(records), 3072), b''.join(r[1:] for r in records))
    dump({b'batch_label': name.encode(), b'labels': [r[0] for r in records], b'data': data,
          b'filenames': [b'same_name.png' for r in records]}, name)
"#;
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    let out = Command::new(python).arg("-c").arg(script).arg(bin_dir).arg(py_dir).output().expect("python runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// The error's message, after checking it names `file` (a path ending).
fn error_naming(result: Result<LoadedImages, DatasetError>, file: &str) -> String {
    let err = result.expect_err("the reader refuses this").to_string();
    let named = err.split(": ").next().unwrap_or_default();
    assert!(named.ends_with(file), "the error names {named}, not {file}: {err}");
    err
}

#[test]
fn cifar10_binary_and_pickle_give_the_same_exact_planes_labels_and_names() {
    let root = common::scratch("datasets-cifar");
    let bin_dir = write_cifar_binary(&root);
    // The parent folder is accepted as well as the batches folder itself.
    let binary = cifar::load(&root).unwrap();
    assert_eq!((binary.train.len(), binary.test.len()), (10, 1));
    assert_eq!((binary.train.channels, binary.train.height, binary.train.width), (3, 32, 32));
    assert_eq!(binary.train.labels, vec![0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    assert_eq!(binary.test.labels, vec![0]);
    // Image 3 (record 3): the marker on the blue plane, row 5, column 7; pixel k elsewhere.
    assert_eq!(binary.train.pixel(3, 2, 5, 7), 203);
    assert_eq!(binary.train.pixel(3, 0, 0, 1), 10);
    assert_eq!(binary.train.pixel(3, 1, 31, 31), ((7 * 2047 + 3) % 256) as u8);
    assert_eq!(binary.test.pixel(0, 2, 5, 7), 210);
    assert_eq!(binary.train.pixels[..cifar::IMAGE_BYTES], cifar_record(0)[1..]);
    assert_eq!(binary.class_names, CIFAR_NAMES);
    assert_eq!(binary.mean, vec![0.4914, 0.4822, 0.4465]);
    assert_eq!(binary.std, vec![0.2470, 0.2435, 0.2616]);
    assert_eq!(binary.checksums.len(), 7);
    let test_bytes = std::fs::read(bin_dir.join("test_batch.bin")).unwrap();
    assert_eq!(binary.checksums["test_batch.bin"], sha256_hex(&test_bytes));

    let py_dir = root.join("cifar-10-batches-py");
    pickle_cifar(&bin_dir, &py_dir);
    let pickled = cifar::load(&py_dir).unwrap();
    assert_eq!(pickled.train, binary.train);
    assert_eq!(pickled.test, binary.test);
    assert_eq!(pickled.class_names, binary.class_names);
    assert_eq!(pickled.checksums.keys().next().map(String::as_str), Some("batches.meta"));
    std::fs::remove_dir_all(root).unwrap();
}

#[test]
fn cifar10_refusals_name_the_file() {
    let root = common::scratch("datasets-cifar-errors");
    let dir = write_cifar_binary(&root);
    let mut batch = std::fs::read(dir.join("data_batch_3.bin")).unwrap();
    batch.extend([1, 2, 3, 4, 5]);
    std::fs::write(dir.join("data_batch_3.bin"), &batch).unwrap();
    let err = error_naming(cifar::load(&dir), "data_batch_3.bin");
    assert!(err.contains("truncated: 6151 bytes is not a whole number of 3073-byte records"), "{err}");

    let dir = write_cifar_binary(&root);
    let mut record = cifar_record(10);
    record[0] = 10;
    std::fs::write(dir.join("test_batch.bin"), record).unwrap();
    let err = error_naming(cifar::load(&dir), "test_batch.bin");
    assert!(err.ends_with("image 0 has label 10, but the dataset has 10 classes (0..=9)"), "{err}");

    let dir = write_cifar_binary(&root);
    std::fs::remove_file(dir.join("data_batch_5.bin")).unwrap();
    assert!(error_naming(cifar::load(&dir), "data_batch_5.bin").ends_with("file not found"));

    let py_dir = root.join("cifar-10-batches-py");
    std::fs::create_dir_all(&py_dir).unwrap();
    // A protocol-2 pickle of {b'labels': []}, in the opcodes Python 2 wrote.
    std::fs::write(py_dir.join("batches.meta"), b"\x80\x02}q\x00U\x0blabel_namesq\x01]q\x02U\x01aq\x03as.").unwrap();
    std::fs::write(py_dir.join("data_batch_1"), b"\x80\x02}q\x00U\x06labelsq\x01]q\x02s.").unwrap();
    let err = error_naming(cifar::load(&py_dir), "data_batch_1");
    assert!(err.ends_with("the pickle has no b'data' entry (its keys: b'labels')"), "{err}");

    let empty = root.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    assert!(error_naming(cifar::load(&empty), "empty").contains("no CIFAR-10 files"));
    std::fs::remove_dir_all(root).unwrap();
}

fn write_ppm(path: &Path, image: &RgbImage) {
    let mut bytes = format!("P6\n{} {}\n255\n", image.width(), image.height()).into_bytes();
    bytes.extend_from_slice(image.as_raw());
    std::fs::write(path, bytes).unwrap();
}

const RED: Rgb<u8> = Rgb([255, 0, 0]);
const GREEN: Rgb<u8> = Rgb([0, 255, 0]);
const BLUE: Rgb<u8> = Rgb([0, 0, 255]);
const WHITE: Rgb<u8> = Rgb([255, 255, 255]);

/// Red, green / blue, white.
fn four_colours() -> RgbImage {
    RgbImage::from_fn(2, 2, |x, y| [[RED, GREEN], [BLUE, WHITE]][y as usize][x as usize])
}

const GT_HEADER: &str = "Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId\n";

/// GTSRB's plain layout under `root`: one image per class (class 5: the four colours;
/// class 7: 64×64, black left half, white right half; the others a solid grey of 3 × the
/// class, 5×6 pixels) and two test images (the four colours as class 14, class 0).
fn write_gtsrb(root: &Path) {
    for class in 0..gtsrb::CLASSES {
        let folder = root.join(format!("Train/{class:05}"));
        std::fs::create_dir_all(&folder).unwrap();
        let image = match class {
            5 => four_colours(),
            7 => RgbImage::from_fn(64, 64, |x, _| if x < 32 { Rgb([0, 0, 0]) } else { WHITE }),
            _ => RgbImage::from_pixel(5, 6, Rgb([3 * class as u8; 3])),
        };
        write_ppm(&folder.join("00000_00000.ppm"), &image);
        let row = format!("00000_00000.ppm;{};{};0;0;1;1;{class}\n", image.width(), image.height());
        std::fs::write(folder.join(format!("GT-{class:05}.csv")), format!("{GT_HEADER}{row}")).unwrap();
    }
    let test = root.join("Test");
    std::fs::create_dir_all(&test).unwrap();
    write_ppm(&test.join("00000.ppm"), &four_colours());
    write_ppm(&test.join("00001.ppm"), &RgbImage::from_pixel(40, 30, Rgb([9, 8, 7])));
    let rows = "00000.ppm;2;2;0;0;1;1;14\n00001.ppm;40;30;0;0;1;1;0\n";
    std::fs::write(test.join("GT-final_test.csv"), format!("{GT_HEADER}{rows}")).unwrap();
}

#[test]
fn gtsrb_images_are_resized_to_32_like_pil_and_listed_by_their_csvs() {
    let root = common::scratch("datasets-gtsrb");
    write_gtsrb(&root);
    let data = gtsrb::load(&root).unwrap();
    assert_eq!((data.train.len(), data.test.len()), (43, 2));
    assert_eq!((data.train.channels, data.train.height, data.train.width), (3, 32, 32));
    assert_eq!(data.train.labels, (0..43).collect::<Vec<u8>>());
    assert_eq!(data.test.labels, vec![14, 0]);
    assert_eq!(data.class_names[14], "Stop");
    assert_eq!(data.class_names.len(), 43);
    // The 2×2 image keeps its four colours in the corners.
    let corner =
        |split: &trojanscope::data::images::ImageSplit, image, y, x| [0, 1, 2].map(|c| split.pixel(image, c, y, x));
    assert_eq!(corner(&data.train, 5, 0, 0), RED.0);
    assert_eq!(corner(&data.train, 5, 0, 31), GREEN.0);
    assert_eq!(corner(&data.train, 5, 31, 0), BLUE.0);
    assert_eq!(corner(&data.train, 5, 31, 31), WHITE.0);
    assert_eq!(corner(&data.test, 0, 31, 31), WHITE.0);
    // Halving 64 → 32 weighs four columns (¼, ¾, ¾, ¼ over 2) as PIL's antialiased
    // bilinear does: column 15 sees white with ¼/2 → 31.875 → 32, column 16 with 7/8 →
    // 223.125 → 223; a plain bilinear sample would give 0 and 255.
    let row: Vec<u8> = (13..19).map(|x| data.train.pixel(7, 1, 10, x)).collect();
    assert_eq!(row, vec![0, 0, 32, 223, 255, 255]);
    assert_eq!(corner(&data.train, 20, 17, 3), [60; 3]);
    assert_eq!(corner(&data.test, 1, 0, 0), [9, 8, 7]);
    assert_eq!(data.checksums.keys().collect::<Vec<_>>(), ["test", "train"]);
    // Normalisation from the training split's 43 × 1,024 pixels per channel.
    let mut sum = [0f64; 3];
    let mut sum2 = [0f64; 3];
    for image in 0..43 {
        for c in 0..3 {
            for y in 0..32 {
                for x in 0..32 {
                    let v = data.train.pixel(image, c, y, x) as f64 / 255.0;
                    sum[c] += v;
                    sum2[c] += v * v;
                }
            }
        }
    }
    let n = 43.0 * 1024.0;
    for c in 0..3 {
        let mean = sum[c] / n;
        assert!((data.mean[c] - mean).abs() < 1e-12);
        assert!((data.std[c] - (sum2[c] / n - mean * mean).sqrt()).abs() < 1e-9);
    }

    // The official archive's layout (with its top GTSRB/ folder) reads the same.
    let official = common::scratch("datasets-gtsrb-official");
    std::fs::create_dir_all(official.join("GTSRB/Final_Training")).unwrap();
    std::fs::create_dir_all(official.join("GTSRB/Final_Test")).unwrap();
    std::fs::rename(root.join("Train"), official.join("GTSRB/Final_Training/Images")).unwrap();
    std::fs::rename(root.join("Test"), official.join("GTSRB/Final_Test/Images")).unwrap();
    let again = gtsrb::load(&official).unwrap();
    assert_eq!((again.train, again.test), (data.train, data.test));
    std::fs::remove_dir_all(root).unwrap();
    std::fs::remove_dir_all(official).unwrap();
}

#[test]
fn gtsrb_refusals_name_the_file() {
    let root = common::scratch("datasets-gtsrb-errors");
    write_gtsrb(&root);
    std::fs::remove_dir_all(root.join("Train/00042")).unwrap();
    let err = error_naming(gtsrb::load(&root), "Train/00042");
    assert!(err.ends_with("missing class folder (GTSRB has 43 classes, 00000 … 00042)"), "{err}");

    write_gtsrb(&root);
    std::fs::write(root.join("Train/00003/GT-00003.csv"), format!("{GT_HEADER}00000_00000.ppm;5;6;0;0;1;1\n")).unwrap();
    let err = error_naming(gtsrb::load(&root), "GT-00003.csv");
    assert!(err.ends_with("line 2: 7 of 8 columns, missing ClassId"), "{err}");

    write_gtsrb(&root);
    std::fs::write(root.join("Train/00004/GT-00004.csv"), GT_HEADER).unwrap();
    assert!(error_naming(gtsrb::load(&root), "GT-00004.csv").ends_with("lists no images (an empty class)"));

    write_gtsrb(&root);
    std::fs::write(root.join("Test/00001.ppm"), b"P6\n40 30\n255\nnot enough pixels").unwrap();
    assert!(error_naming(gtsrb::load(&root), "Test/00001.ppm").contains("not a readable image"));

    write_gtsrb(&root);
    std::fs::remove_file(root.join("Test/GT-final_test.csv")).unwrap();
    assert!(error_naming(gtsrb::load(&root), "Test/GT-final_test.csv").ends_with("file not found"));
    std::fs::remove_dir_all(root).unwrap();
}

/// An image folder under `root`: classes `b_dog` (written first) and `a_cat`.
/// train: a_cat 8×8 solid red (PNG) and solid blue (PNG); b_dog 3×5 solid (0, 51, 0)
/// (PPM, upper-case ending), and a text file that is no image.
/// test: a_cat a grey 100 PNG and a solid (200, 100, 50) JPEG; b_dog the four colours.
fn write_folder(root: &Path) {
    for dir in ["train/b_dog", "train/a_cat", "test/b_dog", "test/a_cat"] {
        std::fs::create_dir_all(root.join(dir)).unwrap();
    }
    write_ppm(&root.join("train/b_dog/one.PPM"), &RgbImage::from_pixel(3, 5, Rgb([0, 51, 0])));
    std::fs::write(root.join("train/b_dog/notes.txt"), "not an image").unwrap();
    RgbImage::from_pixel(8, 8, RED).save(root.join("train/a_cat/1.png")).unwrap();
    RgbImage::from_pixel(8, 8, BLUE).save(root.join("train/a_cat/2.png")).unwrap();
    GrayImage::from_pixel(8, 8, Luma([100])).save(root.join("test/a_cat/grey.png")).unwrap();
    RgbImage::from_pixel(8, 8, Rgb([200, 100, 50])).save(root.join("test/a_cat/solid.jpg")).unwrap();
    four_colours().save(root.join("test/b_dog/four.png")).unwrap();
}

#[test]
fn an_image_folder_reads_sorted_classes_resized_with_its_own_statistics() {
    let root = common::scratch("datasets-folder");
    write_folder(&root);
    let data = folder::load(&root, 4).unwrap();
    assert_eq!(data.class_names, ["a_cat", "b_dog"]);
    assert_eq!((data.train.channels, data.train.height, data.train.width), (3, 4, 4));
    assert_eq!(data.train.labels, vec![0, 0, 1]);
    assert_eq!(data.test.labels, vec![0, 0, 1]);
    let at =
        |split: &trojanscope::data::images::ImageSplit, image, y, x| [0, 1, 2].map(|c| split.pixel(image, c, y, x));
    assert_eq!(at(&data.train, 0, 2, 1), RED.0);
    assert_eq!(at(&data.train, 1, 3, 3), BLUE.0);
    assert_eq!(at(&data.train, 2, 0, 3), [0, 51, 0]);
    // A grey image among colour ones has three equal planes.
    assert_eq!(at(&data.test, 0, 1, 2), [100; 3]);
    // JPEG is lossy: its solid colour comes back within a step or two.
    let jpeg = at(&data.test, 1, 2, 2);
    assert!(jpeg.iter().zip([200, 100, 50]).all(|(&got, want)| got.abs_diff(want) <= 2), "{jpeg:?}");
    assert_eq!(at(&data.test, 2, 0, 0), RED.0);
    assert_eq!(at(&data.test, 2, 3, 3), WHITE.0);
    // By hand: red is 1 in one image of three, green 0.2 in one, blue 1 in one.
    let third: f64 = 1.0 / 3.0;
    let expected_mean = [third, 0.2 / 3.0, third];
    let expected_std =
        [(third - third * third).sqrt(), (0.04f64 / 3.0 - 0.04 / 9.0).sqrt(), (third - third * third).sqrt()];
    for c in 0..3 {
        assert!((data.mean[c] - expected_mean[c]).abs() < 1e-12, "{:?}", data.mean);
        assert!((data.std[c] - expected_std[c]).abs() < 1e-12, "{:?}", data.std);
    }

    // Every image grey: one channel.
    let grey = common::scratch("datasets-folder-grey");
    for (dir, value) in [("train/x", 10), ("train/y", 30), ("test/x", 20), ("test/y", 40)] {
        std::fs::create_dir_all(grey.join(dir)).unwrap();
        GrayImage::from_pixel(6, 6, Luma([value])).save(grey.join(dir).join("a.png")).unwrap();
    }
    let data = folder::load(&grey, 3).unwrap();
    assert_eq!((data.train.channels, data.train.pixels.len()), (1, 2 * 9));
    assert_eq!(data.test.pixels, [vec![20; 9], vec![40; 9]].concat());
    assert!((data.mean[0] - 20.0 / 255.0).abs() < 1e-12 && (data.std[0] - 10.0 / 255.0).abs() < 1e-12);
    std::fs::remove_dir_all(root).unwrap();
    std::fs::remove_dir_all(grey).unwrap();
}

#[test]
fn image_folder_refusals_name_the_folder_or_file() {
    let root = common::scratch("datasets-folder-errors");
    write_folder(&root);
    std::fs::remove_dir_all(root.join("test/b_dog")).unwrap();
    assert!(
        error_naming(folder::load(&root, 4), "test/b_dog").ends_with("missing class folder (train/ has this class)")
    );

    write_folder(&root);
    std::fs::create_dir_all(root.join("test/c_cow")).unwrap();
    assert!(error_naming(folder::load(&root, 4), "test/c_cow").ends_with("a class folder train/ does not have"));
    std::fs::remove_dir_all(root.join("test/c_cow")).unwrap();

    std::fs::remove_file(root.join("train/b_dog/one.PPM")).unwrap();
    let err = error_naming(folder::load(&root, 4), "train/b_dog");
    assert!(err.ends_with("no images (png, jpg, jpeg, ppm): an empty class"), "{err}");

    write_folder(&root);
    std::fs::write(root.join("train/a_cat/2.png"), b"\x89PNG\r\n\x1a\ncut short").unwrap();
    assert!(error_naming(folder::load(&root, 4), "train/a_cat/2.png").contains("not a readable image"));

    let unsplit = root.join("unsplit");
    std::fs::create_dir_all(unsplit.join("a_cat")).unwrap();
    assert!(
        error_naming(folder::load(&unsplit, 4), "unsplit/train").contains("needs train/<class>/ and test/<class>/")
    );
    std::fs::remove_dir_all(root).unwrap();
}
