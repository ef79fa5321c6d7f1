//! The inference–estimate–retrain state machine (AdaCompress §4, DESIGN §2), as pure logic:
//! no I/O, no clock, no randomness of its own, so every transition is unit-tested.
//!
//! - **Inference**: the agent decides alone. Each image is *estimated* with probability
//!   `p_est`: the original goes up too, off the request path, and the two answers are
//!   compared ([`Estimator::record`]).
//! - **Retrain**: entered when the mean agreement of the last `window` estimates falls
//!   below `accuracy_threshold` (the paper's A₀). Every image is estimated; the first
//!   `explore_images` explore uniformly (ε = 1), then ε-greedy with ε shrinking at each
//!   learning call; the head learns every `learn_every` estimates. Back to inference when
//!   the last `window` uploads that were the agent's own choice agree at least
//!   `recovered_accuracy` of the time (and, if set, their mean reward reaches
//!   `reward_threshold`).
//!
//! `p_est` follows the paper: `p_est −= slope_gain × slope` of the recent agreement, clipped
//! to `[p_est_min, p_est_max]`. One deviation, so that estimation stops costing extra bytes
//! once things are stable: while the window is full, agrees above the threshold and is not
//! falling, `p_est` decays by 10 % per estimate towards `p_est_min` (the paper's p_est never
//! goes back down on its own and its floor of 0.2 uploads a fifth of all images twice).

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::learn::Accuracy;

/// `[estimator]`: the inference–estimate–retrain loop (DESIGN §2 with the paper's values
/// where they fit; deviations are commented in `config/adacompress.toml`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EstimatorConfig {
    pub enabled: bool,
    pub p_est_initial: f64,
    pub p_est_min: f64,
    pub p_est_max: f64,
    /// Estimates averaged for the accuracy that moves the state machine (paper: n = 10).
    pub window: usize,
    /// Enter retraining below this mean agreement (paper: A₀ = 0.8).
    pub accuracy_threshold: f64,
    /// Leave retraining only when the agent's own choices agree at least this often.
    pub recovered_accuracy: f64,
    /// Paper's exit condition on mean reward `acc − size_weight·size/size_ref`; `None` skips it.
    pub reward_threshold: Option<f64>,
    pub size_weight: f64,
    /// `p_est −= slope_gain × slope of recent accuracy` (paper: 3).
    pub slope_gain: f64,
    pub accuracy: Accuracy,
    /// Cap on bytes uploaded for estimation per minute (0 = no cap).
    pub budget_bytes_per_minute: u64,
    /// Images explored at ε = 1 after entering retraining (paper: 128).
    pub explore_images: usize,
    /// Learn every this many estimates while retraining (paper: 5).
    pub learn_every: usize,
    /// Replay memory size (paper: 2000).
    pub memory: usize,
    /// Training batch (paper: 256).
    pub batch: usize,
    /// Adam steps per learning call.
    pub steps_per_learn: usize,
    /// Agreement the re-tuned cheapest-safe threshold aims for on the memory.
    pub target_agreement: f64,
    /// Uploads per image while retraining: the explored re-encode, then bisection probes
    /// over the quality ladder (1 = the paper: one upload).
    pub retrain_probes: usize,
    /// What clients get while retraining: `original` (the answer for their own bytes; the
    /// explored re-encode is uploaded beside it) or `explore` (the paper: the explored one).
    pub retrain_serves: RetrainServes,
}

/// What the client's request carries while the agent retrains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RetrainServes {
    Original,
    Explore,
}

impl Default for EstimatorConfig {
    fn default() -> Self {
        EstimatorConfig {
            enabled: true,
            p_est_initial: 0.2,
            p_est_min: 0.04,
            p_est_max: 0.95,
            window: 10,
            accuracy_threshold: 0.8,
            recovered_accuracy: 0.9,
            reward_threshold: None,
            size_weight: 1.0,
            slope_gain: 3.0,
            accuracy: Accuracy::Top1,
            budget_bytes_per_minute: 0,
            explore_images: 32,
            learn_every: 5,
            memory: 2000,
            batch: 256,
            steps_per_learn: 20,
            target_agreement: 0.95,
            retrain_probes: 1,
            retrain_serves: RetrainServes::Original,
        }
    }
}

/// The long-lived mode. "Estimate" is per image: see [`Estimator::reported_state`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    Inference,
    Retrain,
}

/// One compared pair of answers.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// The re-encoded image's answer agreed with the original's.
    pub agree: bool,
    /// `acc − size_weight · uploaded / original`.
    pub reward: f64,
    /// The uploaded action was the policy's own choice (not an exploration).
    pub greedy: bool,
}

/// What the caller must do after [`Estimator::record`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// Mean agreement fell below A₀: retraining starts (clear the memory, explore).
    EnteredRetrain,
    /// Time for a learning call on the memory.
    Learn,
    /// The agent's choices agree again: back to inference (persist the head).
    Recovered,
}

/// The state machine and its persisted state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Estimator {
    #[serde(skip)]
    cfg: Option<EstimatorConfig>,
    pub mode: Mode,
    pub p_est: f64,
    /// Last `window` estimates in inference (agreement of the policy's choices).
    pub recent: VecDeque<Sample>,
    /// Estimates since entering retrain.
    pub retrain_seen: usize,
    /// Learning calls since entering retrain.
    pub learn_calls: usize,
    /// Last `window` greedy samples while retraining.
    pub retrain_greedy: VecDeque<Sample>,
    /// Completed retrain rounds, ever.
    pub retrains: u64,
    /// Estimates recorded, ever.
    pub estimates: u64,
}

impl Estimator {
    /// A fresh estimator in inference at `p_est_initial`.
    pub fn new(cfg: EstimatorConfig) -> Estimator {
        Estimator {
            mode: Mode::Inference,
            p_est: cfg.p_est_initial,
            recent: VecDeque::new(),
            retrain_seen: 0,
            learn_calls: 0,
            retrain_greedy: VecDeque::new(),
            retrains: 0,
            estimates: 0,
            cfg: Some(cfg),
        }
    }

    /// Restores persisted state under (possibly new) settings.
    pub fn restore(mut saved: Estimator, cfg: EstimatorConfig) -> Estimator {
        saved.p_est = saved.p_est.clamp(cfg.p_est_min, cfg.p_est_max);
        while saved.recent.len() > cfg.window {
            saved.recent.pop_front();
        }
        saved.cfg = Some(cfg);
        saved
    }

    fn cfg(&self) -> EstimatorConfig {
        self.cfg.clone().unwrap_or_default()
    }

    /// Whether this image is estimated, given a uniform draw `xi` in `[0, 1)`.
    pub fn should_estimate(&self, xi: f64) -> bool {
        match self.mode {
            Mode::Retrain => true,
            Mode::Inference => xi < self.p_est,
        }
    }

    /// Exploration rate for the next image: 0 in inference; in retrain 1 for the first
    /// `explore_images`, then `0.5 · 0.8^learn_calls_after`, floor 0.05.
    pub fn epsilon(&self) -> f64 {
        match self.mode {
            Mode::Inference => 0.0,
            Mode::Retrain => {
                let cfg = self.cfg();
                if self.retrain_seen < cfg.explore_images {
                    1.0
                } else {
                    let explore_learns = cfg.explore_images / cfg.learn_every.max(1);
                    let after = self.learn_calls.saturating_sub(explore_learns) as i32;
                    (0.5 * 0.8f64.powi(after)).max(0.05)
                }
            }
        }
    }

    /// Mean agreement of the recent estimates (inference window), if any.
    pub fn recent_accuracy(&self) -> Option<f64> {
        mean(self.recent.iter().map(|s| f64::from(u8::from(s.agree))))
    }

    /// Mean agreement of the agent's own choices while retraining, if any.
    pub fn retrain_accuracy(&self) -> Option<f64> {
        mean(
            self.retrain_greedy
                .iter()
                .map(|s| f64::from(u8::from(s.agree))),
        )
    }

    /// `inference`, `estimate` (inference with estimates in flight) or `retrain`.
    pub fn reported_state(&self, estimates_in_flight: usize) -> &'static str {
        match (self.mode, estimates_in_flight) {
            (Mode::Retrain, _) => "retrain",
            (Mode::Inference, 0) => "inference",
            (Mode::Inference, _) => "estimate",
        }
    }

    /// Forces retraining (the admin endpoint `POST /agent/retrain`).
    pub fn force_retrain(&mut self) -> Vec<Event> {
        if self.mode == Mode::Retrain {
            return Vec::new();
        }
        self.enter_retrain();
        vec![Event::EnteredRetrain]
    }

    fn enter_retrain(&mut self) {
        self.mode = Mode::Retrain;
        self.retrain_seen = 0;
        self.learn_calls = 0;
        self.retrain_greedy.clear();
        self.p_est = self.cfg().p_est_max;
    }

    /// Records one compared pair and returns what to do.
    pub fn record(&mut self, sample: Sample) -> Vec<Event> {
        let cfg = self.cfg();
        self.estimates += 1;
        let mut events = Vec::new();
        match self.mode {
            Mode::Inference => {
                if !sample.greedy {
                    return events;
                }
                self.recent.push_back(sample);
                while self.recent.len() > cfg.window {
                    self.recent.pop_front();
                }
                let accs: Vec<f64> = self
                    .recent
                    .iter()
                    .map(|s| f64::from(u8::from(s.agree)))
                    .collect();
                let slope = slope(&accs);
                let acc = mean(accs.iter().copied()).unwrap_or(1.0);
                let mut p = self.p_est - cfg.slope_gain * slope;
                if self.recent.len() == cfg.window && acc >= cfg.accuracy_threshold && slope >= 0.0
                {
                    p = cfg.p_est_min + (p - cfg.p_est_min) * 0.9;
                }
                self.p_est = p.clamp(cfg.p_est_min, cfg.p_est_max);
                if self.recent.len() == cfg.window && acc < cfg.accuracy_threshold {
                    self.enter_retrain();
                    events.push(Event::EnteredRetrain);
                }
            }
            Mode::Retrain => {
                self.retrain_seen += 1;
                if self.retrain_seen.is_multiple_of(cfg.learn_every.max(1)) {
                    self.learn_calls += 1;
                    events.push(Event::Learn);
                }
                if sample.greedy && self.retrain_seen > cfg.explore_images {
                    self.retrain_greedy.push_back(sample);
                    while self.retrain_greedy.len() > cfg.window {
                        self.retrain_greedy.pop_front();
                    }
                }
                let full = self.retrain_greedy.len() == cfg.window;
                let acc = self.retrain_accuracy().unwrap_or(0.0);
                let reward_ok = cfg.reward_threshold.is_none_or(|th| {
                    mean(self.retrain_greedy.iter().map(|s| s.reward)).unwrap_or(f64::MIN) > th
                });
                if full && acc >= cfg.recovered_accuracy && reward_ok {
                    self.mode = Mode::Inference;
                    self.retrains += 1;
                    // Start the inference window from the recovered agent's record.
                    self.recent = self.retrain_greedy.clone();
                    self.retrain_greedy.clear();
                    self.p_est = cfg.p_est_initial.clamp(cfg.p_est_min, cfg.p_est_max);
                    events.push(Event::Recovered);
                }
            }
        }
        events
    }
}

fn mean(values: impl Iterator<Item = f64>) -> Option<f64> {
    let (sum, n) = values.fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    (n > 0).then(|| sum / n as f64)
}

/// Least-squares slope of `ys` against their index (0 for fewer than two points).
pub fn slope(ys: &[f64]) -> f64 {
    let n = ys.len();
    if n < 2 {
        return 0.0;
    }
    let mx = (n - 1) as f64 / 2.0;
    let my = ys.iter().sum::<f64>() / n as f64;
    let (mut num, mut den) = (0.0, 0.0);
    for (i, y) in ys.iter().enumerate() {
        let dx = i as f64 - mx;
        num += dx * (y - my);
        den += dx * dx;
    }
    if den == 0.0 { 0.0 } else { num / den }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(agree: bool) -> Sample {
        Sample {
            agree,
            reward: if agree { 0.5 } else { -0.5 },
            greedy: true,
        }
    }

    fn cfg() -> EstimatorConfig {
        EstimatorConfig {
            explore_images: 10,
            learn_every: 5,
            ..EstimatorConfig::default()
        }
    }

    #[test]
    fn slope_of_a_line() {
        assert!((slope(&[0.0, 1.0, 2.0]) - 1.0).abs() < 1e-12);
        assert_eq!(slope(&[1.0, 1.0, 1.0]), 0.0);
        assert_eq!(slope(&[1.0]), 0.0);
    }

    #[test]
    fn steady_agreement_decays_p_est_to_the_floor() {
        let mut e = Estimator::new(cfg());
        for _ in 0..100 {
            assert!(e.record(s(true)).is_empty());
        }
        assert_eq!(e.mode, Mode::Inference);
        assert!((e.p_est - cfg().p_est_min).abs() < 1e-3, "{}", e.p_est);
        assert!(e.should_estimate(0.0));
        assert!(!e.should_estimate(0.5));
    }

    #[test]
    fn falling_agreement_raises_p_est_then_enters_retrain() {
        let mut e = Estimator::new(cfg());
        for _ in 0..50 {
            e.record(s(true));
        }
        let floor = e.p_est;
        assert!(e.record(s(false)).is_empty());
        assert!(
            e.p_est > floor + 0.05,
            "one failure raises p_est: {}",
            e.p_est
        );
        assert!(e.record(s(false)).is_empty());
        // Third failure in the window of 10: mean 0.7 < A0 = 0.8.
        assert_eq!(e.record(s(false)), vec![Event::EnteredRetrain]);
        assert_eq!(e.mode, Mode::Retrain);
        assert_eq!(e.p_est, cfg().p_est_max);
        assert_eq!(e.epsilon(), 1.0);
        assert!(e.should_estimate(0.99));
        assert_eq!(e.reported_state(0), "retrain");
    }

    #[test]
    fn retrain_explores_learns_and_recovers_on_greedy_agreement() {
        let mut e = Estimator::new(cfg());
        e.force_retrain();
        let mut learns = 0;
        // Exploration: non-greedy uploads never count towards recovery.
        for _ in 0..10 {
            let ev = e.record(Sample {
                greedy: false,
                ..s(false)
            });
            learns += ev.iter().filter(|&&x| x == Event::Learn).count();
        }
        assert_eq!(learns, 2);
        assert!(e.epsilon() < 1.0 && e.epsilon() >= 0.05);
        // Nine agreeing greedy choices are not yet a full window.
        for _ in 0..9 {
            assert!(!e.record(s(true)).contains(&Event::Recovered));
        }
        let ev = e.record(s(true));
        assert!(ev.contains(&Event::Recovered), "{ev:?}");
        assert_eq!(e.mode, Mode::Inference);
        assert_eq!(e.retrains, 1);
        assert_eq!(e.recent_accuracy(), Some(1.0));
    }

    #[test]
    fn retrain_does_not_end_while_choices_disagree() {
        let mut e = Estimator::new(cfg());
        e.force_retrain();
        for i in 0..200 {
            // 80 % agreement < recovered_accuracy 0.9.
            e.record(s(i % 5 != 0));
        }
        assert_eq!(e.mode, Mode::Retrain);
    }

    #[test]
    fn state_survives_serde_and_restore_clamps() {
        let mut e = Estimator::new(cfg());
        e.force_retrain();
        e.record(s(true));
        let json = serde_json::to_string(&e).unwrap();
        let back: Estimator = serde_json::from_str(&json).unwrap();
        let tight = EstimatorConfig {
            p_est_max: 0.5,
            ..cfg()
        };
        let r = Estimator::restore(back, tight);
        assert_eq!(r.mode, Mode::Retrain);
        assert_eq!(r.retrain_seen, 1);
        assert_eq!(r.p_est, 0.5);
    }
}
