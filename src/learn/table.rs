//! The label table: for every photo, every action's upload size and whether the
//! service's answer to it agreed with its answer to the original.
//!
//! Training, threshold tuning and evaluation of the calibrated agent all read this one
//! table, so an (image, action) is encoded and asked at most once: answers *and* upload
//! sizes live in the SQLite answer cache, keyed by the image's sha-256 and the action
//! as it acts on that image ([`Action::effective`]: a 768-px "downscale" of a 512-px
//! photo is a full-size re-encode and shares its answer). Photos are processed one at a
//! time, so memory holds one decoded photo whatever the workload's size.
//!
//! The *source* of a photo is the folder it sits in (`data/uploads/<source>/…`): splits across sources are what tell whether a policy
//! generalises.

use std::path::{Path, PathBuf};

use crate::action::{Action, ActionSet, Source};
use crate::agent::{StateError, StateKind, state};
use crate::client::{CachedService, ServiceError, VisionService};
use crate::codec::{CodecError, EncoderMode, Limits};
use crate::learn::photos_env::sha256_hex;
use crate::learn::reward::{Accuracy, agrees};
use crate::model::ImageModel;
use crate::store::CachedAnswer;

/// Why the table could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TableError {
    #[error("cannot read photo {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("photo {path}: {source}")]
    Codec { path: PathBuf, source: CodecError },
    #[error("photo {path}: {source}")]
    State { path: PathBuf, source: StateError },
    #[error(transparent)]
    Service(#[from] ServiceError),
}

/// One photo's row.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Row {
    /// Path under the photo root.
    pub name: String,
    /// The folder the photo sits in (its source).
    pub source: String,
    pub sha: String,
    pub original_bytes: usize,
    /// Upright size.
    pub width: u32,
    pub height: u32,
    /// The agent's state (empty when no backbone was given).
    pub state: Vec<f32>,
    /// The service's top-1 label for the original.
    pub reference_top1: Option<String>,
    /// Per action: bytes uploaded (the original's when a re-encode is not smaller).
    pub bytes: Vec<usize>,
    /// Per action: same top-1 as the original's answer.
    pub agree: Vec<bool>,
    /// Per action: the original's top-1 among the top-k labels (the paper's metric).
    pub agree_k: Vec<bool>,
    /// A training variant made from a photo ([`super::augment`]), not a photo itself:
    /// it teaches the head, but never counts towards a threshold or a report.
    #[serde(default)]
    pub augmented: bool,
}

/// Every photo × every action.
#[derive(Debug, Clone)]
pub struct Table {
    pub actions: ActionSet,
    pub rows: Vec<Row>,
    /// The service's id.
    pub service: String,
    /// Requests the service answered while building (cache misses).
    pub requests: u64,
}

/// What to put in the table.
pub struct Spec<'a> {
    pub actions: &'a ActionSet,
    /// Backbone and state kind for the agent's state, if any.
    pub state: Option<(&'a ImageModel, StateKind)>,
    pub limits: Limits,
    /// Training variants (crop, rescale, exposure, camera quality) added per photo whose
    /// longest side is at least `augment_min_long`: large genuine photos are scarce.
    pub augment: usize,
    pub augment_min_long: u32,
}

/// The answer-cache key of an action as it acts on an image (see the module doc).
pub fn cache_key(effective: &Action, encoder: EncoderMode) -> String {
    match effective {
        Action { quality: None, .. } => "keep".to_string(),
        Action {
            max_side: None,
            quality: Some(_),
        } => format!("{}:{effective}", encoder.name()),
        // Downscales come from a DCT-scaled decode: other pixels than a full decode's.
        _ => format!("{}:{effective}/dct", encoder.name()),
    }
}

/// The source of a photo: the name of the folder it sits in ("" for photos directly in
/// `root`), so `data/photos/street/0.jpg` and `data/uploads/lomiri/x.jpg` are from
/// `street` and `lomiri` whichever folder is the root.
pub fn source_of(path: &Path, root: &Path) -> String {
    let rel = path.strip_prefix(root).unwrap_or(path);
    match rel.parent().and_then(|p| p.file_name()) {
        Some(dir) => dir.to_string_lossy().into_owned(),
        None => String::new(),
    }
}

impl Table {
    /// Builds the table for `paths` (under `root`), asking `service` what the cache
    /// does not know.
    pub async fn build<S: VisionService + ?Sized>(
        paths: &[PathBuf],
        root: &Path,
        spec: &Spec<'_>,
        service: &CachedService<'_, S>,
        mut progress: impl FnMut(usize, usize),
    ) -> Result<Table, TableError> {
        let before = service.requests();
        let mut rows = Vec::with_capacity(paths.len());
        for (n, path) in paths.iter().enumerate() {
            let original = std::fs::read(path).map_err(|source| TableError::Read {
                path: path.to_path_buf(),
                source,
            })?;
            let name = path
                .strip_prefix(root)
                .unwrap_or(path)
                .to_string_lossy()
                .into_owned();
            let source = source_of(path, root);
            let row = Self::row_of(path, &name, &source, &original, spec, service).await?;
            let big = row.width.max(row.height) >= spec.augment_min_long;
            rows.push(row);
            if spec.augment > 0 && big {
                rows.extend(Self::variants(path, &name, &source, &original, spec, service).await?);
            }
            progress(n + 1, paths.len());
        }
        Ok(Table {
            actions: spec.actions.clone(),
            rows,
            service: service.id().to_string(),
            requests: service.requests() - before,
        })
    }

    /// The training variants of one photo (`original`, the bytes of `path`), each
    /// labelled like a photo of its own.
    async fn variants<S: VisionService + ?Sized>(
        path: &Path,
        name: &str,
        source: &str,
        original: &[u8],
        spec: &Spec<'_>,
        service: &CachedService<'_, S>,
    ) -> Result<Vec<Row>, TableError> {
        let codec_err = |source| TableError::Codec {
            path: path.to_path_buf(),
            source,
        };
        let decoded = crate::codec::decode(original, &spec.limits).map_err(codec_err)?;
        let mut out = Vec::with_capacity(spec.augment);
        for (k, (image, quality)) in
            super::augment::variants(&decoded.image, &sha256_hex(original), spec.augment)
                .into_iter()
                .enumerate()
        {
            let bytes = crate::codec::encode_jpeg(&image, quality.max(85), spec.actions.encoder)
                .map_err(codec_err)?;
            let variant = format!("{name}#aug{k}");
            let mut row = Self::row_of(path, &variant, source, &bytes, spec, service).await?;
            row.augmented = true;
            out.push(row);
        }
        Ok(out)
    }

    /// Labels `original` (the bytes of `path`, or a variant of them) under `name`.
    async fn row_of<S: VisionService + ?Sized>(
        path: &Path,
        name: &str,
        source: &str,
        original: &[u8],
        spec: &Spec<'_>,
        service: &CachedService<'_, S>,
    ) -> Result<Row, TableError> {
        let codec_err = |source| TableError::Codec {
            path: path.to_path_buf(),
            source,
        };
        let sha = sha256_hex(original);
        let mut src = Source::new(original, &spec.limits).map_err(codec_err)?;
        let state_vec = match spec.state {
            Some((backbone, kind)) => {
                state::observe(backbone, kind, &mut src).map_err(|source| TableError::State {
                    path: path.to_path_buf(),
                    source,
                })?
            }
            None => Vec::new(),
        };
        let reference = service.answer(&sha, "keep", original).await?;
        let encoder = spec.actions.encoder;
        let n = spec.actions.len();
        let (mut bytes, mut agree, mut agree_k) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        for action in &spec.actions.actions {
            let eff = action.effective(src.long_side());
            let key = cache_key(&eff, encoder);
            let answer = match service.cached(&sha, &key)? {
                Some(hit) => hit,
                None => {
                    let applied = src.apply(&eff, encoder).map_err(codec_err)?;
                    if applied.original {
                        // Same bytes, same answer: nothing to ask.
                        let known = CachedAnswer {
                            bytes: original.len(),
                            outcome: reference.outcome.clone(),
                        };
                        service.remember(&sha, &key, &known)?;
                        known
                    } else {
                        service.answer(&sha, &key, &applied.bytes).await?
                    }
                }
            };
            let sent_original = answer.bytes >= original.len();
            bytes.push(answer.bytes.min(original.len()));
            agree
                .push(sent_original || agrees(&reference.outcome, &answer.outcome, Accuracy::Top1));
            agree_k
                .push(sent_original || agrees(&reference.outcome, &answer.outcome, Accuracy::Topk));
        }
        Ok(Row {
            source: source.to_string(),
            name: name.to_string(),
            sha,
            original_bytes: original.len(),
            width: src.width,
            height: src.height,
            state: state_vec,
            reference_top1: reference
                .outcome
                .answer()
                .and_then(|a| a.top1())
                .map(str::to_string),
            bytes,
            agree,
            agree_k,
            augmented: false,
        })
    }

    /// The rows whose source satisfies `keep`.
    pub fn filter(&self, keep: impl Fn(&Row) -> bool) -> Table {
        Table {
            actions: self.actions.clone(),
            rows: self.rows.iter().filter(|r| keep(r)).cloned().collect(),
            service: self.service.clone(),
            requests: 0,
        }
    }

    /// Sources present, sorted.
    pub fn sources(&self) -> Vec<String> {
        let mut s: Vec<String> = self.rows.iter().map(|r| r.source.clone()).collect();
        s.sort();
        s.dedup();
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_are_first_folders_and_keys_name_the_effective_action() {
        let root = Path::new("data/uploads");
        assert_eq!(
            source_of(Path::new("data/uploads/budgie/a.jpg"), root),
            "budgie"
        );
        assert_eq!(source_of(Path::new("data/uploads/a.jpg"), root), "");
        assert_eq!(
            source_of(Path::new("data/uploads/budgie/a.jpg"), Path::new("data")),
            "budgie"
        );
        let enc = EncoderMode::FastOptimized;
        assert_eq!(cache_key(&Action::KEEP, enc), "keep");
        assert_eq!(cache_key(&Action::quality(75), enc), "fast-optimized:q75");
        let down = Action {
            max_side: Some(512),
            quality: Some(75),
        };
        assert_eq!(cache_key(&down, enc), "fast-optimized:q75@512/dct");
        assert_eq!(cache_key(&down.effective(400), enc), "fast-optimized:q75");
    }
}
