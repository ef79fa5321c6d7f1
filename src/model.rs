//! An EfficientNet-Lite ONNX image model run with tract: ImageNet logits and the
//! 1280-d pooled features.
//!
//! The same network serves two roles: the agent's backbone (features are the
//! agent's state, DESIGN §2) and the local vision backend's classifier (logits
//! become labels). The model file is converted by `scripts/convert_efficientnet.py`;
//! its graph is fully convolutional up to a global average pool, so it accepts any
//! square input side — a smaller side is a real lever on the proxy's CPU cost.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use image::RgbImage;
use sha2::{Digest, Sha256};
use tract_onnx::prelude::*;

use crate::codec;

/// Why a model could not be loaded or run.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("cannot read model file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot load ONNX model {path} at input side {side}: {reason}")]
    Load {
        path: PathBuf,
        side: u32,
        reason: String,
    },
    #[error("model output `{0}` is missing or has the wrong shape")]
    Output(&'static str),
    #[error("inference failed: {0}")]
    Run(String),
    #[error("cannot read class names {path}: {reason}")]
    Classes { path: PathBuf, reason: String },
}

/// The two outputs of one forward pass.
#[derive(Debug, Clone)]
pub struct Output {
    /// 1000 ImageNet logits (pre-softmax).
    pub logits: Vec<f32>,
    /// Globally average-pooled features of the last block (1280 for every Lite variant).
    pub features: Vec<f32>,
}

/// A loaded, optimised network. Cheap to share: `run` takes `&self` and runs on the
/// calling thread only, so concurrency is decided by the caller.
#[derive(Clone)]
pub struct ImageModel {
    /// The optimised tract plan, shared between threads.
    plan: Arc<TypedRunnableModel>,
    /// Square input side the plan was built for.
    side: u32,
    /// sha-256 of the model file: checkpoints record which backbone they were trained on.
    sha256: String,
    /// Where the model came from, for messages.
    path: PathBuf,
}

impl std::fmt::Debug for ImageModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImageModel")
            .field("path", &self.path)
            .field("side", &self.side)
            .finish()
    }
}

impl ImageModel {
    /// Loads `path` and optimises it for `side × side` RGB inputs.
    pub fn load(path: &Path, side: u32) -> Result<ImageModel, ModelError> {
        let bytes = std::fs::read(path).map_err(|source| ModelError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let sha256 = hex::encode(Sha256::digest(&bytes));
        let load_err = |e: anyhow::Error| ModelError::Load {
            path: path.to_path_buf(),
            side,
            reason: format!("{e:#}"),
        };
        // Shape annotations in the file were inferred for the native side; ignore
        // them so the fully convolutional graph can run at any side.
        let plan = tract_onnx::onnx()
            .with_ignore_value_info(true)
            .model_for_read(&mut bytes.as_slice())
            .map_err(load_err)?
            .with_input_fact(0, f32::fact([1, 3, side as usize, side as usize]).into())
            .map_err(load_err)?
            .into_optimized()
            .map_err(load_err)?
            .into_runnable()
            .map_err(load_err)?;
        Ok(ImageModel {
            plan,
            side,
            sha256,
            path: path.to_path_buf(),
        })
    }

    /// The square input side.
    pub fn side(&self) -> u32 {
        self.side
    }

    /// sha-256 of the model file, hex.
    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    /// The model file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Resizes (shorter side, centre crop) and runs the network on an upright image.
    pub fn run(&self, image: &RgbImage) -> Result<Output, ModelError> {
        let square = if image.dimensions() == (self.side, self.side) {
            image.clone()
        } else {
            codec::square_crop(image, self.side)
        };
        self.run_square(&square)
    }

    /// Runs the network on an image that already is `side × side`.
    pub fn run_square(&self, square: &RgbImage) -> Result<Output, ModelError> {
        let s = self.side as usize;
        if square.dimensions() != (self.side, self.side) {
            return Err(ModelError::Run(format!(
                "input is {:?}, expected {s}×{s}",
                square.dimensions()
            )));
        }
        // NCHW, (x − 127) / 128: the preprocessing these weights were trained with.
        let raw = square.as_raw();
        let mut data = vec![0f32; 3 * s * s];
        for (i, px) in raw.chunks_exact(3).enumerate() {
            for c in 0..3 {
                data[c * s * s + i] = (f32::from(px[c]) - 127.0) / 128.0;
            }
        }
        let input =
            Tensor::from_shape(&[1, 3, s, s], &data).map_err(|e| ModelError::Run(e.to_string()))?;
        let outputs = self
            .plan
            .run(tvec!(input.into()))
            .map_err(|e| ModelError::Run(format!("{e:#}")))?;
        let vec_of = |i: usize, name: &'static str, len: usize| -> Result<Vec<f32>, ModelError> {
            let t = outputs.get(i).ok_or(ModelError::Output(name))?;
            let view = t
                .to_plain_array_view::<f32>()
                .map_err(|_| ModelError::Output(name))?;
            if view.len() != len {
                return Err(ModelError::Output(name));
            }
            Ok(view.iter().copied().collect())
        };
        Ok(Output {
            logits: vec_of(0, "logits", 1000)?,
            features: vec_of(1, "features", 1280)?,
        })
    }
}

/// Softmax probabilities of logits.
pub fn softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f32> = logits.iter().map(|&l| (l - max).exp()).collect();
    let sum: f32 = exps.iter().sum();
    exps.into_iter().map(|e| e / sum).collect()
}

/// The 1000 ImageNet class names, index-aligned with the logits.
#[derive(Debug, Clone)]
pub struct ClassNames {
    /// Display name per class: the first lemma of the synset ("flamingo").
    names: Vec<String>,
}

impl ClassNames {
    /// Reads `models/imagenet_classes.txt` (`wnid<TAB>lemma, lemma, …` per line).
    pub fn load(path: &Path) -> Result<ClassNames, ModelError> {
        let err = |reason: String| ModelError::Classes {
            path: path.to_path_buf(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        let names: Vec<String> = text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                let lemmas = l.split_once('\t').map_or(l, |(_, rest)| rest);
                lemmas
                    .split(',')
                    .next()
                    .unwrap_or(lemmas)
                    .trim()
                    .to_string()
            })
            .collect();
        if names.len() != 1000 {
            return Err(err(format!("expected 1000 classes, found {}", names.len())));
        }
        Ok(ClassNames { names })
    }

    /// Name of class `index`.
    pub fn name(&self, index: usize) -> &str {
        self.names.get(index).map_or("unknown", String::as_str)
    }

    /// The `k` most probable (name, probability) pairs from logits.
    pub fn top_k(&self, logits: &[f32], k: usize) -> Vec<(String, f32)> {
        let probs = softmax(logits);
        let mut idx: Vec<usize> = (0..probs.len()).collect();
        idx.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]));
        idx.into_iter()
            .take(k)
            .map(|i| (self.name(i).to_string(), probs[i]))
            .collect()
    }
}
