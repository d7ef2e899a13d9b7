//! SHA-256 in hex: how datasets, models and results are recorded and compared.

use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// The SHA-256 of `bytes`, 64 lowercase hex digits.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// One digest over many files (a folder of thousands of images, where a digest per
/// file would swamp a run's record): the SHA-256 of the lines `path<TAB>file digest`,
/// sorted by path, so the order files were read in changes nothing.
#[derive(Debug, Default)]
pub struct FileListDigest {
    entries: Vec<(String, String)>,
}

impl FileListDigest {
    /// Records one file by its path relative to the dataset's root.
    pub fn add(&mut self, relative_path: &str, bytes: &[u8]) {
        self.entries.push((relative_path.to_string(), sha256_hex(bytes)));
    }

    /// A dataset's record with one digest per split, under `train` and `test`.
    pub fn per_split(train: FileListDigest, test: FileListDigest) -> BTreeMap<String, String> {
        BTreeMap::from([("train".to_string(), train.finish()), ("test".to_string(), test.finish())])
    }

    pub fn finish(mut self) -> String {
        self.entries.sort();
        let lines: String = self.entries.iter().map(|(path, digest)| format!("{path}\t{digest}\n")).collect();
        sha256_hex(lines.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_lists_digest_is_that_of_its_sorted_lines() {
        let mut list = FileListDigest::default();
        list.add("b.png", b"");
        list.add("a.png", b"");
        let empty = sha256_hex(b"");
        assert_eq!(list.finish(), sha256_hex(format!("a.png\t{empty}\nb.png\t{empty}\n").as_bytes()));
    }

    #[test]
    fn the_empty_input_has_the_published_digest() {
        assert_eq!(super::sha256_hex(b""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    }
}
