//! The agent: backbone features → Q-head → action.
//!
//! [`Agent`] bundles the frozen backbone ([`crate::model::ImageModel`]), the
//! trainable [`QHead`] and the [`ActionSet`] its outputs mean. Checkpoints
//! ([`checkpoint`]) record all three so a head is never run on the wrong backbone.

pub mod checkpoint;
pub mod qhead;
pub mod state;

use std::path::Path;

use rand::{Rng, RngExt};

use crate::action::{Action, ActionSet};
use crate::model::ImageModel;
pub use checkpoint::{Checkpoint, CheckpointError, TrainingStats};
pub use qhead::{AdamConfig, PAPER_HIDDEN, QHead};
pub use state::{StateError, StateKind};

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
    /// How head outputs become a decision.
    pub policy: Policy,
    /// Which state the head reads.
    pub state: StateKind,
}

/// How the head's outputs pick an action.
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum Policy {
    /// The paper's: the action with the largest value (`acc − w·size/size_ref`).
    #[default]
    Greedy,
    /// The head predicts each action's probability of agreeing; take the cheapest
    /// action whose prediction reaches `threshold` (keep the original if none does).
    /// The threshold is what `--target-agreement` tunes by cross-validation.
    CheapestSafe {
        /// Smallest predicted agreement accepted.
        threshold: f32,
        /// Mean size ratio of each action on the training photos (the cost order).
        costs: Vec<f32>,
    },
    /// The head predicts each action's probability of agreeing from the compact state;
    /// take the action expected to upload the fewest bytes *for this image* among those
    /// whose probability (made monotone: never above that of an action with a larger
    /// side and a higher quality) reaches `threshold`, and the `fallback` fixed pair
    /// when none does. `threshold` is set by conformal risk control on held-out photos
    /// (`learn::fit`), so the target agreement holds at a stated confidence.
    Calibrated {
        threshold: f32,
        /// Action index used when no action is predicted safe enough: the best fixed
        /// pair on the training workload.
        fallback: usize,
        /// Bits per output pixel of each action on the training photos (the median);
        /// with the image's size it gives the expected bytes. `keep`'s entry is unused.
        bits_per_pixel: Vec<f32>,
    },
}

impl Policy {
    /// The chosen action index for head outputs `q` on an image with state `features`.
    pub fn decide(&self, q: &[f32], features: &[f32], actions: &ActionSet) -> usize {
        self.decide_explained(q, features, actions).0
    }

    /// [`Policy::decide`], and whether the choice is the calibrated policy's fallback
    /// because no action was predicted safe enough.
    pub fn decide_explained(
        &self,
        q: &[f32],
        features: &[f32],
        actions: &ActionSet,
    ) -> (usize, bool) {
        match self {
            Policy::Greedy => (argmax(q), false),
            Policy::Calibrated {
                threshold,
                fallback,
                bits_per_pixel,
            } => {
                let Some(g) = state::geometry(features) else {
                    return (*fallback, true);
                };
                let p = monotone(q, actions, g.long);
                let expected = expected_bytes(actions, bits_per_pixel, &g);
                match cheapest_above(&p, &expected, *threshold, actions) {
                    Some(a) => (a, false),
                    None => (*fallback, true),
                }
            }
            Policy::CheapestSafe { threshold, costs } => {
                let mut order: Vec<usize> = (0..q.len().min(costs.len())).collect();
                order.sort_by(|&a, &b| costs[a].total_cmp(&costs[b]));
                let a = order
                    .into_iter()
                    .find(|&a| q[a] >= *threshold || actions.actions.get(a) == Some(&Action::KEEP))
                    .or_else(|| actions.index_of(&Action::KEEP))
                    .unwrap_or_else(|| argmax(q));
                (a, false)
            }
        }
    }
}

/// Predictions made monotone: an action's probability of agreeing is capped by that of
/// every action with a side and a quality at least as large (as they act on an image
/// whose longest side is `long`). A smaller or coarser upload is never more faithful.
pub fn monotone(q: &[f32], actions: &ActionSet, long: u32) -> Vec<f32> {
    let eff: Vec<(u32, u8)> = actions
        .actions
        .iter()
        .map(|a| {
            let e = a.effective(long);
            (e.max_side.unwrap_or(u32::MAX), e.quality.unwrap_or(u8::MAX))
        })
        .collect();
    (0..q.len().min(eff.len()))
        .map(|a| {
            (0..q.len().min(eff.len()))
                .filter(|&b| eff[b].0 >= eff[a].0 && eff[b].1 >= eff[a].1)
                .map(|b| q[b])
                .fold(q[a], f32::min)
        })
        .collect()
}

/// The action (never keep) with the fewest `expected` bytes among those whose
/// probability `p` reaches `threshold`; ties go to the likelier one.
pub fn cheapest_above(
    p: &[f32],
    expected: &[f64],
    threshold: f32,
    actions: &ActionSet,
) -> Option<usize> {
    (0..actions.len().min(p.len()).min(expected.len()))
        .filter(|&a| p[a] >= threshold && actions.actions[a] != Action::KEEP)
        .min_by(|&a, &b| {
            expected[a]
                .total_cmp(&expected[b])
                .then(p[b].total_cmp(&p[a]))
        })
}

/// Expected upload bytes of every action for an image of geometry `g`: output pixels ×
/// bits per pixel, capped at the original (which goes up when a re-encode is not smaller).
pub fn expected_bytes(
    actions: &ActionSet,
    bits_per_pixel: &[f32],
    g: &state::Geometry,
) -> Vec<f64> {
    actions
        .actions
        .iter()
        .enumerate()
        .map(|(i, a)| match a.quality {
            None => g.bytes,
            Some(_) => {
                let bpp = f64::from(bits_per_pixel.get(i).copied().unwrap_or(8.0));
                (a.output_pixels(g.long, g.short) * bpp / 8.0).min(g.bytes)
            }
        })
        .collect()
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
            policy: ckpt.policy,
            state: ckpt.state,
        })
    }

    /// The state of an upload given as a [`crate::action::Source`] ([`state::observe`]).
    pub fn observe(&self, source: &mut crate::action::Source<'_>) -> Result<Vec<f32>, StateError> {
        state::observe(&self.backbone, self.state, source)
    }

    /// The action index the policy picks for `features` (no exploration).
    pub fn decide(&self, features: &[f32]) -> usize {
        self.policy
            .decide(&self.head.predict(features), features, &self.actions)
    }
}

/// Scalars appended to the backbone features in the agent's state.
pub const EXTRA_FEATURES: usize = 4;

/// Width of the agent's state: 1280 pooled features + [`EXTRA_FEATURES`].
pub const STATE_DIM: usize = 1280 + EXTRA_FEATURES;

/// The agent's state: the backbone's pooled features (the paper's state) plus four
/// cheap scalars that say how fragile the image's answer is likely to be, which a
/// small head cannot easily learn from 1280 features and a hundred photos:
/// the backbone's own top-1 probability, its top-1 − top-2 margin, its normalised
/// entropy (an unsure classifier flips under compression first), and the original's
/// bits per pixel (how much detail — or how much compression — it already carries).
pub fn state_vector(
    out: &crate::model::Output,
    encoded_bytes: usize,
    width: u32,
    height: u32,
) -> Vec<f32> {
    let (first, margin, entropy) = state::confidence(&out.logits);
    let pixels = (u64::from(width) * u64::from(height)).max(1) as f32;
    let mut s = out.features.clone();
    s.extend([first, margin, entropy, encoded_bytes as f32 * 8.0 / pixels]);
    s
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
    fn cheapest_safe_takes_the_cheapest_action_above_threshold() {
        let set = ActionSet::paper(); // keep, q5, …, q95
        let mut costs = vec![1.0f32];
        costs.extend((0..10).map(|i| 0.1 + i as f32 * 0.08));
        let policy = Policy::CheapestSafe {
            threshold: 0.9,
            costs,
        };
        let mut q = vec![0.5f32; 11];
        q[4] = 0.95; // q35
        q[9] = 0.99; // q85
        assert_eq!(
            set.actions[policy.decide(&q, &[], &set)],
            Action::quality(35)
        );
        // Nothing safe enough: keep the original.
        assert_eq!(
            set.actions[policy.decide(&[0.1; 11], &[], &set)],
            Action::KEEP
        );
        assert_eq!(Policy::Greedy.decide(&q, &[], &set), 9);
    }

    #[test]
    fn calibrated_takes_the_fewest_expected_bytes_and_falls_back() {
        let set = ActionSet::uploads();
        let bpp: Vec<f32> = set
            .actions
            .iter()
            .map(|a| a.quality.map_or(0.0, |q| f32::from(q) / 25.0))
            .collect();
        let idx = |side: Option<u32>, q: u8| {
            set.index_of(&Action {
                max_side: side,
                quality: Some(q),
            })
            .unwrap()
        };
        let fallback = idx(Some(768), 85);
        let policy = Policy::Calibrated {
            threshold: 0.9,
            fallback,
            bits_per_pixel: bpp,
        };
        // A 4000×3000 original of 4 MB.
        let mut state = vec![0f32; state::COMPACT_DIM];
        state[state::idx::LN_LONG] = 4000f32.ln();
        state[state::idx::LN_SHORT] = 3000f32.ln();
        state[state::idx::LN_BYTES] = 4e6f32.ln();
        let mut q = vec![0.5f32; set.len()];
        // Every action at ≥ 512 px is safe, smaller ones are not.
        for (i, a) in set.actions.iter().enumerate() {
            if a.max_side.is_none_or(|s| s >= 512) {
                q[i] = 0.95;
            }
        }
        assert_eq!(policy.decide(&q, &state, &set), idx(Some(512), 30));
        // A cheap action predicted safe but richer ones not: monotonicity caps it.
        let mut q2 = vec![0.5f32; set.len()];
        q2[idx(Some(288), 30)] = 0.99;
        assert_eq!(policy.decide(&q2, &state, &set), fallback);
        // Nothing safe: the fallback pair, not keep.
        assert_eq!(policy.decide(&vec![0.0; set.len()], &state, &set), fallback);
        // No compact state: the fallback too.
        assert_eq!(policy.decide(&q, &[1.0; 3], &set), fallback);
    }

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
