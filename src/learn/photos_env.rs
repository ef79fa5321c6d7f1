//! A training/eval environment made of real photos and a real vision service.
//!
//! Each photo is decoded once, its backbone features computed once, and its
//! reference answer fetched once. Asking for an (image, action) applies the action
//! with the proxy's rule (the original goes up when a re-encode would not be
//! smaller), asks the service through the answer cache, and compares the answer
//! with the reference.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use image::RgbImage;
use sha2::{Digest, Sha256};

use super::reward::{Accuracy, agrees};
use super::trainer::{Environment, Feedback};
use crate::action::{self, Action, ActionSet};
use crate::client::{CachedService, ServiceError, VisionService};
use crate::codec::{self, CodecError, EncoderMode, Limits};
use crate::model::{ImageModel, ModelError};
use crate::store::{CachedAnswer, Outcome};

/// What the reference answer is computed from.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Reference {
    /// The bytes the client sent (this project's definition).
    Original,
    /// The image re-encoded at quality 75 (the paper's experiments).
    Q75,
}

impl Reference {
    pub fn name(self) -> &'static str {
        match self {
            Reference::Original => "original",
            Reference::Q75 => "q75",
        }
    }
}

/// Why the environment failed.
#[derive(Debug, thiserror::Error)]
pub enum EnvError {
    #[error("cannot read photo {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("photo {path}: {source}")]
    Codec { path: PathBuf, source: CodecError },
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Service(#[from] ServiceError),
}

/// One photo, prepared.
#[derive(Debug, Clone)]
pub struct Photo {
    /// File name, for reports.
    pub name: String,
    /// sha-256 of the original bytes: the answer cache key.
    pub sha: String,
    /// The bytes as a client would send them.
    pub original: Vec<u8>,
    /// Upright pixels.
    pub image: RgbImage,
    /// Backbone features (empty when no backbone was given).
    pub features: Arc<[f32]>,
    /// Reference answer and the reference's size in bytes.
    pub reference: Outcome,
    pub reference_bytes: usize,
    /// Size of the same image re-encoded at Q75 (for "vs Q75" ratios).
    pub q75_bytes: usize,
}

/// The answer to one (photo, action).
#[derive(Debug, Clone)]
pub struct Observation {
    /// Bytes uploaded.
    pub bytes: usize,
    /// Whether the upload was the original (keep, or a re-encode that was not smaller).
    pub original: bool,
    pub outcome: Outcome,
}

/// What an environment asks and how it judges.
#[derive(Debug, Clone)]
pub struct EnvSpec {
    /// The actions the agent chooses among.
    pub actions: ActionSet,
    /// Agreement rule for rewards.
    pub accuracy: Accuracy,
    /// Which answer is the reference.
    pub reference: Reference,
    /// Random variants per photo (training only; 0 for eval).
    pub augment: usize,
}

/// Photos + service + action set.
pub struct PhotoEnv<'s, S: VisionService + ?Sized> {
    pub photos: Vec<Photo>,
    service: &'s CachedService<'s, S>,
    pub actions: ActionSet,
    pub accuracy: Accuracy,
    pub reference: Reference,
    /// Memo of observations, so an epoch never re-encodes.
    memo: Mutex<HashMap<(usize, Action), Observation>>,
}

/// sha-256 hex of bytes.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The answer-cache key of an action: the encoder mode changes what a quality means.
fn cache_key(action: &Action, encoder: EncoderMode, original: bool) -> String {
    if original {
        "keep".to_string()
    } else {
        format!("{}:{}", encoder.name(), action)
    }
}

impl<'s, S: VisionService + ?Sized> PhotoEnv<'s, S> {
    /// Reads, decodes, featurises and fetches reference answers for `paths`, plus
    /// `spec.augment` random variants of each (see [`super::augment`]).
    pub async fn prepare(
        paths: &[PathBuf],
        backbone: Option<&ImageModel>,
        service: &'s CachedService<'s, S>,
        spec: EnvSpec,
        mut progress: impl FnMut(usize, usize),
    ) -> Result<PhotoEnv<'s, S>, EnvError> {
        let limits = Limits::default();
        let total = paths.len() * (1 + spec.augment);
        let mut env = PhotoEnv {
            photos: Vec::with_capacity(total),
            service,
            actions: spec.actions,
            accuracy: spec.accuracy,
            reference: spec.reference,
            memo: Mutex::new(HashMap::new()),
        };
        for path in paths {
            let codec_err = |source| EnvError::Codec {
                path: path.clone(),
                source,
            };
            let original = std::fs::read(path).map_err(|source| EnvError::Read {
                path: path.clone(),
                source,
            })?;
            let decoded = codec::decode(&original, &limits).map_err(codec_err)?;
            let name = display_name(path);
            let sha = sha256_hex(&original);
            for (k, (image, quality)) in
                super::augment::variants(&decoded.image, &sha, spec.augment)
                    .into_iter()
                    .enumerate()
            {
                let bytes =
                    codec::encode_jpeg(&image, quality, env.actions.encoder).map_err(codec_err)?;
                env.add(format!("{name}#aug{k}"), bytes, image, backbone)
                    .await?;
                progress(env.photos.len(), total);
            }
            env.add(name, original, decoded.image, backbone).await?;
            progress(env.photos.len(), total);
        }
        Ok(env)
    }

    /// Adds one photo: features, Q75 size and the reference answer.
    async fn add(
        &mut self,
        name: String,
        original: Vec<u8>,
        image: RgbImage,
        backbone: Option<&ImageModel>,
    ) -> Result<(), EnvError> {
        let codec_err = |source| EnvError::Codec {
            path: PathBuf::from(&name),
            source,
        };
        let features: Arc<[f32]> = match backbone {
            Some(b) => Arc::from(crate::agent::state_vector(
                &b.run(&image)?,
                original.len(),
                image.width(),
                image.height(),
            )),
            None => Arc::from(Vec::new()),
        };
        let sha = sha256_hex(&original);
        let q75 = action::apply(
            &Action::quality(75),
            &image,
            &original,
            self.actions.encoder,
        )
        .map_err(codec_err)?;
        let (reference, reference_bytes) = match self.reference {
            Reference::Original => {
                let a = self.service.answer(&sha, "keep", &original).await?;
                (a.outcome, original.len())
            }
            Reference::Q75 => {
                let key = cache_key(&Action::quality(75), self.actions.encoder, q75.original);
                let a: CachedAnswer = self.service.answer(&sha, &key, &q75.bytes).await?;
                (a.outcome, q75.bytes.len())
            }
        };
        self.photos.push(Photo {
            name,
            sha,
            q75_bytes: q75.bytes.len(),
            original,
            image,
            features,
            reference,
            reference_bytes,
        });
        Ok(())
    }

    /// The service's answer when `action` is applied to photo `i`.
    pub async fn observe(&self, i: usize, action: &Action) -> Result<Observation, EnvError> {
        if let Some(o) = self.memo_get(i, action) {
            return Ok(o);
        }
        let photo = &self.photos[i];
        let applied = action::apply(action, &photo.image, &photo.original, self.actions.encoder)
            .map_err(|source| EnvError::Codec {
                path: PathBuf::from(&photo.name),
                source,
            })?;
        let key = cache_key(action, self.actions.encoder, applied.original);
        let answer = self
            .service
            .answer(&photo.sha, &key, &applied.bytes)
            .await?;
        let obs = Observation {
            bytes: applied.bytes.len(),
            original: applied.original,
            outcome: answer.outcome,
        };
        if let Ok(mut memo) = self.memo.lock() {
            memo.insert((i, *action), obs.clone());
        }
        Ok(obs)
    }

    /// Bytes that would be uploaded for `action` on photo `i` (encodes; asks nothing).
    pub fn upload_bytes(&self, i: usize, action: &Action) -> Result<usize, EnvError> {
        if let Some(o) = self.memo_get(i, action) {
            return Ok(o.bytes);
        }
        let photo = &self.photos[i];
        action::apply(action, &photo.image, &photo.original, self.actions.encoder)
            .map(|a| a.bytes.len())
            .map_err(|source| EnvError::Codec {
                path: PathBuf::from(&photo.name),
                source,
            })
    }

    fn memo_get(&self, i: usize, action: &Action) -> Option<Observation> {
        self.memo.lock().ok()?.get(&(i, *action)).cloned()
    }

    /// Whether an observation agrees with photo `i`'s reference. The original bytes
    /// always agree when the reference is the original (the service is deterministic).
    pub fn agrees(&self, i: usize, obs: &Observation) -> bool {
        if obs.original && self.reference == Reference::Original {
            return true;
        }
        agrees(&self.photos[i].reference, &obs.outcome, self.accuracy)
    }

    /// Agreement under an explicit rule (eval reports top-1 and agreement@5 both).
    pub fn agrees_with(&self, i: usize, obs: &Observation, accuracy: Accuracy) -> bool {
        if obs.original && self.reference == Reference::Original {
            return true;
        }
        agrees(&self.photos[i].reference, &obs.outcome, accuracy)
    }

    /// Requests the service has answered (cache misses) so far.
    pub fn service_requests(&self) -> u64 {
        self.service.requests()
    }
}

impl<S: VisionService + ?Sized> Environment for PhotoEnv<'_, S> {
    type Error = EnvError;

    fn len(&self) -> usize {
        self.photos.len()
    }

    fn features(&self, i: usize) -> Arc<[f32]> {
        self.photos[i].features.clone()
    }

    async fn feedback(&self, i: usize, a: usize) -> Result<Feedback, EnvError> {
        let action = self.actions.actions[a];
        let obs = self.observe(i, &action).await?;
        Ok(Feedback {
            agree: self.agrees(i, &obs),
            size_ratio: obs.bytes as f32 / self.photos[i].reference_bytes.max(1) as f32,
        })
    }
}

/// File name of a path, for reports.
pub fn display_name(p: &Path) -> String {
    p.file_name().map_or_else(
        || p.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

/// [`PhotoEnv::prepare`] behind a progress bar on stderr.
pub async fn prepare<'s, S: VisionService + ?Sized>(
    paths: &[PathBuf],
    backbone: Option<&ImageModel>,
    service: &'s CachedService<'s, S>,
    spec: EnvSpec,
) -> Result<PhotoEnv<'s, S>, EnvError> {
    let mut bar =
        crate::progress::Progress::new("prepare", (paths.len() * (1 + spec.augment)) as u64);
    let env = PhotoEnv::prepare(paths, backbone, service, spec, |d, t| {
        bar.set(d as u64, t as u64)
    })
    .await?;
    bar.finish();
    Ok(env)
}
