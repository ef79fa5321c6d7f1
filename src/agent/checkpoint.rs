//! Versioned agent checkpoints: one JSON file holding the head's parameters, the
//! action set, which backbone (file name, sha-256, input side) the features came
//! from, and how the head was trained.

use std::path::{Path, PathBuf};

use base64::Engine;
use serde::{Deserialize, Serialize};

use super::qhead::{AdamConfig, QHead};
use crate::action::ActionSet;
use crate::model::ModelError;

/// The format tag written into every checkpoint.
pub const FORMAT: &str = "adacompress-agent/1";

/// Why a checkpoint could not be read or used.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("cannot read checkpoint {path}: {reason}")]
    Read { path: PathBuf, reason: String },
    #[error("cannot write checkpoint {path}: {reason}")]
    Write { path: PathBuf, reason: String },
    #[error("checkpoint {path} has format `{found}`, expected `{FORMAT}`")]
    Format { path: PathBuf, found: String },
    #[error("checkpoint parameters do not fit layer widths {dims:?}")]
    Shape { dims: Vec<usize> },
    #[error(
        "backbone {path} has sha-256 {found}, but the checkpoint was trained on {expected}; \
         pass the backbone it was trained with or retrain"
    )]
    BackboneMismatch {
        expected: String,
        found: String,
        path: PathBuf,
    },
    #[error(transparent)]
    Model(#[from] ModelError),
}

/// Which backbone produced the head's input features.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackboneInfo {
    /// Model file, relative to the checkpoint's folder when not absolute.
    pub file: PathBuf,
    /// sha-256 of the model file.
    pub sha256: String,
    /// Square input side the features were computed at.
    pub side: u32,
}

/// How the head was trained, for humans and for `GET /agent` later.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TrainingStats {
    /// `dqn-paper` or `bandit`.
    pub algorithm: String,
    /// Service the rewards came from (protocol and URL).
    pub service: String,
    /// `top1` or `topk`.
    pub accuracy: String,
    /// Reference answer: `original` or `q75`.
    pub reference: String,
    /// Weight of the size ratio in the reward (`acc − w·size/size_ref`).
    pub size_weight: f32,
    /// Training photos (after augmentation).
    pub images: usize,
    /// Learning steps (Adam updates).
    pub steps: u64,
    /// Mean reward of the final greedy policy on the training images.
    pub final_train_reward: f32,
    /// Requests the service answered during training (cache misses).
    pub service_requests: u64,
    /// Seed of the run.
    pub seed: u64,
}

/// A checkpoint as stored on disk.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Always [`FORMAT`].
    pub format: String,
    /// Monotonic agent version (incremented by every retrain).
    pub version: u64,
    /// Unix seconds when written.
    pub created_unix: u64,
    /// The actions the head's outputs stand for.
    pub action_set: ActionSet,
    /// The backbone the features came from.
    pub backbone: BackboneInfo,
    /// Layer widths, input first.
    pub dims: Vec<usize>,
    /// Adam settings used for training (and for further online training).
    pub adam: AdamConfig,
    /// How it was trained.
    pub training: TrainingStats,
    /// How outputs become decisions.
    #[serde(default)]
    pub policy: super::Policy,
    /// Which state the head reads (older checkpoints: the embedding).
    #[serde(default)]
    pub state: super::StateKind,
    /// Standardisation and layer parameters, little-endian f32, base64.
    pub parameters: String,
}

impl Checkpoint {
    /// Wraps a trained head.
    pub fn new(
        version: u64,
        head: &QHead,
        adam: AdamConfig,
        action_set: ActionSet,
        backbone: BackboneInfo,
        training: TrainingStats,
    ) -> Checkpoint {
        let bytes: Vec<u8> = head
            .parameters()
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        Checkpoint {
            format: FORMAT.to_string(),
            version,
            created_unix: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            action_set,
            backbone,
            dims: head.dims().to_vec(),
            adam,
            training,
            policy: super::Policy::Greedy,
            state: super::StateKind::Embedding,
            parameters: base64::engine::general_purpose::STANDARD.encode(bytes),
        }
    }

    /// Reads and validates a checkpoint file.
    pub fn read(path: &Path) -> Result<Checkpoint, CheckpointError> {
        let read_err = |reason: String| CheckpointError::Read {
            path: path.to_path_buf(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| read_err(e.to_string()))?;
        let ckpt: Checkpoint = serde_json::from_str(&text).map_err(|e| read_err(e.to_string()))?;
        if ckpt.format != FORMAT {
            return Err(CheckpointError::Format {
                path: path.to_path_buf(),
                found: ckpt.format,
            });
        }
        ckpt.head()?;
        Ok(ckpt)
    }

    /// Writes atomically (temp file + rename), so a crash never leaves half a file.
    pub fn write(&self, path: &Path) -> Result<(), CheckpointError> {
        let write_err = |reason: String| CheckpointError::Write {
            path: path.to_path_buf(),
            reason,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| write_err(e.to_string()))?;
        }
        let text = serde_json::to_string_pretty(self).map_err(|e| write_err(e.to_string()))?;
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, text).map_err(|e| write_err(e.to_string()))?;
        std::fs::rename(&tmp, path).map_err(|e| write_err(e.to_string()))
    }

    /// The head these parameters describe.
    pub fn head(&self) -> Result<QHead, CheckpointError> {
        let shape_err = || CheckpointError::Shape {
            dims: self.dims.clone(),
        };
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(&self.parameters)
            .map_err(|_| shape_err())?;
        if bytes.len() % 4 != 0 {
            return Err(shape_err());
        }
        let params: Vec<f32> = bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let head = QHead::from_parameters(&self.dims, self.adam, &params).ok_or_else(shape_err)?;
        if head.outputs() != self.action_set.len() {
            return Err(shape_err());
        }
        Ok(head)
    }

    /// Where the backbone file is, relative paths taken from the checkpoint's folder.
    pub fn resolve_backbone(&self, checkpoint_path: &Path) -> PathBuf {
        if self.backbone.file.is_absolute() {
            self.backbone.file.clone()
        } else {
            checkpoint_path
                .parent()
                .unwrap_or(Path::new("."))
                .join(&self.backbone.file)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn write_read_round_trip_and_validation() {
        let dir = std::env::temp_dir().join(format!("adacompress-ckpt-{}", std::process::id()));
        let path = dir.join("agent.json");
        let set = ActionSet::paper();
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let head = QHead::new(&[8, 4, 3, 3, set.len()], AdamConfig::default(), &mut rng);
        let info = BackboneInfo {
            file: "efficientnet-lite0.onnx".into(),
            sha256: "ab".repeat(32),
            side: 160,
        };
        let ckpt = Checkpoint::new(
            4,
            &head,
            AdamConfig::default(),
            set.clone(),
            info,
            TrainingStats::default(),
        );
        ckpt.write(&path).unwrap();
        let back = Checkpoint::read(&path).unwrap();
        assert_eq!(back.version, 4);
        assert_eq!(back.action_set, set);
        assert_eq!(
            back.head().unwrap().predict(&[1.0; 8]),
            head.predict(&[1.0; 8])
        );
        assert_eq!(
            back.resolve_backbone(&path),
            dir.join("efficientnet-lite0.onnx")
        );

        // A head whose outputs do not match the action set is refused.
        let mut bad = back.clone();
        bad.action_set = ActionSet::scaled();
        bad.write(&path).unwrap();
        assert!(matches!(
            Checkpoint::read(&path),
            Err(CheckpointError::Shape { .. })
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
