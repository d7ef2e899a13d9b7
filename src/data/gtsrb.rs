//! GTSRB (the German Traffic Sign Recognition Benchmark) from the user's disk: per-class
//! CSV lists of PPM images, every image resized to 32×32 RGB.

use super::checksum::FileListDigest;
use super::image_file;
use super::images::{DatasetError, ImageSplit, LoadedImages};
use std::path::{Path, PathBuf};

pub const SIDE: usize = 32;
pub const CLASSES: usize = 43;

/// The signs in label order, as the benchmark's `signnames.csv` names them.
pub const CLASS_NAMES: [&str; CLASSES] = [
    "Speed limit (20km/h)",
    "Speed limit (30km/h)",
    "Speed limit (50km/h)",
    "Speed limit (60km/h)",
    "Speed limit (70km/h)",
    "Speed limit (80km/h)",
    "End of speed limit (80km/h)",
    "Speed limit (100km/h)",
    "Speed limit (120km/h)",
    "No passing",
    "No passing for vehicles over 3.5 metric tons",
    "Right-of-way at the next intersection",
    "Priority road",
    "Yield",
    "Stop",
    "No vehicles",
    "Vehicles over 3.5 metric tons prohibited",
    "No entry",
    "General caution",
    "Dangerous curve to the left",
    "Dangerous curve to the right",
    "Double curve",
    "Bumpy road",
    "Slippery road",
    "Road narrows on the right",
    "Road work",
    "Traffic signals",
    "Pedestrians",
    "Children crossing",
    "Bicycles crossing",
    "Beware of ice/snow",
    "Wild animals crossing",
    "End of all speed and passing limits",
    "Turn right ahead",
    "Turn left ahead",
    "Ahead only",
    "Go straight or right",
    "Go straight or left",
    "Keep right",
    "Keep left",
    "Roundabout mandatory",
    "End of no passing",
    "End of no passing by vehicles over 3.5 metric tons",
];

/// Where the training classes and the test list live, relative to the folder given:
/// the plain layout, and the official archives' as extracted (with or without their
/// top `GTSRB/` folder).
const LAYOUTS: [(&str, &str); 3] = [
    ("Train", "Test"),
    ("Final_Training/Images", "Final_Test/Images"),
    ("GTSRB/Final_Training/Images", "GTSRB/Final_Test/Images"),
];
const TEST_LIST: &str = "GT-final_test.csv";

/// Reads GTSRB from `dir`: `Train/000NN/GT-000NN.csv` and `Test/GT-final_test.csv`, or
/// the official `Final_Training/Images/` and `Final_Test/Images/`. Every image listed
/// is read as it is (the CSVs' sign boxes are not cropped, as torchvision's GTSRB
/// does not) and resized to 32×32; the normalisation comes from the training split.
pub fn load(dir: &Path) -> Result<LoadedImages, DatasetError> {
    let (train_dir, test_dir) = LAYOUTS
        .iter()
        .map(|(train, test)| (dir.join(train), dir.join(test)))
        .find(|(train, _)| train.is_dir())
        .ok_or_else(|| {
            DatasetError::new(dir, "no GTSRB training folder: expected Train/00000 … or Final_Training/Images/00000 …")
        })?;
    let mut train = ImageSplit::empty(3, SIDE, SIDE);
    let mut train_digest = FileListDigest::default();
    for class in 0..CLASSES {
        let folder = train_dir.join(format!("{class:05}"));
        if !folder.is_dir() {
            return Err(DatasetError::new(
                &folder,
                format!("missing class folder (GTSRB has {CLASSES} classes, 00000 … 00042)"),
            ));
        }
        let list = folder.join(format!("GT-{class:05}.csv"));
        read_listed_images(&list, dir, &mut train_digest, &mut train)?;
    }
    let mut test = ImageSplit::empty(3, SIDE, SIDE);
    let mut test_digest = FileListDigest::default();
    let test_list = test_dir.join(TEST_LIST);
    if !test_list.is_file() && test_dir.join("GT-final_test.test.csv").is_file() {
        return Err(DatasetError::new(
            &test_list,
            "file not found: the official test images ship without labels; put GT-final_test.csv \
             (from GTSRB_Final_Test_GT.zip) beside them",
        ));
    }
    read_listed_images(&test_list, dir, &mut test_digest, &mut test)?;
    let checksums = FileListDigest::per_split(train_digest, test_digest);
    let class_names = CLASS_NAMES.iter().map(|n| n.to_string()).collect();
    Ok(LoadedImages::with_training_stats(train, test, class_names, checksums))
}

/// Reads one CSV list and every image it names (relative to the CSV's folder) into `split`.
fn read_listed_images(
    list: &Path,
    root: &Path,
    digest: &mut FileListDigest,
    split: &mut ImageSplit,
) -> Result<(), DatasetError> {
    let rows = read_list(list, &image_file::read_listed(list, root, digest)?)?;
    if rows.is_empty() {
        return Err(DatasetError::new(list, "lists no images (an empty class)"));
    }
    let folder = list.parent().unwrap_or(Path::new("."));
    for (file, class) in rows {
        let image = image_file::read_image(&folder.join(file), root, digest)?;
        let resized = image_file::resized(&image, false, SIDE as u32);
        image_file::push_planes(&mut split.pixels, &resized, 3);
        split.labels.push(class);
    }
    Ok(())
}

/// The rows of a `;`-separated list with `Filename` and `ClassId` columns (the others,
/// sizes and sign boxes, are not used): each image's file name and class.
fn read_list(path: &Path, bytes: &[u8]) -> Result<Vec<(PathBuf, u8)>, DatasetError> {
    let text = String::from_utf8_lossy(bytes);
    let mut lines = text.lines().enumerate().filter(|(_, line)| !line.trim().is_empty());
    let (_, header) =
        lines.next().ok_or_else(|| DatasetError::new(path, "empty: expected a header Filename;…;ClassId"))?;
    let columns: Vec<&str> = header.trim_start_matches('\u{feff}').split(';').map(str::trim).collect();
    let column = |name: &str| {
        columns.iter().position(|c| *c == name).ok_or_else(|| {
            DatasetError::new(path, format!("the header has no {name} column (it has {})", columns.join(";")))
        })
    };
    let (file_column, class_column) = (column("Filename")?, column("ClassId")?);
    let mut rows = Vec::new();
    for (index, line) in lines {
        let fields: Vec<&str> = line.split(';').map(str::trim).collect();
        if fields.len() < columns.len() {
            let missing = columns[fields.len()..].join(";");
            return Err(DatasetError::new(
                path,
                format!("line {}: {} of {} columns, missing {missing}", index + 1, fields.len(), columns.len()),
            ));
        }
        let class = fields[class_column].parse::<u8>().ok().filter(|&c| (c as usize) < CLASSES).ok_or_else(|| {
            let value = fields[class_column];
            DatasetError::new(path, format!("line {}: ClassId {value:?} is not a class 0..={}", index + 1, CLASSES - 1))
        })?;
        rows.push((PathBuf::from(fields[file_column]), class));
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_gives_each_rows_file_and_class_and_names_a_short_row() {
        let path = Path::new("GT-00001.csv");
        let good = b"Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId\n00000_00000.ppm;29;30;5;6;24;25;1\n\n";
        assert_eq!(read_list(path, good).unwrap(), vec![(PathBuf::from("00000_00000.ppm"), 1)]);
        let short = b"Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId\na.ppm;29;30;5;6;24;25\n";
        let err = read_list(path, short).unwrap_err().to_string();
        assert_eq!(err, "GT-00001.csv: line 2: 7 of 8 columns, missing ClassId");
        let wrong = b"Filename;ClassId\na.ppm;43\n";
        assert!(read_list(path, wrong).unwrap_err().to_string().contains("ClassId \"43\" is not a class 0..=42"));
    }
}
