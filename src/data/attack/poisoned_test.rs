//! `--attack images`: poisoned test images brought as files, in BackdoorBench's
//! layout `bd_test_dataset/<true label>/<test index>.png`, so any attack
//! (InputAware, SSBA, LF, …) made elsewhere can be scored. Each file replaces the
//! triggered twin of the test image it names; its true label is checked against
//! the dataset's, which catches a folder made from another dataset or split.

use super::PoisonedTest;
use crate::data::image_file::push_planes;
use crate::data::loaded::Split;
use std::path::{Path, PathBuf};

/// The files of a folder, as a split of their own.
pub struct PoisonedImages {
    /// The test index each image is the triggered twin of, ascending.
    pub rows: Vec<usize>,
    /// The images, in `rows`' order, with the test split's shape and normalisation.
    pub images: Split,
}

/// Why a folder is not BackdoorBench's layout, naming the path.
fn layout_error(path: &Path, why: &str) -> String {
    format!("{}: {why} (expected BackdoorBench's bd_test_dataset/<label>/<index>.png)", path.display())
}

/// Every `(label, index, path)` the folder holds, ordered by index.
fn listing(dir: &Path) -> Result<Vec<(u8, usize, PathBuf)>, String> {
    let entries = |path: &Path| -> Result<Vec<PathBuf>, String> {
        let read = std::fs::read_dir(path).map_err(|e| layout_error(path, &format!("cannot read the folder: {e}")))?;
        let mut paths: Vec<PathBuf> = read.filter_map(|e| e.ok().map(|e| e.path())).collect();
        paths.sort();
        Ok(paths)
    };
    let number = |path: &Path, what: &str| -> Result<usize, String> {
        let stem = if what == "label" { path.file_name() } else { path.file_stem() };
        stem.and_then(|s| s.to_str())
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| layout_error(path, &format!("not named by a {what}")))
    };
    let mut files = Vec::new();
    for folder in entries(dir)? {
        if !folder.is_dir() {
            continue; // BackdoorBench keeps nothing else here; stray files are not images of a label
        }
        let label = number(&folder, "label")?;
        let label = u8::try_from(label).map_err(|_| layout_error(&folder, "a label above 255"))?;
        for file in entries(&folder)? {
            files.push((label, number(&file, "test index")?, file));
        }
    }
    if files.is_empty() {
        return Err(layout_error(dir, "no label folders with images"));
    }
    files.sort_by_key(|(_, index, _)| *index);
    Ok(files)
}

impl PoisonedTest {
    /// The folder at `dir`, its images counted (read in full by `read`).
    pub fn scan(dir: &Path) -> Result<PoisonedTest, String> {
        let dir = std::fs::canonicalize(dir).map_err(|e| layout_error(dir, &format!("cannot open: {e}")))?;
        let count = listing(&dir)?.len();
        Ok(PoisonedTest { dir, count })
    }

    /// The images, each checked against the test image it names in `test`: its
    /// index exists, its label is that image's, its size is the dataset's.
    pub fn read(&self, test: &Split) -> Result<PoisonedImages, String> {
        let files = listing(&self.dir)?;
        let [channels, height, width] = test.shape;
        let mut images = Split::empty(test.shape, test.normalisation);
        let mut rows = Vec::with_capacity(files.len());
        for (label, index, path) in files {
            if rows.last() == Some(&index) {
                return Err(layout_error(&path, &format!("test index {index} appears in two label folders")));
            }
            let Some(&truth) = test.labels.get(index) else {
                return Err(layout_error(&path, &format!("test index {index} is past the {} test images", test.len())));
            };
            if truth != label {
                return Err(format!(
                    "{}: test image {index} is labelled {truth} in the dataset, the folder says {label}: was the \
                     folder made from this --dataset's test split?",
                    path.display()
                ));
            }
            let bytes = std::fs::read(&path).map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
            let image = image::load_from_memory(&bytes)
                .map_err(|e| format!("{}: not a readable image: {e}", path.display()))?;
            if (image.height() as usize, image.width() as usize) != (height, width) {
                return Err(format!(
                    "{}: the image is {}×{}; the dataset's are {height}×{width}",
                    path.display(),
                    image.height(),
                    image.width()
                ));
            }
            push_planes(&mut images.pixels, &image, channels);
            images.labels.push(label);
            rows.push(index);
        }
        Ok(PoisonedImages { rows, images })
    }
}
