//! The agent: backbone features → Q-head → action.
//!
//! [`Agent`] bundles the frozen backbone ([`crate::model::ImageModel`]), the
//! trainable [`QHead`] and the [`ActionSet`] its outputs mean. Checkpoints
//! ([`checkpoint`]) record all three so a head is never run on the wrong backbone.

pub mod checkpoint;
pub mod qhead;

use std::path::Path;

use image::RgbImage;
use rand::{Rng, RngExt};

use crate::action::{Action, ActionSet};
use crate::model::{ImageModel, ModelError};
pub use checkpoint::{Checkpoint, CheckpointError, TrainingStats};
pub use qhead::{AdamConfig, PAPER_HIDDEN, QHead};

/// Default input side of the agent's backbone. 160 px keeps backbone + head under
/// the 20 ms/photo target on one core; `docs/benchmarks.md` measures 128/160/224.
pub const DEFAULT_AGENT_SIDE: u32 = 160;

/// A runnable agent.
#[derive(Debug, Clone)]
pub struct Agent {
    /// Frozen feature extractor.
    pub backbone: ImageModel,
    /// Trainable value head, one output per action.
    pub head: QHead,
    /// What each head output means.
    pub actions: ActionSet,
}

impl Agent {
    /// Loads a checkpoint and the backbone it names (resolved next to `models_dir`
    /// when the checkpoint's path is relative), checking the backbone's hash.
    pub fn load(
        checkpoint: &Path,
        backbone_override: Option<&Path>,
    ) -> Result<Agent, CheckpointError> {
        let ckpt = Checkpoint::read(checkpoint)?;
        let backbone_path = match backbone_override {
            Some(p) => p.to_path_buf(),
            None => ckpt.resolve_backbone(checkpoint),
        };
        let backbone = ImageModel::load(&backbone_path, ckpt.backbone.side)?;
        if backbone.sha256() != ckpt.backbone.sha256 {
            return Err(CheckpointError::BackboneMismatch {
                expected: ckpt.backbone.sha256.clone(),
                found: backbone.sha256().to_string(),
                path: backbone_path,
            });
        }
        let head = ckpt.head()?;
        Ok(Agent {
            backbone,
            head,
            actions: ckpt.action_set,
        })
    }

    /// Backbone features of an upright image.
    pub fn features(&self, image: &RgbImage) -> Result<Vec<f32>, ModelError> {
        Ok(self.backbone.run(image)?.features)
    }

    /// The greedy action index for `features`.
    pub fn greedy(&self, features: &[f32]) -> usize {
        argmax(&self.head.predict(features))
    }

    /// Greedy action for an image: (index, action).
    pub fn choose(&self, image: &RgbImage) -> Result<(usize, Action), ModelError> {
        let f = self.features(image)?;
        let i = self.greedy(&f);
        Ok((i, self.actions.actions[i]))
    }
}

/// ε-greedy choice among `q` values.
pub fn epsilon_greedy(q: &[f32], epsilon: f32, rng: &mut impl Rng) -> usize {
    if rng.random::<f32>() < epsilon {
        rng.random_range(0..q.len().max(1))
    } else {
        argmax(q)
    }
}

/// Index of the largest value (first on ties; 0 for an empty slice).
pub fn argmax(q: &[f32]) -> usize {
    q.iter()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |(bi, bv), (i, &v)| {
            if v > bv { (i, v) } else { (bi, bv) }
        })
        .0
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn argmax_and_epsilon_greedy() {
        assert_eq!(argmax(&[0.1, 0.5, 0.3]), 1);
        assert_eq!(argmax(&[]), 0);
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        assert!((0..100).all(|_| epsilon_greedy(&[0.0, 1.0, 0.0], 0.0, &mut rng) == 1));
        let explored = (0..1000)
            .filter(|_| epsilon_greedy(&[0.0, 1.0, 0.0], 1.0, &mut rng) != 1)
            .count();
        // With ε = 1 two thirds of the draws avoid the best action.
        assert!((550..780).contains(&explored), "{explored}");
    }
}
