//! Photo sets on disk and their deterministic train/test split.
//!
//! A photo belongs to the test split when the first two bytes of the sha-256 of
//! its file name, mod 100, fall below the test percentage. The split depends only
//! on the name: adding photos never moves another photo across it, and nothing is
//! ever evaluated on photos it was trained on.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// Which part of a photo set to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    Train,
    Test,
    All,
}

/// Share of photos in the test split, in percent.
pub const DEFAULT_TEST_PERCENT: u8 = 50;

/// Why photos could not be listed.
#[derive(Debug, thiserror::Error)]
pub enum PhotoError {
    #[error(
        "cannot read photo folder {path}: {source} (run scripts/fetch_photos.sh to get the sample photos)"
    )]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("no photos (.jpg, .jpeg, .png, .webp) found under {0} for split {1:?}")]
    Empty(PathBuf, Split),
    #[error("no photos under {dir} match --sources {sources:?} / --exclude-sources {exclude:?}")]
    NoMatch {
        dir: PathBuf,
        sources: Vec<String>,
        exclude: Vec<String>,
    },
}

/// Which photos a command works on (`--photos`, `--test-percent`, `--limit`,
/// `--sources`, `--exclude-sources`).
#[derive(Debug, Clone)]
pub struct Selection {
    /// Folder of photos (searched recursively).
    pub dir: PathBuf,
    /// Percentage of photos (by hash of the file name) in the test split.
    pub test_percent: u8,
    /// At most this many photos (after the split), for quick runs.
    pub limit: Option<usize>,
    /// Only photos from these sources (the folders they sit in); empty: all.
    pub sources: Vec<String>,
    /// Photos from these sources are left out.
    pub exclude_sources: Vec<String>,
}

impl Selection {
    /// The photos of `split` from the chosen sources, at most `limit` of them.
    pub fn select(&self, split: Split) -> Result<Vec<PathBuf>, PhotoError> {
        let mut list = select(&self.dir, split, self.test_percent)?;
        list.retain(|p| {
            let source = crate::learn::table::source_of(p, &self.dir);
            (self.sources.is_empty() || self.sources.contains(&source))
                && !self.exclude_sources.contains(&source)
        });
        if list.is_empty() {
            return Err(PhotoError::NoMatch {
                dir: self.dir.clone(),
                sources: self.sources.clone(),
                exclude: self.exclude_sources.clone(),
            });
        }
        if let Some(n) = self.limit {
            list.truncate(n);
        }
        Ok(list)
    }
}

/// Files as given and the photos inside folders (searched recursively).
pub fn expand(paths: &[PathBuf]) -> Result<Vec<PathBuf>, PhotoError> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            out.extend(list(p)?);
        } else {
            out.push(p.clone());
        }
    }
    Ok(out)
}

/// Whether a file name falls in the test split.
pub fn is_test(file_name: &str, test_percent: u8) -> bool {
    let h = Sha256::digest(file_name.as_bytes());
    (u16::from_be_bytes([h[0], h[1]]) % 100) < u16::from(test_percent)
}

/// Every image file under `dir` (recursively), sorted by path.
pub fn list(dir: &Path) -> Result<Vec<PathBuf>, PhotoError> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries = std::fs::read_dir(&d).map_err(|source| PhotoError::Read {
            path: d.clone(),
            source,
        })?;
        for entry in entries.flatten() {
            let p = entry.path();
            if p.is_dir() {
                stack.push(p);
            } else if is_image_name(&p) {
                out.push(p);
            }
        }
    }
    out.sort();
    Ok(out)
}

fn is_image_name(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .map(|e| {
            matches!(
                e.to_ascii_lowercase().as_str(),
                "jpg" | "jpeg" | "png" | "webp"
            )
        })
        .unwrap_or(false)
}

/// The photos of one split under `dir`; an error if there are none.
pub fn select(dir: &Path, split: Split, test_percent: u8) -> Result<Vec<PathBuf>, PhotoError> {
    let photos: Vec<PathBuf> = list(dir)?
        .into_iter()
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            match split {
                Split::All => true,
                Split::Test => is_test(name, test_percent),
                Split::Train => !is_test(name, test_percent),
            }
        })
        .collect();
    if photos.is_empty() {
        return Err(PhotoError::Empty(dir.to_path_buf(), split));
    }
    Ok(photos)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_is_deterministic_and_roughly_balanced() {
        let names: Vec<String> = (0..1000).map(|i| format!("{i}.jpg")).collect();
        let test = names.iter().filter(|n| is_test(n, 50)).count();
        assert!((430..570).contains(&test), "{test}");
        assert_eq!(is_test("1.jpg", 50), is_test("1.jpg", 50));
        assert!(names.iter().all(|n| !is_test(n, 0)));
        assert!(names.iter().all(|n| is_test(n, 100)));
    }

    #[test]
    fn train_and_test_partition_a_folder() {
        let dir = std::env::temp_dir().join(format!("adacompress-photos-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        for i in 0..40 {
            std::fs::write(
                dir.join(if i % 2 == 0 { "sub" } else { "" })
                    .join(format!("{i}.jpg")),
                b"x",
            )
            .unwrap();
        }
        std::fs::write(dir.join("notes.txt"), b"x").unwrap();
        let all = select(&dir, Split::All, 50).unwrap();
        let train = select(&dir, Split::Train, 50).unwrap();
        let test = select(&dir, Split::Test, 50).unwrap();
        assert_eq!(all.len(), 40);
        assert_eq!(train.len() + test.len(), 40);
        assert!(train.iter().all(|p| !test.contains(p)));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
