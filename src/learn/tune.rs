//! Turning a target agreement into a decision threshold.
//!
//! Users reason in agreement ("keep 97 % of answers identical"). With
//! `--target-agreement` the head learns each action's probability of agreeing
//! (reward = acc, size weight 0) and the policy takes the cheapest action whose
//! predicted agreement reaches a threshold τ ([`crate::agent::Policy::CheapestSafe`]).
//! τ is tuned by k-fold cross-validation over the training photos: out-of-fold
//! predictions for every held-out *original* photo (augmented variants stay in
//! their source photo's fold), then the lowest τ — the most compression — whose
//! cross-validated agreement reaches the target.

use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::photos_env::{EnvError, PhotoEnv};
use super::trainer::{self, Environment, Feedback, TrainConfig};
use crate::agent::Policy;
use crate::client::VisionService;

/// Folds of the cross-validation.
pub const FOLDS: usize = 4;

/// One threshold's cross-validated result.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub threshold: f32,
    /// Share of held-out originals whose answer agreed.
    pub agreement: f64,
    /// Σ uploaded / Σ reference bytes over the held-out originals.
    pub size_ratio: f64,
}

/// The tuned policy and the curve it was picked from.
#[derive(Debug, Clone)]
pub struct Choice {
    pub policy: Policy,
    /// Cross-validated agreement and size at the chosen threshold.
    pub chosen: Candidate,
    pub candidates: Vec<Candidate>,
}

/// The photo a (possibly augmented) entry came from: `name#augK` → `name`.
fn source_name(name: &str) -> &str {
    name.split_once("#aug").map_or(name, |(base, _)| base)
}

fn fold_of(name: &str) -> usize {
    let h = Sha256::digest(format!("fold:{}", source_name(name)).as_bytes());
    usize::from(h[0]) % FOLDS
}

/// Mean size ratio of every action over the photos of `env` (encoding only; the
/// service is not asked).
pub fn action_costs<S: VisionService + ?Sized>(
    env: &PhotoEnv<'_, S>,
) -> Result<Vec<f32>, EnvError> {
    let mut costs = vec![0f64; env.actions.len()];
    for i in 0..env.len() {
        for (a, action) in env.actions.actions.iter().enumerate() {
            costs[a] +=
                env.upload_bytes(i, action)? as f64 / env.photos[i].reference_bytes.max(1) as f64;
        }
    }
    Ok(costs
        .into_iter()
        .map(|c| (c / env.len().max(1) as f64) as f32)
        .collect())
}

/// Tunes the cheapest-safe threshold for `target` agreement (see the module doc).
/// `cfg` should have size weight 0 so the head predicts agreement.
pub async fn choose_threshold<S: VisionService + ?Sized>(
    env: &PhotoEnv<'_, S>,
    cfg: &TrainConfig,
    target: f64,
    mut progress: impl FnMut(usize, usize),
) -> Result<Choice, EnvError> {
    let costs = action_costs(env)?;
    let folds: Vec<usize> = env.photos.iter().map(|p| fold_of(&p.name)).collect();
    // Out-of-fold predictions for every held-out original.
    let mut predictions: Vec<(usize, Vec<f32>)> = Vec::new();
    for fold in 0..FOLDS {
        let fit: Vec<usize> = (0..env.len()).filter(|&i| folds[i] != fold).collect();
        let trained = trainer::train(
            &SubEnv { env, idx: &fit },
            env.actions.len(),
            cfg,
            |_, _| {},
        )
        .await?;
        for i in
            (0..env.len()).filter(|&i| folds[i] == fold && !env.photos[i].name.contains("#aug"))
        {
            predictions.push((i, trained.head.predict(&env.photos[i].features)));
        }
        progress(fold + 1, FOLDS);
    }
    let mut candidates = Vec::new();
    // Regression outputs can pass 1: the grid runs past the largest prediction,
    // where every photo is kept, so some threshold always reaches the target.
    let top = predictions
        .iter()
        .flat_map(|(_, q)| q.iter().copied())
        .fold(1.0f32, f32::max);
    let steps = ((top + 0.01 - 0.30) / 0.005).ceil().max(1.0) as usize;
    for step in 0..=steps {
        let threshold = 0.30 + step as f32 * 0.005;
        let policy = Policy::CheapestSafe {
            threshold,
            costs: costs.clone(),
        };
        let (mut agree, mut bytes, mut reference) = (0usize, 0f64, 0f64);
        for (i, q) in &predictions {
            let a = env.actions.actions[policy.decide(q, &env.photos[*i].features, &env.actions)];
            let obs = env.observe(*i, &a).await?;
            agree += usize::from(env.agrees(*i, &obs));
            bytes += obs.bytes as f64;
            reference += env.photos[*i].reference_bytes as f64;
        }
        candidates.push(Candidate {
            threshold,
            agreement: agree as f64 / predictions.len().max(1) as f64,
            size_ratio: bytes / reference.max(1.0),
        });
    }
    // The lowest threshold reaching the target; the highest tried if none does.
    let chosen = candidates
        .iter()
        .find(|c| c.agreement >= target)
        .or(candidates.last())
        .cloned()
        .unwrap_or(Candidate {
            threshold: 1.0,
            agreement: 1.0,
            size_ratio: 1.0,
        });
    Ok(Choice {
        policy: Policy::CheapestSafe {
            threshold: chosen.threshold,
            costs,
        },
        chosen,
        candidates,
    })
}

/// A subset of a photo environment, by index.
pub struct SubEnv<'a, 'e, S: VisionService + ?Sized> {
    pub env: &'a PhotoEnv<'e, S>,
    pub idx: &'a [usize],
}

impl<S: VisionService + ?Sized> Environment for SubEnv<'_, '_, S> {
    type Error = EnvError;
    fn len(&self) -> usize {
        self.idx.len()
    }
    fn features(&self, i: usize) -> Arc<[f32]> {
        self.env.features(self.idx[i])
    }
    async fn feedback(&self, i: usize, a: usize) -> Result<Feedback, EnvError> {
        self.env.feedback(self.idx[i], a).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variants_share_their_source_fold() {
        assert_eq!(source_name("12.jpg#aug3"), "12.jpg");
        assert_eq!(source_name("12.jpg"), "12.jpg");
        for i in 0..50 {
            let name = format!("{i}.jpg");
            assert_eq!(fold_of(&name), fold_of(&format!("{name}#aug0")));
        }
        let used: std::collections::HashSet<usize> =
            (0..50).map(|i| fold_of(&format!("{i}.jpg"))).collect();
        assert_eq!(used.len(), FOLDS);
    }
}
