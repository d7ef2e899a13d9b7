//! A dataset of image files in class folders: `root/train/<class>/*` and
//! `root/test/<class>/*`, classes in sorted folder order, every image resized square.

use super::checksum::FileListDigest;
use super::image_file;
use super::images::{self, DatasetError, ImageSplit, LoadedImages};
use image::DynamicImage;
use std::path::{Path, PathBuf};

/// The file endings read as images (any case); other files are left alone.
pub const IMAGE_EXTENSIONS: [&str; 4] = ["png", "jpg", "jpeg", "ppm"];

/// Reads `root/train/<class>/` and `root/test/<class>/`, each image resized to `side` ×
/// `side`: 1 channel when every image of both splits is stored grey, else 3 (a grey
/// image then has three equal planes). The normalisation comes from the training split.
pub fn load(root: &Path, side: usize) -> Result<LoadedImages, DatasetError> {
    let side_u32 = u32::try_from(side)
        .ok()
        .filter(|&s| s > 0)
        .ok_or_else(|| DatasetError::new(root, format!("image size {side}: expected a side of at least 1 pixel")))?;
    let (train_dir, test_dir) = (root.join("train"), root.join("test"));
    for dir in [&train_dir, &test_dir] {
        if !dir.is_dir() {
            return Err(DatasetError::new(
                dir,
                "folder not found: an image folder needs train/<class>/ and test/<class>/ \
                 (it is not split here, so that no test image is trained on)",
            ));
        }
    }
    let class_names = class_folders(&train_dir)?;
    images::check_class_count(&train_dir, class_names.len())?;
    if let Some(extra) = class_folders(&test_dir)?.into_iter().find(|c| !class_names.contains(c)) {
        return Err(DatasetError::new(&test_dir.join(extra), "a class folder train/ does not have"));
    }
    let mut train_digest = FileListDigest::default();
    let mut test_digest = FileListDigest::default();
    let train = read_split(&train_dir, &class_names, side_u32, root, &mut train_digest)?;
    let test = read_split(&test_dir, &class_names, side_u32, root, &mut test_digest)?;
    let channels = if train.iter().chain(&test).all(|(image, _)| image_file::is_grey(image)) { 1 } else { 3 };
    let planes = |images: Vec<(DynamicImage, u8)>| {
        let mut split = ImageSplit::empty(channels, side, side);
        for (image, label) in images {
            image_file::push_planes(&mut split.pixels, &image, channels);
            split.labels.push(label);
        }
        split
    };
    let checksums = FileListDigest::per_split(train_digest, test_digest);
    Ok(LoadedImages::with_training_stats(planes(train), planes(test), class_names, checksums))
}

/// Everything in `dir`, sorted by name (byte order, which is Python's `sorted` on names).
fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>, DatasetError> {
    let cannot = |e: std::io::Error| DatasetError::new(dir, format!("cannot list: {e}"));
    let mut paths = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(cannot)? {
        paths.push(entry.map_err(cannot)?.path());
    }
    paths.sort();
    Ok(paths)
}

/// The names of the sub-folders of `dir`, sorted.
fn class_folders(dir: &Path) -> Result<Vec<String>, DatasetError> {
    let folders = sorted_entries(dir)?.into_iter().filter(|p| p.is_dir());
    Ok(folders.filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned())).collect())
}

/// Every image of every class folder of one split, resized, with its label.
fn read_split(
    dir: &Path,
    class_names: &[String],
    side: u32,
    root: &Path,
    digest: &mut FileListDigest,
) -> Result<Vec<(DynamicImage, u8)>, DatasetError> {
    let mut images = Vec::new();
    for (label, class) in class_names.iter().enumerate() {
        let folder = dir.join(class);
        if !folder.is_dir() {
            return Err(DatasetError::new(&folder, "missing class folder (train/ has this class)"));
        }
        let files = image_files(&folder)?;
        if files.is_empty() {
            return Err(DatasetError::new(
                &folder,
                format!("no images ({}): an empty class", IMAGE_EXTENSIONS.join(", ")),
            ));
        }
        for path in files {
            let image = image_file::read_image(&path, root, digest)?;
            let grey = image_file::is_grey(&image);
            images.push((image_file::resized(&image, grey, side), label as u8));
        }
    }
    Ok(images)
}

/// The image files directly in `folder`, sorted by name.
fn image_files(folder: &Path) -> Result<Vec<PathBuf>, DatasetError> {
    let is_image = |path: &PathBuf| {
        let extension = path.extension().map(|e| e.to_string_lossy().to_lowercase()).unwrap_or_default();
        path.is_file() && IMAGE_EXTENSIONS.contains(&extension.as_str())
    };
    Ok(sorted_entries(folder)?.into_iter().filter(is_image).collect())
}
