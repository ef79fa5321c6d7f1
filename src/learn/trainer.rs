//! The training loop: ε-greedy actions, rewards from the service, replay memory,
//! Adam steps on the Q-head.
//!
//! Two algorithms share the loop (DESIGN §2):
//! * `dqn-paper` — the paper's DQN: γ = 0.95 with the stale target
//!   `r + γ·max Q(next image)` stored with the transition, memory 2000, batch 256,
//!   ε = 1 for 128 steps then ×0.99 per learning call every 5 steps (floor 0.02).
//! * `bandit` — the honest contextual bandit: the next image does not depend on
//!   the action, so γ = 0 and the target is the reward itself; same schedule.
//!
//! Both see only the taken action's reward (bandit feedback), as the proxy does
//! online; the answer cache makes further epochs over the same photos free.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::Arc;

use ndarray::Array2;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::agent::{AdamConfig, QHead, argmax, epsilon_greedy};

/// Which learning rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Algorithm {
    /// The paper's DQN with γ = 0.95.
    DqnPaper,
    /// Contextual bandit, γ = 0.
    Bandit,
}

impl Algorithm {
    /// Stable name.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::DqnPaper => "dqn-paper",
            Algorithm::Bandit => "bandit",
        }
    }
}

/// Training hyper-parameters (paper defaults).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    pub algorithm: Algorithm,
    /// Discount; 0.95 for `dqn-paper`, 0 for `bandit`.
    pub gamma: f32,
    /// Replay memory capacity.
    pub memory: usize,
    /// Batch size of one learning call.
    pub batch: usize,
    /// Steps of pure exploration (ε = 1) before learning starts.
    pub explore_steps: u64,
    /// Learn every this many steps.
    pub learn_every: u64,
    /// ε multiplier per learning call.
    pub epsilon_decay: f32,
    /// ε floor.
    pub epsilon_min: f32,
    /// Passes over the training images.
    pub epochs: usize,
    /// `w` in `acc − w·size/size_ref`.
    pub size_weight: f32,
    /// Learn from every action's reward for each image seen, not only the taken
    /// one's. Costs one service request per (image, action) — cached — and needs
    /// γ = 0; offline training only (online, only the taken action is observed).
    pub full_feedback: bool,
    /// Hidden layer widths.
    pub hidden: Vec<usize>,
    pub adam: AdamConfig,
    pub seed: u64,
}

impl TrainConfig {
    /// Defaults for `algorithm`.
    pub fn new(algorithm: Algorithm) -> TrainConfig {
        TrainConfig {
            algorithm,
            gamma: match algorithm {
                Algorithm::DqnPaper => 0.95,
                Algorithm::Bandit => 0.0,
            },
            memory: 2000,
            batch: 256,
            explore_steps: 128,
            learn_every: 5,
            epsilon_decay: 0.99,
            epsilon_min: 0.02,
            epochs: 1,
            size_weight: 1.0,
            full_feedback: false,
            hidden: crate::agent::PAPER_HIDDEN.to_vec(),
            adam: AdamConfig::default(),
            seed: 0,
        }
    }
}

/// What the environment says about one (image, action): did the answer agree, and
/// what fraction of the reference bytes was uploaded.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Feedback {
    pub agree: bool,
    pub size_ratio: f32,
}

impl Feedback {
    /// `acc − w·ratio`.
    pub fn reward(&self, size_weight: f32) -> f32 {
        f32::from(u8::from(self.agree)) - size_weight * self.size_ratio
    }
}

/// Where rewards come from: a vision service behind the answer cache, in practice.
pub trait Environment {
    type Error;
    /// Number of images.
    fn len(&self) -> usize;
    /// Whether there are no images.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Backbone features of image `i`.
    fn features(&self, i: usize) -> Arc<[f32]>;
    /// Feedback for taking action `a` on image `i`.
    fn feedback(&self, i: usize, a: usize) -> impl Future<Output = Result<Feedback, Self::Error>>;
}

/// One remembered step.
#[derive(Debug, Clone)]
pub struct Transition {
    pub features: Arc<[f32]>,
    pub action: usize,
    /// Regression target: the reward, plus γ·max Q(next) for the DQN.
    pub target: f32,
}

/// Bounded replay memory: the oldest transition goes when it is full.
#[derive(Debug, Clone)]
pub struct Memory {
    capacity: usize,
    items: VecDeque<Transition>,
}

impl Memory {
    pub fn new(capacity: usize) -> Memory {
        Memory {
            capacity: capacity.max(1),
            items: VecDeque::with_capacity(capacity.min(4096)),
        }
    }

    pub fn push(&mut self, t: Transition) {
        if self.items.len() == self.capacity {
            self.items.pop_front();
        }
        self.items.push_back(t);
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn clear(&mut self) {
        self.items.clear();
    }

    /// A batch of up to `n` transitions drawn without replacement.
    pub fn sample(&self, n: usize, rng: &mut impl Rng) -> Vec<&Transition> {
        let n = n.min(self.items.len());
        rand::seq::index::sample(rng, self.items.len(), n)
            .into_iter()
            .map(|i| &self.items[i])
            .collect()
    }
}

/// One Adam step on a batch of transitions.
pub fn learn_batch(head: &mut QHead, batch: &[&Transition]) -> f32 {
    let Some(first) = batch.first() else {
        return 0.0;
    };
    let dim = first.features.len();
    let mut x = Array2::<f32>::zeros((batch.len(), dim));
    for (row, t) in batch.iter().enumerate() {
        x.row_mut(row)
            .assign(&ndarray::ArrayView1::from(&t.features[..]));
    }
    let actions: Vec<usize> = batch.iter().map(|t| t.action).collect();
    let targets: Vec<f32> = batch.iter().map(|t| t.target).collect();
    head.train_step(x.view(), &actions, &targets)
}

/// One point of the learning curve.
#[derive(Debug, Clone, Serialize)]
pub struct CurvePoint {
    pub step: u64,
    pub epoch: usize,
    pub epsilon: f32,
    pub action: usize,
    pub reward: f32,
    /// Mean reward over the last 100 steps.
    pub reward_avg100: f32,
    /// Loss of the last learning call (0 before learning starts).
    pub loss: f32,
}

/// The outcome of a training run.
#[derive(Debug, Clone)]
pub struct Trained {
    pub head: QHead,
    pub curve: Vec<CurvePoint>,
    /// Adam steps taken.
    pub learn_calls: u64,
}

/// Trains a fresh head on `env`, calling `progress(step, total)` after each step.
pub async fn train<E: Environment>(
    env: &E,
    actions: usize,
    cfg: &TrainConfig,
    mut progress: impl FnMut(u64, u64),
) -> Result<Trained, E::Error> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(cfg.seed);
    let n = env.len();
    let dim = if n > 0 { env.features(0).len() } else { 0 };
    let mut dims = vec![dim];
    dims.extend(&cfg.hidden);
    dims.push(actions);
    let mut head = QHead::new(&dims, cfg.adam, &mut rng);
    let mut all = Array2::<f32>::zeros((n, dim));
    for i in 0..n {
        all.row_mut(i)
            .assign(&ndarray::ArrayView1::from(&env.features(i)[..]));
    }
    head.fit_standardisation(all.view());

    let mut memory = Memory::new(cfg.memory);
    let mut epsilon = 1.0f32;
    let mut step = 0u64;
    let mut learn_calls = 0u64;
    let mut loss = 0.0f32;
    let mut curve = Vec::with_capacity(n * cfg.epochs);
    let mut recent: VecDeque<f32> = VecDeque::with_capacity(100);
    let total = (n * cfg.epochs) as u64;
    for epoch in 0..cfg.epochs {
        let mut order: Vec<usize> = (0..n).collect();
        order.shuffle(&mut rng);
        for (pos, &i) in order.iter().enumerate() {
            let features = env.features(i);
            let q = head.predict(&features);
            let a = epsilon_greedy(&q, epsilon, &mut rng);
            let fb = env.feedback(i, a).await?;
            let r = fb.reward(cfg.size_weight);
            let target = if cfg.gamma > 0.0 {
                // The paper's stale target: the next image's best value, now.
                let next = order.get(pos + 1).copied().unwrap_or(order[0]);
                let qn = head.predict(&env.features(next));
                r + cfg.gamma * qn[argmax(&qn)]
            } else {
                r
            };
            if cfg.full_feedback && cfg.gamma == 0.0 {
                for other in (0..actions).filter(|&o| o != a) {
                    let fo = env.feedback(i, other).await?;
                    memory.push(Transition {
                        features: features.clone(),
                        action: other,
                        target: fo.reward(cfg.size_weight),
                    });
                }
            }
            memory.push(Transition {
                features,
                action: a,
                target,
            });
            step += 1;
            if step > cfg.explore_steps && step.is_multiple_of(cfg.learn_every) {
                let batch = memory.sample(cfg.batch, &mut rng);
                loss = learn_batch(&mut head, &batch);
                learn_calls += 1;
                epsilon = (epsilon * cfg.epsilon_decay).max(cfg.epsilon_min);
            }
            if recent.len() == 100 {
                recent.pop_front();
            }
            recent.push_back(r);
            curve.push(CurvePoint {
                step,
                epoch,
                epsilon,
                action: a,
                reward: r,
                reward_avg100: recent.iter().sum::<f32>() / recent.len() as f32,
                loss,
            });
            progress(step, total);
        }
    }
    Ok(Trained {
        head,
        curve,
        learn_calls,
    })
}

/// Mean reward of the greedy policy of `head` over every image of `env`.
pub async fn greedy_reward<E: Environment>(
    env: &E,
    head: &QHead,
    size_weight: f32,
) -> Result<f32, E::Error> {
    policy_reward(env, head, size_weight, |q, _| argmax(q)).await
}

/// Mean reward over every image of `env` when `decide` turns `head`'s outputs
/// into an action.
pub async fn policy_reward<E: Environment>(
    env: &E,
    head: &QHead,
    size_weight: f32,
    decide: impl Fn(&[f32], &[f32]) -> usize,
) -> Result<f32, E::Error> {
    let mut sum = 0.0;
    for i in 0..env.len() {
        let f = env.features(i);
        let a = decide(&head.predict(&f), &f);
        sum += env.feedback(i, a).await?.reward(size_weight);
    }
    Ok(sum / env.len().max(1) as f32)
}

/// Mean reward of the uniformly random policy (exact expectation over actions).
pub async fn random_reward<E: Environment>(
    env: &E,
    actions: usize,
    size_weight: f32,
) -> Result<f32, E::Error> {
    let mut sum = 0.0;
    for i in 0..env.len() {
        for a in 0..actions {
            sum += env.feedback(i, a).await?.reward(size_weight);
        }
    }
    Ok(sum / (env.len().max(1) * actions.max(1)) as f32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::RngExt;

    /// A synthetic bandit: features say whether an image is "robust"; robust images
    /// agree at every action, fragile ones only at the largest. Small actions are cheap.
    struct Synthetic {
        feats: Vec<Arc<[f32]>>,
        robust: Vec<bool>,
    }

    impl Synthetic {
        fn new(n: usize, seed: u64) -> Synthetic {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let mut feats = Vec::new();
            let mut robust = Vec::new();
            for _ in 0..n {
                let r = rng.random::<bool>();
                let mut f: Vec<f32> = (0..16).map(|_| rng.random_range(-1.0..1.0)).collect();
                f[0] = if r { 2.0 } else { -2.0 };
                feats.push(Arc::from(f));
                robust.push(r);
            }
            Synthetic { feats, robust }
        }
    }

    impl Environment for Synthetic {
        type Error = std::convert::Infallible;
        fn len(&self) -> usize {
            self.feats.len()
        }
        fn features(&self, i: usize) -> Arc<[f32]> {
            self.feats[i].clone()
        }
        async fn feedback(&self, i: usize, a: usize) -> Result<Feedback, Self::Error> {
            Ok(Feedback {
                agree: self.robust[i] || a == 3,
                size_ratio: [0.1, 0.3, 0.6, 1.0][a],
            })
        }
    }

    fn block_on<F: Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn both_algorithms_beat_the_random_policy_on_unseen_images() {
        let train_env = Synthetic::new(300, 1);
        let test_env = Synthetic::new(200, 2);
        for algorithm in [Algorithm::Bandit, Algorithm::DqnPaper] {
            let mut cfg = TrainConfig::new(algorithm);
            cfg.epochs = 6;
            let trained = block_on(train(&train_env, 4, &cfg, |_, _| {})).unwrap();
            let greedy = block_on(greedy_reward(&test_env, &trained.head, 1.0)).unwrap();
            let random = block_on(random_reward(&test_env, 4, 1.0)).unwrap();
            // Optimal here is 0.9 for robust and 0.0 for fragile images: 0.45 on average.
            assert!(
                greedy > random + 0.2,
                "{algorithm:?}: greedy {greedy} vs random {random}"
            );
            assert_eq!(trained.curve.len(), 1800);
            assert!(trained.learn_calls > 300);
        }
    }

    #[test]
    fn memory_is_bounded_and_samples_without_replacement() {
        let mut m = Memory::new(3);
        for a in 0..5 {
            m.push(Transition {
                features: Arc::from(vec![a as f32]),
                action: a,
                target: 0.0,
            });
        }
        assert_eq!(m.len(), 3);
        let mut rng = rand::rngs::StdRng::seed_from_u64(0);
        let mut got: Vec<usize> = m.sample(10, &mut rng).iter().map(|t| t.action).collect();
        got.sort();
        assert_eq!(got, vec![2, 3, 4]);
    }
}
